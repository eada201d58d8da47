//! [`RunId`]: a run's id carries its thread's, and a check that ties the
//! two together.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::error::{IdError, IdKind, IdProblem};
use super::prefixed::{ThreadId, ULID_LEN, check_custom, parse_ulid};

/// The low bits of a run ULID that carry its thread's check.
pub(super) const THREAD_CHECK_BITS: u32 = 40;
pub(super) const THREAD_CHECK_MASK: u128 = (1 << THREAD_CHECK_BITS) - 1;

/// A 40-bit check of a thread ULID (FNV-1a over its 16 bytes), stored in the
/// low bits of every run minted for it. Part of the id format: it lets
/// [`RunId::from_str`] reject a run whose thread part was altered or spliced
/// from another run (a mistake, not an attack: ids are not secrets).
pub(super) fn thread_check(thread: ulid::Ulid) -> u128 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in thread.to_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u128::from(hash) & THREAD_CHECK_MASK
}

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

    /// Builds a run id minted by a custom [`IdGenerator`](super::IdGenerator) for `thread`.
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

    pub(super) fn from_ulids(thread: ulid::Ulid, run: ulid::Ulid) -> Self {
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

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", &self.text)
    }
}

text_form!(RunId);
