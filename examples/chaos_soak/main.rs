//! The chaos soak: the real `axum_chat` example under churn, checked for
//! the crate's invariants from the outside.
//!
//! Run with (release, 2,000 connections over 500 users, 60 s of churn):
//!
//! ```text
//! ulimit -n 65536
//! cargo build --release --example axum_chat --example chaos_soak --features axum,tungstenite,jwt
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
//! overall), `--seed`, `--server`. Every loop is bounded in count and time
//! (the server's log is read until the server exits, which the soak
//! ensures).

mod chaos;
mod client;
mod phase;
mod publisher;
mod report;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::chaos::Plan;
use crate::client::{Clock, Dialer, Error};
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

struct Options {
    connections: usize,
    users: usize,
    seconds: f64,
    publishers: usize,
    rate: f64,
    seed: u64,
    server: PathBuf,
}

/// Every option but the `--ci` flag takes a value.
const OPTIONS: [&str; 7] = [
    "connections",
    "users",
    "seconds",
    "publishers",
    "rate",
    "seed",
    "server",
];

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, Error> {
        let mut given = std::collections::HashMap::new();
        let mut ci = false;
        while let Some(arg) = args.next() {
            if arg == "--ci" {
                ci = true;
                continue;
            }
            let name = arg
                .strip_prefix("--")
                .filter(|name| OPTIONS.contains(name))
                .ok_or_else(|| {
                    format!(
                        "unknown argument {arg:?}; options: --ci --{}",
                        OPTIONS.join(" --")
                    )
                })?
                .to_owned();
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            given.insert(name, value);
        }
        let num = |name: &str, default: f64| -> Result<f64, Error> {
            given.get(name).map_or(Ok(default), |text| {
                text.parse()
                    .map_err(|_| format!("--{name}: cannot parse {text:?}").into())
            })
        };
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
        let options = Options {
            connections: num("connections", connections)? as usize,
            users: users as usize,
            seconds: num("seconds", seconds)?,
            publishers: num("publishers", (rate / 200.0).ceil().max(1.0))? as usize,
            rate,
            seed,
            server,
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
    let mut server = Server::start(&o.server, INBOUND_RATE).await?;
    println!(
        "chaos soak: seed {}; {} connections over {} users, {} publishers at {}/s, {} s of churn; {} (pid {}) on {}",
        o.seed,
        o.connections,
        o.users,
        o.publishers,
        o.rate,
        o.seconds,
        o.server.display(),
        server.pid,
        server.addr
    );
    let dialer = Arc::new(Dialer::new(server.addr));
    let mut setup = phase::Setup {
        dialer: Arc::clone(&dialer),
        clock: Clock::new(),
        connections: o.connections,
        users: o.users,
        publishers: o.publishers,
        rate: o.rate,
        seconds: o.seconds.min(WARM_UP_SECONDS),
    };

    // The warm-up is a rehearsal of the soak (another seed, the
    // same mix of chaos), so the baseline is the server's state after it has
    // seen this traffic once: allocator arenas, runtime workers and table
    // capacity at their working size. After a lighter warm-up the RSS
    // check measured glibc's arenas, not the crate: they held 2-3 MiB more
    // after the soak while the heap in use grew by 0.2 MiB (malloc_stats
    // through gdb; docs/reliability.md).
    let warm_plan = Plan::generate(o.seed ^ WARM_UP_SALT, o.connections, o.users, setup.seconds);
    let warm = phase::run(&setup, &warm_plan).await?;
    let delivered: usize = warm.receivers.iter().map(|r| r.ks.len()).sum();
    println!(
        "warm-up: {} connections, {delivered} messages delivered, {} connections failed",
        warm.receivers.len(),
        warm.connect_failures.len()
    );
    let (mut previous, mut steady) = (None, 0);
    let (baseline, settled, _) = server
        .wait_for(Duration::from_secs(30), |g| {
            let empty = g.connections == 0 && g.users == 0;
            steady = if empty && previous == Some(g.tasks) {
                steady + 1
            } else {
                0
            };
            previous = Some(g.tasks);
            // The same task count for a second.
            steady >= 5
        })
        .await?;
    if !settled {
        return Err(format!("the server did not settle after the warm-up: {baseline:?}").into());
    }
    println!(
        "baseline: {} alive tasks, RSS {} KiB",
        baseline.tasks, baseline.rss_kib
    );

    setup.seconds = o.seconds;
    let plan = Plan::generate(o.seed, o.connections, o.users, o.seconds);
    let outcome = phase::run(&setup, &plan).await?;
    let (after, _, settle) = server
        .wait_for(SETTLE, |g| {
            g.connections == 0
                && g.users == 0
                && g.tasks == baseline.tasks
                && g.rss_kib <= baseline.rss_kib + baseline.rss_kib / 10
        })
        .await?;
    let failed = report::print(&report::Inputs {
        outcome: &outcome,
        baseline,
        after,
        settle,
        server_errors: server.errors(),
        busy_retries: dialer.busy_retries.load(Ordering::Relaxed),
        publishers: o.publishers + usize::from(plan.slow_readers > 0),
        params: json!({
            "seed": o.seed, "connections": o.connections, "users": o.users, "seconds": o.seconds,
            "publishers": o.publishers, "rate": o.rate, "inbound_rate": INBOUND_RATE,
        }),
        warm_up: &warm,
    });
    server.stop().await;
    if failed > 0 {
        return Err(format!("{failed} assertion(s) failed (seed {})", o.seed).into());
    }
    Ok(())
}
