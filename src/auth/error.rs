//! [`AuthError`]: why a handshake was not authenticated, with its stable code
//! and its one mapping to an HTTP status (refused before the upgrade) or a
//! close frame (refused right after it); [`AuthFailure`] adds where it
//! surfaces.

use crate::close::{CloseCode, CloseFrame, CloseReason};

/// Why authentication failed.
///
/// Each variant has a stable machine-readable [`code`](AuthError::code), used
/// as the close reason, the JSON error body and the metric label. No message,
/// code or detail ever contains a token, an `Authorization` value or a raw
/// `Sec-WebSocket-Protocol` value: details are static strings chosen by the
/// crate.
///
/// | code | HTTP | close | meaning |
/// |---|---|---|---|
/// | `token_missing` | 401 | 4401 | no credentials anywhere |
/// | `token_malformed` | 401 | 4401 | not a compact JWS, bad base64, bad JSON, `crit` |
/// | `token_too_large` | 431 | 4400 | longer than the limit, refused before decoding |
/// | `credentials_ambiguous` | 400 | 4400 | two tokens, or header and subprotocol naming different users |
/// | `signature_invalid` | 401 | 4401 | bad signature, or no configured key for its `kid` |
/// | `algorithm_not_allowed` | 401 | 4401 | `alg` not in the configured list (`none` never is) |
/// | `token_expired` | 401 | 4401 | `exp` passed (beyond the leeway) |
/// | `token_not_yet_valid` | 401 | 4401 | `nbf` in the future (beyond the leeway) |
/// | `claim_invalid` | 401 | 4401 | `iss`, `aud`, `iat`, `exp` format, or the user claim is wrong |
/// | `origin_not_allowed` | 403 | 4403 | `Origin` not on the allow-list |
/// | `protocol_invalid` | 400 | 4400 | bad `Sec-WebSocket-Protocol` grammar, token without marker |
/// | `token_in_query` | 400 | 4400 | a token in the query string while that source is off |
/// | `forbidden` | 403 | 4403 | the application refuses this user (revoked, banned) |
/// | `auth_timeout` | 408 | 4408 | authentication did not finish in time |
/// | `user_mismatch` | 403 | 4403 | a re-authentication token names another user |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credentials were found in any enabled source.
    #[error(
        "no credentials: send `Authorization: Bearer <token>` or the subprotocols `jwt-auth, jwt.<token>`"
    )]
    TokenMissing,
    /// The token is not a well-formed compact JWS.
    #[error("token is malformed: {0}")]
    TokenMalformed(&'static str),
    /// The token is longer than the configured limit; nothing was decoded.
    #[error("token is longer than the limit of {limit} bytes")]
    TokenTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request carries more than one token, or two tokens for
    /// different users: the server refuses to pick.
    #[error("credentials are ambiguous: {0}")]
    CredentialsAmbiguous(&'static str),
    /// The signature does not verify, or no configured key matches.
    #[error("token signature is invalid")]
    SignatureInvalid,
    /// The token's algorithm is not one the configuration allows.
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// The token has expired: refresh it and reconnect.
    #[error("token has expired")]
    TokenExpired,
    /// The token's `nbf` is in the future.
    #[error("token is not valid yet")]
    TokenNotYetValid,
    /// A claim is missing or wrong; the detail names which.
    #[error("token claim is invalid: {0}")]
    ClaimInvalid(&'static str),
    /// The request's `Origin` is not on the allow-list.
    #[error("origin is not allowed")]
    OriginNotAllowed,
    /// The `Sec-WebSocket-Protocol` offer is malformed.
    #[error("subprotocol offer is invalid: {0}")]
    ProtocolInvalid(&'static str),
    /// A token was sent in the query string, which is off: query strings
    /// end up in access logs.
    #[error("tokens in the query string are not accepted (they leak into access logs)")]
    TokenInQuery,
    /// The application refuses this user (revoked, banned): do not retry.
    #[error("forbidden")]
    Forbidden,
    /// Authentication did not finish within the deadline.
    #[error("authentication timed out")]
    Timeout,
    /// A re-authentication token names another user than the one the
    /// connection is bound to: a connection never changes user.
    #[error("the token names another user than the connection's")]
    UserMismatch,
}

impl AuthError {
    /// The stable code; see the table on [`AuthError`].
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::TokenMissing => "token_missing",
            AuthError::TokenMalformed(_) => "token_malformed",
            AuthError::TokenTooLarge { .. } => "token_too_large",
            AuthError::CredentialsAmbiguous(_) => "credentials_ambiguous",
            AuthError::SignatureInvalid => "signature_invalid",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenNotYetValid => "token_not_yet_valid",
            AuthError::ClaimInvalid(_) => "claim_invalid",
            AuthError::OriginNotAllowed => "origin_not_allowed",
            AuthError::ProtocolInvalid(_) => "protocol_invalid",
            AuthError::TokenInQuery => "token_in_query",
            AuthError::Forbidden => "forbidden",
            AuthError::Timeout => "auth_timeout",
            AuthError::UserMismatch => "user_mismatch",
        }
    }

    /// Whether the request itself is malformed (rather than its
    /// credentials failing): such a request never gets the upgrade.
    pub fn is_malformed_request(&self) -> bool {
        matches!(
            self,
            AuthError::CredentialsAmbiguous(_)
                | AuthError::ProtocolInvalid(_)
                | AuthError::TokenInQuery
                | AuthError::TokenTooLarge { .. }
        )
    }

    /// The HTTP status when the upgrade is refused; see the table on
    /// [`AuthError`].
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::TokenTooLarge { .. } => 431,
            AuthError::CredentialsAmbiguous(_)
            | AuthError::ProtocolInvalid(_)
            | AuthError::TokenInQuery => 400,
            AuthError::OriginNotAllowed | AuthError::Forbidden | AuthError::UserMismatch => 403,
            AuthError::Timeout => 408,
            AuthError::TokenMissing
            | AuthError::TokenMalformed(_)
            | AuthError::SignatureInvalid
            | AuthError::AlgorithmNotAllowed
            | AuthError::TokenExpired
            | AuthError::TokenNotYetValid
            | AuthError::ClaimInvalid(_) => 401,
        }
    }

    /// The `WWW-Authenticate` value to send with a 401 (RFC 6750): bare
    /// `Bearer` when no token was sent, `Bearer error="invalid_token"` when
    /// one failed. `None` for every other status.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match (self, self.http_status()) {
            (AuthError::TokenMissing, _) => Some("Bearer"),
            (_, 401) => Some("Bearer error=\"invalid_token\""),
            _ => None,
        }
    }

    /// The close frame when the failure surfaces after the upgrade: 4401
    /// (refresh the token, reconnect), 4403 (do not reconnect), 4408 (timed
    /// out), 4400 (fix the client); the reason is [`code`](AuthError::code).
    pub fn close_frame(&self) -> CloseFrame {
        let code = match self.http_status() {
            401 => CloseCode::UNAUTHENTICATED,
            403 => CloseCode::FORBIDDEN,
            408 => CloseCode::AUTH_TIMEOUT,
            _ => CloseCode::APP_PROTOCOL_ERROR,
        };
        CloseFrame::new(code, CloseReason::from_static(self.code()))
    }
}

/// Where an authentication failure reaches the client.
///
/// A browser cannot read the HTTP status of a refused upgrade (it sees close
/// 1006 and retries with the same dead token), so a browser-style
/// subprotocol token that fails validation is better refused *after* the
/// upgrade, with a close code the page can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Surface {
    /// Refuse the upgrade with [`AuthError::http_status`] (and
    /// [`AuthError::www_authenticate`] on a 401).
    BeforeUpgrade,
    /// Complete the upgrade, echoing `subprotocol`, then close at once with
    /// [`AuthError::close_frame`].
    AfterUpgrade {
        /// The marker subprotocol to echo (a client that offered protocols
        /// fails the handshake in Chromium if none is echoed).
        subprotocol: Option<String>,
    },
}

/// An [`AuthError`] and where it surfaces: what an
/// [`Authenticator`](super::Authenticator) returns on failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct AuthFailure {
    /// Why.
    pub error: AuthError,
    /// Where the client learns of it.
    pub surface: Surface,
}

impl AuthFailure {
    /// A failure refused before the upgrade.
    pub fn before_upgrade(error: AuthError) -> Self {
        AuthFailure {
            error,
            surface: Surface::BeforeUpgrade,
        }
    }

    /// A failure reported after the upgrade, echoing `subprotocol`.
    pub fn after_upgrade(error: AuthError, subprotocol: Option<String>) -> Self {
        AuthFailure {
            error,
            surface: Surface::AfterUpgrade { subprotocol },
        }
    }
}

impl From<AuthError> for AuthFailure {
    /// Refused before the upgrade: the right default for any failure that
    /// is not a browser's subprotocol token failing validation.
    fn from(error: AuthError) -> Self {
        AuthFailure::before_upgrade(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_a_valid_close_reason_and_the_table_holds() {
        let all = [
            (AuthError::TokenMissing, 401, 4401),
            (AuthError::TokenMalformed("x"), 401, 4401),
            (AuthError::TokenTooLarge { limit: 1 }, 431, 4400),
            (AuthError::CredentialsAmbiguous("x"), 400, 4400),
            (AuthError::SignatureInvalid, 401, 4401),
            (AuthError::AlgorithmNotAllowed, 401, 4401),
            (AuthError::TokenExpired, 401, 4401),
            (AuthError::TokenNotYetValid, 401, 4401),
            (AuthError::ClaimInvalid("x"), 401, 4401),
            (AuthError::OriginNotAllowed, 403, 4403),
            (AuthError::ProtocolInvalid("x"), 400, 4400),
            (AuthError::TokenInQuery, 400, 4400),
            (AuthError::Forbidden, 403, 4403),
            (AuthError::Timeout, 408, 4408),
            (AuthError::UserMismatch, 403, 4403),
        ];
        for (e, status, close) in all {
            assert_eq!(e.http_status(), status, "{e:?}");
            let frame = e.close_frame();
            assert_eq!(frame.code.as_u16(), close, "{e:?}");
            assert_eq!(frame.reason.as_str(), e.code());
            assert!(CloseReason::new(e.code()).is_some());
            assert_eq!(e.www_authenticate().is_some(), status == 401, "{e:?}");
        }
    }
}
