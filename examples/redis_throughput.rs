//! Cross-node delivery through the Redis backplane: users connected on node
//! B, events sent from node A, measured at B's connections.
//!
//! Run with (a `redis-server` listening; release build for real figures):
//! `cargo run --release --example redis_throughput --features redis -- [REDIS_URL] [EVENTS] [USERS] [IN_FLIGHT]`
//!
//! Prints one JSON line: deliveries per second and delivery latency
//! percentiles (send on A to frame in B's transport), with at most
//! `IN_FLIGHT` events (default 1,000) unreceived at any time, so the figure
//! is a sustained rate, not a queue's burst; a small `IN_FLIGHT` measures
//! latency without queueing.
//!
//! `WS_LIFECYCLE_REDIS_STREAMS=0` runs both nodes with
//! [`RedisConfig::streams`] off (plain `PUBLISH`es, no offsets or history
//! in Redis), for comparison; unset or any other value keeps the default
//! (streams on: one append script call per batch of events, see
//! docs/benchmarks.md). The JSON line says which (`"streams"`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use ws_lifecycle::backplane::Remote;
use ws_lifecycle::backplane::redis::{ClusterKey, RedisBackplane, RedisConfig};
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::UserId;
use ws_lifecycle::transport::{Message, memory};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

struct Quiet;

impl Handler for Quiet {
    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned());
    let events: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let users: u64 = args.next().map_or(Ok(100), |a| a.parse())?;
    let window: u64 = args.next().map_or(Ok(1_000), |a| a.parse())?;
    let streams = std::env::var("WS_LIFECYCLE_REDIS_STREAMS").ok().as_deref() != Some("0");

    let node = |url: &str| -> Result<
        (Hub, tokio::sync::watch::Receiver<bool>),
        Box<dyn std::error::Error>,
    > {
        // Every node of a cluster shares the key; this one is for the demo only.
        let key = ClusterKey::new(b"redis_throughput's demo cluster key, not a secret")?;
        let mut config = RedisConfig::new(url, key);
        config.streams = streams;
        let backplane = RedisBackplane::new(config)?;
        let health = backplane.health();
        Ok((Hub::builder().backplane(backplane).build()?, health))
    };
    let (a, mut a_health) = node(&url)?;
    let (b, mut b_health) = node(&url)?;
    a_health.wait_for(|h| *h).await?;
    b_health.wait_for(|h| *h).await?;

    let start = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let mut readers = Vec::new();
    let mut names = Vec::new();
    for u in 0..users {
        let user = UserId::new(format!("user-{u}"))?;
        let (transport, mut client) = memory::pair(4096);
        let conn = b
            .connect()
            .accept(transport)
            .authenticate(user.clone().into())
            .await?;
        let handle = conn.handle();
        let hub = b.clone();
        tokio::spawn(async move { hub.run(conn, &Quiet).await });
        handle.wait_ready(Duration::from_secs(10)).await?;
        let (received, progress) = (Arc::clone(&received), Arc::clone(&progress));
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(Message::Text(frame)) = client.recv().await {
                let frame: serde_json::Value = serde_json::from_str(&frame).unwrap_or_default();
                if let Some(sent) = frame.get("payload").and_then(serde_json::Value::as_u64) {
                    let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    latencies.push(now.saturating_sub(sent));
                    received.fetch_add(1, Ordering::Relaxed);
                    progress.notify_one();
                }
            }
            latencies
        }));
        names.push(user);
    }

    let name = EventName::new("bench")?;
    let began = Instant::now();
    let mut failed = 0u64;
    for i in 0..events {
        while i.saturating_sub(received.load(Ordering::Relaxed)) >= window {
            progress.notified().await;
        }
        let user = names
            .get(usize::try_from(i % users)?)
            .ok_or("no such user")?;
        let sent = u64::try_from(start.elapsed().as_nanos())?;
        let delivery = a.send_to_user(user, &Event::custom(name.clone(), sent.into()))?;
        if delivery.remote != Remote::Published {
            failed += 1;
        }
    }
    while received.load(Ordering::Relaxed) < events - failed {
        progress.notified().await;
    }
    let seconds = began.elapsed().as_secs_f64();
    let _ = b.close_all(CloseFrame::new(
        ws_lifecycle::close::CloseCode::NORMAL,
        ws_lifecycle::close::CloseReason::new("done").unwrap_or_else(|| unreachable!()),
    ));
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await?);
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
            / 1_000
    };
    println!(
        "{}",
        serde_json::json!({
            "scenario": "redis_cross_node",
            "streams": streams,
            "events": events,
            "users": users,
            "in_flight": window,
            "failed_publishes": failed,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "deliveries_per_sec": (latencies.len() as f64 / seconds).round(),
            "latency_p50_us": pct(0.50),
            "latency_p99_us": pct(0.99),
            "latency_max_us": pct(1.0),
        })
    );
    Ok(())
}
