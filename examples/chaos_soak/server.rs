//! The server under test: the real `axum_chat` example in a child process
//! (so its RSS is its own), its `/metrics`, and its log. In two-node mode,
//! two of them, nodes of one cluster.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::client::{Clock, Error};

const LISTENING: &str = "ws-lifecycle axum_chat listening on http://";
/// What the example logs as its backplane comes and goes
/// (`examples/common/cluster.rs`).
const BACKPLANE_UP: &str = " backplane up";
const BACKPLANE_DOWN: &str = " backplane down";
/// What a build without the `redis` feature says when given `--redis`.
const NO_REDIS: &str = "--features redis";
/// How to build what the two-node mode needs.
pub(crate) const BUILD_WITH_REDIS: &str = "cargo build --release --example axum_chat --example chaos_soak --features axum,tungstenite,jwt,metrics,redis";

/// The hub's isolation refusals in `/metrics` (the `metrics` feature's
/// deliveries counter; `docs/observability.md`).
const ISOLATION_REFUSALS: &str =
    r#"ws_lifecycle_deliveries_total{outcome="refused",reason="misaddressed"}"#;

/// The running server. Dropping it kills the process (`kill_on_drop`), so
/// no failure path leaves it behind.
pub(crate) struct Server {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    errors: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
    /// Whether its backplane is up, from its log (a cluster node only).
    backplane: watch::Receiver<bool>,
    /// When (µs of the soak's clock) its backplane went up or down.
    pub(crate) backplane_changes: Arc<Mutex<Vec<(u64, bool)>>>,
}

/// What the soak reads from `/metrics` and `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gauges {
    /// Connections in the routing table.
    pub(crate) connections: u64,
    /// Users in the routing table.
    pub(crate) users: u64,
    /// The runtime's alive tasks, the one serving `/metrics` included
    /// (every reading comes over a fresh connection; an earlier reading's
    /// may still be closing, so readings are compared once steady).
    pub(crate) tasks: u64,
    pub(crate) isolation_refusals: u64,
    pub(crate) rss_kib: u64,
}

impl Server {
    /// Starts `path` on a free loopback port, allowing `inbound_rate`
    /// messages per second per connection, as a node of the cluster on
    /// `redis` if given, and waits until it listens.
    pub(crate) async fn start(
        path: &Path,
        inbound_rate: u32,
        redis: Option<&str>,
        clock: Clock,
    ) -> Result<Server, Error> {
        let mut command = Command::new(path);
        command
            .env("WS_LIFECYCLE_ADDR", "127.0.0.1:0")
            .env("WS_LIFECYCLE_INBOUND_RATE", inbound_rate.to_string())
            .env_remove("WS_LIFECYCLE_REDIS_URL");
        if let Some(url) = redis {
            command.args(["--redis", url]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        // Passed on as it comes; kept, to tell why the server exited.
        let said = Arc::new(Mutex::new(String::new()));
        let stderr_done = tokio::spawn({
            let said = Arc::clone(&said);
            async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("{line}");
                    let mut said = said.lock();
                    if said.len() < 64 * 1024 {
                        said.push_str(&line);
                        said.push('\n');
                    }
                }
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let listening = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(LISTENING) {
                    return Ok(rest.trim_end_matches('/').parse::<SocketAddr>()?);
                }
            }
            Err::<_, Error>("the server exited before listening".into())
        };
        let addr = match tokio::time::timeout(Duration::from_secs(30), listening).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                // Its stderr is complete once it has exited.
                let _ = tokio::time::timeout(Duration::from_secs(5), stderr_done).await;
                let said = said.lock().clone();
                if said.contains(NO_REDIS) {
                    return Err(format!(
                        "{} was built without the `redis` feature, which --nodes 2 needs; build it with `{BUILD_WITH_REDIS}`",
                        path.display()
                    )
                    .into());
                }
                return Err(format!("{e}: {}", said.trim_end()).into());
            }
            Err(_) => return Err("the server did not listen within 30 s".into()),
        };
        // The log (tracing, on stdout) must be read or the server blocks on
        // a full pipe; its ERROR lines are counted: the crate logs at ERROR
        // only for what is a bug (an isolation refusal, a duplicate id, a
        // panicking callback).
        let errors = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(Mutex::new(None));
        let (backplane_tx, backplane) = watch::channel(false);
        let backplane_changes = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let (errors, last_error) = (Arc::clone(&errors), Arc::clone(&last_error));
            let changes = Arc::clone(&backplane_changes);
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(" ERROR ") {
                        errors.fetch_add(1, Ordering::Relaxed);
                        *last_error.lock() = Some(line);
                    } else if line.ends_with(BACKPLANE_UP) || line.ends_with(BACKPLANE_DOWN) {
                        let up = line.ends_with(BACKPLANE_UP);
                        changes.lock().push((clock.now_us(), up));
                        backplane_tx.send_replace(up);
                    }
                }
            }
        });
        Ok(Server {
            child,
            pid,
            addr,
            errors,
            last_error,
            backplane,
            backplane_changes,
        })
    }

    /// Waits (bounded) until the node says its backplane is up.
    pub(crate) async fn backplane_up(&mut self, limit: Duration) -> Result<(), Error> {
        match tokio::time::timeout(limit, self.backplane.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(format!("the server (pid {}) exited", self.pid).into()),
            Err(_) => Err(format!(
                "the server (pid {}) did not report its backplane up within {} s",
                self.pid,
                limit.as_secs()
            )
            .into()),
        }
    }

    /// ERROR lines the server logged, and the last one.
    pub(crate) fn errors(&self) -> (u64, Option<String>) {
        (
            self.errors.load(Ordering::Relaxed),
            self.last_error.lock().clone(),
        )
    }

    /// One reading of the gauges.
    pub(crate) async fn gauges(&mut self) -> Result<Gauges, Error> {
        if let Some(status) = self.child.try_wait()? {
            return Err(format!("the server exited: {status}").into());
        }
        let text = self.get("/metrics").await?;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .ok_or_else(|| format!("/metrics has no {name}"))
        };
        Ok(Gauges {
            connections: value("ws_lifecycle_router_connections")?,
            users: value("ws_lifecycle_router_users")?,
            tasks: value("tokio_alive_tasks")?,
            isolation_refusals: value(ISOLATION_REFUSALS)?,
            rss_kib: crate::proc::rss_kib(self.pid)?,
        })
    }

    /// A plain HTTP/1.1 GET on a fresh connection, closed after the answer.
    async fn get(&self, path: &str) -> Result<String, Error> {
        let addr = self.addr;
        let request = async move {
            let mut stream = TcpStream::connect(addr).await?;
            let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            let mut answer = Vec::new();
            stream.take(4 << 20).read_to_end(&mut answer).await?;
            let answer = String::from_utf8(answer)?;
            let (head, body) = answer.split_once("\r\n\r\n").ok_or("no HTTP body")?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")).into());
            }
            Ok::<_, Error>(body.to_owned())
        };
        tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .map_err(|_| format!("GET {path} timed out"))?
    }

    /// Kills the server and waits for it (bounded).
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// One reading of every node's gauges.
async fn read_all(servers: &mut [Server]) -> Result<Vec<Gauges>, Error> {
    let mut all = Vec::with_capacity(servers.len());
    for server in servers {
        all.push(server.gauges().await?);
    }
    Ok(all)
}

/// Polls every node's gauges every 200 ms (the gauges have no signal: they
/// are read over HTTP and from `/proc`) until `done` holds or `limit`
/// passes; returns the last reading, whether `done` held, and how long it
/// took.
pub(crate) async fn wait_for(
    servers: &mut [Server],
    limit: Duration,
    mut done: impl FnMut(&[Gauges]) -> bool,
) -> Result<(Vec<Gauges>, bool, Duration), Error> {
    let started = Instant::now();
    let polls = limit.as_millis() / 200 + 1;
    let mut last = read_all(servers).await?;
    for _ in 0..polls {
        if done(&last) {
            return Ok((last, true, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = read_all(servers).await?;
    }
    let held = done(&last);
    Ok((last, held, started.elapsed()))
}

/// The soft limit on open files, from `/proc/self/limits`.
pub(crate) fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
