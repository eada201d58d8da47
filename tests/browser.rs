//! A real browser against the axum demo server: headless Chromium (Debian's
//! `/usr/bin/chromium`, installed by `scripts/test.sh`), driven over the
//! DevTools protocol with the crate's own tokio-tungstenite client.
//!
//! Behind the `browser-tests` feature so plain `cargo test` needs no
//! browser; `scripts/test.sh` runs it (`--all-features`). Without Chromium
//! the tests fail with the command that installs it. With the `redis`
//! feature too, a test runs two nodes on one `redis-server` (installed by
//! `scripts/test.sh`, started as `tests/redis_server` does) and moves the
//! client from one to the other mid-run.
//!
//! The DevTools driving is in `tests/browser/cdp.rs`, the demo page's
//! helpers in `tests/browser/page.rs`.
//!
//! `WS_LIFECYCLE_SCREENSHOT=docs/demo.png cargo test --all-features --test
//! browser` also writes the README's screenshot: an agent run whose
//! connection was dropped half-way, resumed (`recovered: true`) and shown
//! whole, each event's `off` once.
//!
//! The page is the demo's own (`examples/common/demo.html`) with the
//! browser client (`client/ws-lifecycle.js`, served at `/client.js`); the
//! tests drive it through its buttons and read its event log, waiting on
//! DOM changes (a `MutationObserver`), never on fixed sleeps.

#![cfg(all(
    feature = "browser-tests",
    feature = "axum",
    feature = "tungstenite",
    feature = "jwt"
))]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[path = "../examples/common/axum_app.rs"]
mod axum_app;
#[path = "../examples/common/chat.rs"]
mod chat;
#[allow(dead_code)] // the listening helpers are the examples'
#[path = "../examples/common/server.rs"]
mod server;

#[path = "browser/cdp.rs"]
mod cdp;
#[path = "browser/page.rs"]
mod page;
#[cfg(feature = "redis")]
mod redis_server;
#[cfg(feature = "redis")]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cdp::Browser;
use page::{Line, client_options, connect_as, events, log_lines, when};
use serde_json::json;
use ws_lifecycle::Hub;
use ws_lifecycle::adapters::axum::{AxumTransport, WsUpgrade};
use ws_lifecycle::auth::Authenticator;
use ws_lifecycle::close::{CloseCode, CloseFrame, CloseReason};
use ws_lifecycle::id::UserId;

const SECRET: &str = "browser test secret, 32 bytes or more";
const AGENT_EVENTS: [&str; 5] = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
];

/// The demo server as `examples/axum_chat.rs` serves it; `/node` answers
/// `node`.
async fn demo_server(hub: Hub, node: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = axum_app::serve(listener, hub, SECRET, node, std::future::pending()).unwrap();
    tokio::spawn(serving);
    addr
}

/// The demo server (the adapter reads `since`, so reconnects resume); its
/// first `expired_tokens` answers of `/demo-token` are tokens that expired an
/// hour ago, so that a connect is refused with 4401 (`token_expired`).
async fn resuming_server(hub: Hub, expired_tokens: usize) -> SocketAddr {
    use axum::extract::Query;
    use axum::routing::{any, get};
    use std::collections::HashMap;

    let demo = axum_app::router(hub.clone(), SECRET, "single node").unwrap();
    let auth = server::demo_authenticator(SECRET).unwrap();
    let app = Arc::new(chat::ChatApp::new(hub.clone()));
    let serving_hub = hub.clone();
    let ws =
        any(move |upgrade: WsUpgrade| async move { upgrade.serve(&serving_hub, &auth, app).await });
    let expired = Arc::new(AtomicUsize::new(expired_tokens));
    let tokens = get(move |Query(q): Query<HashMap<String, String>>| async move {
        let user = q.get("user").cloned().unwrap_or_default();
        let fresh = expired
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err();
        axum::Json(json!({ "token": token(&user, if fresh { 3600 } else { -3600 }) }))
    });
    let router = axum::Router::new()
        .route("/ws", ws)
        .route("/demo-token", tokens)
        .fallback_service(demo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ws_lifecycle::adapters::ServeConfig::from(hub.config());
    tokio::spawn(ws_lifecycle::adapters::axum::serve(
        listener,
        router,
        config,
        std::future::pending(),
    ));
    addr
}

/// The same app, but `/ws` is a deliberately broken server: it
/// authenticates the subprotocol token and upgrades WITHOUT echoing the
/// marker subprotocol, as too many servers do.
async fn non_echoing_server(hub: Hub) -> SocketAddr {
    use axum::extract::ws::WebSocketUpgrade;
    use axum::http::HeaderMap;
    use axum::routing::get;
    use ws_lifecycle::auth::HandshakeRequest;

    let demo = axum_app::router(hub.clone(), SECRET, "single node").unwrap();
    let auth = Arc::new(server::demo_authenticator(SECRET).unwrap());
    let app = Arc::new(chat::ChatApp::new(hub.clone()));
    let broken = get(
        move |upgrade: WebSocketUpgrade, headers: HeaderMap| async move {
            let mut request = HandshakeRequest::builder();
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.to_str().unwrap_or_default());
            }
            let outcome = auth.authenticate(&request.build().unwrap()).await.unwrap();
            // No `.protocols([...])`: the marker is not echoed.
            upgrade.on_upgrade(move |socket| async move {
                let transport = AxumTransport::new(socket, 64 * 1024);
                hub.serve(transport, outcome, &*app).await;
            })
        },
    );
    // `/ws` is the broken one; everything else (page, tokens) is the demo's.
    let router = axum::Router::new()
        .route("/ws", broken)
        .fallback_service(demo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// An HS256 token for `user` under the test's secret, expiring
/// `expires_in` seconds from now (negative: expired).
fn token(user: &str, expires_in: i64) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({ "sub": user, "exp": i64::try_from(now).unwrap() + expires_in });
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame::new(
        CloseCode::new(code).unwrap(),
        CloseReason::new(reason).unwrap(),
    )
}

/// The page resumed without asking the app to resync, and shows each of
/// the run's offsets once, in order, with the run's events in order.
fn assert_the_run_once_in_order(lines: &[Line]) {
    assert!(
        lines.iter().all(|l| l.resync.is_none()),
        "nothing to resync: {lines:?}"
    );
    let run: Vec<(&str, u64)> = (lines
        .iter()
        .filter(|l| AGENT_EVENTS.contains(&l.kind.as_str())))
    .map(|l| (l.kind.as_str(), l.off.unwrap()))
    .collect();
    let expected: Vec<(&str, u64)> = AGENT_EVENTS.into_iter().zip(1..).collect();
    assert_eq!(run, expected, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_in_chromium_each_see_only_their_own_agent_run_in_order() {
    let hub = Hub::new();
    let addr = demo_server(hub.clone(), "single node").await;
    let mut browser = Browser::launch().await;
    let url = format!("http://{addr}/");
    let alice = browser.open(&url).await;
    let bob = browser.open(&url).await;
    // The page talks through the client module, served at /client.js.
    let module = browser
        .eval(&alice, "performance.getEntriesByType('resource').some(e => new URL(e.name).pathname === '/client.js')")
        .await;
    assert_eq!(module, true, "the demo page loads the client module");
    // A cookie with non-ASCII text, which Chromium sends as raw UTF-8 on
    // the upgrade: it must not cost the upgrade (`src/adapters` docs).
    let cookies = browser
        .eval(
            &alice,
            "document.cookie = 'theme=sépia; path=/'; document.cookie",
        )
        .await;
    assert_eq!(cookies, "theme=sépia");
    connect_as(&mut browser, &alice, "alice").await;
    connect_as(&mut browser, &bob, "bob").await;
    let ready = when("document.getElementById('status').textContent === 'ready'");
    browser.eval(&alice, &ready).await;
    browser.eval(&bob, &ready).await;

    // Alice starts a run; Bob messages Alice, then Alice messages Bob.
    browser.eval(&alice, "document.getElementById('text').value = 'plan a trip'; document.getElementById('run').click(); true").await;
    let five =
        when("document.querySelectorAll('#events li[data-type=agent_completed]').length === 1");
    browser.eval(&alice, &five).await;
    browser.eval(&alice, "document.getElementById('to').value = 'bob'; document.getElementById('text').value = 'hi bob'; document.getElementById('send').click(); true").await;
    browser
        .eval(
            &bob,
            &when("document.querySelectorAll('#events li[data-type=message]').length === 1"),
        )
        .await;

    let alice_events = events(&mut browser, &alice).await;
    let expected: Vec<(String, u64)> = std::iter::once("ready")
        .chain(AGENT_EVENTS)
        .zip(1..)
        .map(|(t, seq)| (t.to_owned(), seq))
        .collect();
    assert_eq!(
        alice_events, expected,
        "alice: the five agent events, in order, gap-free"
    );
    let bob_events = events(&mut browser, &bob).await;
    assert_eq!(
        bob_events,
        [("ready".to_owned(), 1), ("message".to_owned(), 2)],
        "bob saw only his own frames"
    );
    let echoed = browser
        .eval(
            &bob,
            "document.querySelector('#events li[data-type=message] .detail').textContent",
        )
        .await;
    assert_eq!(echoed, "alice: hi bob");

    assert_eq!(hub.metrics().isolation_refusals, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_refuses_a_server_that_does_not_echo_the_subprotocol() {
    let hub = Hub::new();
    let addr = non_echoing_server(hub.clone()).await;
    let mut browser = Browser::launch().await;
    let tab = browser.open(&format!("http://{addr}/")).await;
    connect_as(&mut browser, &tab, "alice").await;
    // Chromium fails the handshake: the page sees close 1006, never ready.
    browser
        .eval(
            &tab,
            &when("document.getElementById('status').textContent.startsWith('closed 1006')"),
        )
        .await;
    assert!(
        events(&mut browser, &tab).await.is_empty(),
        "nothing arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_run_resumes_and_the_page_shows_the_run_once_in_order() {
    let hub = Hub::new();
    let addr = resuming_server(hub.clone(), 0).await;
    let mut browser = Browser::launch().await;
    let tab = browser.open(&format!("http://{addr}/")).await;
    // The reconnect after the drop waits 0.7 s: long enough for the run
    // (an event every 0.5 s) to go on without a connection, so the resume
    // has something to replay.
    client_options(
        &mut browser,
        &tab,
        &json!({ "backoff": { "base": 700, "cap": 700, "min": 700 } }),
    )
    .await;
    connect_as(&mut browser, &tab, "alice").await;
    browser
        .eval(
            &tab,
            &when("document.getElementById('status').textContent === 'ready'"),
        )
        .await;
    browser.eval(&tab, "document.getElementById('text').value = 'plan a trip'; document.getElementById('step').value = '500'; document.getElementById('run').click(); true").await;
    // Two events in, the page drops its connection: the server ends it
    // without a close frame (`ConnectionHandle::terminate`).
    browser
        .eval(
            &tab,
            &when("document.querySelector('#events li.frame[data-type=agent_thinking]')"),
        )
        .await;
    browser
        .eval(&tab, "document.getElementById('drop').click(); true")
        .await;
    browser
        .eval(&tab, &when("document.querySelectorAll('#events li.frame[data-type=agent_completed]').length === 1 && document.querySelectorAll('#events li.frame[data-type=ready]').length === 2"))
        .await;

    let lines = log_lines(&mut browser, &tab).await;
    let readies: Vec<Option<&str>> = (lines.iter().filter(|l| l.kind == "ready"))
        .map(|l| l.recovered.as_deref())
        .collect();
    assert_eq!(
        readies,
        [Some("false"), Some("true")],
        "a fresh connect, then a recovered resume: {lines:?}"
    );
    let drop_note = lines.iter().position(|l| {
        l.kind == "client"
            && l.state.as_deref() == Some("reconnecting")
            && l.code.as_deref() == Some("1006")
    });
    assert!(
        drop_note.is_some(),
        "the page saw the drop as 1006: {lines:?}"
    );
    // What came before the drop, the replay, then live.
    assert_the_run_once_in_order(&lines);
    // The run went on while the connection was gone: some of it came
    // after the drop, all of it after the second ready.
    let second_ready = lines.iter().rposition(|l| l.kind == "ready").unwrap();
    assert!(
        drop_note.unwrap() < second_ready
            && lines[second_ready..]
                .iter()
                .any(|l| l.kind == "agent_completed"),
        "{lines:?}"
    );

    if let Ok(path) = std::env::var("WS_LIFECYCLE_SCREENSHOT") {
        let shot = browser
            .call(
                Some(&tab),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await;
        std::fs::write(&path, cdp::base64_decode(shot["data"].as_str().unwrap())).unwrap();
    }
    assert_eq!(hub.metrics().isolation_refusals, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_in_chromium_4401_refreshes_4429_waits_the_slow_backoff_4403_stops() {
    let hub = Hub::new();
    // The page's first token has expired.
    let addr = resuming_server(hub.clone(), 1).await;
    let mut browser = Browser::launch().await;
    let tab = browser.open(&format!("http://{addr}/")).await;
    const SLOW_MIN_MS: f64 = 400.0;
    client_options(
        &mut browser,
        &tab,
        &json!({
            "backoff": { "base": 50, "cap": 50, "min": 0 },
            "slowBackoff": { "base": 600, "cap": 600, "min": SLOW_MIN_MS },
        }),
    )
    .await;
    let carol = UserId::new("carol").unwrap();
    let ready = |n: usize| {
        when(&format!(
            "document.getElementById('status').textContent === 'ready' && document.querySelectorAll('#events li.frame[data-type=ready]').length === {n}"
        ))
    };

    // 4401: the client asks the provider for a fresh token and reconnects
    // at once, without the page doing anything.
    connect_as(&mut browser, &tab, "carol").await;
    browser.eval(&tab, &ready(1)).await;
    let lines = log_lines(&mut browser, &tab).await;
    let refused = lines
        .iter()
        .find(|l| l.state.as_deref() == Some("reconnecting"));
    assert_eq!(
        refused.and_then(|l| l.code.as_deref()),
        Some("4401"),
        "{lines:?}"
    );
    let tokens = browser
        .eval(&tab, "[document.getElementById('tokens').dataset.count, document.getElementById('tokens').dataset.last]")
        .await;
    assert_eq!(
        tokens,
        json!(["2", "unauthorized"]),
        "one refused token, one fresh"
    );

    // 4429: the next attempt waits at least the slow backoff, measured in
    // the page between the close and the next connect.
    assert_eq!(
        hub.disconnect_user(&carol, close_frame(4429, "rate_limited"))
            .unwrap(),
        1
    );
    browser.eval(&tab, &ready(2)).await;
    let waited = browser
        .eval(
            &tab,
            "(() => {
                const notes = [...document.querySelectorAll('#events li.client')];
                const close = notes.findIndex(li => li.dataset.state === 'reconnecting' && li.dataset.code === '4429');
                const next = notes.slice(close + 1).find(li => li.dataset.state === 'connecting');
                return [Number(next.dataset.at) - Number(notes[close].dataset.at), Number(notes[close].dataset.delay)];
            })()",
        )
        .await;
    let (waited, planned) = (waited[0].as_f64().unwrap(), waited[1].as_f64().unwrap());
    assert!(
        (SLOW_MIN_MS..=600.0).contains(&planned),
        "the planned delay is the slow schedule's: {planned} ms"
    );
    // A timer fires no earlier than asked; 2 ms for the clock's coarsening.
    assert!(
        waited >= planned - 2.0,
        "waited {waited} ms, planned {planned} ms"
    );

    // 4403: no reconnect, and the page shows why.
    assert_eq!(
        hub.disconnect_user(&carol, close_frame(4403, "revoked"))
            .unwrap(),
        1
    );
    browser
        .eval(
            &tab,
            &when("document.getElementById('status').textContent === 'closed 4403 revoked'"),
        )
        .await;
    let lines = log_lines(&mut browser, &tab).await;
    let stopped = lines.last().unwrap();
    assert_eq!(
        (
            stopped.state.as_deref(),
            stopped.code.as_deref(),
            stopped.reason.as_deref()
        ),
        (Some("closed"), Some("4403"), Some("revoked")),
        "{lines:?}"
    );
    // Nothing signals a reconnect that does not happen: give it ten times
    // the ordinary backoff's cap, then check none was attempted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = log_lines(&mut browser, &tab).await;
    assert_eq!(
        after.len(),
        lines.len(),
        "no reconnect after 4403: {after:?}"
    );
    assert!(hub.connections_of(&carol).is_empty());
}

/// Two nodes of one cluster on one `redis-server`: each a hub on its own
/// `RedisBackplane` (one cluster key), serving the demo on its own port.
/// The page comes from node B and its client is given both nodes, A first.
/// A run starts on A; two events in, A shuts down (1012 `restart`). The
/// client moves to B and resumes there with `since`: the user's stream is
/// in Redis, so B replays what the run sent meanwhile (the run goes on, it
/// is the user's), and the page shows the run whole, each `off` once.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shut_down_mid_run_hands_the_client_to_the_other_node_which_resumes_the_run() {
    use redis_server::{RedisServer, config, node_with};
    use ws_lifecycle::config::HubConfig;

    let redis = RedisServer::start().await;
    let (hub_a, backplane_a) = node_with(config(&redis.url()), HubConfig::default()).await;
    let (hub_b, backplane_b) = node_with(config(&redis.url()), HubConfig::default()).await;
    let a = demo_server(hub_a.clone(), backplane_a.node_id()).await;
    let b = demo_server(hub_b.clone(), backplane_b.node_id()).await;
    let mut browser = Browser::launch().await;
    let tab = browser.open(&format!("http://{b}/")).await;
    // The reconnect after the 1012 waits 0.7 s, so the run (an event every
    // 0.5 s) sends one while the client has no connection: B replays it.
    client_options(
        &mut browser,
        &tab,
        &json!({
            "url": [format!("ws://{a}/ws"), format!("ws://{b}/ws")],
            "backoff": { "base": 700, "cap": 700, "min": 700 },
        }),
    )
    .await;
    let dana = UserId::new("dana").unwrap();
    connect_as(&mut browser, &tab, "dana").await;
    browser
        .eval(
            &tab,
            &when("document.getElementById('status').textContent === 'ready'"),
        )
        .await;
    assert_eq!(hub_a.connections_of(&dana).len(), 1, "the first URL: A");
    assert!(hub_b.connections_of(&dana).is_empty());

    browser.eval(&tab, "document.getElementById('text').value = 'plan a trip'; document.getElementById('step').value = '500'; document.getElementById('run').click(); true").await;
    browser
        .eval(
            &tab,
            &when("document.querySelector('#events li.frame[data-type=agent_thinking]')"),
        )
        .await;
    let report = hub_a.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (report.connections, report.forced),
        (1, 0),
        "A closed the page's connection with 1012: {report:?}"
    );
    browser
        .eval(&tab, &when("document.querySelectorAll('#events li.frame[data-type=agent_completed]').length === 1 && document.querySelectorAll('#events li.frame[data-type=ready]').length === 2"))
        .await;

    // The client is on B now, on the connection of the page's last ready.
    let on_b = hub_b.connections_of(&dana);
    let shown = browser
        .eval(&tab, "document.getElementById('conn').textContent")
        .await;
    assert_eq!(on_b.len(), 1);
    assert_eq!(shown, on_b[0].id().as_str(), "the page's connection is B's");
    assert!(hub_a.connections_of(&dana).is_empty());

    let lines = log_lines(&mut browser, &tab).await;
    let readies: Vec<Option<&str>> = (lines.iter().filter(|l| l.kind == "ready"))
        .map(|l| l.recovered.as_deref())
        .collect();
    assert_eq!(
        readies,
        [Some("false"), Some("true")],
        "a fresh connect on A, then a recovered resume on B: {lines:?}"
    );
    let restart = lines.iter().position(|l| {
        l.kind == "client"
            && l.state.as_deref() == Some("reconnecting")
            && (l.code.as_deref(), l.reason.as_deref()) == (Some("1012"), Some("restart"))
    });
    let second_ready = lines.iter().rposition(|l| l.kind == "ready").unwrap();
    assert!(
        restart.is_some_and(|at| at < second_ready),
        "the page saw A's 1012 restart, then B's ready: {lines:?}"
    );
    // Two from A, then B's replay, then B's live events.
    assert_the_run_once_in_order(&lines);
    assert!(
        lines[second_ready..].iter().any(|l| l.replayed)
            && lines[..second_ready].iter().all(|l| !l.replayed),
        "B replayed what the run sent while the client moved: {lines:?}"
    );
    assert_eq!(hub_b.metrics().isolation_refusals, 0);
}
