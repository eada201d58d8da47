//! The chaos soak: the real `axum_chat` example under churn, checked for
//! the crate's invariants from the outside.
//!
//! Run with (release, 2,000 connections over 500 users, 60 s of churn):
//!
//! ```text
//! ulimit -n 65536
//! cargo build --release --example axum_chat --example chaos_soak --features axum,tungstenite,jwt,metrics
//! target/release/examples/chaos_soak
//! ```
//!
//! and the CI version (`scripts/test.sh`): `--connections 200 --users 50
//! --seconds 10`, or `--ci`.
//!
//! It starts `axum_chat` (the sibling of this binary, or `--server PATH`)
//! on a free loopback port, warms it up with a rehearsal of the soak
//! (another seed, at most 10 s), takes its baseline (alive tasks, RSS), then runs
//! the churn: dedicated
//! publishers send every user a numbered stream (each message names its
//! addressee and carries a unique id and its send time) while a seeded plan
//! closes and resets connections (some mid-frame) and reconnects them,
//! presents invalid tokens, floods, and stalls slow readers. Every frame is
//! checked as it arrives; after everyone has left, the server must be back
//! to its baseline. Prints the figures, a table of assertions and one JSON
//! line; exits non-zero if an assertion fails. Options: `--connections`,
//! `--users`, `--seconds`, `--publishers`, `--rate` (publishes per second
//! overall), `--seed`, `--server`, `--resume-share`. Every loop is bounded
//! in count and time (the server's log is read until the server exits,
//! which the soak ensures).
//!
//! Session resume (docs/resume.md): each receiver slot is a session. A
//! share of the reconnects (`--resume-share`, a third by default) dial
//! with `?since=<epoch>:<off>`: the epoch of the previous connection's
//! `ready` frame and the last offset it processed in order (the `ready`
//! frame's `off` if none); one in eight of them forges the position
//! (another user's epoch, or an offset far ahead). A resume whose absence,
//! from the drop to the new `ready`, the server's history covers (2
//! minutes, 1,000 events per user; on one node also a shard's 1 MiB of the
//! 64 MiB budget, counting every event published meanwhile, to anyone, as
//! if it shared the user's shard) must say `recovered: true`, and the
//! session must then get every offset after `since` exactly once, in
//! order, none it had processed (by offset and by message id). Any other
//! must say `recovered: false` and replay nothing (no offset at or below
//! the new `ready.off`). Every connection must see its user's offsets in
//! order from where `ready` puts it (a jump only after a `gap` frame), and
//! an offset must name the same message on every connection of the user.
//! The slow readers' users are published to for 4 s only: their 32 KiB
//! events would otherwise crowd every other user out of their history
//! shards for the whole run. The server keeps the soak's events for 2
//! minutes: on one node the RSS row allows for what that history may hold
//! (`resume::history_kib`).
//!
//! Two-node mode, `--nodes 2`: it starts a `redis-server` (`--redis-server
//! PATH`, default from `PATH`) on a free loopback port and two `axum_chat`
//! nodes with `--redis`, which must be built with the `redis` feature:
//!
//! ```text
//! cargo build --release --example axum_chat --example chaos_soak --features axum,tungstenite,jwt,metrics,redis
//! target/release/examples/chaos_soak --nodes 2
//! ```
//!
//! Publishers alternate between the nodes and three of every user's four
//! connections dial the other node than its publisher's, so most deliveries
//! cross Redis; floods and invalid tokens alternate too. The assertions are
//! the same, over both nodes (router and tasks per node, RSS per node);
//! `gap` frames (the backplane's "you may have missed remote events") are
//! not unexpected in a cluster. `--sigstop-redis SECS` (implies `--nodes
//! 2`) freezes Redis with SIGSTOP for SECS, 40% into the churn, then thaws
//! it: every message must still arrive exactly once, or its connection must
//! receive a `gap` frame after the message was sent. A resuming reconnect
//! dials the other node than the connection it follows (a resume anywhere);
//! the resume assertions are the same, without the byte budget (Redis keeps
//! the history), and a resume while Redis is frozen may not recover.

#[path = "../common/args.rs"]
mod args;
mod chaos;
mod client;
mod cluster;
#[path = "../common/demo_jwt.rs"]
mod demo_jwt;
mod frames;
mod phase;
#[path = "../common/proc.rs"]
mod proc;
mod publisher;
mod report;
mod resume;
mod server;
mod stream;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::args::Args;
use crate::chaos::Plan;
use crate::client::{Clock, Dialer, Error};
use crate::cluster::{Freeze, Placement, RedisServer};
use crate::server::Server;

/// The server's inbound limit per connection (burst 2.5 times that): well
/// above any publisher's rate, far below a flood's.
const INBOUND_RATE: u32 = 500;
/// The most one publisher sends per second: half the inbound limit.
const PUBLISHER_RATE: f64 = 250.0;
/// The warm-up's length, at most: long enough for every kind of chaos
/// (slow readers and their full queues included) to happen.
const WARM_UP_SECONDS: f64 = 10.0;
/// Makes the warm-up's plan differ from the soak's.
const WARM_UP_SALT: u64 = 0x5741_524D_5550;
/// How long the server gets to return to its baseline.
const SETTLE: Duration = Duration::from_secs(20);
/// How far into the churn `--sigstop-redis` freezes Redis.
const FREEZE_AT: f64 = 0.4;

struct Options {
    connections: usize,
    users: usize,
    seconds: f64,
    publishers: usize,
    rate: f64,
    seed: u64,
    server: PathBuf,
    /// 1, or 2: a cluster on Redis.
    nodes: usize,
    /// How long Redis is frozen (`--sigstop-redis`), if it is.
    sigstop_redis: Option<Duration>,
    redis_server: String,
    /// The share of reconnects that resume their session (`since`).
    resume_share: f64,
}

/// Every option but the `--ci` flag takes a value.
const OPTIONS: [&str; 11] = [
    "connections",
    "users",
    "seconds",
    "publishers",
    "rate",
    "seed",
    "server",
    "nodes",
    "sigstop-redis",
    "redis-server",
    "resume-share",
];

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options, Error> {
        let given = Args::parse(args, &OPTIONS, &["ci"])?;
        let ci = given.flag("ci");
        let num = |name: &str, default: f64| given.parsed(name, default);
        let (connections, users, seconds) = if ci {
            (200.0, 50.0, 10.0)
        } else {
            (2000.0, 500.0, 60.0)
        };
        let users = num("users", users)?;
        // Two messages a second per user; a publisher per 200 a second.
        let rate = num("rate", 2.0 * users)?;
        let seed = match given.get("seed") {
            Some(seed) => seed
                .parse()
                .map_err(|_| format!("--seed: cannot parse {seed:?}"))?,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        };
        let server = match given.get("server") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe()?.with_file_name("axum_chat"),
        };
        let sigstop_redis = match given.get("sigstop-redis") {
            Some(_) => Some(
                Duration::try_from_secs_f64(num("sigstop-redis", 0.0)?)
                    .map_err(|_| "--sigstop-redis: a number of seconds".to_owned())?,
            ),
            None => None,
        };
        let options = Options {
            connections: num("connections", connections)? as usize,
            users: users as usize,
            seconds: num("seconds", seconds)?,
            publishers: num("publishers", (rate / 200.0).ceil().max(1.0))? as usize,
            rate,
            seed,
            server,
            nodes: num("nodes", if sigstop_redis.is_some() { 2.0 } else { 1.0 })? as usize,
            sigstop_redis,
            redis_server: given.parsed("redis-server", "redis-server".to_owned())?,
            resume_share: num("resume-share", 1.0 / 3.0)?,
        };
        options.check()?;
        Ok(options)
    }

    fn check(&self) -> Result<(), Error> {
        if self.users == 0 || self.connections < self.users || self.publishers == 0 {
            return Err("need at least one user, a connection per user and one publisher".into());
        }
        // Room under the server's 16 connections per user for a
        // reconnect that overlaps the old connection's close.
        if self.connections.div_ceil(self.users) > 8 {
            return Err("at most 8 connections per user (the server allows 16)".into());
        }
        if self.rate / self.publishers as f64 > PUBLISHER_RATE {
            return Err(format!(
                "at most {PUBLISHER_RATE} publishes/s per publisher: raise --publishers"
            )
            .into());
        }
        if !(5.0..=3600.0).contains(&self.seconds) {
            return Err("--seconds: 5 to 3600".into());
        }
        if !(0.0..=1.0).contains(&self.resume_share) {
            return Err("--resume-share: 0 to 1".into());
        }
        if !(1..=2).contains(&self.nodes) {
            return Err("--nodes: 1 or 2".into());
        }
        if let Some(hold) = self.sigstop_redis {
            if self.nodes != 2 {
                return Err("--sigstop-redis needs the two-node mode (--nodes 2)".into());
            }
            // Thawed with most of the churn still to come, so the recovery
            // is measured under load.
            if hold.is_zero() || hold.as_secs_f64() > self.seconds * 0.3 {
                return Err("--sigstop-redis: more than 0 s, at most 30% of --seconds".into());
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let o = Options::parse(std::env::args().skip(1))?;
    // This process and the server each hold one socket per connection.
    let needed = o.connections as u64 + 512;
    if let Some(limit) = server::open_file_limit().filter(|&l| l < needed) {
        return Err(format!(
            "the open-file limit is {limit}; this soak needs {needed}: run `ulimit -n 65536` first"
        )
        .into());
    }
    let clock = Clock::new();
    // Two-node mode: the Redis the nodes share, first.
    let redis = match o.nodes {
        2 => Some(RedisServer::start(&o.redis_server).await?),
        _ => None,
    };
    let mut servers = Vec::with_capacity(o.nodes);
    for _ in 0..o.nodes {
        let url = redis.as_ref().map(|r| r.url.as_str());
        servers.push(Server::start(&o.server, INBOUND_RATE, url, clock).await?);
    }
    // A node is ready once it says its backplane is up.
    for server in servers.iter_mut().filter(|_| redis.is_some()) {
        server.backplane_up(Duration::from_secs(30)).await?;
    }
    let nodes: Vec<String> = servers
        .iter()
        .map(|s| format!("pid {} on {}", s.pid, s.addr))
        .collect();
    let cluster = match &redis {
        Some(r) => format!(
            "; two nodes on {} (redis-server pid {}){}",
            r.url,
            r.pid,
            o.sigstop_redis.map_or(String::new(), |hold| format!(
                ", SIGSTOP for {} s at {:.0}% of the churn",
                hold.as_secs_f64(),
                FREEZE_AT * 100.0
            ))
        ),
        None => String::new(),
    };
    println!(
        "chaos soak: seed {}; {} connections over {} users, {} publishers at {}/s, {} s of churn; {} ({}){cluster}",
        o.seed,
        o.connections,
        o.users,
        o.publishers,
        o.rate,
        o.seconds,
        o.server.display(),
        nodes.join(", "),
    );
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let dialer = Arc::new(Dialer::new(&addrs));
    let mut setup = phase::Setup {
        dialer: Arc::clone(&dialer),
        clock,
        connections: o.connections,
        users: o.users,
        publishers: o.publishers,
        rate: o.rate,
        seconds: o.seconds.min(WARM_UP_SECONDS),
        placement: Placement { nodes: o.nodes },
        freeze: None,
    };

    // The warm-up is a rehearsal of the soak (another seed, the
    // same mix of chaos), so the baseline is the server's state after it has
    // seen this traffic once: allocator arenas, runtime workers and table
    // capacity at their working size. After a lighter warm-up the RSS
    // check measured glibc's arenas, not the crate: they held 2-3 MiB more
    // after the soak while the heap in use grew by 0.2 MiB (malloc_stats
    // through gdb; docs/reliability.md).
    let warm_plan = Plan::generate(
        o.seed ^ WARM_UP_SALT,
        o.connections,
        o.users,
        setup.seconds,
        o.resume_share,
    );
    let warm = phase::run(&setup, &warm_plan).await?;
    let delivered: usize = warm.receivers.iter().map(|r| r.ks.len()).sum();
    println!(
        "warm-up: {} connections, {delivered} messages delivered, {} connections failed",
        warm.receivers.len(),
        warm.connect_failures.len()
    );
    let (mut previous, mut steady) = (None, 0);
    let (baseline, settled, _) = server::wait_for(&mut servers, Duration::from_secs(30), |all| {
        let empty = all.iter().all(|g| g.connections == 0 && g.users == 0);
        let tasks: Vec<u64> = all.iter().map(|g| g.tasks).collect();
        steady = if empty && previous.as_ref() == Some(&tasks) {
            steady + 1
        } else {
            0
        };
        previous = Some(tasks);
        // The same task counts for a second.
        steady >= 5
    })
    .await?;
    if !settled {
        return Err(format!("the server did not settle after the warm-up: {baseline:?}").into());
    }
    for (n, b) in baseline.iter().enumerate() {
        println!(
            "baseline{}: {} alive tasks, RSS {} KiB",
            if o.nodes > 1 {
                format!(" (node {n})")
            } else {
                String::new()
            },
            b.tasks,
            b.rss_kib
        );
    }

    setup.seconds = o.seconds;
    setup.freeze = match (&redis, o.sigstop_redis) {
        (Some(redis), Some(hold)) => Some(Freeze {
            pid: redis.pid,
            at: Duration::from_secs_f64(o.seconds * FREEZE_AT),
            hold,
        }),
        _ => None,
    };
    let plan = Plan::generate(o.seed, o.connections, o.users, o.seconds, o.resume_share);
    let outcome = phase::run(&setup, &plan).await?;
    // One node keeps the users' history in its memory; with Redis, Redis
    // does.
    let history_kib = match o.nodes {
        1 => resume::history_kib(&outcome),
        _ => 0,
    };
    let (after, _, settle) = server::wait_for(&mut servers, SETTLE, |all| {
        all.iter().zip(&baseline).all(|(g, b)| {
            g.connections == 0
                && g.users == 0
                && g.tasks == b.tasks
                && g.rss_kib <= b.rss_kib + b.rss_kib / 10 + history_kib
        })
    })
    .await?;
    let errors = servers
        .iter()
        .map(Server::errors)
        .fold((0, None), |(n, last), (m, line)| (n + m, line.or(last)));
    let backplane: Vec<Vec<(u64, bool)>> = servers
        .iter()
        .map(|s| s.backplane_changes.lock().clone())
        .collect();
    let failed = report::print(&report::Inputs {
        outcome: &outcome,
        baseline: &baseline,
        after: &after,
        settle,
        history_kib,
        server_errors: errors,
        rules: frames::Rules {
            cluster: o.nodes > 1,
            gaps_excuse_losses: o.sigstop_redis.is_some(),
        },
        backplane: &backplane,
        busy_retries: dialer.busy_retries.load(Ordering::Relaxed),
        publishers: o.publishers + usize::from(plan.slow_readers > 0),
        params: json!({
            "seed": o.seed, "connections": o.connections, "users": o.users, "seconds": o.seconds,
            "publishers": o.publishers, "rate": o.rate, "inbound_rate": INBOUND_RATE,
            "nodes": o.nodes, "sigstop_redis_s": o.sigstop_redis.map(|d| d.as_secs_f64()),
            "resume_share": o.resume_share,
        }),
        warm_up: &warm,
    });
    for server in servers {
        server.stop().await;
    }
    drop(redis);
    if failed > 0 {
        return Err(format!("{failed} assertion(s) failed (seed {})", o.seed).into());
    }
    Ok(())
}
