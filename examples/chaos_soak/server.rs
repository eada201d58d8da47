//! The server under test: the real `axum_chat` example in a child process
//! (so its RSS is its own), its `/metrics`, and its log.

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

use crate::client::Error;

const LISTENING: &str = "ws-lifecycle axum_chat listening on http://";

/// The running server. Dropping it kills the process (`kill_on_drop`), so
/// no failure path leaves it behind.
pub(crate) struct Server {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    errors: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
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
    /// messages per second per connection, and waits until it listens.
    pub(crate) async fn start(path: &Path, inbound_rate: u32) -> Result<Server, Error> {
        let mut child = Command::new(path)
            .env("WS_LIFECYCLE_ADDR", "127.0.0.1:0")
            .env("WS_LIFECYCLE_INBOUND_RATE", inbound_rate.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let listening = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(LISTENING) {
                    return Ok(rest.trim_end_matches('/').parse::<SocketAddr>()?);
                }
            }
            Err::<_, Error>("the server exited before listening".into())
        };
        let addr = tokio::time::timeout(Duration::from_secs(30), listening)
            .await
            .map_err(|_| "the server did not listen within 30 s")??;
        // The log (tracing, on stdout) must be read or the server blocks on
        // a full pipe; its ERROR lines are counted: the crate logs at ERROR
        // only for what is a bug (an isolation refusal, a duplicate id, a
        // panicking callback).
        let errors = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(Mutex::new(None));
        tokio::spawn({
            let (errors, last_error) = (Arc::clone(&errors), Arc::clone(&last_error));
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(" ERROR ") {
                        errors.fetch_add(1, Ordering::Relaxed);
                        *last_error.lock() = Some(line);
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
        })
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
            isolation_refusals: value("ws_lifecycle_isolation_refusals_total")?,
            rss_kib: rss_kib(self.pid)?,
        })
    }

    /// Polls the gauges every 200 ms until `done` holds or `limit` passes;
    /// returns the last reading and whether `done` held.
    pub(crate) async fn wait_for(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Gauges) -> bool,
    ) -> Result<(Gauges, bool, Duration), Error> {
        let started = Instant::now();
        let polls = limit.as_millis() / 200 + 1;
        let mut last = self.gauges().await?;
        for _ in 0..polls {
            if done(&last) {
                return Ok((last, true, started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            last = self.gauges().await?;
        }
        let held = done(&last);
        Ok((last, held, started.elapsed()))
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

fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

/// The soft limit on open files, from `/proc/self/limits`.
pub(crate) fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
