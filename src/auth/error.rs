//! [`AuthError`]: why a handshake was not authenticated, and the one mapping
//! from that to an HTTP status (refused before the upgrade) or a close frame
//! (refused right after it).

use crate::close::{CloseCode, CloseFrame, CloseReason};

/// Why authentication failed.
///
/// Each variant has a stable machine-readable [`code`](AuthError::code),
/// used as the close reason, the JSON error body and the metric label; none
/// of them ever carries the token or personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carried no credentials at all.
    #[error(
        "no credentials: send `Authorization: Bearer <token>` or the subprotocols `jwt-auth, jwt.<token>`"
    )]
    MissingCredentials,
    /// The request is malformed (bad header or subprotocol grammar); the
    /// message names what was wrong, never the offending value.
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    /// The token was not valid (bad signature, wrong issuer or audience,
    /// unparseable claims).
    #[error("token is not valid: {0}")]
    InvalidToken(&'static str),
    /// The token has expired: refresh it and reconnect.
    #[error("token has expired")]
    Expired,
    /// The user is known but may not connect (revoked, banned).
    #[error("forbidden")]
    Forbidden,
    /// Authentication did not finish within the configured deadline.
    #[error("authentication timed out")]
    Timeout,
}

impl AuthError {
    /// The stable code (`missing_credentials`, `malformed_request`,
    /// `invalid_token`, `token_expired`, `forbidden`, `auth_timeout`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing_credentials",
            AuthError::Malformed(_) => "malformed_request",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::Expired => "token_expired",
            AuthError::Forbidden => "forbidden",
            AuthError::Timeout => "auth_timeout",
        }
    }

    /// The HTTP status when the upgrade is refused: 400 for a malformed
    /// request, 401 for missing, invalid or expired credentials, 403 for a
    /// forbidden user, 408 for a timeout.
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Malformed(_) => 400,
            AuthError::MissingCredentials | AuthError::InvalidToken(_) | AuthError::Expired => 401,
            AuthError::Forbidden => 403,
            AuthError::Timeout => 408,
        }
    }

    /// The close frame when the failure surfaces after the upgrade: 4401
    /// (refresh the token and reconnect), 4403 (do not reconnect), 4408
    /// (timed out), 4400 (malformed); the reason is [`code`](AuthError::code).
    pub fn close_frame(&self) -> CloseFrame {
        let code = match self {
            AuthError::Malformed(_) => CloseCode::APP_PROTOCOL_ERROR,
            AuthError::MissingCredentials | AuthError::InvalidToken(_) | AuthError::Expired => {
                CloseCode::UNAUTHENTICATED
            }
            AuthError::Forbidden => CloseCode::FORBIDDEN,
            AuthError::Timeout => CloseCode::AUTH_TIMEOUT,
        };
        CloseFrame::new(code, CloseReason::from_static(self.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_a_valid_close_reason() {
        let all = [
            AuthError::MissingCredentials,
            AuthError::Malformed("x"),
            AuthError::InvalidToken("x"),
            AuthError::Expired,
            AuthError::Forbidden,
            AuthError::Timeout,
        ];
        for e in all {
            let frame = e.close_frame();
            assert_eq!(
                CloseReason::new(e.code()).map(|r| r.as_str().to_owned()),
                Some(e.code().to_owned())
            );
            assert!(CloseCode::new(frame.code.as_u16()).is_some());
            assert!(matches!(e.http_status(), 400..=499));
        }
    }
}
