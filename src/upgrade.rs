//! The one upgrade policy every adapter applies: check the handshake's own
//! grammar, authenticate, then refuse with an HTTP status or upgrade (echoing
//! the marker subprotocol), exactly as `docs/auth.md` describes.
//!
//! Framework-free: an adapter turns its request into a [`HandshakeRequest`],
//! calls [`decide`], and maps the [`Decision`] onto its framework's response
//! and upgrade calls. Writing an adapter for another stack means doing only
//! that.

use crate::auth::{AuthError, AuthOutcome, Authenticator, HandshakeRequest, Surface};
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::reauth::{Admission, Reauthenticate};
use crate::connection::{Adapter, Connection, Origin};
use crate::hub::Slot;
use crate::transport::Transport;
use crate::{CloseReport, Handler, Hub};

/// An upgrade refused with an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusal {
    /// The status: 400, 401, 403, 408, 426, 431 or 503.
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

    /// 400 `since_invalid`: the `since` query parameter is malformed (see
    /// [`HandshakeRequest::since`]).
    pub(crate) fn since_invalid() -> Self {
        Refusal::new(400, "since_invalid")
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
    /// Complete the upgrade echoing [`Admitted::subprotocol`] (when
    /// `Some`), then [`Admitted::serve`] the socket.
    Upgrade(Admitted),
}

/// An upgrade [`decide`] admitted. It holds one of the hub's connection
/// places ([`max_connections`](crate::config::HubConfig::max_connections))
/// from the decision on, so parallel upgrades can never overshoot the cap;
/// dropping it (the HTTP upgrade failed, the client left) gives the place
/// back.
#[must_use = "an admitted upgrade holds a connection place until it is served or dropped"]
pub struct Admitted {
    subprotocol: Option<String>,
    auth: Admit,
    slot: Slot,
    /// The adapter and the peer, for the connection's span.
    origin: Origin,
}

/// How an admitted upgrade authenticates.
enum Admit {
    /// Decided at the upgrade: who, or why the connection closes at once.
    Decided(Result<AuthOutcome, AuthError>),
    /// The handshake carried no credentials and the authenticator allows
    /// them in the first message. The upgrade permit stays held until that
    /// message is decided, so sockets that never authenticate count against
    /// [`max_upgrades_in_flight`](crate::config::HubConfig::max_upgrades_in_flight)
    /// (and their place against `max_connections`) for at most
    /// [`auth_timeout`](crate::config::HubConfig::auth_timeout).
    FirstMessage(OwnedSemaphorePermit),
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Admit::Decided(Ok(_)) => "authenticated",
            Admit::Decided(Err(_)) => "refused after the upgrade",
            Admit::FirstMessage(_) => "first message",
        };
        f.debug_struct("Admitted")
            .field("subprotocol", &self.subprotocol)
            .field("auth", &auth)
            .finish_non_exhaustive()
    }
}

impl Admitted {
    /// The subprotocol to echo in the upgrade response: the marker, never a
    /// token.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Serves the upgraded socket on `hub` (the hub [`decide`] admitted it
    /// on): the connection's whole life for an authenticated upgrade, an
    /// immediate close with the error's close frame (counted, never routed)
    /// for one refused after the upgrade, or first-message authentication
    /// (within [`auth_timeout`](crate::config::HubConfig::auth_timeout),
    /// then 4408) when the handshake carried no credentials and
    /// `authenticator` allows it.
    ///
    /// `request` and `authenticator` are the ones [`decide`] was given: a
    /// connection whose credentials expire re-authenticates in-band through
    /// `authenticator` ([`Authenticator::reauthenticate`]), so the
    /// application's whole decision (a ban list, a revocation check) applies
    /// to every fresh token, not only the first.
    pub async fn serve<T: Transport, A: Authenticator, H: Handler>(
        self,
        hub: &Hub,
        transport: T,
        request: &HandshakeRequest,
        authenticator: &A,
        handler: &H,
    ) -> CloseReport {
        self.prepare(authenticator, request)
            .accept(hub, transport)
            .serve(hub, handler)
            .await
    }

    /// Keeps what serving will need from the authenticator and the request:
    /// for credentials that expire, the authenticator and the request
    /// without its credentials (re-authentication); for first-message
    /// authentication, both whole; otherwise nothing.
    pub(crate) fn prepare<A: Authenticator>(
        self,
        authenticator: A,
        request: &HandshakeRequest,
    ) -> Prepared<A> {
        let mode = match self.auth {
            // Boxed: the connection's future carries this for its whole
            // life, and most connections never re-authenticate.
            Admit::Decided(auth) => Mode::Decided {
                reauth: Admission::keep(authenticator, request, &auth).map(Box::new),
                auth,
            },
            Admit::FirstMessage(permit) => Mode::FirstMessage {
                authenticator,
                request: Box::new(request.clone()),
                permit,
            },
        };
        Prepared {
            slot: self.slot,
            mode,
            origin: self.origin,
        }
    }
}

/// An admitted upgrade with what serving it needs, waiting for its socket.
pub(crate) struct Prepared<A> {
    slot: Slot,
    mode: Mode<A>,
    origin: Origin,
}

enum Mode<A> {
    Decided {
        auth: Result<AuthOutcome, AuthError>,
        reauth: Option<Box<Admission<A>>>,
    },
    FirstMessage {
        authenticator: A,
        request: Box<HandshakeRequest>,
        permit: OwnedSemaphorePermit,
    },
}

impl<A: Authenticator> Prepared<A> {
    /// Mints the connection in the admitted place (its span naming the
    /// adapter and the peer) and takes the transport;
    /// the adapters do this before they build the connection's future, so
    /// the socket is not carried in its state.
    pub(crate) fn accept<T: Transport>(self, hub: &Hub, transport: T) -> Upgraded<T, A> {
        Upgraded {
            conn: hub.connect_in(self.slot, self.origin).accept(transport),
            mode: self.mode,
        }
    }
}

/// An admitted connection with its transport, ready to be served.
pub(crate) struct Upgraded<T: Transport, A> {
    conn: Connection<crate::connection::Accepted<T>>,
    mode: Mode<A>,
}

impl<T: Transport, A: Authenticator> Upgraded<T, A> {
    pub(crate) async fn serve<H: Handler>(self, hub: &Hub, handler: &H) -> CloseReport {
        match self.mode {
            Mode::Decided { auth, reauth } => {
                let reauth = reauth.as_deref().map(|a| a as &dyn Reauthenticate);
                hub.serve_accepted(self.conn, auth, reauth, handler).await
            }
            Mode::FirstMessage {
                authenticator,
                request,
                permit,
            } => {
                hub.serve_first_message(self.conn, &request, &authenticator, permit, handler)
                    .await
            }
        }
    }
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

/// Checks the handshake, reads the `since` query parameter (400
/// `since_invalid` when it is malformed, see [`HandshakeRequest::since`];
/// refused before admission, so nothing is counted or authenticated),
/// admits (503 `server_busy` past
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
    decide_via(hub, method, request, authenticator, Adapter::None).await
}

/// [`decide`] for one of the crate's adapters, which names itself in the
/// connection's span.
pub(crate) async fn decide_via<A: Authenticator>(
    hub: &Hub,
    method: &str,
    request: &HandshakeRequest,
    authenticator: &A,
    adapter: Adapter,
) -> Decision {
    match check_handshake(method, request) {
        Ok(()) => decide_unchecked(hub, request, authenticator, adapter).await,
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// A request that passed [`check_handshake`], for the adapters that check
/// early (to refuse before their framework does): it decides without
/// checking again.
#[cfg(any(feature = "axum", feature = "warp"))]
#[derive(Debug)]
pub(crate) struct Checked(HandshakeRequest, Adapter);

#[cfg(any(feature = "axum", feature = "warp"))]
impl Checked {
    /// Checks `method` and `request` ([`check_handshake`]), received by
    /// `adapter`.
    pub(crate) fn new(
        method: &str,
        request: HandshakeRequest,
        adapter: Adapter,
    ) -> Result<Self, Refusal> {
        check_handshake(method, &request).map(|()| Checked(request, adapter))
    }

    /// The request.
    pub(crate) fn request(&self) -> &HandshakeRequest {
        &self.0
    }

    /// [`decide`], without the check this request already passed.
    pub(crate) async fn decide<A: Authenticator>(&self, hub: &Hub, authenticator: &A) -> Decision {
        decide_unchecked(hub, &self.0, authenticator, self.1).await
    }
}

/// [`decide`] after the check: only through it and [`Checked::decide`].
async fn decide_unchecked<A: Authenticator>(
    hub: &Hub,
    request: &HandshakeRequest,
    authenticator: &A,
    adapter: Adapter,
) -> Decision {
    let origin = Origin::of(adapter, request);
    // The resume position, before admission: a malformed one is the
    // client's mistake, refused without taking a place or authenticating.
    let since = match request.since() {
        Ok(since) => since,
        Err(error) => {
            tracing::debug!(code = error.code(), "upgrade refused: malformed since");
            return Decision::Refuse(Refusal::since_invalid());
        }
    };
    // Admission, before any other work on the request: a bounded number of
    // upgrades in progress, an optional cap on connections, and none while
    // shutting down. Refused fast, so overload sheds load.
    let admission = hub.admission();
    let Some(in_flight) = admission.upgrade_permit() else {
        return Decision::Refuse(busy(hub));
    };
    // The place is taken here, atomically against the cap: a burst of
    // parallel upgrades cannot all see room and overshoot it.
    let Some(slot) = Slot::take(admission, hub.config().max_connections) else {
        return Decision::Refuse(busy(hub));
    };
    if admission.closing().is_some() {
        return Decision::Refuse(busy(hub));
    }
    let deadline = hub.config().auth_timeout;
    let outcome = tokio::time::timeout(deadline, authenticator.authenticate(request))
        .await
        .unwrap_or_else(|_| Err(AuthError::Timeout.into()));
    match outcome {
        Ok(mut outcome) => {
            // The client's resume request, unless the authenticator chose
            // a position itself.
            if outcome.since.is_none() {
                outcome.since = since;
            }
            Decision::Upgrade(Admitted {
                subprotocol: outcome.selected_subprotocol.clone(),
                auth: Admit::Decided(Ok(outcome)),
                slot,
                origin,
            })
        }
        // No credentials in the handshake, and the authenticator takes them
        // in the first message: upgrade, and authenticate in band, still
        // under admission control.
        Err(failure)
            if failure.error == AuthError::TokenMissing && authenticator.first_message_auth() =>
        {
            Decision::Upgrade(Admitted {
                subprotocol: None,
                auth: Admit::FirstMessage(in_flight),
                slot,
                origin,
            })
        }
        Err(failure) => match failure.surface {
            Surface::AfterUpgrade { subprotocol } => Decision::Upgrade(Admitted {
                subprotocol,
                auth: Admit::Decided(Err(failure.error)),
                slot,
                origin,
            }),
            // `Surface` is non-exhaustive: anything else is refused.
            _ => {
                let _report = hub.connect_from(origin).refuse(&failure.error);
                Decision::Refuse(Refusal::from(&failure.error))
            }
        },
    }
}

/// Counts an upgrade refused with 503, and returns the refusal.
fn busy(hub: &Hub) -> Refusal {
    hub.count_upgrade_refused();
    Refusal::busy()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Position;

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

    /// Admits alice, counting its calls; resumes at `since` when set.
    #[derive(Default)]
    struct Alice {
        calls: std::sync::atomic::AtomicUsize,
        since: Option<Position>,
    }

    impl Authenticator for Alice {
        async fn authenticate(
            &self,
            _: &HandshakeRequest,
        ) -> Result<AuthOutcome, crate::auth::AuthFailure> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut outcome = AuthOutcome::new(crate::id::UserId::new("alice").unwrap());
            outcome.since = self.since.clone();
            Ok(outcome)
        }
    }

    fn with_query(query: &str) -> HandshakeRequest {
        let mut builder = HandshakeRequest::builder().query(query);
        for (name, value) in GOOD {
            builder = builder.header(name, value);
        }
        builder.build().unwrap()
    }

    /// The position an admitted upgrade carries into its connection.
    async fn since_of(hub: &Hub, query: &str, auth: &Alice) -> Option<Position> {
        match decide(hub, "GET", &with_query(query), auth).await {
            Decision::Upgrade(Admitted {
                auth: Admit::Decided(Ok(outcome)),
                ..
            }) => outcome.since,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_malformed_since_is_refused_before_admission_and_authentication() {
        let hub = Hub::new();
        let auth = Alice::default();
        for query in ["since=e:+1", "since=", "since=e:1&since=e:1", "since=%zz"] {
            let Decision::Refuse(refusal) = decide(&hub, "GET", &with_query(query), &auth).await
            else {
                panic!("{query}: not refused");
            };
            assert_eq!(
                (refusal.status, refusal.body()),
                (400, r#"{"error":"since_invalid"}"#.to_owned()),
                "{query}"
            );
        }
        assert_eq!(auth.calls.load(std::sync::atomic::Ordering::Relaxed), 0);
        let metrics = hub.metrics();
        assert_eq!(metrics.upgrades_refused, 0);
        assert_eq!(metrics.auth_failures.values().sum::<u64>(), 0);
        assert_eq!(hub.connection_count(), 0);
    }

    #[tokio::test]
    async fn an_admitted_upgrade_carries_its_since() {
        let hub = Hub::new();
        let e3 = Position::parse_since("e:3").ok();
        assert_eq!(
            since_of(&hub, "room=1&since=e%3A3", &Alice::default()).await,
            e3
        );
        assert_eq!(since_of(&hub, "room=1", &Alice::default()).await, None);
        // A position the authenticator chose itself is kept.
        let mine = Alice {
            since: Position::parse_since("mine:1").ok(),
            ..Alice::default()
        };
        assert_eq!(since_of(&hub, "since=e:3", &mine).await, mine.since);
        assert_eq!(since_of(&hub, "", &mine).await, mine.since);
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
