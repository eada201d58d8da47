//! Typed identifiers and the [`IdGenerator`] that mints them.
//!
//! Every id the crate hands out is minted by one [`IdGenerator`]: there is no
//! public constructor from an unchecked `String`, so a `ThreadId` can never be
//! passed where a `RunId` is expected, and a [`RunId`] always carries the
//! thread it was minted for ([`RunId::thread_id`]). That makes the
//! "`run_id` names one thread, `thread_id` another" class of bug
//! unrepresentable.
//!
//! The default generator, [`UlidGenerator`], mints monotonic ULIDs:
//!
//! | id | text form |
//! |---|---|
//! | [`ConnectionId`] | `conn_<ulid>` |
//! | [`ThreadId`] | `thread_<ulid>` |
//! | [`RunId`] | `run_<thread-ulid>_<ulid>` |
//! | [`RequestId`] | `req_<ulid>` |
//!
//! [`FromStr`] (and serde) parse that default form strictly: the kind prefix,
//! 26 upper-case Crockford base32 characters, and for a run id a run part
//! minted after its thread part and carrying its thread's check. A generator with its own format builds ids
//! with the checked `from_custom` constructors instead.
//!
//! [`UserId`] is different: it comes from the application (usually the auth
//! layer) and is only validated, never minted.
//!
//! # Examples
//!
//! ```
//! use ws_lifecycle::id::{IdGenerator, RunId, UlidGenerator, UserId};
//!
//! let ids = UlidGenerator::new();
//! let user = UserId::new("alice")?;
//! let ctx = ids.mint_context(&user);
//! assert_eq!(ctx.run.thread_id(), &ctx.thread);
//!
//! let parsed: RunId = ctx.run.to_string().parse()?;
//! assert_eq!(parsed, ctx.run);
//! # Ok::<(), ws_lifecycle::id::IdError>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The kind of an id, named in every [`IdError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdKind {
    /// A [`ConnectionId`] (`conn_…`).
    Connection,
    /// A [`UserId`].
    User,
    /// A [`ThreadId`] (`thread_…`).
    Thread,
    /// A [`RunId`] (`run_…_…`).
    Run,
    /// A [`RequestId`] (`req_…`).
    Request,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Connection => "connection id",
            IdKind::User => "user id",
            IdKind::Thread => "thread id",
            IdKind::Run => "run id",
            IdKind::Request => "request id",
        })
    }
}

/// What was wrong with a rejected id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdProblem {
    /// The input was empty.
    Empty,
    /// The input was longer than the kind allows.
    TooLong,
    /// The input did not start with the kind's prefix.
    WrongPrefix,
    /// The body was not 26 upper-case Crockford base32 characters.
    InvalidUlid,
    /// The run id's thread part was not a valid ULID.
    InvalidThreadPart,
    /// The run id's run part sorts before its thread part, so it was not
    /// minted for that thread.
    RunBeforeThread,
    /// The run id's run part does not carry its thread part's check, so the
    /// two were not minted together (one of them was altered or spliced).
    ThreadMismatch,
    /// The input contained a control character.
    ControlCharacter,
    /// The input contained a character the id grammar does not allow.
    InvalidCharacter,
}

impl fmt::Display for IdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdProblem::Empty => "it is empty",
            IdProblem::TooLong => "it is too long",
            IdProblem::WrongPrefix => "it does not start with the expected prefix",
            IdProblem::InvalidUlid => "its body is not a 26-character upper-case ULID",
            IdProblem::InvalidThreadPart => "its thread part is not a valid ULID",
            IdProblem::RunBeforeThread => "its run part was not minted after its thread part",
            IdProblem::ThreadMismatch => "its run part was not minted for its thread part",
            IdProblem::ControlCharacter => "it contains a control character",
            IdProblem::InvalidCharacter => "it contains a character outside [A-Za-z0-9_-]",
        })
    }
}

/// An id was rejected: names the expected kind and quotes (a truncated copy
/// of) the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {problem} (input: {input:?})")]
pub struct IdError {
    kind: IdKind,
    problem: IdProblem,
    input: String,
}

/// Most characters of the input quoted in an [`IdError`], so a hostile
/// megabyte id does not become a megabyte log line.
const QUOTE_MAX: usize = 48;

impl IdError {
    fn new(kind: IdKind, problem: IdProblem, input: &str) -> Self {
        // Anything that is not plainly printable (controls, combining marks,
        // zero-width and format characters) becomes `?`, so the quote stays
        // short after `Debug` escaping and cannot forge log lines.
        let printable = |c: char| c == ' ' || c.is_ascii_graphic() || c.is_alphanumeric();
        let mut quoted: String = input
            .chars()
            .take(QUOTE_MAX)
            .map(|c| if printable(c) { c } else { '?' })
            .collect();
        if input.chars().nth(QUOTE_MAX).is_some() {
            quoted.push('…');
        }
        IdError {
            kind,
            problem,
            input: quoted,
        }
    }

    /// The kind of id that was expected.
    pub fn kind(&self) -> IdKind {
        self.kind
    }

    /// What was wrong with the input.
    pub fn problem(&self) -> IdProblem {
        self.problem
    }
}

const ULID_LEN: usize = ulid::ULID_LEN;
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Parses a canonical ULID: exactly 26 upper-case Crockford characters whose
/// value fits in 128 bits. Stricter than `ulid::Ulid::from_string`, which
/// accepts lower case and overflowing first digits: an id has one spelling.
fn parse_ulid(body: &str) -> Option<ulid::Ulid> {
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
fn check_custom(kind: IdKind, text: &str) -> Result<(), IdError> {
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

/// The low bits of a run ULID that carry its thread's check.
const THREAD_CHECK_BITS: u32 = 40;
const THREAD_CHECK_MASK: u128 = (1 << THREAD_CHECK_BITS) - 1;

/// A 40-bit check of a thread ULID (FNV-1a over its 16 bytes), stored in the
/// low bits of every run minted for it. Part of the id format: it lets
/// [`RunId::from_str`] reject a run whose thread part was altered or spliced
/// from another run (a mistake, not an attack: ids are not secrets).
fn thread_check(thread: ulid::Ulid) -> u128 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in thread.to_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u128::from(hash) & THREAD_CHECK_MASK
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

            /// Builds an id minted by a custom [`IdGenerator`].
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

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
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

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
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
    /// Identifies a conversation thread; every [`RunId`] belongs to one.
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

/// Identifies one agent run, and always knows its thread.
///
/// The default text form is `run_<thread-ulid>_<run-ulid>`: the thread is
/// part of the id, so a run id can never be paired with another thread's id
/// by mistake.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId {
    text: Arc<str>,
    thread: ThreadId,
}

impl RunId {
    /// The thread this run was minted for.
    pub fn thread_id(&self) -> &ThreadId {
        &self.thread
    }

    /// The id's text form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Builds a run id minted by a custom [`IdGenerator`] for `thread`.
    ///
    /// The text must start with `run_` and be at most 128 bytes of
    /// `[A-Za-z0-9_-]`; the thread is carried alongside it.
    ///
    /// # Errors
    ///
    /// An [`IdError`] naming the problem when the text breaks that grammar.
    pub fn from_custom(thread: &ThreadId, text: &str) -> Result<Self, IdError> {
        check_custom(IdKind::Run, text)?;
        if !text.starts_with("run_") || text.len() == 4 {
            return Err(IdError::new(IdKind::Run, IdProblem::WrongPrefix, text));
        }
        Ok(RunId {
            text: Arc::from(text),
            thread: thread.clone(),
        })
    }

    fn from_ulids(thread: ulid::Ulid, run: ulid::Ulid) -> Self {
        let mut tbuf = [0u8; ULID_LEN];
        let mut rbuf = [0u8; ULID_LEN];
        let mut s = String::with_capacity(4 + 2 * ULID_LEN + 1);
        s.push_str("run_");
        s.push_str(thread.array_to_str(&mut tbuf));
        s.push('_');
        s.push_str(run.array_to_str(&mut rbuf));
        RunId {
            text: Arc::from(s),
            thread: ThreadId::from_ulid(thread),
        }
    }
}

impl FromStr for RunId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let err = |problem| IdError::new(IdKind::Run, problem, s);
        let rest = s
            .strip_prefix("run_")
            .ok_or_else(|| err(IdProblem::WrongPrefix))?;
        let (thread_part, run_part) = rest
            .split_once('_')
            .ok_or_else(|| err(IdProblem::InvalidUlid))?;
        let thread = parse_ulid(thread_part).ok_or_else(|| err(IdProblem::InvalidThreadPart))?;
        let run = parse_ulid(run_part).ok_or_else(|| err(IdProblem::InvalidUlid))?;
        // Both halves come from one monotonic generator in one call, thread
        // first, and the run carries its thread's check: a run part that
        // sorts first, or whose check does not match, was spliced onto
        // another thread.
        if run <= thread {
            return Err(err(IdProblem::RunBeforeThread));
        }
        if run.0 & THREAD_CHECK_MASK != thread_check(thread) {
            return Err(err(IdProblem::ThreadMismatch));
        }
        Ok(RunId {
            text: Arc::from(s),
            thread: ThreadId::from_ulid(thread),
        })
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", &self.text)
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The authenticated user a connection belongs to.
///
/// Supplied by the application (normally the auth layer, from a token claim),
/// so it is validated rather than minted: non-empty, at most 256 bytes, no
/// control characters. Compared byte for byte: `Alice` and `alice` are two
/// users.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Longest accepted user id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates `id` as a user id.
    ///
    /// # Errors
    ///
    /// [`IdError`] with kind [`IdKind::User`] when `id` is empty, longer than
    /// [`UserId::MAX_LEN`] bytes, or contains a control character.
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::id::UserId;
    /// assert!(UserId::new("alice").is_ok());
    /// assert!(UserId::new("").is_err());
    /// assert!(UserId::new("bob\n").is_err());
    /// ```
    pub fn new(id: impl AsRef<str>) -> Result<Self, IdError> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(IdError::new(IdKind::User, IdProblem::Empty, id));
        }
        if id.len() > Self::MAX_LEN {
            return Err(IdError::new(IdKind::User, IdProblem::TooLong, id));
        }
        if id.chars().any(char::is_control) {
            return Err(IdError::new(IdKind::User, IdProblem::ControlCharacter, id));
        }
        Ok(UserId(Arc::from(id)))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two handles share one allocation: a cheap pre-check before a
    /// byte comparison on the write path.
    pub(crate) fn ptr_eq(&self, other: &UserId) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl FromStr for UserId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        UserId::new(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", &self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        UserId::new(s).map_err(serde::de::Error::custom)
    }
}

/// The ids of one unit of agent work, minted together so they agree:
/// `run.thread_id() == &thread` always holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextIds {
    /// The conversation thread.
    pub thread: ThreadId,
    /// The run, which belongs to `thread`.
    pub run: RunId,
    /// The request that started the run.
    pub request: RequestId,
}

/// The single source of every id the crate mints.
///
/// The [`Hub`](crate::Hub) asks its generator for each connection id, and
/// applications ask the same generator (through
/// [`Hub::ids`](crate::Hub::ids)) for thread, run and request ids. Implement
/// it to use another format, for example UUIDv7 or a counter; build the ids
/// with the `from_custom` constructors.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use ws_lifecycle::id::*;
///
/// #[derive(Default)]
/// struct Counter(AtomicU64);
///
/// impl IdGenerator for Counter {
///     fn mint_connection_id(&self) -> ConnectionId {
///         let n = self.0.fetch_add(1, Ordering::Relaxed);
///         ConnectionId::from_custom(&format!("conn_{n}")).unwrap_or_else(|_| unreachable!())
///     }
///     fn mint_context(&self, _user: &UserId) -> ContextIds {
///         let n = self.0.fetch_add(1, Ordering::Relaxed);
///         let thread = ThreadId::from_custom(&format!("thread_{n}")).unwrap_or_else(|_| unreachable!());
///         let run = RunId::from_custom(&thread, &format!("run_{n}")).unwrap_or_else(|_| unreachable!());
///         let request = RequestId::from_custom(&format!("req_{n}")).unwrap_or_else(|_| unreachable!());
///         ContextIds { thread, run, request }
///     }
/// }
///
/// let ids = Counter::default();
/// assert_eq!(ids.mint_connection_id().as_str(), "conn_0");
/// ```
pub trait IdGenerator: Send + Sync + 'static {
    /// Mints the id of a new connection. Called once per connection, before
    /// anything else happens to it. Ids must be unique among the hub's live
    /// connections: a repeated one is refused (close 1011), never routed.
    fn mint_connection_id(&self) -> ConnectionId;

    /// Mints a thread, a run in that thread, and a request id, in one call,
    /// for `user`.
    fn mint_context(&self, user: &UserId) -> ContextIds;
}

/// The default [`IdGenerator`]: monotonic ULIDs, so ids minted by one
/// generator sort in minting order.
///
/// A run's ULID carries a 40-bit check of its thread's ULID in its low bits
/// (the other 40 random bits and the timestamp keep it unique), which is how
/// parsing tells a genuine run id from one whose thread part was altered.
#[derive(Debug, Default)]
pub struct UlidGenerator {
    last: Mutex<ulid::Ulid>,
}

impl UlidGenerator {
    /// A new generator.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The next ULID after `last`: a fresh one when the clock has moved on,
/// otherwise `last + 1` (borrowing from the next millisecond when the
/// random part is exhausted), so order is kept even within a millisecond.
fn after(last: ulid::Ulid) -> ulid::Ulid {
    let fresh = ulid::Ulid::generate();
    if fresh > last {
        return fresh;
    }
    match last.increment() {
        Ok(next) => next,
        Err(_) => ulid::Ulid::from_parts(last.timestamp_ms().saturating_add(1), 0),
    }
}

impl IdGenerator for UlidGenerator {
    fn mint_connection_id(&self) -> ConnectionId {
        let mut last = self.last.lock();
        *last = after(*last);
        ConnectionId::from_ulid(*last)
    }

    fn mint_context(&self, _user: &UserId) -> ContextIds {
        let (thread, run, request) = {
            let mut last = self.last.lock();
            let thread = after(*last);
            let base = after(thread);
            let check = thread_check(thread);
            let mut run = ulid::Ulid((base.0 & !THREAD_CHECK_MASK) | check);
            if run < base {
                // The check lowered it: step the random part above the check
                // bits so the run still sorts after everything minted before.
                run = ulid::Ulid(run.0.saturating_add(1 << THREAD_CHECK_BITS));
            }
            let request = after(run);
            *last = request;
            (thread, run, request)
        };
        let run = RunId::from_ulids(thread, run);
        ContextIds {
            thread: run.thread_id().clone(),
            run,
            request: RequestId::from_ulid(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_forms() {
        let ids = UlidGenerator::new();
        let conn = ids.mint_connection_id();
        assert!(conn.as_str().starts_with("conn_"));
        assert_eq!(conn.as_str().len(), 5 + 26);
        let ctx = ids.mint_context(&UserId::new("u").unwrap_or_else(|e| panic!("{e}")));
        assert!(ctx.run.as_str().starts_with("run_"));
        assert_eq!(ctx.run.thread_id(), &ctx.thread);
        assert!(ctx.request.as_str().starts_with("req_"));
    }

    #[test]
    fn minted_runs_parse_and_altered_threads_do_not() {
        let ids = UlidGenerator::new();
        let user = UserId::new("u").unwrap();
        let body = |s: &str| parse_ulid(s.rsplit('_').next().unwrap()).unwrap();
        let a = ids.mint_context(&user);
        let b = ids.mint_context(&user);
        // Minting order is sort order, across kinds and calls.
        let order = [&a.thread.as_str(), &a.run.as_str(), &a.request.as_str()]
            .into_iter()
            .chain([&b.thread.as_str(), &b.run.as_str(), &b.request.as_str()])
            .map(|s| body(s))
            .collect::<Vec<_>>();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(a.run.as_str().parse::<RunId>().as_ref(), Ok(&a.run));
        // A thread part altered to a valid ULID that still sorts first.
        let run_part = a.run.as_str().rsplit('_').next().unwrap();
        let altered = ulid::Ulid(body(a.thread.as_str()).0 - 1);
        let err = format!("run_{altered}_{run_part}")
            .parse::<RunId>()
            .unwrap_err();
        assert_eq!(err.problem(), IdProblem::ThreadMismatch);
    }

    #[test]
    fn error_quotes_truncated_input() {
        let long = "x".repeat(1000);
        let err = match long.parse::<ConnectionId>() {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(err.kind(), IdKind::Connection);
        assert_eq!(err.problem(), IdProblem::WrongPrefix);
        assert!(err.to_string().len() < 200, "{err}");
    }
}
