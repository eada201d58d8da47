//! The one upgrade policy every adapter applies: check the handshake's own
//! grammar, authenticate, then refuse with an HTTP status or upgrade (echoing
//! the marker subprotocol), exactly as `docs/auth.md` describes.
//!
//! Framework-free: an adapter turns its request into a [`HandshakeRequest`],
//! calls [`decide`], and maps the [`Decision`] onto its framework's response
//! and upgrade calls. Writing an adapter for another stack means doing only
//! that.

use crate::auth::{AuthError, AuthOutcome, Authenticator, HandshakeRequest, Surface};
use crate::reauth::{Admission, Reauthenticate};
use crate::transport::Transport;
use crate::{CloseReport, Handler, Hub};

/// An upgrade refused with an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// The status: 400, 401, 403, 408, 426 or 431.
    pub status: u16,
    /// The stable error code, also the JSON body's `error`.
    pub code: &'static str,
    /// Extra response headers (`WWW-Authenticate` on a 401; `Upgrade` and
    /// `Sec-WebSocket-Version` on a 426).
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Refusal {
    fn new(status: u16, code: &'static str) -> Self {
        Refusal {
            status,
            code,
            headers: Vec::new(),
        }
    }

    pub(crate) fn upgrade_invalid() -> Self {
        Refusal::new(400, "upgrade_invalid")
    }

    /// 503 `server_busy`, with `Retry-After: 1`.
    pub(crate) fn busy() -> Self {
        let mut refusal = Refusal::new(503, "server_busy");
        refusal.headers.push(("Retry-After", "1"));
        refusal
    }

    #[cfg(feature = "tungstenite")]
    pub(crate) fn too_large() -> Self {
        Refusal::new(431, "request_too_large")
    }

    /// The JSON body: `{"error":"<code>"}`. Codes are `[a-z_]`, so no
    /// escaping is needed.
    pub fn body(&self) -> String {
        format!("{{\"error\":\"{}\"}}", self.code)
    }
}

impl From<&AuthError> for Refusal {
    fn from(error: &AuthError) -> Self {
        let mut refusal = Refusal::new(error.http_status(), error.code());
        if let Some(value) = error.www_authenticate() {
            refusal.headers.push(("WWW-Authenticate", value));
        }
        refusal
    }
}

/// What an adapter does with an upgrade request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decision {
    /// Answer with this HTTP response; no upgrade, no connection.
    Refuse(Refusal),
    /// Complete the upgrade echoing `subprotocol` (when `Some`), then hand
    /// the socket and `auth` (with the request and the authenticator, for
    /// re-authentication) to [`serve_upgraded`].
    Upgrade {
        /// The subprotocol to echo: the marker, never a token.
        subprotocol: Option<String>,
        /// Who the connection belongs to, or why it is closed right after
        /// the upgrade.
        auth: Result<AuthOutcome, AuthError>,
    },
}

/// Checks that `method` and `request` form a WebSocket upgrade (RFC 6455
/// section 4.2.1): `GET`, `Connection: upgrade`, `Upgrade: websocket`,
/// `Sec-WebSocket-Version: 13`, and a `Sec-WebSocket-Key` of 16 bytes in
/// base64.
///
/// # Errors
///
/// A [`Refusal`]: 400 `upgrade_invalid` (not GET, bad or missing key), 426
/// `upgrade_required` (not an upgrade, or another protocol version; with
/// `Upgrade: websocket` and `Sec-WebSocket-Version: 13`).
pub fn check_handshake(method: &str, request: &HandshakeRequest) -> Result<(), Refusal> {
    let has_token = |name: &str, token: &str| {
        request
            .header_values(name)
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if method != "GET" {
        return Err(Refusal::upgrade_invalid());
    }
    if !has_token("connection", "upgrade") || !has_token("upgrade", "websocket") {
        return Err(upgrade_required());
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(upgrade_required());
    }
    let key_ok = request
        .header("sec-websocket-key")
        .map(str::trim)
        .is_some_and(|key| key.len() == 24 && key.ends_with("==") && key.bytes().all(is_base64));
    if !key_ok {
        return Err(Refusal::upgrade_invalid());
    }
    Ok(())
}

fn upgrade_required() -> Refusal {
    let mut refusal = Refusal::new(426, "upgrade_required");
    refusal.headers.push(("Upgrade", "websocket"));
    refusal.headers.push(("Sec-WebSocket-Version", "13"));
    refusal
}

fn is_base64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// Checks the handshake, admits (503 `server_busy` past
/// [`max_upgrades_in_flight`](crate::config::HubConfig::max_upgrades_in_flight)
/// or [`max_connections`](crate::config::HubConfig::max_connections), or
/// while the hub shuts down), authenticates (within
/// [`HubConfig::auth_timeout`](crate::config::HubConfig::auth_timeout), then
/// 408 `auth_timeout`), and says what to do. An
/// authentication failure refused here is still counted on `hub` under its
/// code (as a connection that ended `Failed` before its upgrade).
pub async fn decide<A: Authenticator>(
    hub: &Hub,
    method: &str,
    request: &HandshakeRequest,
    authenticator: &A,
) -> Decision {
    if let Err(refusal) = check_handshake(method, request) {
        return Decision::Refuse(refusal);
    }
    // Admission, before any work on the request: a bounded number of
    // upgrades in progress, an optional cap on connections, and none while
    // shutting down. Refused fast, so overload sheds load.
    let env = hub.env();
    let Ok(_in_flight) = env.upgrades.try_acquire() else {
        return Decision::Refuse(hub.count_busy());
    };
    let full = hub
        .config()
        .max_connections
        .is_some_and(|max| env.live.load(std::sync::atomic::Ordering::Acquire) >= max);
    if full || env.closing.lock().is_some() {
        return Decision::Refuse(hub.count_busy());
    }
    let deadline = hub.config().auth_timeout;
    let outcome = tokio::time::timeout(deadline, authenticator.authenticate(request))
        .await
        .unwrap_or_else(|_| Err(AuthError::Timeout.into()));
    match outcome {
        Ok(outcome) => Decision::Upgrade {
            subprotocol: outcome.selected_subprotocol.clone(),
            auth: Ok(outcome),
        },
        Err(failure) => match failure.surface {
            Surface::AfterUpgrade { subprotocol } => Decision::Upgrade {
                subprotocol,
                auth: Err(failure.error),
            },
            // `Surface` is non-exhaustive: anything else is refused.
            _ => {
                let _report = hub.connect().refuse(&failure.error);
                Decision::Refuse(Refusal::from(&failure.error))
            }
        },
    }
}

/// Serves an upgraded socket: the connection's whole life for `Ok`, or an
/// immediate close with the error's close frame (counted, never routed) for
/// `Err`.
///
/// `request` and `authenticator` are the ones [`decide`] was given: a
/// connection whose credentials expire re-authenticates in-band through
/// `authenticator` ([`Authenticator::reauthenticate`]), so the application's
/// whole decision (a ban list, a revocation check) applies to every fresh
/// token, not only the first.
pub async fn serve_upgraded<T: Transport, A: Authenticator, H: Handler>(
    hub: &Hub,
    transport: T,
    request: &HandshakeRequest,
    authenticator: &A,
    auth: Result<AuthOutcome, AuthError>,
    handler: &H,
) -> CloseReport {
    let admission = Admission::keep(authenticator, request, &auth);
    let conn = hub.connect().accept(transport);
    let reauth = admission.as_ref().map(|a| a as &dyn Reauthenticate);
    hub.serve_accepted(conn, auth, reauth, handler).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> HandshakeRequest {
        let mut builder = HandshakeRequest::builder();
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.build().unwrap_or_default()
    }

    const GOOD: [(&str, &str); 4] = [
        ("Connection", "keep-alive, Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn malformed_upgrades_get_400_or_426() {
        assert_eq!(check_handshake("GET", &request(&GOOD)), Ok(()));
        assert_eq!(
            check_handshake("POST", &request(&GOOD)).map_err(|r| r.status),
            Err(400)
        );
        for (drop, status) in [(0, 426), (1, 426), (2, 426), (3, 400)] {
            let headers: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, h)| *h)
                .collect();
            let refused = check_handshake("GET", &request(&headers));
            assert_eq!(refused.map_err(|r| r.status), Err(status), "without {drop}");
        }
        let mut v8 = GOOD;
        v8[2] = ("Sec-WebSocket-Version", "8");
        let refused = check_handshake("GET", &request(&v8));
        assert!(refused.is_err_and(|r| r.headers.contains(&("Sec-WebSocket-Version", "13"))));
        let mut bad_key = GOOD;
        bad_key[3] = ("Sec-WebSocket-Key", "not a key");
        assert_eq!(
            check_handshake("GET", &request(&bad_key)).map_err(|r| r.code),
            Err("upgrade_invalid")
        );
    }

    #[test]
    fn refusal_body_and_headers() {
        let refusal = Refusal::from(&AuthError::SignatureInvalid);
        assert_eq!(
            (refusal.status, refusal.body()),
            (401, r#"{"error":"signature_invalid"}"#.to_owned())
        );
        assert_eq!(
            refusal.headers,
            [("WWW-Authenticate", "Bearer error=\"invalid_token\"")]
        );
    }
}
