//! Two-node mode (`--nodes 2`): the `redis-server` the nodes share, which
//! node each client dials, and the Redis freeze of `--sigstop-redis`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::client::{Clock, Error};

/// Attempts at a free port: another process may take the probed port
/// before `redis-server` binds it.
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` on a free loopback port, persisting nothing. Dropping
/// it kills the process (`kill_on_drop`, SIGKILL, which also ends a stopped
/// one).
pub(crate) struct RedisServer {
    _child: Child,
    pub(crate) pid: u32,
    pub(crate) url: String,
}

impl RedisServer {
    /// Starts `program` and waits (bounded) until it says it is ready.
    pub(crate) async fn start(program: &str) -> Result<RedisServer, Error> {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match RedisServer::start_once(program).await {
                Ok(server) => return Ok(server),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("{program}: {last}").into())
    }

    async fn start_once(program: &str) -> Result<RedisServer, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start it ({e}); install it with `sudo apt-get install -y redis-server`, \
                     or name it with --redis-server PATH"
                )
            })?;
        let pid = child.id().ok_or("it exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Ready to accept connections") {
                    return Ok(());
                }
            }
            Err::<_, Error>(format!("exited before it was ready (port {port} taken?)").into())
        };
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .map_err(|_| "not ready within 20 s")??;
        // Its log must be read, or it blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(RedisServer {
            _child: child,
            pid,
            url: format!("redis://127.0.0.1:{port}/"),
        })
    }
}

/// `--sigstop-redis`: Redis frozen (SIGSTOP) for `hold`, `at` into the
/// churn, then thawed (SIGCONT). A frozen server keeps its sockets and
/// answers nothing: the nodes must notice through their command timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freeze {
    pub(crate) pid: u32,
    pub(crate) at: Duration,
    pub(crate) hold: Duration,
}

/// When the freeze happened, in µs of the soak's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frozen {
    pub(crate) stopped_us: u64,
    pub(crate) continued_us: u64,
}

impl Freeze {
    /// Freezes Redis `at` after `start`, thaws it `hold` later.
    pub(crate) async fn run(self, start: Instant, clock: Clock) -> Result<Frozen, String> {
        tokio::time::sleep_until((start + self.at).into()).await;
        signal(self.pid, "-STOP").await?;
        let stopped_us = clock.now_us();
        tokio::time::sleep(self.hold).await;
        signal(self.pid, "-CONT").await?;
        Ok(Frozen {
            stopped_us,
            continued_us: clock.now_us(),
        })
    }
}

async fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await
        .map_err(|e| format!("kill {signal} {pid}: {e}"))?;
    if !status.success() {
        return Err(format!("kill {signal} {pid}: {status}"));
    }
    Ok(())
}

/// Which node serves clients of different kinds, so that most deliveries
/// cross nodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) nodes: usize,
}

impl Placement {
    /// Publisher `p`'s node: the publishers alternate.
    pub(crate) fn publisher(self, p: usize) -> usize {
        p % self.nodes.max(1)
    }

    /// Receiver `slot`'s node, for `users` users published to by
    /// `publishers` publishers (user `u` by publisher `u % publishers`):
    /// each user's slots come in rounds (slot `r * users + u`), and three
    /// rounds in four go to another node than the publisher's, so on two
    /// nodes three deliveries in four cross nodes and the local path is
    /// exercised too.
    pub(crate) fn receiver(self, slot: usize, users: usize, publishers: usize) -> usize {
        let users = users.max(1);
        let publisher = self.publisher(slot % users % publishers.max(1));
        let round = slot / users;
        if round % 4 == 3 {
            publisher
        } else {
            (publisher + 1) % self.nodes.max(1)
        }
    }

    /// The slow readers' publisher's node, and the slow readers' own.
    pub(crate) fn slow(self) -> (usize, usize) {
        (0, 1 % self.nodes.max(1))
    }

    /// The node of the `n`-th client of a kind that is not published to
    /// (floods, invalid tokens): they alternate.
    pub(crate) fn other(self, n: usize) -> usize {
        n % self.nodes.max(1)
    }
}
