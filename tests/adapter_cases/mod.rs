//! The adapter test suite: every adapter (axum, warp, tungstenite) serves
//! the demo app on a real socket and must pass exactly these cases, so all
//! of them answer every upgrade identically. `adapter_suite!(start)`
//! instantiates them; `start` returns the hub (from [`hub`]) and the
//! address serving `/ws`.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use ws_lifecycle::Hub;
use ws_lifecycle::config::HubConfig;
use ws_lifecycle::id::UserId;

use crate::support::tokens::b64url;
use crate::ws_client::{self, Connected, Outcome};

/// The secret every adapter test server trusts.
pub const SECRET: &str = "adapter test secret, 32 bytes or more";

pub fn token(user: &str) -> String {
    crate::server::demo_token(SECRET, &UserId::new(user).unwrap()).unwrap()
}

/// The deadline on the upgrade request the suite's servers run with
/// (`HubConfig::upgrade_timeout`, 10 s by default): short, so the
/// slow-request cases end quickly.
pub const UPGRADE_DEADLINE: Duration = Duration::from_secs(1);

/// The hub every suite server serves: the default configuration with the
/// upgrade deadline set to [`UPGRADE_DEADLINE`].
pub fn hub() -> Hub {
    let mut config = HubConfig::default();
    config.upgrade_timeout = UPGRADE_DEADLINE;
    Hub::builder().config(config).build().unwrap()
}

/// One `#[tokio::test]` per case, each on a fresh server from `$start`.
macro_rules! adapter_suite {
    ($start:path) => {
        adapter_cases::adapter_suite!(@cases $start;
            subprotocol_raw_and_base64url_and_header_auth_all_reach_ready,
            a_bad_header_token_is_refused_with_401_before_the_upgrade,
            a_bad_subprotocol_token_is_closed_with_4401_right_after_the_upgrade,
            malformed_upgrades_get_400_or_426,
            an_agent_run_arrives_as_five_events_in_order_with_gap_free_seqs,
            users_are_isolated_and_every_connection_of_a_user_gets_every_message,
            header_values_in_utf8_are_accepted_and_other_bytes_refused_with_400,
            a_text_frame_that_is_not_utf8_is_closed_with_1007,
            a_trickled_and_a_silent_upgrade_request_are_closed_at_the_deadline,
            aborted_and_malformed_upgrades_are_not_logged_as_errors,
            a_peer_gone_without_a_close_frame_ends_as_peer_gone_not_a_protocol_error,
            an_oversized_subprotocol_offer_is_refused_before_the_upgrade,
            a_malformed_since_is_refused_with_400_before_the_upgrade,
            a_valid_since_upgrades_and_reaches_the_connection,
        );
    };
    (@cases $start:path; $($case:ident,)*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (hub, addr) = $start().await;
                adapter_cases::$case(hub, addr).await;
            }
        )*
    };
}
pub(crate) use adapter_suite;

/// Connects as `user` with the browser-style subprotocol pair.
async fn browser(addr: SocketAddr, user: &str) -> Connected {
    let offer = format!("jwt-auth, jwt.{}", token(user));
    match ws_client::connect(addr, &[("Sec-WebSocket-Protocol", &offer)]).await {
        Outcome::Upgraded(c) => c,
        other => panic!("not upgraded: {other:?}"),
    }
}

pub async fn subprotocol_raw_and_base64url_and_header_auth_all_reach_ready(
    hub: Hub,
    addr: SocketAddr,
) {
    let raw = format!("jwt-auth, jwt.{}", token("alice"));
    let b64 = format!("jwt-auth, jwt-auth.{}", b64url(token("bob").as_bytes()));
    let bearer = format!("Bearer {}", token("carol"));
    let cases: [(&str, &str, &str, Option<&str>); 3] = [
        ("Sec-WebSocket-Protocol", &raw, "alice", Some("jwt-auth")),
        ("Sec-WebSocket-Protocol", &b64, "bob", Some("jwt-auth")),
        ("Authorization", &bearer, "carol", None),
    ];
    for (header, value, user, echoed) in cases {
        let Outcome::Upgraded(mut c) = ws_client::connect(addr, &[(header, value)]).await else {
            panic!("{user} not upgraded");
        };
        assert_eq!(c.protocol.as_deref(), echoed, "{user}: echoed subprotocol");
        let ready = c.client.next_json().await;
        assert_eq!(
            (ready["type"].as_str(), ready["user"].as_str()),
            (Some("ready"), Some(user))
        );
        assert_eq!(ready["seq"], 1);
        assert!(
            ready["connection_id"]
                .as_str()
                .unwrap()
                .starts_with("conn_")
        );
        assert!(hub.is_online(&UserId::new(user).unwrap()));
        c.client.close().await;
    }
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
}

pub async fn a_bad_header_token_is_refused_with_401_before_the_upgrade(hub: Hub, addr: SocketAddr) {
    let forged = format!("Bearer {}x", token("alice"));
    let outcome = ws_client::connect(addr, &[("Authorization", &forged)]).await;
    let Outcome::Refused {
        status,
        www_authenticate,
        body,
    } = outcome
    else {
        panic!("upgraded: {outcome:?}");
    };
    assert_eq!(status, 401);
    assert_eq!(
        www_authenticate.as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(body, r#"{"error":"signature_invalid"}"#);
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(
        hub.metrics().auth_failures.get("signature_invalid"),
        Some(&1)
    );
    assert_eq!(hub.metrics().connections.get("failed"), Some(&1));
}

pub async fn a_bad_subprotocol_token_is_closed_with_4401_right_after_the_upgrade(
    hub: Hub,
    addr: SocketAddr,
) {
    let offer = format!("jwt-auth, jwt.{}x", token("alice"));
    let Outcome::Upgraded(mut c) =
        ws_client::connect(addr, &[("Sec-WebSocket-Protocol", &offer)]).await
    else {
        panic!("not upgraded");
    };
    assert_eq!(
        c.protocol.as_deref(),
        Some("jwt-auth"),
        "the marker, never the token"
    );
    assert_eq!(
        c.client.next_close().await,
        Some((4401, "signature_invalid".to_owned()))
    );
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(
        hub.metrics().auth_failures.get("signature_invalid"),
        Some(&1)
    );
}

pub async fn malformed_upgrades_get_400_or_426(_hub: Hub, addr: SocketAddr) {
    let token = token("alice");
    let offer = format!("jwt-auth, jwt.{token}");
    for (request, status) in [
        (
            format!(
                "POST /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"
            ),
            426,
        ),
        (
            format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"
            ),
            400,
        ),
        (
            format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"
            ),
            426,
        ),
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_owned(),
            401,
        ),
    ] {
        assert_eq!(
            ws_client::raw_status(addr, &request).await,
            status,
            "{}",
            request.lines().next().unwrap_or_default()
        );
    }
}

/// More than 16 offered subprotocols, or more than 12 KiB of them, is
/// refused before the upgrade: 400 on every stack (the tungstenite adapter
/// refuses a request head over 16 KiB on its own, with 431). The token is
/// valid: only the offer's size refuses it.
pub async fn an_oversized_subprotocol_offer_is_refused_before_the_upgrade(
    hub: Hub,
    addr: SocketAddr,
) {
    let head = |offer: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {offer}\r\n\r\n"
        )
    };
    let token = token("alice");
    let seventeen: String = (0..16).map(|i| format!("p{i}, ")).collect();
    let seventeen = format!("{seventeen}jwt.{token}");
    assert_eq!(ws_client::raw_status(addr, head(&seventeen)).await, 400);
    let huge: String = (0..10_000).map(|i| format!("p{i}, ")).collect();
    let huge = format!("{huge}jwt.{token}");
    let status = ws_client::raw_status(addr, head(&huge)).await;
    assert!(matches!(status, 400 | 431), "{status}");
    assert_eq!(hub.connection_count(), 0);
}

/// A complete upgrade request for alice (browser-style subprotocol pair,
/// valid token) to `/ws?{query}`.
fn upgrade_request_with_query(query: &str) -> String {
    format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: jwt-auth, jwt.{}\r\n\r\n",
        token("alice")
    )
}

/// A malformed `since` query parameter is refused with 400
/// `since_invalid` before the upgrade, on every adapter, although the
/// token is valid: before admission and authentication, so nothing is
/// counted (no connection, no authentication failure, no 503).
pub async fn a_malformed_since_is_refused_with_400_before_the_upgrade(hub: Hub, addr: SocketAddr) {
    let long_epoch = format!("since={}:1", "a".repeat(65));
    for query in [
        "since=",
        "since=abc",
        "since=e:-1",
        "since=e:%2B1",
        "since=e:18446744073709551616",
        "since=e:1:2",
        &long_epoch,
        "since=e:1&since=e:2",
        "since=%ZZ",
        "room=1&since=e:1%",
        "%73ince=e:x",
    ] {
        assert_eq!(
            ws_client::raw_response(addr, upgrade_request_with_query(query)).await,
            (400, r#"{"error":"since_invalid"}"#.to_owned()),
            "{query:?}"
        );
    }
    hub.idle().await;
    let metrics = hub.metrics();
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(metrics.connections.get("failed").copied().unwrap_or(0), 0);
    assert_eq!(metrics.connections.get("closed").copied().unwrap_or(0), 0);
    assert_eq!(
        metrics.auth_failures.values().sum::<u64>(),
        0,
        "refused before authentication"
    );
    assert_eq!(metrics.upgrades_refused, 0);
}

/// A WebSocket client opened on a URL of its own (the suite's
/// `ws_client::connect` always opens `/ws`).
type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens `ws://addr/ws?{query}` as alice with the browser-style
/// subprotocol pair; panics unless the server answers 101.
async fn browser_with_query(addr: SocketAddr, query: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws?{query}")
        .into_client_request()
        .unwrap();
    let offer = format!("jwt-auth, jwt.{}", token("alice"));
    request
        .headers_mut()
        .insert("sec-websocket-protocol", offer.parse().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap_or_else(|e| panic!("{query:?}: not upgraded: {e}"));
    assert_eq!(response.status().as_u16(), 101, "{query:?}");
    socket
}

/// The next text frame on `socket`, parsed (pings and pongs skipped).
async fn next_json(socket: &mut Socket) -> serde_json::Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no frame within 10 s");
        match message {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(text))) => return serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("not a text frame: {other:?}"),
        }
    }
}

/// A valid `since` upgrades (101) on every adapter and reaches the
/// connection: a resume at the stream's own epoch, with its history
/// covering the gap, says `recovered: true` in the ready frame; one at an
/// epoch the stream never had upgrades too and says `recovered: false`.
pub async fn a_valid_since_upgrades_and_reaches_the_connection(hub: Hub, addr: SocketAddr) {
    let mut alice = browser(addr, "alice").await.client;
    let ready = alice.next_json().await;
    assert_eq!(ready["type"], "ready");
    let epoch = ready["epoch"].as_str().unwrap().to_owned();
    let off = ready["off"].as_u64().unwrap();
    // One event in alice's stream, kept in its history.
    alice
        .send_json(json!({ "type": "publish", "to": "alice", "payload": "kept" }))
        .await;
    let kept = alice.next_json().await;
    assert_eq!(
        (kept["payload"].as_str(), kept["off"].as_u64()),
        (Some("kept"), Some(off + 1)),
        "{kept}"
    );
    alice.close().await;
    hub.idle().await;

    let mut resumed = browser_with_query(addr, &format!("room=1&since={epoch}:{off}")).await;
    let ready = next_json(&mut resumed).await;
    assert_eq!(
        (ready["type"].as_str(), ready["recovered"].as_bool()),
        (Some("ready"), Some(true)),
        "{ready}"
    );
    assert_eq!(ready["epoch"].as_str(), Some(epoch.as_str()), "{ready}");
    assert_eq!(ready["off"].as_u64(), Some(off + 1), "{ready}");
    resumed.close(None).await.unwrap();

    // Percent-encoded, at an epoch the stream never had: upgraded, not
    // recovered.
    let mut other = browser_with_query(addr, "since=an%2Dold%5Fepoch%3A0").await;
    let ready = next_json(&mut other).await;
    assert_eq!(
        (ready["type"].as_str(), ready["recovered"].as_bool()),
        (Some("ready"), Some(false)),
        "{ready}"
    );
    other.close(None).await.unwrap();
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
}

pub async fn an_agent_run_arrives_as_five_events_in_order_with_gap_free_seqs(
    hub: Hub,
    addr: SocketAddr,
) {
    let mut alice = browser(addr, "alice").await.client;
    assert_eq!(alice.next_json().await["type"], "ready");
    alice
        .send_json(json!({ "type": "agent_run", "prompt": "plan a trip" }))
        .await;
    let mut run_id = None;
    for (seq, kind) in (2..).zip([
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_completed",
    ]) {
        let frame = alice.next_json().await;
        assert_eq!(
            (frame["type"].as_str(), frame["seq"].as_u64()),
            (Some(kind), Some(seq))
        );
        let run = frame["run_id"].as_str().unwrap().to_owned();
        assert_eq!(*run_id.get_or_insert(run.clone()), run, "one run");
        assert!(run.starts_with(&format!(
            "run_{}",
            &frame["thread_id"].as_str().unwrap()[7..]
        )));
    }
    alice.close().await;
    hub.idle().await;
}

pub async fn users_are_isolated_and_every_connection_of_a_user_gets_every_message(
    hub: Hub,
    addr: SocketAddr,
) {
    let mut bob = Vec::new();
    for _ in 0..3 {
        let mut c = browser(addr, "bob").await.client;
        assert_eq!(c.next_json().await["type"], "ready");
        bob.push(c);
    }
    let mut alice = browser(addr, "alice").await.client;
    let mut carol = browser(addr, "carol").await.client;
    assert_eq!(alice.next_json().await["type"], "ready");
    assert_eq!(carol.next_json().await["type"], "ready");

    alice
        .send_json(json!({ "type": "publish", "to": "bob", "payload": "for bob only" }))
        .await;
    for c in &mut bob {
        let frame = c.next_json().await;
        assert_eq!(
            (frame["type"].as_str(), frame["from"].as_str()),
            (Some("message"), Some("alice"))
        );
        assert_eq!(
            (frame["payload"].as_str(), frame["seq"].as_u64()),
            (Some("for bob only"), Some(2))
        );
    }
    // Carol's next frame is the one addressed to her: nothing of bob's came first.
    alice
        .send_json(json!({ "type": "publish", "to": "carol", "payload": "hi carol" }))
        .await;
    let frame = carol.next_json().await;
    assert_eq!(
        (frame["payload"].as_str(), frame["seq"].as_u64()),
        (Some("hi carol"), Some(2))
    );

    // Closing one of bob's connections leaves the other two served.
    let mut closed = bob.remove(0);
    closed.close().await;
    alice
        .send_json(json!({ "type": "publish", "to": "bob", "payload": "still there?" }))
        .await;
    for c in &mut bob {
        assert_eq!(c.next_json().await["payload"], "still there?");
    }
    assert_eq!(hub.connections_of(&UserId::new("bob").unwrap()).len(), 2);

    for mut c in bob.into_iter().chain([alice, carol]) {
        c.close().await;
    }
    hub.idle().await;
    assert_eq!((hub.connection_count(), hub.user_count()), (0, 0));
    assert_eq!(hub.metrics().isolation_refusals, 0);
}

/// Header values are read as UTF-8 on every adapter: a browser sends a
/// cookie set with non-ASCII text as raw UTF-8, and an unrelated header
/// must not cost the upgrade. Bytes that are not UTF-8 are refused with 400
/// `upgrade_invalid` before authentication.
pub async fn header_values_in_utf8_are_accepted_and_other_bytes_refused_with_400(
    hub: Hub,
    addr: SocketAddr,
) {
    let bearer = format!("Bearer {}", token("carol"));
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Cookie", "theme=sépia; name=José"),
        ("X-Display-Name", "Zoë 🦀"),
    ];
    let outcome = ws_client::connect(addr, &headers).await;
    let Outcome::Upgraded(mut c) = outcome else {
        panic!("UTF-8 header values: not upgraded: {outcome:?}");
    };
    let ready = c.client.next_json().await;
    assert_eq!(
        (ready["type"].as_str(), ready["user"].as_str()),
        (Some("ready"), Some("carol"))
    );
    c.client.close().await;

    let offer = format!("jwt-auth, jwt.{}", token("alice"));
    for bad in [&b"\xff\xfe"[..], b"caf\xe9", b"\xc3"] {
        let mut request = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {offer}\r\nX-Latin-1: "
        )
        .into_bytes();
        request.extend_from_slice(bad);
        request.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            ws_client::raw_response(addr, &request).await,
            (400, r#"{"error":"upgrade_invalid"}"#.to_owned()),
            "{bad:?}"
        );
    }
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(
        hub.metrics().auth_failures.values().sum::<u64>(),
        0,
        "refused before authentication"
    );
}

/// RFC 6455 section 8.1: a text frame whose payload is not UTF-8 fails the
/// connection with 1007 (invalid frame payload data), on every adapter; the
/// connection ends `Failed` and leaves the routing table.
pub async fn a_text_frame_that_is_not_utf8_is_closed_with_1007(hub: Hub, addr: SocketAddr) {
    for payload in [&b"caf\xe9"[..], b"\xff", b"ok \xed\xa0\x80 (a surrogate)"] {
        let mut alice = browser(addr, "alice").await.client;
        assert_eq!(alice.next_json().await["type"], "ready");
        alice.send_raw_text(payload).await;
        assert_eq!(
            alice.next_close().await,
            Some((1007, "invalid_payload".to_owned())),
            "{payload:?}"
        );
        alice.close().await;
    }
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(hub.metrics().connections.get("failed"), Some(&3));
}

/// A complete, valid upgrade request for alice with the browser-style
/// subprotocol pair.
fn upgrade_request() -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: jwt-auth, jwt.{}\r\n\r\n",
        token("alice")
    )
}

/// Reads `stream` until the server closes it (end of stream, or a reset)
/// and returns how long after `since` that was. Panics after 10 s.
async fn closed_after(mut stream: impl AsyncRead + Unpin, since: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    let closed = async {
        while let Ok(n) = stream.read(&mut buf).await
            && n > 0
        {}
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the server kept the socket open for 10 s");
    since.elapsed()
}

/// Slowloris: the deadline on the upgrade request (the HTTP head) holds on
/// every adapter, as the examples serve it. A client that sends one byte
/// every 250 ms (steady progress, never a whole head in time) and one that
/// sends nothing are both closed once the deadline has passed.
pub async fn a_trickled_and_a_silent_upgrade_request_are_closed_at_the_deadline(
    hub: Hub,
    addr: SocketAddr,
) {
    let started = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    let (trickled, mut trickle) = TcpStream::connect(addr).await.unwrap().into_split();
    // The write half stays alive until aborted: dropping it would send a
    // FIN, which the server may answer by closing early.
    let trickler = tokio::spawn(async move {
        for byte in upgrade_request().bytes() {
            if trickle.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        std::future::pending::<()>().await;
    });
    let (silent, trickled) = tokio::join!(
        closed_after(silent, started),
        closed_after(trickled, started)
    );
    trickler.abort();
    for (client, after) in [("silent", silent), ("trickling", trickled)] {
        assert!(
            after >= UPGRADE_DEADLINE,
            "the {client} client was closed before the deadline: {after:?}"
        );
        assert!(
            after < UPGRADE_DEADLINE * 3,
            "the {client} client was closed {after:?} after it connected"
        );
    }
    assert_eq!(hub.connection_count(), 0);
}

/// An upgrade a client aborts, or a malformed one, is the client's doing,
/// not a server error: anyone can send as many as they like, so none may
/// log at WARN or ERROR (it would let them flood the log).
pub async fn aborted_and_malformed_upgrades_are_not_logged_as_errors(hub: Hub, addr: SocketAddr) {
    let capture = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .without_time()
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .finish();
    // The suite runs on tokio's current-thread runtime, so the server's
    // tasks log on this thread, to this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests of this binary run on other threads with other (or no)
    // subscribers: have every callsite's interest recomputed with this one
    // registered, so none stays cached as "never" from before it existed.
    tracing::callsite::rebuild_interest_cache();

    // A served connection first: the capture sees the server's events.
    let mut alice = browser(addr, "alice").await.client;
    assert_eq!(alice.next_json().await["type"], "ready");
    alice.close().await;
    hub.idle().await;

    let request = upgrade_request();
    // Reset half-way through the head. Nothing tells when the server has
    // seen it, so it goes first and the awaited cases follow.
    let mut reset = TcpStream::connect(addr).await.unwrap();
    reset.set_zero_linger().unwrap();
    reset.write_all(&request.as_bytes()[..40]).await.unwrap();
    drop(reset);
    // Half a head, then the end of the stream; the whole request, then the
    // end of the stream before the answer is read; a malformed head.
    let half = &request.as_bytes()[..request.len() / 2];
    let malformed = b"GET /ws HTTP/1.1\r\nHost x\r\n\r\n";
    for sent in [half, request.as_bytes(), malformed] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        stream.shutdown().await.unwrap();
        closed_after(stream, Instant::now()).await;
    }
    hub.idle().await;

    let output = capture.text();
    assert!(
        output.contains("connection ended"),
        "the capture saw nothing:\n{output}"
    );
    let loud: Vec<&str> = output
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            line.starts_with("ERROR") || line.starts_with("WARN")
        })
        .collect();
    assert!(loud.is_empty(), "logged at WARN or ERROR: {loud:#?}");
}

/// A client whose TCP connection ends without a close frame (a tab killed,
/// a phone off the network) is an abnormal closure (1006), not a protocol
/// error: the cause in the log says `peer_gone`.
pub async fn a_peer_gone_without_a_close_frame_ends_as_peer_gone_not_a_protocol_error(
    hub: Hub,
    addr: SocketAddr,
) {
    let mut alice = browser(addr, "alice").await.client;
    assert_eq!(alice.next_json().await["type"], "ready");
    drop(alice);
    hub.idle().await;
    let closes = hub.metrics().closes;
    assert_eq!(closes.get("peer_gone"), Some(&1), "{closes:?}");
    assert_eq!(closes.get("protocol_error"), None, "{closes:?}");
}

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// `adapters::axum::serve` and `adapters::warp::serve` on shutdown (not part
/// of the suite: the tungstenite example has its own accept loop): once
/// `stop` fires, the server stops accepting, closes its idle connections and
/// returns (`serving` ends), while an upgraded connection, the hub's, is
/// still served.
pub async fn serving_stops_on_shutdown_and_leaves_upgraded_connections_to_the_hub(
    hub: Hub,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
) {
    let mut alice = browser(addr, "alice").await.client;
    assert_eq!(alice.next_json().await["type"], "ready");
    // Idle: a keep-alive connection after its response, and one that has
    // sent nothing yet.
    let mut kept_alive = TcpStream::connect(addr).await.unwrap();
    kept_alive
        .write_all(b"GET /node HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("single node") {
        let mut buf = [0u8; 1024];
        let n = kept_alive.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before its answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let silent = TcpStream::connect(addr).await.unwrap();

    let stopped = Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server did not return within 10 s of its shutdown")
        .unwrap();
    closed_after(kept_alive, stopped).await;
    closed_after(silent, stopped).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after the shutdown"
    );

    alice
        .send_json(json!({ "type": "publish", "to": "alice", "payload": "still here" }))
        .await;
    assert_eq!(alice.next_json().await["payload"], "still here");
    alice.close().await;
    hub.idle().await;
    assert_eq!(hub.connection_count(), 0);
}

/// The demo routes besides `/ws`, identical on axum and warp (not part of
/// the suite: the tungstenite example serves `/ws` alone): `/node` names the
/// node for the demo page, `/metrics` has the same three gauges (and the
/// hub's metrics with the `metrics` feature).
pub async fn demo_routes_name_the_node_and_share_the_metrics(_hub: Hub, addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut answer),
        )
        .await
        .unwrap()
        .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
        body.to_owned()
    }
    let node: serde_json::Value = serde_json::from_str(&get(addr, "/node").await).unwrap();
    assert_eq!(node, json!({ "node": "single node" }));
    let metrics = get(addr, "/metrics").await;
    let types: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    for gauge in [
        "ws_lifecycle_router_connections gauge",
        "ws_lifecycle_router_users gauge",
        "tokio_alive_tasks gauge",
    ] {
        assert!(types.contains(&gauge), "{metrics}");
    }
    // The hub's own, when the crate emits through the facade.
    if cfg!(feature = "metrics") {
        assert!(
            types.contains(&"ws_lifecycle_connections_opened_total counter"),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                "\nws_lifecycle_deliveries_total{outcome=\"refused\",reason=\"misaddressed\"} 0\n"
            ),
            "{metrics}"
        );
    }
}
