//! A place in a user's stream: [`Epoch`] and offset, and the `since`
//! query parameter that names one.

use std::fmt;
use std::sync::Arc;

/// Most characters in an [`Epoch`].
pub const EPOCH_MAX_LEN: usize = 64;

/// One life of a user's stream: it changes whenever the stream's history is
/// lost (a single node restarted, Redis lost the key), so an offset means
/// something only together with its epoch. Opaque to clients: 1 to 64
/// characters of `[A-Za-z0-9_-]`.
///
/// ```
/// use ws_lifecycle::stream::Epoch;
///
/// let epoch = Epoch::new("01JDZ4Q7")?;
/// assert_eq!(epoch.as_str(), "01JDZ4Q7");
/// assert!(Epoch::new("no spaces").is_err());
/// # Ok::<(), ws_lifecycle::stream::SinceError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Checks `epoch` against the grammar.
    ///
    /// # Errors
    ///
    /// [`SinceError::BadEpoch`] when it is empty, longer than 64 characters
    /// or has a character outside `[A-Za-z0-9_-]`.
    pub fn new(epoch: &str) -> Result<Epoch, SinceError> {
        let ok = !epoch.is_empty()
            && epoch.len() <= EPOCH_MAX_LEN
            && epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Epoch(Arc::from(epoch)))
        } else {
            Err(SinceError::BadEpoch)
        }
    }

    /// A fresh epoch, unique to this call: a ULID (26 characters).
    pub fn mint() -> Epoch {
        Epoch(Arc::from(ulid::Ulid::generate().to_string()))
    }

    /// The epoch's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.0)
    }
}

/// A position in a user's stream: the epoch and the offset of the last
/// event seen there (0 before the first event). Written `<epoch>:<offset>`,
/// the form of the `since` query parameter.
///
/// ```
/// use ws_lifecycle::stream::Position;
///
/// let since = Position::parse_since("01JDZ4Q7:42")?;
/// assert_eq!((since.epoch.as_str(), since.offset), ("01JDZ4Q7", 42));
/// assert_eq!(since.to_string(), "01JDZ4Q7:42");
/// assert!(Position::parse_since("01JDZ4Q7:+42").is_err());
/// # Ok::<(), ws_lifecycle::stream::SinceError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream's life this offset belongs to.
    pub epoch: Epoch,
    /// The offset: events `1..=offset` of that life came before.
    pub offset: u64,
}

impl Position {
    /// Parses `<epoch>:<offset>`: the epoch as [`Epoch::new`] accepts it,
    /// the offset ASCII digits only (no sign, no spaces), at most
    /// `u64::MAX`. The text is taken as is (an adapter percent-decodes the
    /// query value first).
    ///
    /// # Errors
    ///
    /// [`SinceError`] saying which part is wrong.
    pub fn parse_since(text: &str) -> Result<Position, SinceError> {
        if text.len() > EPOCH_MAX_LEN + 1 + 20 {
            return Err(SinceError::TooLong);
        }
        let (epoch, offset) = text.split_once(':').ok_or(SinceError::NoSeparator)?;
        let epoch = Epoch::new(epoch)?;
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SinceError::BadOffset);
        }
        let offset = offset.parse().map_err(|_| SinceError::OffsetOverflow)?;
        Ok(Position { epoch, offset })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// Why a `since` value (or an epoch) was refused. Before the upgrade this
/// is HTTP 400 with the body `{"error":"since_invalid"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinceError {
    /// No `:` between the epoch and the offset.
    #[error("`since` must be `<epoch>:<offset>`")]
    NoSeparator,
    /// The epoch is empty, too long, or not `[A-Za-z0-9_-]`.
    #[error("the epoch in `since` must be 1 to 64 characters of [A-Za-z0-9_-]")]
    BadEpoch,
    /// The offset is empty or not only ASCII digits (a sign, a space, a
    /// second `:`).
    #[error("the offset in `since` must be decimal digits only")]
    BadOffset,
    /// The offset is larger than `u64::MAX`.
    #[error("the offset in `since` is larger than 18446744073709551615")]
    OffsetOverflow,
    /// The value is longer than any valid one.
    #[error("`since` is longer than 85 characters")]
    TooLong,
    /// The query string has `since` more than once.
    #[error("`since` is given more than once")]
    Repeated,
    /// The query value is not valid percent-encoding of UTF-8.
    #[error("`since` is not valid percent-encoded UTF-8")]
    BadEncoding,
}

impl SinceError {
    /// A stable code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            SinceError::NoSeparator => "since_no_separator",
            SinceError::BadEpoch => "since_bad_epoch",
            SinceError::BadOffset => "since_bad_offset",
            SinceError::OffsetOverflow => "since_offset_overflow",
            SinceError::TooLong => "since_too_long",
            SinceError::Repeated => "since_repeated",
            SinceError::BadEncoding => "since_bad_encoding",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_grammar() {
        let max = format!("{}:{}", "a".repeat(64), u64::MAX);
        assert_eq!(Position::parse_since(&max).map(|p| p.offset), Ok(u64::MAX));
        assert!(Position::parse_since("e:0").is_ok());
        for (bad, error) in [
            ("", SinceError::NoSeparator),
            ("e", SinceError::NoSeparator),
            (":1", SinceError::BadEpoch),
            ("e e:1", SinceError::BadEpoch),
            ("e:", SinceError::BadOffset),
            ("e:-1", SinceError::BadOffset),
            ("e:+1", SinceError::BadOffset),
            ("e: 1", SinceError::BadOffset),
            ("e:1:2", SinceError::BadOffset),
            ("e:18446744073709551616", SinceError::OffsetOverflow),
        ] {
            assert_eq!(Position::parse_since(bad), Err(error), "{bad:?}");
        }
        let long_epoch = format!("{}:1", "a".repeat(65));
        assert_eq!(
            Position::parse_since(&long_epoch),
            Err(SinceError::BadEpoch)
        );
        let too_long = format!("{}:{}", "a".repeat(64), "1".repeat(30));
        assert_eq!(Position::parse_since(&too_long), Err(SinceError::TooLong));
    }
}
