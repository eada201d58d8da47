//! The adapter test suite: every adapter (axum, warp, tungstenite) serves
//! the demo app on a real socket and must pass exactly these cases, so all
//! of them answer every upgrade identically. `adapter_suite!(start)`
//! instantiates them; `start` returns the hub and the address serving `/ws`.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use serde_json::json;
use ws_lifecycle::Hub;
use ws_lifecycle::id::UserId;

use crate::support::tokens::b64url;
use crate::ws_client::{self, Connected, Outcome};

/// The secret every adapter test server trusts.
pub const SECRET: &str = "adapter test secret, 32 bytes or more";

pub fn token(user: &str) -> String {
    crate::server::demo_token(SECRET, &UserId::new(user).unwrap()).unwrap()
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

/// The demo routes besides `/ws`, identical on axum and warp (not part of
/// the suite: the tungstenite example serves `/ws` alone): `/node` names the
/// node for the demo page, `/metrics` ends with the same three gauges.
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
    let names: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(
        names.contains(&"ws_lifecycle_isolation_refusals_total"),
        "{metrics}"
    );
    let tail = names.get(names.len().saturating_sub(3)..).unwrap();
    assert_eq!(
        tail,
        [
            "ws_lifecycle_router_connections",
            "ws_lifecycle_router_users",
            "tokio_alive_tasks"
        ],
        "{metrics}"
    );
}
