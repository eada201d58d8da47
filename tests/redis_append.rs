//! The append script (stream mode) run directly on a real `redis-server`:
//! its offsets when a call holds several users, and its expiries, which it
//! renews only when due and never leaves missing.
//!
//! Behind the `redis` feature; `scripts/test.sh` installs `redis-server`.

#![cfg(feature = "redis")]
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod redis_server;
mod support;

use redis::Value;
use redis::aio::MultiplexedConnection;
use redis_server::{RedisServer, admin, config, config_set, connect, node_with};
use serde_json::json;
use support::{event, next_json, user};
use ws_lifecycle::backplane::Remote;
use ws_lifecycle::config::HubConfig;

const LENGTH: u64 = 1000;
const WINDOW: i64 = 120_000;
const LEASE: i64 = 86_400_000;
const SLACK: i64 = 30_000;

/// The library's append script, read from its source so the test runs the
/// very script the nodes run.
fn append_script() -> &'static str {
    const SOURCE: &str = include_str!("../src/backplane/redis/append.rs");
    let start = SOURCE.find("pub(super) const APPEND: &str = r\"").unwrap();
    let text = &SOURCE[start..];
    let text = &text[text.find('"').unwrap() + 1..];
    &text[..text.find("\";").unwrap()]
}

fn meta(user: &str) -> String {
    format!("wsl:s:{user}")
}

fn history(user: &str) -> String {
    format!("wsl:h:{user}")
}

/// One call: per group, a user and how many events; `length` and `every`
/// the history's length and trim period. Returns the script's reply.
async fn append(
    conn: &mut MultiplexedConnection,
    groups: &[(&str, usize)],
    length: u64,
    every: u64,
) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(append_script()).arg(groups.len() * 2);
    for (user, _) in groups {
        cmd.arg(meta(user)).arg(history(user));
    }
    cmd.arg(length)
        .arg(every)
        .arg(WINDOW)
        .arg(LEASE)
        .arg(SLACK)
        .arg("fresh-epoch")
        .arg(1);
    for (user, count) in groups {
        cmd.arg(format!("wsl:u:{user}")).arg(*count);
        for i in 0..*count {
            cmd.arg(format!("v2\nnode\nS\nmac-of-{user}-{i}\n"))
                .arg(format!("body-{i}"));
        }
    }
    cmd.query_async(conn).await
}

async fn offsets(
    conn: &mut MultiplexedConnection,
    groups: &[(&str, usize)],
    length: u64,
) -> Vec<i64> {
    let every = (length / 16).clamp(1, 64);
    match append(conn, groups, length, every).await.unwrap() {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Int(off) => off,
                other => panic!("not an offset: {other:?}"),
            })
            .collect(),
        other => panic!("not a table: {other:?}"),
    }
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

async fn hget(conn: &mut MultiplexedConnection, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await
        .unwrap()
}

async fn set(conn: &mut MultiplexedConnection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async::<Value>(conn).await.unwrap();
}

/// Through two hubs: events for a few users, sent interleaved and fast
/// enough that the publisher puts many of them in each call (grouping each
/// user's together), reach each user's connection in the order they were
/// sent, at offsets 1, 2, 3 … with nothing lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_calls_keep_each_users_order() {
    const EACH: u64 = 600;
    let server = RedisServer::start().await;
    let (sender, _) = node_with(config(&server.url()), HubConfig::default()).await;
    let (receiver, _) = node_with(config(&server.url()), HubConfig::default()).await;
    let users: Vec<_> = ["ann", "bob", "cy"].into_iter().map(user).collect();
    let mut clients = Vec::new();
    for u in &users {
        clients.push(connect(&receiver, u).await.0);
    }
    for i in 1..=EACH {
        for u in &users {
            let sent = sender.send_to_user(u, &event("m", json!(i))).unwrap();
            assert_eq!(sent.remote, Remote::Published);
        }
    }
    for client in &mut clients {
        for i in 1..=EACH {
            let frame = next_json(client).await;
            assert_eq!(
                (frame["off"].as_u64(), frame["payload"].as_u64()),
                (Some(i), Some(i)),
                "{frame}"
            );
        }
    }
}

/// A user's events are numbered densely, whether the call has them in one
/// group or in several, among other users' events; each message holds its
/// position.
#[tokio::test]
async fn offsets_are_dense_per_user_however_a_call_groups_its_events() {
    let server = RedisServer::start().await;
    let mut conn = admin(&server.url()).await;
    let got = offsets(&mut conn, &[("a", 2), ("b", 1), ("a", 1)], LENGTH).await;
    assert_eq!(got, [1, 2, 1, 3]);
    let got = offsets(&mut conn, &[("b", 3), ("a", 1)], LENGTH).await;
    assert_eq!(got, [2, 3, 4, 4]);
    assert_eq!(
        hget(&mut conn, &meta("a"), "off").await.as_deref(),
        Some("4")
    );
    assert_eq!(
        hget(&mut conn, &meta("a"), "epoch").await.as_deref(),
        Some("fresh-epoch")
    );
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(history("a"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1-0", "2-0", "3-0", "4-0"]);
    assert_eq!(
        entries[2].1[0],
        (
            "m".to_owned(),
            "v2\nnode\nS\nmac-of-a-0\nfresh-epoch:3\nbody-0".to_owned()
        )
    );
    assert_eq!(entries[2].1[1].0, "t");
}

/// Expiries: set at the first event, left alone while the renewal is not
/// due, renewed once it is (or when the deadline is missing, or further
/// ahead than the slack: a clock that went back), and a history that
/// vanished between renewals gets one again.
#[tokio::test]
async fn expiries_are_renewed_when_due_and_never_left_missing() {
    let server = RedisServer::start().await;
    let mut conn = admin(&server.url()).await;
    let renewed = |ttl: i64, base: i64| ttl > base + SLACK - 1_000 && ttl <= base + SLACK;
    offsets(&mut conn, &[("c", 3)], LENGTH).await;
    assert!(renewed(pttl(&mut conn, &meta("c")).await, LEASE));
    assert!(renewed(pttl(&mut conn, &history("c")).await, WINDOW));
    let due: i64 = hget(&mut conn, &meta("c"), "renew")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((due - now - SLACK).abs() < 5_000, "{due} vs {now}");

    // Not due: the expiries stay as they are.
    set(&mut conn, &["PEXPIRE", &meta("c"), "500000"]).await;
    set(&mut conn, &["PEXPIRE", &history("c"), "50000"]).await;
    offsets(&mut conn, &[("c", 1)], LENGTH).await;
    assert!(pttl(&mut conn, &meta("c")).await <= 500_000);
    assert!(pttl(&mut conn, &history("c")).await <= 50_000);

    // The history vanished meanwhile: made again, with an expiry.
    set(&mut conn, &["DEL", &history("c")]).await;
    assert_eq!(offsets(&mut conn, &[("c", 2)], LENGTH).await, [5, 6]);
    assert!(renewed(pttl(&mut conn, &history("c")).await, WINDOW));
    assert!(pttl(&mut conn, &meta("c")).await <= 500_000);

    // Due (past, missing, or too far ahead): both renewed.
    for deadline in [Some("1"), None, Some("99999999999999")] {
        set(&mut conn, &["PEXPIRE", &meta("c"), "500000"]).await;
        set(&mut conn, &["PEXPIRE", &history("c"), "50000"]).await;
        match deadline {
            Some(at) => set(&mut conn, &["HSET", &meta("c"), "renew", at]).await,
            None => set(&mut conn, &["HDEL", &meta("c"), "renew"]).await,
        }
        offsets(&mut conn, &[("c", 1)], LENGTH).await;
        assert!(renewed(pttl(&mut conn, &meta("c")).await, LEASE));
        assert!(renewed(pttl(&mut conn, &history("c")).await, WINDOW));
    }
}

/// The history is trimmed every trim period, not at every event, and stays
/// within its length plus the period plus what `MAXLEN ~` leaves (one
/// node of entries).
#[tokio::test]
async fn the_history_stays_within_its_length_and_period() {
    let server = RedisServer::start().await;
    config_set(&server.url(), &[("stream-node-max-entries", "4")]).await;
    let mut conn = admin(&server.url()).await;
    for _ in 0..20 {
        offsets(&mut conn, &[("d", 5)], 32).await;
    }
    let len: u64 = redis::cmd("XLEN")
        .arg(history("d"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((32..=32 + 2 + 4).contains(&len), "{len}");
}

/// A call not of the script's form is refused whole: nothing is written.
#[tokio::test]
async fn a_malformed_call_writes_nothing() {
    let server = RedisServer::start().await;
    let mut conn = admin(&server.url()).await;
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(append_script())
        .arg(2)
        .arg(meta("e"))
        .arg(history("e"));
    for arg in ["1000", "62", "120000", "86400000", "30000", "fresh", "1"] {
        cmd.arg(arg);
    }
    // Two events announced, one given.
    cmd.arg("wsl:u:e").arg(2).arg("head\n").arg("body");
    let refused = cmd.query_async::<Value>(&mut conn).await;
    assert!(refused.is_err(), "{refused:?}");
    let exists: u64 = redis::cmd("EXISTS")
        .arg(meta("e"))
        .arg(history("e"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
}
