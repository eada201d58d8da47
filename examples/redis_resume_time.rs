//! Time to resume across nodes: 1,000 events are published for a user from
//! node A while the user is away; a client then connects to node B with
//! `since=<epoch>:0` and the time is taken from the connect until its
//! 1,000th replayed frame is read (the stream read from Redis, the replay,
//! the writes). Repeated, and the same measured on a single node (in-memory
//! history) for comparison.
//!
//! Run with (a `redis-server` listening; release build for real figures):
//! `cargo run --release --example redis_resume_time --features redis -- [REDIS_URL] [MISSED] [ROUNDS]`
//!
//! Prints one JSON line per case with the median and the slowest round.

use std::time::{Duration, Instant};

use ws_lifecycle::auth::AuthOutcome;
use ws_lifecycle::backplane::redis::{ClusterKey, RedisBackplane, RedisConfig};
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::UserId;
use ws_lifecycle::stream::Position;
use ws_lifecycle::transport::memory;
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Quiet;

impl Handler for Quiet {
    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

fn node(url: &str) -> Result<(Hub, tokio::sync::watch::Receiver<bool>), Error> {
    // Every node of a cluster shares the key; this one is for the demo only.
    let key = ClusterKey::new(b"redis_resume_time's demo cluster key, not a secret")?;
    let backplane = RedisBackplane::new(RedisConfig::new(url, key))?;
    let health = backplane.health();
    Ok((Hub::builder().backplane(backplane).build()?, health))
}

/// Connects `user` to `hub` (resuming after `since` when given) and reads
/// `frames` frames; returns the time that took and the client's handle.
async fn connect_and_read(
    hub: &Hub,
    user: &UserId,
    since: Option<&Position>,
    frames: usize,
) -> Result<(Duration, memory::MemoryClient), Error> {
    let (transport, mut client) = memory::pair(4096);
    let started = Instant::now();
    let mut auth = AuthOutcome::new(user.clone());
    if let Some(since) = since {
        auth = auth.with_since(since.clone());
    }
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(auth)
        .await
        .map_err(|report| format!("refused: {report}"))?;
    let handle = conn.handle();
    let runner = hub.clone();
    tokio::spawn(async move { runner.run(conn, &Quiet).await });
    handle.wait_ready(Duration::from_secs(10)).await?;
    for _ in 0..frames {
        client.recv().await.ok_or("the connection ended early")?;
    }
    Ok((started.elapsed(), client))
}

/// Publishes `missed` events for `user` from `from`, waits until a live
/// connection on `seen` has them all (so they are all in the stream), and
/// returns the position before them.
async fn miss(from: &Hub, seen: &Hub, user: &UserId, missed: usize) -> Result<Position, Error> {
    let (_, mut live) = connect_and_read(seen, user, None, 0).await?;
    let before = seen
        .stream_position(user)
        .await?
        .ok_or("no stream position")?;
    let name = EventName::new("note")?;
    // In runs of 100, each read before the next is sent: the live
    // connection's queue (1,000 by default) never fills.
    for run in (0..missed).collect::<Vec<_>>().chunks(100) {
        for n in run {
            let event = Event::custom(name.clone(), serde_json::json!({ "step": n, "text": "…" }));
            let _ = from.send_to_user(user, &event)?;
        }
        for _ in run {
            live.recv().await.ok_or("the live connection ended early")?;
        }
    }
    live.close(None).await;
    Ok(before)
}

fn report(case: &str, missed: usize, mut times: Vec<Duration>) {
    times.sort_unstable();
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!(
        "{}",
        serde_json::json!({
            "case": case,
            "missed": missed,
            "rounds": times.len(),
            "median_ms": ms(times.get(times.len() / 2)),
            "max_ms": ms(times.last()),
        })
    );
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let missed: usize = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(50), |a| a.parse())?;

    let (a, mut a_health) = node(&url)?;
    let (b, mut b_health) = node(&url)?;
    a_health.wait_for(|h| *h).await?;
    b_health.wait_for(|h| *h).await?;
    let single = Hub::new();

    let cases = [
        ("across nodes (sent on A, resumed on B)", &a, &b),
        ("single node (in-memory history)", &single, &single),
    ];
    for (index, (case, from, to)) in cases.into_iter().enumerate() {
        let mut times = Vec::with_capacity(rounds);
        for round in 0..rounds {
            // A fresh user per round, so each resume reads exactly `missed`.
            let user = UserId::new(format!("away-{index}-{round}"))?;
            let since = miss(from, from, &user, missed).await?;
            let (took, mut client) = connect_and_read(to, &user, Some(&since), missed).await?;
            client.close(None).await;
            times.push(took);
        }
        report(case, missed, times);
    }
    Ok(())
}
