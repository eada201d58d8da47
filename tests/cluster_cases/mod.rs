//! Multi-node routing cases any [`Backplane`](ws_lifecycle::backplane::Backplane)
//! must pass: run against Redis (`tests/redis_backplane.rs`) and against an
//! in-process backplane written from outside the crate
//! (`tests/backplane_seam.rs`). Each takes hubs already joined by their
//! backplane.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use ws_lifecycle::Hub;
use ws_lifecycle::backplane::Remote;

use crate::support::{connect, event, frame, next_json, read_to_close, user};

/// Six users, each with connections on two nodes; every node sends each of
/// them 40 events and a fence. Every connection gets each node's events
/// once, in order, with a gap-free `seq`, and nothing of anyone else's.
pub async fn every_event_reaches_every_connection_of_its_user_once_in_order(nodes: &[Hub]) {
    let n = nodes.len();
    // Six users, each with connections on two different nodes.
    let mut clients = Vec::new();
    for u in 0..6 {
        let name = user(&format!("user-{u}"));
        for i in [u % n, (u + 1) % n] {
            let (client, _) = connect(&nodes[i], &name).await;
            clients.push((name.clone(), client));
        }
    }
    const PER_SENDER: u64 = 40;
    for (sender, hub) in nodes.iter().enumerate() {
        for u in 0..6 {
            let to = user(&format!("user-{u}"));
            for i in 0..PER_SENDER {
                let payload = json!({ "from": sender, "to": to.as_str(), "i": i });
                let delivery = hub.send_to_user(&to, &event("m", payload)).unwrap();
                assert_eq!(delivery.remote, Remote::Published);
            }
            let fence = json!({ "from": sender, "to": to.as_str() });
            let _ = hub.send_to_user(&to, &event("fence", fence)).unwrap();
        }
    }
    for (name, client) in &mut clients {
        // Read until each sender's fence: a sender's events precede its fence.
        let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut fences = 0;
        let mut last_seq = 0;
        while fences < nodes.len() {
            let frame: Value = next_json(client).await;
            assert_eq!(
                frame["seq"].as_u64(),
                Some(last_seq + 1),
                "gap-free seq on {name:?}"
            );
            last_seq += 1;
            assert_eq!(
                frame["payload"]["to"],
                name.as_str(),
                "another user's event reached {name:?}"
            );
            let from = frame["payload"]["from"].as_u64().unwrap();
            match frame["type"].as_str() {
                Some("fence") => fences += 1,
                Some("m") => seen
                    .entry(from)
                    .or_default()
                    .push(frame["payload"]["i"].as_u64().unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
        for sender in 0..nodes.len() as u64 {
            let got = seen.remove(&sender).unwrap_or_default();
            assert_eq!(
                got,
                (0..PER_SENDER).collect::<Vec<_>>(),
                "{name:?} from node {sender}: once each, in order"
            );
        }
    }
    for hub in nodes {
        assert_eq!(hub.metrics().isolation_refusals, 0);
    }
}

/// A revocation on node A closes the user's connections on B and C
/// within a second, with A's frame, and leaves another user alone.
pub async fn disconnect_user_closes_the_users_connections_on_every_node(nodes: &[Hub]) {
    let [a, b, c] = nodes else {
        panic!("three nodes")
    };
    let carol = user("carol");
    let (mut on_b, _) = connect(b, &carol).await;
    let (mut on_c, _) = connect(c, &carol).await;
    let (mut dave, _) = connect(b, &user("dave")).await;

    assert_eq!(a.disconnect_user(&carol, frame(4403, "revoked")), Ok(0));
    for client in [&mut on_b, &mut on_c] {
        let (_, close) = tokio::time::timeout(Duration::from_secs(1), read_to_close(client))
            .await
            .expect("not closed within 1 s");
        assert_eq!(close, Some(frame(4403, "revoked")));
    }
    // Dave, on the same node, is untouched.
    let _ = b
        .send_to_user(&user("dave"), &event("still.here", json!(1)))
        .unwrap();
    assert_eq!(next_json(&mut dave).await["type"], "still.here");
}

/// `send_to_users` from A reaches a listed user on A and one on B, and
/// not an unlisted user on B.
pub async fn send_to_users_reaches_the_listed_users_and_no_one_else(nodes: &[Hub]) {
    let [a, b] = nodes else { panic!("two nodes") };
    let (gina, hank, ivan) = (user("gina"), user("hank"), user("ivan"));
    let (mut gina_b, _g) = connect(b, &gina).await;
    let (mut hank_a, _h) = connect(a, &hank).await;
    let (mut ivan_b, _i) = connect(b, &ivan).await;
    let sent = a
        .send_to_users([&gina, &hank], &event("team", json!(7)))
        .unwrap();
    // Hank is local to A; Gina only remote (on B).
    assert_eq!((sent.users, sent.queued, sent.missed), (2, 1, 1));
    assert_eq!(sent.remote_failed, 0);
    for client in [&mut gina_b, &mut hank_a] {
        let f = next_json(client).await;
        assert_eq!(
            (f["type"].as_str(), f["payload"].as_u64()),
            (Some("team"), Some(7))
        );
    }
    // A fence to Ivan, sent after: once it arrives, the team event would
    // have arrived before it had it been misrouted to him.
    let _ = a.send_to_user(&ivan, &event("fence", json!(0))).unwrap();
    let f = next_json(&mut ivan_b).await;
    assert_eq!(f["type"], "fence", "ivan got an event addressed to others");
}
