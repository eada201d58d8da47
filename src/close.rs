//! Close codes and reasons: the one mapping from "why a connection ended" to
//! what the peer is told.
//!
//! | code | meaning | client should |
//! |---|---|---|
//! | 1000 / 1001 | normal / server going away | — / reconnect |
//! | 1002 | WebSocket protocol error | fix the client |
//! | 1007 | invalid payload: a text message that is not UTF-8 | fix the client |
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
    /// 1007: invalid frame payload data, such as a text message that is not
    /// UTF-8 (RFC 6455 sections 7.4.1 and 8.1).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
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
        is_valid(reason.as_bytes()).then_some(CloseReason(reason))
    }

    /// A reason from a string literal, checked when the program is compiled
    /// if it is used in a constant.
    ///
    /// # Panics
    ///
    /// When `reason` is longer than [`CloseReason::MAX_LEN`] or not
    /// printable ASCII. It is meant for literals: in a `const` (or `static`)
    /// the check runs during compilation, so an invalid reason is a build
    /// error, never a panic at run time. For text only known at run time use
    /// [`CloseReason::new`], which returns `None` instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::close::{CloseCode, CloseFrame, CloseReason};
    ///
    /// const MAINTENANCE: CloseReason = CloseReason::from_static("maintenance");
    /// let frame = CloseFrame::new(CloseCode::RESTART, MAINTENANCE);
    /// assert_eq!(frame.to_string(), "1012 maintenance");
    /// ```
    ///
    /// A reason that is not printable ASCII does not compile:
    ///
    /// ```compile_fail
    /// use ws_lifecycle::close::CloseReason;
    ///
    /// const BAD: CloseReason = CloseReason::from_static("line\nbreak");
    /// ```
    #[allow(
        clippy::panic,
        reason = "only reachable with an invalid literal; in a const it is a compile error"
    )]
    pub const fn from_static(reason: &'static str) -> CloseReason {
        if !is_valid(reason.as_bytes()) {
            panic!("a close reason is printable ASCII, at most 123 bytes");
        }
        CloseReason(Cow::Borrowed(reason))
    }

    /// The reason text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `reason` is a valid close reason: at most
/// [`CloseReason::MAX_LEN`] bytes of printable ASCII. `const`, so
/// [`CloseReason::from_static`] can check literals at compile time.
const fn is_valid(reason: &[u8]) -> bool {
    if reason.len() > CloseReason::MAX_LEN {
        return false;
    }
    let mut rest = reason;
    while let [byte, tail @ ..] = rest {
        if *byte < 0x20 || *byte >= 0x7f {
            return false;
        }
        rest = tail;
    }
    true
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

/// Why a connection ended. The one mapping from cause to the close frame the
/// peer receives and to the final state (`Closed` or `Failed`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// The peer sent a close frame (its frame, if it had a valid one). We
    /// answer 1000.
    PeerClosed(Option<CloseFrame>),
    /// The transport ended without a close frame (TCP reset, half-open peer).
    PeerGone,
    /// The transport reported an error.
    TransportError,
    /// The application asked for this close.
    Requested(CloseFrame),
    /// The server is going away (1001).
    ServerGoingAway,
    /// An inbound message exceeded the limit (1009).
    MessageTooBig,
    /// An application callback panicked (1011).
    HandlerPanicked,
    /// The transport's sink panicked while the writer used it (1011).
    TransportPanicked,
    /// The on-ready hook did not finish in time (1013).
    NotReadyInTime,
    /// The pre-ready buffer overflowed under the `Close` policy (1013).
    PreReadyOverflow,
    /// The peer did not keep up with its outbound queue (4409).
    SlowConsumer,
    /// The user hit the per-user connection limit (4429).
    ConnectionLimit,
    /// Authentication failed after the upgrade (4401 or 4403, with the
    /// error code as the reason).
    AuthFailed(CloseFrame),
    /// The future driving the connection was dropped.
    Dropped,
    /// The peer did not answer a ping within the pong timeout: it is gone
    /// (a half-open TCP connection, say). No close frame is sent.
    HeartbeatTimeout,
    /// The peer sent messages faster than the inbound rate limit (4429).
    RateLimited,
    /// The peer broke the WebSocket protocol (1002).
    ProtocolError,
    /// The peer sent a text message that is not UTF-8 (1007).
    InvalidPayload,
    /// The server is shutting down and the deadline passed: closed without
    /// waiting for queued events (1012).
    Forced,
    /// The application ended the connection abruptly, without a close
    /// frame, as a network failure would
    /// ([`ConnectionHandle::terminate`](crate::ConnectionHandle::terminate)).
    Terminated,
}

impl CloseCause {
    /// The close frame sent to the peer, if one is sent at all.
    pub fn frame(&self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            CloseCause::PeerClosed(_) => (CloseCode::NORMAL, ""),
            CloseCause::PeerGone | CloseCause::TransportError | CloseCause::Dropped => return None,
            CloseCause::Requested(frame) | CloseCause::AuthFailed(frame) => {
                return Some(frame.clone());
            }
            CloseCause::ServerGoingAway => (CloseCode::GOING_AWAY, "going_away"),
            CloseCause::MessageTooBig => (CloseCode::MESSAGE_TOO_BIG, "message_too_big"),
            CloseCause::HandlerPanicked | CloseCause::TransportPanicked => {
                (CloseCode::INTERNAL_ERROR, "internal_error")
            }
            CloseCause::NotReadyInTime => (CloseCode::TRY_AGAIN_LATER, "not_ready_in_time"),
            CloseCause::PreReadyOverflow => (CloseCode::TRY_AGAIN_LATER, "pre_ready_overflow"),
            CloseCause::SlowConsumer => (CloseCode::SLOW_CONSUMER, "slow_consumer"),
            CloseCause::ConnectionLimit => (CloseCode::RATE_LIMITED, "connection_limit"),
            CloseCause::HeartbeatTimeout | CloseCause::Terminated => return None,
            CloseCause::RateLimited => (CloseCode::RATE_LIMITED, "rate_limited"),
            CloseCause::ProtocolError => (CloseCode::PROTOCOL_ERROR, "protocol_error"),
            CloseCause::InvalidPayload => (CloseCode::INVALID_PAYLOAD, "invalid_payload"),
            CloseCause::Forced => (CloseCode::RESTART, "restart"),
        };
        Some(CloseFrame::new(code, CloseReason::from_static(reason)))
    }

    /// Whether the connection ends `Failed` (an error or timeout) rather
    /// than `Closed`.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            CloseCause::PeerGone
                | CloseCause::TransportError
                | CloseCause::HandlerPanicked
                | CloseCause::TransportPanicked
                | CloseCause::NotReadyInTime
                | CloseCause::AuthFailed(_)
                | CloseCause::Dropped
                | CloseCause::HeartbeatTimeout
                | CloseCause::ProtocolError
                | CloseCause::InvalidPayload
        )
    }

    /// Whether queued events should still be written before the close frame.
    pub(crate) fn drains(&self) -> bool {
        matches!(self, CloseCause::Requested(_) | CloseCause::ServerGoingAway)
    }

    /// A short machine-readable name, for logs and transition history.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseCause::PeerClosed(_) => "peer_closed",
            CloseCause::PeerGone => "peer_gone",
            CloseCause::TransportError => "transport_error",
            CloseCause::Requested(_) => "requested",
            CloseCause::ServerGoingAway => "going_away",
            CloseCause::MessageTooBig => "message_too_big",
            CloseCause::HandlerPanicked => "handler_panicked",
            CloseCause::TransportPanicked => "transport_panicked",
            CloseCause::NotReadyInTime => "not_ready_in_time",
            CloseCause::PreReadyOverflow => "pre_ready_overflow",
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::ConnectionLimit => "connection_limit",
            CloseCause::AuthFailed(_) => "auth_failed",
            CloseCause::Dropped => "dropped",
            CloseCause::HeartbeatTimeout => "heartbeat_timeout",
            CloseCause::RateLimited => "rate_limited",
            CloseCause::ProtocolError => "protocol_error",
            CloseCause::InvalidPayload => "invalid_payload",
            CloseCause::Forced => "forced",
            CloseCause::Terminated => "terminated",
        }
    }
}

impl fmt::Display for CloseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_reasons_are_valid() {
        let causes = [
            CloseCause::PeerClosed(None),
            CloseCause::ServerGoingAway,
            CloseCause::MessageTooBig,
            CloseCause::HandlerPanicked,
            CloseCause::NotReadyInTime,
            CloseCause::PreReadyOverflow,
            CloseCause::SlowConsumer,
            CloseCause::ConnectionLimit,
            CloseCause::RateLimited,
            CloseCause::ProtocolError,
            CloseCause::InvalidPayload,
            CloseCause::Forced,
        ];
        for cause in causes {
            let frame = cause.frame();
            let frame = frame.as_ref();
            assert!(frame.is_some(), "{cause}");
            let reason = frame.map(|f| f.reason.as_str()).unwrap_or_default();
            assert_eq!(
                CloseReason::new(reason.to_owned())
                    .as_ref()
                    .map(CloseReason::as_str),
                Some(reason)
            );
            assert!(frame.is_some_and(|f| CloseCode::new(f.code.as_u16()).is_some()));
        }
    }

    #[test]
    fn new_and_from_static_agree() {
        let longest = "x".repeat(CloseReason::MAX_LEN);
        for valid in ["", "token_expired", " ~", longest.as_str()] {
            assert!(CloseReason::new(valid.to_owned()).is_some(), "{valid:?}");
            assert!(is_valid(valid.as_bytes()), "{valid:?}");
        }
        let too_long = "x".repeat(CloseReason::MAX_LEN + 1);
        for invalid in ["tab\there", "caf\u{e9}", "\u{7f}", too_long.as_str()] {
            assert!(
                CloseReason::new(invalid.to_owned()).is_none(),
                "{invalid:?}"
            );
            assert!(!is_valid(invalid.as_bytes()), "{invalid:?}");
        }
        const CHECKED: CloseReason = CloseReason::from_static("restart");
        assert_eq!(CHECKED.as_str(), "restart");
    }
}
