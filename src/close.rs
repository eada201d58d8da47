//! Close codes and reasons: the one mapping from "why a connection ended" to
//! what the peer is told.
//!
//! | code | meaning | client should |
//! |---|---|---|
//! | 1000 / 1001 | normal / server going away | — / reconnect |
//! | 1009 | message too big | fix the client |
//! | 1011 | internal error (a bug or a panicking app callback) | reconnect with backoff |
//! | 1012 | restart / drain | reconnect |
//! | 1013 | try again later: overload, backplane down, not ready in time | reconnect later |
//! | 4400 | protocol error | fix the client |
//! | 4401 | unauthenticated or token expired | refresh the token, reconnect |
//! | 4403 | forbidden or revoked | do not reconnect |
//! | 4408 | auth timeout | reconnect |
//! | 4409 | slow consumer | reconnect |
//! | 4429 | rate or connection limit | back off |

use std::borrow::Cow;
use std::fmt;

/// A WebSocket close code (RFC 6455 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going away.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1009: an inbound message was larger than the configured limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: an internal error (a bug, or a panicking application callback).
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the server is restarting or draining.
    pub const RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (overload, not ready in time).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 4400: the peer broke the application protocol.
    pub const APP_PROTOCOL_ERROR: CloseCode = CloseCode(4400);
    /// 4401: unauthenticated, or the token expired: refresh it and reconnect.
    pub const UNAUTHENTICATED: CloseCode = CloseCode(4401);
    /// 4403: forbidden or revoked: do not reconnect.
    pub const FORBIDDEN: CloseCode = CloseCode(4403);
    /// 4408: authentication did not complete in time.
    pub const AUTH_TIMEOUT: CloseCode = CloseCode(4408);
    /// 4409: the peer did not read fast enough.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4409);
    /// 4429: a rate or connection limit was hit: back off.
    pub const RATE_LIMITED: CloseCode = CloseCode(4429);

    /// Validates a code received from or sent to a peer: 1000–1003,
    /// 1007–1014, and the registered (3000–3999) and private (4000–4999)
    /// ranges. 1004–1006 and 1015 are reserved and never appear on the wire.
    pub fn new(code: u16) -> Option<CloseCode> {
        match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => Some(CloseCode(code)),
            _ => None,
        }
    }

    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        self.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A close reason: printable ASCII, at most 123 bytes (the room a close frame
/// leaves after its code).
///
/// Reasons are machine-readable codes such as `token_expired`, never free text
/// that could carry a token or personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseReason(Cow<'static, str>);

impl CloseReason {
    /// Longest reason, in bytes.
    pub const MAX_LEN: usize = 123;

    /// Validates `reason`; `None` when it is longer than
    /// [`CloseReason::MAX_LEN`] or not printable ASCII.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Option<CloseReason> {
        let reason = reason.into();
        let ok = reason.len() <= Self::MAX_LEN && reason.bytes().all(|b| (0x20..0x7f).contains(&b));
        ok.then_some(CloseReason(reason))
    }

    /// A reason from a constant the crate controls; the unit tests check
    /// every such constant against [`CloseReason::new`].
    pub(crate) const fn from_static(reason: &'static str) -> CloseReason {
        CloseReason(Cow::Borrowed(reason))
    }

    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A close code with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseFrame {
    /// The code.
    pub code: CloseCode,
    /// The reason.
    pub reason: CloseReason,
}

impl CloseFrame {
    /// A close frame from a code and a reason.
    pub fn new(code: CloseCode, reason: CloseReason) -> Self {
        CloseFrame { code, reason }
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}
