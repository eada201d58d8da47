//! The ids minted as a kind prefix and one ULID: [`ConnectionId`],
//! [`ThreadId`] and [`RequestId`], and the ULID grammar every default id
//! (a [`RunId`](super::RunId)'s parts too) is parsed with.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::error::{IdError, IdKind, IdProblem};

pub(super) const ULID_LEN: usize = ulid::ULID_LEN;
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Parses a canonical ULID: exactly 26 upper-case Crockford characters whose
/// value fits in 128 bits. Stricter than `ulid::Ulid::from_string`, which
/// accepts lower case and overflowing first digits: an id has one spelling.
pub(super) fn parse_ulid(body: &str) -> Option<ulid::Ulid> {
    let bytes = body.as_bytes();
    if bytes.len() != ULID_LEN || !bytes.iter().all(|b| CROCKFORD.contains(b)) {
        return None;
    }
    // 26 * 5 = 130 bits: the first digit may carry at most 3 of them.
    if bytes.first().is_none_or(|&b| b > b'7') {
        return None;
    }
    ulid::Ulid::from_string(body).ok()
}

/// Checked grammar for ids minted by a custom generator: 1..=128 bytes of
/// `[A-Za-z0-9_-]`, so any id is safe in a log line, a header or a channel
/// name without escaping.
pub(super) fn check_custom(kind: IdKind, text: &str) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::new(kind, IdProblem::Empty, text));
    }
    if text.len() > 128 {
        return Err(IdError::new(kind, IdProblem::TooLong, text));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(IdError::new(kind, IdProblem::InvalidCharacter, text));
    }
    Ok(())
}

fn prefixed(prefix: &str, ulid: ulid::Ulid) -> Arc<str> {
    let mut buf = [0u8; ULID_LEN];
    let body = ulid.array_to_str(&mut buf);
    let mut s = String::with_capacity(prefix.len() + ULID_LEN);
    s.push_str(prefix);
    s.push_str(body);
    Arc::from(s)
}

macro_rules! text_id {
    ($(#[$meta:meta])* $name:ident, $kind:expr, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id's text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Builds an id minted by a custom [`IdGenerator`](super::IdGenerator).
            ///
            #[doc = concat!("The text must start with `", $prefix, "` and be at most 128 bytes")]
            /// of `[A-Za-z0-9_-]`. Such ids display and route like default ones;
            /// [`FromStr`] parses only the default (ULID) form.
            ///
            /// # Errors
            ///
            /// An [`IdError`] naming the problem when the text breaks that grammar.
            pub fn from_custom(text: &str) -> Result<Self, IdError> {
                check_custom($kind, text)?;
                if !text.starts_with($prefix) || text.len() == $prefix.len() {
                    return Err(IdError::new($kind, IdProblem::WrongPrefix, text));
                }
                Ok($name(Arc::from(text)))
            }

            pub(crate) fn from_ulid(ulid: ulid::Ulid) -> Self {
                $name(prefixed($prefix, ulid))
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                let body = s
                    .strip_prefix($prefix)
                    .ok_or_else(|| IdError::new($kind, IdProblem::WrongPrefix, s))?;
                match parse_ulid(body) {
                    Some(_) => Ok($name(Arc::from(s))),
                    None => Err(IdError::new($kind, IdProblem::InvalidUlid, s)),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        text_form!($name);
    };
}

text_id!(
    /// Identifies one connection for its whole life: minted first, before
    /// authentication, and never replaced.
    ConnectionId,
    IdKind::Connection,
    "conn_"
);
text_id!(
    /// Identifies a conversation thread; every [`RunId`](super::RunId) belongs to one.
    ThreadId,
    IdKind::Thread,
    "thread_"
);
text_id!(
    /// Identifies one request (for example one inbound message that started
    /// a run), for correlating logs.
    RequestId,
    IdKind::Request,
    "req_"
);
