//! Credential expiry on a live connection.
//!
//! A connection authenticated with credentials that expire is told
//! `reauth_required` [`reauth_ahead`](crate::config::HubConfig::reauth_ahead)
//! before they do. The client answers `{"type":"reauth","token":"…"}`, and
//! the [`Authenticator`] the connection was admitted with decides
//! ([`Authenticator::reauthenticate`]: by default its whole `authenticate`
//! decision, so an application's ban or revocation check runs again). A
//! valid token for the *same* user extends the connection (`reauth_ok`); a
//! token for another user closes it with 4403 `user_mismatch` (a
//! connection never changes user); a refusal whose close code is 4403
//! (`forbidden`: banned, revoked) closes it with that frame; any other
//! refusal gets `reauth_failed` with its code. Without a valid
//! re-authentication the connection is closed with 4401 `token_expired`
//! once the expiry plus
//! [`expiry_grace`](crate::config::HubConfig::expiry_grace) has passed.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::time::Instant;

use crate::auth::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
use crate::close::{CloseCause, CloseCode};
use crate::event::{Event, EventName};
use crate::handle::ConnectionHandle;
use crate::metrics::Metrics;

/// A boxed re-authentication decision.
pub(crate) type Decision<'a> =
    Pin<Box<dyn Future<Output = Result<AuthOutcome, AuthFailure>> + Send + 'a>>;

/// The authenticator a connection was admitted with, type-erased for the
/// reader loop.
pub(crate) trait Reauthenticate: Send + Sync {
    /// Decides a re-authentication with `token`.
    fn reauthenticate<'a>(&'a self, token: &'a str) -> Decision<'a>;
}

/// An [`Authenticator`] and the request it admitted a connection with
/// (without its credentials): everything a re-authentication needs.
pub(crate) struct Admission<A> {
    authenticator: A,
    request: HandshakeRequest,
}

impl<A: Authenticator> Admission<A> {
    /// What a connection admitted by `authenticator` from `request` keeps,
    /// when `auth` admitted it with credentials that expire (anything else
    /// never re-authenticates, so nothing is kept).
    pub(crate) fn keep<E>(
        authenticator: A,
        request: &HandshakeRequest,
        auth: &Result<AuthOutcome, E>,
    ) -> Option<Self> {
        auth.as_ref()
            .is_ok_and(|outcome| outcome.expires_at.is_some())
            .then(|| Admission {
                authenticator,
                request: request.without_credentials(),
            })
    }
}

impl<A: Authenticator> Reauthenticate for Admission<A> {
    fn reauthenticate<'a>(&'a self, token: &'a str) -> Decision<'a> {
        Box::pin(self.authenticator.reauthenticate(&self.request, token))
    }
}

/// What a connection knows about its credentials' expiry.
pub(crate) struct Expiry {
    /// `None` once a re-authentication brought credentials that do not
    /// expire: nothing is scheduled any more.
    expires_at: Option<SystemTime>,
    warned: bool,
}

impl Expiry {
    pub(crate) fn new(expires_at: SystemTime) -> Self {
        Expiry {
            expires_at: Some(expires_at),
            warned: false,
        }
    }

    /// The next moment something must happen: the warning, then the close.
    pub(crate) fn deadline(&self, ahead: Duration, grace: Duration) -> Option<Instant> {
        let expires_at = self.expires_at?;
        Some(if self.warned {
            instant_of(expires_at, grace, true)
        } else {
            instant_of(expires_at, ahead, false)
        })
    }

    /// The deadline passed: warn the first time, close the second.
    pub(crate) fn on_deadline(&mut self, conn: &ConnectionHandle) -> Option<CloseCause> {
        if self.warned {
            return Some(CloseCause::AuthFailed(
                AuthError::TokenExpired.close_frame(),
            ));
        }
        self.warned = true;
        let payload = serde_json::json!({ "expires_at": self.expires_at.map(unix_secs) });
        emit(conn, "reauth_required", payload);
        None
    }

    /// Re-authenticates with `token` (from a `reauth` message) through
    /// `authenticator`, within `timeout`: `Ok` keeps the connection (the
    /// client was told `reauth_ok` or `reauth_failed`), `Err` closes it.
    pub(crate) async fn reauthenticate(
        &mut self,
        token: &str,
        authenticator: &dyn Reauthenticate,
        timeout: Duration,
        conn: &ConnectionHandle,
        metrics: &Metrics,
    ) -> Result<(), CloseCause> {
        let decided = tokio::time::timeout(timeout, authenticator.reauthenticate(token))
            .await
            .unwrap_or_else(|_| Err(AuthError::Timeout.into()));
        let verified = decided
            .map_err(|failure| failure.error)
            .and_then(|outcome| {
                if &outcome.user == conn.user() {
                    Ok(outcome)
                } else {
                    Err(AuthError::UserMismatch)
                }
            });
        match verified {
            Ok(outcome) => {
                // The new credentials replace the old ones, expiry included:
                // credentials that do not expire cancel the deadline.
                self.expires_at = outcome.expires_at;
                self.warned = false;
                let payload = serde_json::json!({ "expires_at": self.expires_at.map(unix_secs) });
                emit(conn, "reauth_ok", payload);
                Ok(())
            }
            Err(error) => {
                metrics.auth_failure(error.code());
                tracing::info!(code = error.code(), "re-authentication failed");
                let frame = error.close_frame();
                // 4403: do not retry (another user, banned, revoked …).
                if frame.code == CloseCode::FORBIDDEN {
                    return Err(CloseCause::AuthFailed(frame));
                }
                emit(
                    conn,
                    "reauth_failed",
                    serde_json::json!({ "code": error.code() }),
                );
                Ok(())
            }
        }
    }
}

/// The token of a `{"type":"reauth","token":"…"}` message, if `text` is one.
pub(crate) fn reauth_token(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Reauth {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        token: String,
    }
    // Cheap pre-check: most frames are application traffic.
    if !text.contains("\"reauth\"") {
        return None;
    }
    let message: Reauth = serde_json::from_str(text).ok()?;
    (message.kind == "reauth").then_some(message.token)
}

/// The token of a `{"type":"auth","token":"…"}` first message.
pub(crate) fn auth_token(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Auth {
        #[serde(rename = "type")]
        kind: String,
        token: String,
    }
    let message: Auth = serde_json::from_str(text).ok()?;
    (message.kind == "auth").then_some(message.token)
}

fn emit(conn: &ConnectionHandle, name: &str, payload: serde_json::Value) {
    if let Ok(name) = EventName::new(name) {
        // A full or closing connection is already being dealt with by its
        // overflow policy; the refusal is counted there.
        let _ = conn.emit(Event::custom(name, payload));
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `t ± offset` as a Tokio instant (`now` if that is in the past).
fn instant_of(t: SystemTime, offset: Duration, add: bool) -> Instant {
    let target = if add {
        t.checked_add(offset)
    } else {
        t.checked_sub(offset)
    };
    let now = Instant::now();
    match target.and_then(|target| target.duration_since(SystemTime::now()).ok()) {
        Some(wait) => now
            .checked_add(wait)
            .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        None => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reauth_messages_are_intercepted() {
        assert_eq!(
            reauth_token(r#"{"type":"reauth","token":"a.b.c"}"#).as_deref(),
            Some("a.b.c")
        );
        assert_eq!(reauth_token(r#"{"type":"chat","text":"\"reauth\""}"#), None);
        assert_eq!(reauth_token("reauth"), None);
        assert_eq!(
            auth_token(r#"{"type":"auth","token":"a.b.c"}"#).as_deref(),
            Some("a.b.c")
        );
        assert_eq!(auth_token(r#"{"type":"auth"}"#), None);
    }
}
