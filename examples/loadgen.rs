//! A load generator speaking the demo protocol of `docs/protocol.md`, so it can drive this
//! crate's example servers and any other server side by side.
//!
//! Run with (release, against a running server):
//!
//! ```text
//! cargo run --release --example loadgen --features tungstenite -- connect  --url ws://127.0.0.1:3000/ws --connections 10000 --users 5000 --concurrency 256
//! cargo run --release --example loadgen --features tungstenite -- fanout   --url ws://127.0.0.1:3000/ws --connections 2000 --users 1000 --publishers 8 --seconds 10 --in-flight 256
//! cargo run --release --example loadgen --features tungstenite -- idle-mem --url ws://127.0.0.1:3000/ws --connections 10000 --users 5000 --pid <server pid>
//! ```
//!
//! Tokens are HS256 with `--secret` (default: the examples' public demo
//! secret, `DEMO_SECRET` in `examples/common/demo_jwt.rs`). Each run uses
//! loopback source addresses of its own (see `connect`), 20,000 connections
//! per address; raise the open-file limit first (`ulimit -n 65536`;
//! `scripts/bench.sh` does). Every loop is bounded in count and in time.
//! Each scenario prints one JSON line. An option no scenario takes is
//! refused.

#![allow(
    clippy::indexing_slicing,
    reason = "only serde_json::Value lookups, which return Null for a missing key and never panic"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

type Ws = WebSocketStream<TcpStream>;
type Error = Box<dyn std::error::Error + Send + Sync>;

#[allow(dead_code, reason = "loadgen takes no flags")]
#[path = "common/args.rs"]
mod args;
#[path = "common/demo_jwt.rs"]
mod demo_jwt;
#[path = "common/proc.rs"]
mod proc;

use args::Args;
use demo_jwt::DEMO_SECRET;
use proc::rss_kib;

/// Every option `loadgen` takes (each with a value); a scenario reads the
/// ones it needs.
const OPTIONS: [&str; 10] = [
    "url",
    "secret",
    "connections",
    "users",
    "concurrency",
    "publishers",
    "seconds",
    "in-flight",
    "pid",
    "hold",
];

struct Target {
    url: String,
    addr: SocketAddr,
    secret: String,
}

/// Connects connection number `n` as `user` and waits for the `ready`
/// frame. Each run binds its own loopback source addresses, 127.<run>.<k>.2
/// with `run` from the process id and `k = n / 20,000`: a run never meets
/// the TIME_WAIT sockets of an earlier one, and each address serves up to
/// 20,000 connections of the ephemeral port range.
async fn connect(target: &Target, n: u64, user: &str) -> Result<Ws, Error> {
    let run = u8::try_from(std::process::id() % 250 + 1).unwrap_or(1);
    let block = u8::try_from(n / 20_000).unwrap_or(u8::MAX);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, run, block, 2)),
        0,
    ))?;
    socket.set_nodelay(true)?;
    let stream = socket.connect(target.addr).await?;
    let mut request = target.url.as_str().into_client_request()?;
    let offer = format!("jwt-auth, jwt.{}", demo_jwt::token(&target.secret, user)?);
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&offer)?);
    // tungstenite's default 128 KiB read buffer is zero-filled on reads:
    // with it, a third of the generator's time went to memset, and the
    // generator, not the server, set the ceiling.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str())?;
                if frame["type"] == "ready" {
                    return Ok(ws);
                }
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("closed before ready".into()),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(index).copied().unwrap_or(0)
}

/// Opens `connections` over `users` with at most `concurrency` handshakes
/// in flight; returns the sockets and the connect-to-ready times (µs).
async fn open_all(
    target: &Arc<Target>,
    connections: u64,
    users: u64,
    concurrency: usize,
    deadline: Duration,
) -> (Vec<(u64, Ws)>, Vec<u64>, u64) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for n in 0..connections {
        let (target, gate) = (Arc::clone(target), Arc::clone(&gate));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let user = n % users;
            let started = Instant::now();
            let ws = tokio::time::timeout(deadline, connect(&target, n, &format!("user-{user}")))
                .await
                .ok()?
                .ok()?;
            Some((user, ws, started.elapsed().as_micros() as u64))
        }));
    }
    let (mut sockets, mut times, mut failed) = (Vec::new(), Vec::new(), 0);
    for task in tasks {
        match task.await.ok().flatten() {
            Some((user, ws, micros)) => {
                sockets.push((user, ws));
                times.push(micros);
            }
            None => failed += 1,
        }
    }
    times.sort_unstable();
    (sockets, times, failed)
}

async fn scenario_connect(target: Arc<Target>, o: &Args) -> Result<Value, Error> {
    let (connections, users) = (
        o.parsed("connections", 10_000u64)?,
        o.parsed("users", 5_000u64)?,
    );
    let concurrency = o.parsed("concurrency", 256usize)?;
    let started = Instant::now();
    let (sockets, times, failed) = open_all(
        &target,
        connections,
        users,
        concurrency,
        Duration::from_secs(30),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let ready = sockets.len();
    drop(sockets);
    Ok(json!({
        "scenario": "connect", "connections": connections, "users": users, "concurrency": concurrency,
        "ready": ready, "failed": failed, "seconds": seconds,
        "connects_per_sec": (ready as f64 / seconds).round(),
        "connect_to_ready_p50_ms": percentile(&times, 0.50) as f64 / 1000.0,
        "connect_to_ready_p99_ms": percentile(&times, 0.99) as f64 / 1000.0,
        "connect_to_ready_max_ms": percentile(&times, 1.0) as f64 / 1000.0,
    }))
}

async fn scenario_fanout(target: Arc<Target>, o: &Args) -> Result<Value, Error> {
    let (connections, users) = (
        o.parsed("connections", 2_000u64)?,
        o.parsed("users", 1_000u64)?,
    );
    let publishers = o.parsed("publishers", 8usize)?;
    let seconds = o.parsed("seconds", 10u64)?;
    let in_flight = o.parsed("in-flight", 256u64)?;
    let (sockets, _, failed) =
        open_all(&target, connections, users, 256, Duration::from_secs(30)).await;
    if failed > 0 {
        return Err(format!("{failed} connections failed").into());
    }
    let per_user = connections / users.max(1);
    let clock = Instant::now();
    // The in-flight window, counted in deliveries: a publisher takes
    // `per_user` permits per publish and every delivery gives one back. A
    // semaphore wakes one waiting publisher per freed slot, where a
    // broadcast on every delivery would wake all of them, and with them
    // make the load generator its own bottleneck.
    if in_flight < per_user {
        return Err(format!(
            "--in-flight {in_flight} is below one publish's {per_user} deliveries"
        )
        .into());
    }
    let window_size = usize::try_from(in_flight)?;
    let window = Arc::new(Semaphore::new(window_size));
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (i, (_, ws)) in sockets.into_iter().enumerate() {
        let (sink, mut stream) = ws.split();
        if i < publishers {
            writers.push(sink);
        }
        let (received, window) = (Arc::clone(&received), Arc::clone(&window));
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let message = tokio::select! {
                    message = stream.next() => message,
                    _ = stop.changed() => break,
                };
                let Some(Ok(message)) = message else { break };
                let Message::Text(text) = message else {
                    continue;
                };
                let Some(sent) = delivery_sent_at(text.as_str()) else {
                    continue;
                };
                let now = clock.elapsed().as_nanos() as u64;
                latencies.push(now.saturating_sub(sent) / 1000);
                received.fetch_add(1, Ordering::Relaxed);
                window.add_permits(1);
            }
            latencies
        }));
    }
    let sent = Arc::new(AtomicU64::new(0));
    let end = clock.elapsed() + Duration::from_secs(seconds);
    let per_publish = u32::try_from(per_user)?;
    let mut tasks = Vec::new();
    for (p, mut sink) in writers.into_iter().enumerate() {
        let (sent, window) = (Arc::clone(&sent), Arc::clone(&window));
        tasks.push(tokio::spawn(async move {
            let mut n = p as u64;
            while clock.elapsed() < end {
                // Bounded wait: a lost delivery must not hang the run.
                let slot = tokio::time::timeout(
                    Duration::from_millis(100),
                    window.acquire_many(per_publish),
                )
                .await;
                match slot {
                    Ok(Ok(permits)) => permits.forget(),
                    Ok(Err(_)) => break,
                    Err(_) => continue,
                }
                // Whatever else the window allows right now goes out in the
                // same write (up to 16 publishes): coalescing saves a
                // syscall per publish on both sides.
                let mut batch = 1;
                while batch < 16 {
                    match window.try_acquire_many(per_publish) {
                        Ok(permits) => permits.forget(),
                        Err(_) => break,
                    }
                    batch += 1;
                }
                let mut failed = false;
                for _ in 0..batch {
                    sent.fetch_add(1, Ordering::Relaxed);
                    let to = format!("user-{}", n % users);
                    let payload = format!("{}:{n}", clock.elapsed().as_nanos());
                    let message =
                        json!({ "type": "publish", "to": to, "payload": payload }).to_string();
                    if sink.feed(Message::text(message)).await.is_err() {
                        failed = true;
                        break;
                    }
                    n = n.wrapping_add(7919);
                }
                if failed || sink.flush().await.is_err() {
                    break;
                }
            }
            sink
        }));
    }
    let mut sinks = Vec::new();
    for task in tasks {
        sinks.push(task.await?);
    }
    let expected = sent.load(Ordering::Relaxed) * per_user;
    // Every permit back means every delivery arrived; bounded by 10 s.
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        window.acquire_many(u32::try_from(window_size)?),
    )
    .await;
    let elapsed = (clock.elapsed().as_secs_f64()).max(seconds as f64);
    for mut sink in sinks {
        let _ = sink.close().await;
    }
    let _ = stop_tx.send(true);
    let delivered = received.load(Ordering::Relaxed);
    let mut latencies = Vec::new();
    for reader in readers {
        if let Ok(l) = reader.await {
            latencies.extend(l);
        }
    }
    latencies.sort_unstable();
    Ok(json!({
        "scenario": "fanout", "connections": connections, "users": users, "publishers": publishers,
        "seconds": seconds, "in_flight": in_flight, "published": sent.load(Ordering::Relaxed),
        "expected_deliveries": expected, "delivered": delivered, "lost": expected.saturating_sub(delivered),
        "deliveries_per_sec": (delivered as f64 / elapsed).round(),
        "latency_p50_ms": percentile(&latencies, 0.50) as f64 / 1000.0,
        "latency_p99_ms": percentile(&latencies, 0.99) as f64 / 1000.0,
    }))
}

/// The send time (ns since the run's clock started) in a delivered
/// `message` frame, whose payload is `"<ns>:<n>"`; `None` for other frames.
/// Borrows from the frame: the reader must not become the bottleneck.
fn delivery_sent_at(frame: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(default)]
        payload: Option<&'a str>,
    }
    let frame: Frame<'_> = serde_json::from_str(frame).ok()?;
    if frame.kind != "message" {
        return None;
    }
    frame.payload?.split(':').next()?.parse().ok()
}

async fn scenario_idle_mem(target: Arc<Target>, o: &Args) -> Result<Value, Error> {
    let (connections, users) = (
        o.parsed("connections", 10_000u64)?,
        o.parsed("users", 5_000u64)?,
    );
    let pid: u32 = o.parsed("pid", 0u32)?;
    let hold = o.parsed("hold", 5u64)?;
    let before = rss_kib(pid)?;
    let (sockets, _, failed) =
        open_all(&target, connections, users, 256, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let during = rss_kib(pid)?;
    let held = sockets.len() as u64;
    drop(sockets);
    Ok(json!({
        "scenario": "idle-mem", "connections": connections, "held": held, "failed": failed,
        "server_rss_before_kib": before, "server_rss_during_kib": during,
        "kib_per_connection": ((during.saturating_sub(before)) as f64 / held.max(1) as f64 * 10.0).round() / 10.0,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let scenario = args
        .next()
        .ok_or("usage: loadgen connect|fanout|idle-mem [--option value]…")?;
    let options = Args::parse(args, &OPTIONS, &[])?;
    let url = options.parsed("url", "ws://127.0.0.1:3000/ws".to_owned())?;
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or("--url must be ws://HOST:PORT/…")?;
    let addr = tokio::net::lookup_host(authority)
        .await?
        .next()
        .ok_or("cannot resolve --url")?;
    let target = Arc::new(Target {
        url,
        addr,
        secret: options.parsed("secret", DEMO_SECRET.to_owned())?,
    });
    let result = match scenario.as_str() {
        "connect" => scenario_connect(target, &options).await?,
        "fanout" => scenario_fanout(target, &options).await?,
        "idle-mem" => scenario_idle_mem(target, &options).await?,
        other => return Err(format!("unknown scenario {other:?}").into()),
    };
    println!("{result}");
    Ok(())
}
