//! [`IdError`]: which kind of id was rejected, why, and a short, safe quote
//! of the input.

use std::fmt;

/// The kind of an id, named in every [`IdError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdKind {
    /// A [`ConnectionId`](super::ConnectionId) (`conn_…`).
    Connection,
    /// A [`UserId`](super::UserId).
    User,
    /// A [`ThreadId`](super::ThreadId) (`thread_…`).
    Thread,
    /// A [`RunId`](super::RunId) (`run_…_…`).
    Run,
    /// A [`RequestId`](super::RequestId) (`req_…`).
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
    pub(super) fn new(kind: IdKind, problem: IdProblem, input: &str) -> Self {
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
