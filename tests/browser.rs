//! A real browser against the axum demo server: headless Chromium (Debian's
//! `/usr/bin/chromium`, installed by `scripts/test.sh`), driven over the
//! DevTools protocol with the crate's own tokio-tungstenite client.
//!
//! Behind the `browser-tests` feature so plain `cargo test` needs no
//! browser; `scripts/test.sh` runs it (`--all-features`). Without Chromium
//! the tests fail with the command that installs it.
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

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use ws_lifecycle::Hub;
use ws_lifecycle::adapters::axum::{AxumTransport, WsUpgrade};
use ws_lifecycle::auth::Authenticator;
use ws_lifecycle::close::{CloseCode, CloseFrame, CloseReason};
use ws_lifecycle::id::UserId;

const SECRET: &str = "browser test secret, 32 bytes or more";
const CHROMIUM: &str = "/usr/bin/chromium";
const AGENT_EVENTS: [&str; 5] = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
];

/// The demo server as `examples/axum_chat.rs` serves it.
async fn demo_server(hub: Hub) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving =
        axum_app::serve(listener, hub, SECRET, "single node", std::future::pending()).unwrap();
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

/// A headless Chromium and a DevTools connection to it.
struct Browser {
    _process: Child,
    _profile: TempDir,
    cdp: WebSocketStream<TcpStream>,
    next_id: u64,
}

/// A fresh `--user-data-dir`, removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    async fn launch() -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run scripts/test.sh, or `sudo apt-get install -y chromium`"
        );
        static LAUNCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = format!("ws-lifecycle-chromium-{}-{n}", std::process::id());
        let profile = std::env::temp_dir().join(dir);
        let profile = TempDir(profile);
        let mut process = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1000,720",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium did not start");
        let stderr = process.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited without a DevTools endpoint");
        })
        .await
        .expect("no DevTools endpoint within 60 s");
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let host = endpoint
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let stream = TcpStream::connect(host).await.unwrap();
        let (cdp, _) = tokio_tungstenite::client_async(endpoint.as_str(), stream)
            .await
            .unwrap();
        Browser {
            _process: process,
            _profile: profile,
            cdp,
            next_id: 0,
        }
    }

    /// Sends a DevTools command and waits for its result; events that
    /// arrive meanwhile are handed to `on_event`.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.cdp
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        loop {
            let message = self.recv().await;
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
    }

    async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.cdp.next())
                .await
                .expect("no DevTools message within 60 s")
                .expect("DevTools connection closed")
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }

    /// Opens `url` in a new tab and waits for its load event; returns the
    /// tab's session id.
    async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        self.call(Some(&session), "Page.enable", json!({})).await;
        self.call(Some(&session), "Page.navigate", json!({ "url": url }))
            .await;
        loop {
            let event = self.recv().await;
            if event["method"] == "Page.loadEventFired" && event["sessionId"] == session.as_str() {
                return session;
            }
        }
    }

    /// Evaluates `expression` (awaiting it if it is a promise) in a tab.
    async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }
}

/// Resolves once `condition` (a JS expression) holds, re-checking on every
/// DOM change in the page (no polling), or rejects after 20 s.
fn when(condition: &str) -> String {
    format!(
        "new Promise((resolve, reject) => {{
            const check = () => {{ if ({condition}) {{ observer.disconnect(); resolve(true); return true; }} return false; }};
            const observer = new MutationObserver(check);
            observer.observe(document.body, {{ subtree: true, childList: true, characterData: true, attributes: true }});
            if (!check()) setTimeout(() => {{ observer.disconnect(); reject(new Error('timed out: ' + {condition:?})); }}, 20000);
        }})"
    )
}

/// Connects the tab as `user` with the page's own button.
async fn connect_as(browser: &mut Browser, tab: &str, user: &str) {
    browser
        .eval(tab, &format!("document.getElementById('user').value = {user:?}; document.getElementById('connect').click(); true"))
        .await;
}

/// Sets the client's options for the tab's next connect (the demo page
/// spreads `window.demoClientOptions` into them).
async fn client_options(browser: &mut Browser, tab: &str, options: &Value) {
    browser
        .eval(tab, &format!("window.demoClientOptions = {options}; true"))
        .await;
}

/// The page's event log: (type, seq) per frame.
async fn events(browser: &mut Browser, tab: &str) -> Vec<(String, u64)> {
    let value = browser
        .eval(tab, "[...document.querySelectorAll('#events li.frame')].map(li => [li.dataset.type, Number(li.dataset.seq)])")
        .await;
    serde_json::from_value(value).unwrap()
}

/// One line of the page's log: a frame (`type`, with `off` for events of
/// the user's stream and `recovered` for `ready`), or the client's own
/// note (`type` "client", with the state and close code it reports).
#[derive(Debug, serde::Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    off: Option<u64>,
    recovered: Option<String>,
    state: Option<String>,
    code: Option<String>,
    reason: Option<String>,
    resync: Option<String>,
}

async fn log_lines(browser: &mut Browser, tab: &str) -> Vec<Line> {
    let value = browser
        .eval(
            tab,
            "[...document.querySelectorAll('#events li')].map(li => ({
                type: li.classList.contains('client') ? 'client' : li.dataset.type,
                off: li.dataset.off === undefined ? null : Number(li.dataset.off),
                recovered: li.dataset.recovered ?? null,
                state: li.dataset.state ?? null,
                code: li.dataset.code ?? null,
                reason: li.dataset.reason ?? null,
                resync: li.dataset.resync ?? null,
            }))",
        )
        .await;
    serde_json::from_value(value).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_in_chromium_each_see_only_their_own_agent_run_in_order() {
    let hub = Hub::new();
    let addr = demo_server(hub.clone()).await;
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
    assert!(
        lines.iter().all(|l| l.resync.is_none()),
        "nothing to resync: {lines:?}"
    );
    // Each of the run's offsets once, in order, with the events in order:
    // what came before the drop, the replay, then live.
    let run: Vec<(&str, u64)> = (lines
        .iter()
        .filter(|l| AGENT_EVENTS.contains(&l.kind.as_str())))
    .map(|l| (l.kind.as_str(), l.off.unwrap()))
    .collect();
    let expected: Vec<(&str, u64)> = AGENT_EVENTS.into_iter().zip(1..).collect();
    assert_eq!(run, expected, "{lines:?}");
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
        std::fs::write(&path, base64_decode(shot["data"].as_str().unwrap())).unwrap();
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

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
