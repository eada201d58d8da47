//! Credential expiry on a live connection.
//!
//! A connection authenticated with credentials that expire is told
//! `reauth_required` [`reauth_ahead`](crate::config::HubConfig::reauth_ahead)
//! before they do. The client answers `{"type":"reauth","token":"…"}`; a
//! valid token for the *same* user extends the connection (`reauth_ok`), a
//! token for another user closes it with 4403 `user_mismatch` (a connection
//! never changes user), an invalid one gets `reauth_failed` with its code.
//! Without a valid re-authentication the connection is closed with 4401
//! `token_expired` once the expiry plus
//! [`expiry_grace`](crate::config::HubConfig::expiry_grace) has passed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::time::Instant;

use crate::auth::{AuthError, TokenVerifier};
use crate::close::CloseCause;
use crate::event::{Event, EventName};
use crate::handle::ConnectionHandle;
use crate::metrics::Metrics;

/// What a connection knows about its credentials' expiry.
pub(crate) struct Expiry {
    /// `None` once a re-authentication brought credentials that do not
    /// expire: nothing is scheduled any more.
    expires_at: Option<SystemTime>,
    verifier: Option<Arc<dyn TokenVerifier>>,
    warned: bool,
}

impl Expiry {
    pub(crate) fn new(expires_at: SystemTime, verifier: Option<Arc<dyn TokenVerifier>>) -> Self {
        Expiry {
            expires_at: Some(expires_at),
            verifier,
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

    /// Handles an inbound text frame if it is a re-authentication message
    /// and this connection can verify one; `None` means "not for us".
    pub(crate) fn on_message(
        &mut self,
        text: &str,
        conn: &ConnectionHandle,
        metrics: &Metrics,
    ) -> Option<Result<(), CloseCause>> {
        let verifier = self.verifier.as_ref()?;
        let token = reauth_token(text)?;
        let verified = verifier.verify_token(&token).and_then(|outcome| {
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
                Some(Ok(()))
            }
            Err(error) => {
                metrics.auth_failure(error.code());
                tracing::info!(code = error.code(), "re-authentication failed");
                if error == AuthError::UserMismatch {
                    return Some(Err(CloseCause::AuthFailed(error.close_frame())));
                }
                emit(
                    conn,
                    "reauth_failed",
                    serde_json::json!({ "code": error.code() }),
                );
                Some(Ok(()))
            }
        }
    }
}

/// The token of a `{"type":"reauth","token":"…"}` message, if `text` is one.
fn reauth_token(text: &str) -> Option<String> {
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
