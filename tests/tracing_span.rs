//! The `ws_connection` span an operator filters on: it names the
//! connection, the adapter that served it, its peer and (once bound) its
//! user, and every event the crate logs about the connection is inside it.
//! Checked with a capturing `tracing_subscriber::Layer` over real sockets
//! (axum, warp, tokio-tungstenite) and over the in-memory transport.
//!
//! Each test installs its subscriber for its own thread and runs on a
//! current-thread runtime, so every task of its connection (the reader, the
//! writer, the adapter's) logs into it, and nothing of another test does.

#![cfg(all(feature = "axum", feature = "warp", feature = "tungstenite"))]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};
use ws_lifecycle::adapters::{self, ServeConfig};
use ws_lifecycle::auth::{AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::id::{ConnectionId, UserId};
use ws_lifecycle::transport::memory;
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

// ---------------------------------------------------------------------------
// The capturing layer.

type FieldMap = BTreeMap<String, String>;

/// One event: its target, its message, and the fields of every span it is
/// inside, innermost first.
#[derive(Debug, Clone)]
struct Captured {
    target: String,
    message: String,
    scopes: Vec<(String, FieldMap)>,
}

impl Captured {
    /// The fields of the enclosing `ws_connection` span, if any.
    fn connection_span(&self) -> Option<&FieldMap> {
        self.scopes
            .iter()
            .find(|(name, _)| name == "ws_connection")
            .map(|(_, fields)| fields)
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

/// A span's fields as recorded so far, kept in its extensions.
struct SpanFields(FieldMap);

struct Visitor<'a>(&'a mut FieldMap);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = FieldMap::new();
        attrs.record(&mut Visitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut Visitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = FieldMap::new();
        event.record(&mut Visitor(&mut fields));
        let scopes = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<SpanFields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default();
                        (span.name().to_owned(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            target: event.metadata().target().to_owned(),
            message: fields.remove("message").unwrap_or_default(),
            scopes,
        });
    }
}

impl Capture {
    /// Installs the layer for this thread (the test's runtime).
    fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let subscriber = Registry::default().with(capture.clone());
        (capture, tracing::subscriber::set_default(subscriber))
    }

    /// The crate's own events, in order.
    fn crate_events(&self) -> Vec<Captured> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.target.starts_with("ws_lifecycle"))
            .cloned()
            .collect()
    }
}

/// What every test asserts: the crate logged its lifecycle events, every
/// one of them inside the span of connection `id`, and that span carries
/// the expected fields (`peer` absent when `None`).
fn assert_span(
    capture: &Capture,
    id: &ConnectionId,
    adapter: &str,
    peer: Option<SocketAddr>,
    user: &str,
) {
    let events = capture.crate_events();
    for message in ["state transition", "connection ended"] {
        assert!(
            events.iter().any(|e| e.message == message),
            "no {message:?} event in {events:#?}"
        );
    }
    for event in &events {
        let span = event
            .connection_span()
            .unwrap_or_else(|| panic!("an event outside the connection's span: {event:#?}"));
        assert_eq!(
            span.get("connection_id").map(String::as_str),
            Some(id.as_str()),
            "{event:#?}"
        );
        assert_eq!(
            span.get("adapter").map(String::as_str),
            Some(adapter),
            "{event:#?}"
        );
        assert_eq!(
            span.get("peer"),
            peer.map(|p| p.to_string()).as_ref(),
            "{event:#?}"
        );
    }
    // The user is recorded at authentication: the end carries it.
    let ended = events
        .iter()
        .find(|e| e.message == "connection ended")
        .and_then(Captured::connection_span)
        .unwrap();
    assert_eq!(ended.get("user_id").map(String::as_str), Some(user));
}

// ---------------------------------------------------------------------------
// The application side.

/// Hands each connection's id to the test once it is routable.
struct Report(mpsc::UnboundedSender<ConnectionId>);

impl Handler for Report {
    async fn on_ready(&self, conn: &ConnectionHandle) -> Result<(), CloseFrame> {
        let _ = self.0.send(conn.id().clone());
        Ok(())
    }

    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

/// Admits the user named in the `x-user` header.
#[derive(Clone)]
struct HeaderUser;

impl Authenticator for HeaderUser {
    async fn authenticate(&self, request: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
        let user = request.header("x-user").unwrap_or("nobody");
        Ok(AuthOutcome::from(UserId::new(user).unwrap()))
    }
}

/// Connects to `ws://addr/ws` as `user`; returns the client and the address
/// the server sees it from.
async fn connect(
    addr: SocketAddr,
    user: &str,
) -> (tokio_tungstenite::WebSocketStream<TcpStream>, SocketAddr) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-user", HeaderValue::from_str(user).unwrap());
    let (client, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    (client, local)
}

/// Runs one connection through a real server at `addr` to its end, then
/// checks the span.
async fn one_connection(
    hub: &Hub,
    addr: SocketAddr,
    ids: &mut mpsc::UnboundedReceiver<ConnectionId>,
    capture: &Capture,
    adapter: &str,
) {
    let (mut client, local) = connect(addr, "alice").await;
    let id = ids.recv().await.unwrap();
    client.close(None).await.unwrap();
    while client.next().await.is_some() {}
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
    assert_span(capture, &id, adapter, Some(local), "alice");
}

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn an_axum_connection_span_names_its_peer_and_adapter() {
    let (capture, _guard) = Capture::install();
    let hub = Hub::new();
    let (tx, mut ids) = mpsc::unbounded_channel();
    let app = Arc::new(Report(tx));
    let router = {
        let hub = hub.clone();
        axum::Router::new().route(
            "/ws",
            axum::routing::any(move |upgrade: adapters::axum::WsUpgrade| {
                let (hub, app) = (hub.clone(), Arc::clone(&app));
                async move { upgrade.serve(&hub, &HeaderUser, app).await }
            }),
        )
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig::from(hub.config());
    tokio::spawn(adapters::axum::serve(
        listener,
        router,
        config,
        std::future::pending(),
    ));
    one_connection(&hub, addr, &mut ids, &capture, "axum").await;
}

#[tokio::test]
async fn a_warp_connection_span_names_its_peer_and_adapter() {
    use warp::Filter;
    let (capture, _guard) = Capture::install();
    let hub = Hub::new();
    let (tx, mut ids) = mpsc::unbounded_channel();
    let app = Arc::new(Report(tx));
    let filter = {
        let hub = hub.clone();
        warp::path("ws").and(adapters::warp::upgrade()).then(
            move |upgrade: adapters::warp::WarpUpgrade| {
                let (hub, app) = (hub.clone(), Arc::clone(&app));
                async move { upgrade.serve(&hub, &HeaderUser, app).await }
            },
        )
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig::from(hub.config());
    tokio::spawn(adapters::warp::serve(
        listener,
        filter,
        config,
        std::future::pending(),
    ));
    one_connection(&hub, addr, &mut ids, &capture, "warp").await;
}

#[tokio::test]
async fn a_tungstenite_connection_span_names_its_peer_and_adapter() {
    let (capture, _guard) = Capture::install();
    let hub = Hub::new();
    let (tx, mut ids) = mpsc::unbounded_channel();
    let app = Arc::new(Report(tx));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let hub = hub.clone();
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            let served =
                adapters::tungstenite::serve(stream, Some(peer), &hub, &HeaderUser, &*app).await;
            served.unwrap()
        });
    }
    one_connection(&hub, addr, &mut ids, &capture, "tungstenite").await;
}

#[tokio::test]
async fn a_connection_driven_by_hand_is_adapter_none_without_a_peer() {
    let (capture, _guard) = Capture::install();
    let hub = Hub::new();
    let (tx, mut ids) = mpsc::unbounded_channel();
    let (transport, mut client) = memory::pair(16);
    let alice = UserId::new("alice").unwrap();
    let handler = Report(tx);
    let serving = hub.serve(transport, alice, &handler);
    let test = async {
        let id = ids.recv().await.unwrap();
        client.close(None).await;
        id
    };
    let (report, id) = tokio::join!(serving, test);
    assert_eq!(&report.connection_id, &id);
    assert_span(&capture, &id, "none", None, "alice");
}

#[tokio::test]
async fn a_connection_authenticated_after_the_upgrade_by_hand_records_the_requests_peer() {
    let (capture, _guard) = Capture::install();
    let hub = Hub::new();
    let (tx, mut ids) = mpsc::unbounded_channel();
    let (transport, mut client) = memory::pair(16);
    let peer: SocketAddr = "192.0.2.7:50123".parse().unwrap();
    let request = HandshakeRequest::builder()
        .header("x-user", "bob")
        .peer_addr(peer)
        .build()
        .unwrap();
    let handler = Report(tx);
    let serving = hub.serve_with_auth(transport, &request, &HeaderUser, &handler);
    let test = async {
        let id = ids.recv().await.unwrap();
        client.close(None).await;
        id
    };
    let (report, id) = tokio::join!(serving, test);
    assert_eq!(&report.connection_id, &id);
    assert_span(&capture, &id, "none", Some(peer), "bob");
}

/// What other tasks log about a connection is in its span too: a sender
/// that overflows a connection's queue (policy `Close`) logs "outbox full"
/// from its own task, inside the connection's span, and `assert_span`
/// checks every crate event, that one included.
#[tokio::test]
async fn an_overflow_logged_by_the_sender_is_inside_the_connections_span() {
    use ws_lifecycle::config::{BufferLimit, SlowConsumerPolicy};
    use ws_lifecycle::event::{Event, EventName};
    let (capture, _guard) = Capture::install();
    let mut config = ws_lifecycle::config::HubConfig::default();
    config.outbound_queue = BufferLimit::new(2, 1 << 20);
    config.slow_consumer = SlowConsumerPolicy::Close;
    let hub = Hub::builder().config(config).build().unwrap();
    let (tx, mut ids) = mpsc::unbounded_channel();
    // The client never reads, and its side holds one frame: the writer
    // blocks, the queue fills, the third send overflows it.
    let (transport, _client) = memory::pair(1);
    let carol = UserId::new("carol").unwrap();
    let handler = Report(tx);
    let serving = hub.serve(transport, carol.clone(), &handler);
    let test = async {
        let id = ids.recv().await.unwrap();
        let event = Event::custom(EventName::new("e").unwrap(), serde_json::json!(1));
        let mut overflowed = false;
        for _ in 0..8 {
            let delivery = hub.send_to_user(&carol, &event).unwrap();
            if delivery.refused > 0 {
                overflowed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(overflowed, "the queue never overflowed");
        id
    };
    let (report, id) = tokio::join!(serving, test);
    assert_eq!(&report.connection_id, &id);
    let events = capture.crate_events();
    assert!(
        events
            .iter()
            .any(|e| e.message == "outbox full: closing connection"),
        "no overflow warning in {events:#?}"
    );
    assert_span(&capture, &id, "none", None, "carol");
}
