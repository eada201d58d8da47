//! Credential expiry on a live connection.
//!
//! A connection authenticated with credentials that expire is told
//! `reauth_required` [`reauth_ahead`](crate::config::HubConfig::reauth_ahead)
//! before they do. The client answers `{"type":"reauth","token":"…"}`, and
//! the [`Authenticator`](crate::auth::Authenticator) the connection was admitted with decides
//! ([`Authenticator::reauthenticate`](crate::auth::Authenticator::reauthenticate): by default its whole `authenticate`
//! decision, so an application's ban or revocation check runs again). A
//! valid token for the *same* user extends the connection (`reauth_ok`); a
//! token for another user closes it with 4403 `user_mismatch` (a
//! connection never changes user); a refusal whose close code is 4403
//! (`forbidden`: banned, revoked) closes it with that frame; any other
//! refusal gets `reauth_failed` with its code. Without a valid
//! re-authentication the connection is closed with 4401 `token_expired`
//! once the expiry plus
//! [`expiry_grace`](crate::config::HubConfig::expiry_grace) has passed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::auth::AuthError;
use crate::auth::reauth::Reauthenticate;
use crate::close::{CloseCause, CloseCode};
use crate::connection::handle::ConnectionHandle;
use crate::event::control::Control;
use crate::metrics::Metrics;

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
        conn.emit_control(Control::ReauthRequired {
            expires_at: self.expires_at.map(unix_secs),
        });
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
                conn.emit_control(Control::ReauthOk {
                    expires_at: self.expires_at.map(unix_secs),
                });
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
                conn.emit_control(Control::ReauthFailed { code: error.code() });
                Ok(())
            }
        }
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
