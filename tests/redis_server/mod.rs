//! A real `redis-server` for the backplane tests: spawned on a free loopback
//! port, ready when it says so on stdout, removed on drop. Plus a TCP proxy
//! whose cut looks, to the node behind it, like a network partition, and,
//! for the TLS tests, a throwaway CA with server and client certificates
//! made by the `openssl` command-line tool.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The key every test node signs with.
pub const CLUSTER_KEY: &[u8] = b"the test cluster's key, 32 bytes or more";

/// A backplane configuration for `url` with the test key and short
/// timeouts.
pub fn config(url: &str) -> ws_lifecycle::backplane::redis::RedisConfig {
    use ws_lifecycle::backplane::redis::{ClusterKey, RedisConfig};
    let mut config = RedisConfig::new(url, ClusterKey::new(CLUSTER_KEY).unwrap());
    config.command_timeout = Duration::from_millis(500);
    config.max_backoff = Duration::from_millis(200);
    config
}

/// Runs one command on the server at `url` (an admin's view).
pub async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Waits until Redis counts `expected` connections of `user` across the
/// live nodes, woken by keyspace notifications on the user's count key
/// (no polling), for at most `within`.
pub async fn until_count(
    url: &str,
    backplane: &ws_lifecycle::backplane::redis::RedisBackplane,
    user: &ws_lifecycle::id::UserId,
    expected: u64,
    within: Duration,
) {
    use futures_util::StreamExt;
    let hex: String = user.as_str().bytes().map(|b| format!("{b:02x}")).collect();
    let changes = notifications(url, "Kgh", &format!("__keyspace@0__:wsl:count:{hex}")).await;
    let mut changes = std::pin::pin!(changes);
    let mut admin = admin(url).await;
    let mut last = None;
    let outcome = tokio::time::timeout(within, async {
        loop {
            if let Ok(count) = backplane.cluster_connections(user).await {
                if count == expected {
                    return;
                }
                last = Some(count);
            }
            // Woken by the next write of the key (or a minimal pause when
            // Redis could not be asked).
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.next()).await;
        }
    })
    .await;
    if outcome.is_err() {
        let fields: Vec<String> = redis::cmd("HGETALL")
            .arg(format!("wsl:count:{hex}"))
            .query_async(&mut admin)
            .await
            .unwrap();
        eprintln!("count fields: {fields:?}");
    }
    assert!(
        outcome.is_ok(),
        "the cluster count of {user} did not return to {expected} within {within:?} (last {last:?})"
    );
}

/// `CONFIG SET` each of `settings` on the server at `url`.
pub async fn config_set(url: &str, settings: &[(&str, &str)]) {
    let mut admin = admin(url).await;
    for (name, value) in settings {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(*name)
            .arg(*value)
            .query_async::<()>(&mut admin)
            .await
            .unwrap();
    }
}

/// Turns on keyspace notifications of `flags` and subscribes to `channel`
/// (`__keyspace@0__:<key>` or `__keyevent@0__:<event>`): each message
/// wakes a test waiting for Redis to reach a state, so nothing polls.
pub async fn notifications(
    url: &str,
    flags: &str,
    channel: &str,
) -> impl futures_util::Stream<Item = redis::Msg> + use<> {
    config_set(url, &[("notify-keyspace-events", flags)]).await;
    let mut pubsub = redis::Client::open(url)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(channel).await.unwrap();
    pubsub.into_on_message()
}

/// Waits (at most 20 s) until a backplane's health watch says up.
pub async fn healthy(health: &mut watch::Receiver<bool>) {
    tokio::time::timeout(Duration::from_secs(20), health.wait_for(|h| *h))
        .await
        .expect("backplane not healthy within 20 s")
        .unwrap();
}

/// A hub on a Redis backplane built from `config` (and `hub_config`),
/// returned with a handle on the backplane once it is up.
pub async fn node_with(
    config: ws_lifecycle::backplane::redis::RedisConfig,
    hub_config: ws_lifecycle::config::HubConfig,
) -> (
    ws_lifecycle::Hub,
    std::sync::Arc<ws_lifecycle::backplane::redis::RedisBackplane>,
) {
    let backplane =
        std::sync::Arc::new(ws_lifecycle::backplane::redis::RedisBackplane::new(config).unwrap());
    let mut health = backplane.health();
    let hub = ws_lifecycle::Hub::builder()
        .config(hub_config)
        .backplane(std::sync::Arc::clone(&backplane))
        .build()
        .unwrap();
    healthy(&mut health).await;
    (hub, backplane)
}

#[allow(unused_imports)]
pub use crate::support::{connect, start};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// Whether `port` speaks TLS (and only TLS).
    tls: bool,
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a server on a free port.
    pub async fn start() -> RedisServer {
        RedisServer::start_on(free_port()).await
    }

    /// Starts a server on `port` (again, after [`RedisServer::kill`]).
    pub async fn start_on(port: u16) -> RedisServer {
        RedisServer::spawn(port, &["--port", &port.to_string()], false).await
    }

    /// Starts a TLS-only server (`--port 0 --tls-port <free port>`) with
    /// `pki`'s server certificate; with `require_client_certs`, clients must
    /// present a certificate signed by `pki`'s CA (mutual TLS).
    pub async fn start_tls(pki: &TestPki, require_client_certs: bool) -> RedisServer {
        let port = free_port();
        let port_arg = port.to_string();
        let file = |name: &str| pki.path(name).to_str().unwrap().to_owned();
        let (cert, key, ca) = (file("server.crt"), file("server.key"), file("ca.crt"));
        let auth_clients = if require_client_certs { "yes" } else { "no" };
        let args = [
            ["--port", "0"],
            ["--tls-port", &port_arg],
            ["--tls-cert-file", &cert],
            ["--tls-key-file", &key],
            ["--tls-ca-cert-file", &ca],
            ["--tls-auth-clients", auth_clients],
        ]
        .concat();
        RedisServer::spawn(port, &args, true).await
    }

    async fn spawn(port: u16, listen: &[&str], tls: bool) -> RedisServer {
        let mut child = match Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start redis-server ({e}): run scripts/test.sh, or install it with \
                 `sudo apt-get install -y redis-server`"
            ),
        };
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Ready to accept connections") {
                    return;
                }
            }
            panic!("redis-server exited before it was ready (port {port} taken?)");
        })
        .await
        .expect("redis-server not ready within 20 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        RedisServer {
            child: Some(child),
            port,
            tls,
        }
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://…` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("server not running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Freezes the server: it keeps its sockets but answers nothing.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server.
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

/// What a [`Proxy`] does with the bytes of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Passes them on.
    Forward,
    /// Keeps them (in order) until the flow is set back to `Forward`: to
    /// Redis and to the node alike, a server that hangs.
    Hold,
    /// Reads and discards them: replies that never arrive.
    Drop,
}

#[derive(Debug, Clone)]
struct Plan {
    cut: bool,
    up: Flow,
    down: Flow,
    /// Set `up` to `Hold` as soon as a chunk to Redis contains this.
    hold_on: Option<Vec<u8>>,
    /// Every [`Proxy::cut_where`] so far: a connection drops when one made
    /// after it opened names a command it has sent.
    cuts: Vec<&'static [u8]>,
}

/// Commands a connection is recognised by, for [`Proxy::cut_where`].
const TAGS: [&[u8]; 3] = [b"PUBLISH", b"SUBSCRIBE", b"EVAL"];

/// Forwards a loopback port to a Redis server. Each direction can be held
/// or dropped on command, or held from the first chunk that contains a
/// pattern (the widened window of a race, without sleeping); after
/// [`cut`](Proxy::cut), every forwarded connection is dropped and new ones
/// are refused.
pub struct Proxy {
    pub addr: SocketAddr,
    plan: watch::Sender<Plan>,
    /// Notified when a `hold_on` pattern was seen and the hold began.
    pub held: std::sync::Arc<tokio::sync::Notify>,
}

impl Proxy {
    pub async fn to(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (plan, _) = watch::channel(Plan {
            cut: false,
            up: Flow::Forward,
            down: Flow::Forward,
            hold_on: None,
            cuts: Vec::new(),
        });
        let held = std::sync::Arc::new(tokio::sync::Notify::new());
        let accept_plan = plan.clone();
        let accept_held = held.clone();
        tokio::spawn(async move {
            let mut plan_rx = accept_plan.subscribe();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = plan_rx.wait_for(|p| p.cut) => return,
                };
                let Ok((inbound, _)) = accepted else {
                    return;
                };
                let plan = accept_plan.clone();
                let held = accept_held.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let mut cut = plan.subscribe();
                    let born = cut.borrow().cuts.len();
                    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
                    let tagged = seen.clone();
                    tokio::select! {
                        () = pump(in_read, out_write, plan.clone(), Some((held, seen))) => {}
                        () = pump(out_read, in_write, plan.clone(), None) => {}
                        _ = cut.wait_for(|p| {
                            p.cut || p.cuts.iter().skip(born).any(|tag| tagged.lock().contains(tag))
                        }) => {}
                    }
                });
            }
        });
        Proxy { addr, plan, held }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Cuts every connection through the proxy, for good.
    pub fn cut(&self) {
        self.plan.send_modify(|p| p.cut = true);
    }

    /// Sets what happens to bytes towards Redis (`up`) and towards the
    /// node (`down`), for every connection, at once.
    pub fn set(&self, up: Flow, down: Flow) {
        self.plan.send_modify(|p| {
            p.up = up;
            p.down = down;
        });
    }

    /// Drops every open connection that has sent a `tag` command
    /// (`PUBLISH`: a node's publisher, `SUBSCRIBE`: its subscriber, `EVAL`:
    /// its query connection); the node may reconnect at once.
    pub fn cut_where(&self, tag: &'static [u8]) {
        assert!(TAGS.contains(&tag), "not a tag the proxy records");
        self.plan.send_modify(|p| p.cuts.push(tag));
    }

    /// Holds the traffic towards Redis from the first chunk (of any
    /// connection) that contains `pattern`; [`Proxy::held`] is notified.
    /// [`Proxy::set`] with `Flow::Forward` releases it.
    pub fn hold_on(&self, pattern: &[u8]) {
        self.plan
            .send_modify(|p| p.hold_on = Some(pattern.to_vec()));
    }
}

/// Copies one direction under the plan. `upstream` (towards Redis) carries
/// the hold notification and the record of tags the connection has sent.
type Upstream = (
    std::sync::Arc<tokio::sync::Notify>,
    std::sync::Arc<parking_lot::Mutex<Vec<&'static [u8]>>>,
);

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    plan: watch::Sender<Plan>,
    upstream: Option<Upstream>,
) {
    let up = upstream.is_some();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut rx = plan.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            return;
        };
        if let Some((held, seen)) = &upstream {
            for tag in TAGS {
                if chunk.windows(tag.len()).any(|w| w == tag) && !seen.lock().contains(&tag) {
                    seen.lock().push(tag);
                }
            }
            let pattern = rx.borrow().hold_on.clone();
            if let Some(pattern) = pattern
                && chunk
                    .windows(pattern.len())
                    .any(|w| w == pattern.as_slice())
            {
                plan.send_modify(|p| {
                    p.hold_on = None;
                    p.up = Flow::Hold;
                });
                held.notify_one();
            }
        }
        let flow = |p: &Plan| if up { p.up } else { p.down };
        let Ok(now) = rx
            .wait_for(|p| flow(p) != Flow::Hold)
            .await
            .map(|p| flow(&p))
        else {
            return;
        };
        if now == Flow::Drop {
            continue;
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// A throwaway public-key infrastructure in a temporary directory (removed
/// on drop), made with the `openssl` command-line tool: `ca.crt`/`ca.key`, a
/// CA; `server.crt`/`server.key`, valid for `127.0.0.1` and `localhost`;
/// `client.crt`/`client.key`, for mutual TLS. EC P-256 keys, valid for two
/// days from now.
pub struct TestPki {
    dir: PathBuf,
}

const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ws-lifecycle test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
";

impl TestPki {
    pub fn generate() -> TestPki {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Each CA its own name too: two CAs of one name would make an
        // untrusted certificate fail on its signature, not its issuer.
        let name = format!(
            "ws-lifecycle-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = TestPki { dir };
        std::fs::write(pki.path("openssl.cnf"), OPENSSL_CONFIG).unwrap();
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        pki.openssl(&format!(
            "req -config openssl.cnf -x509 -extensions ca -days 2 {key} \
             -subj /CN={name}-ca -keyout ca.key -out ca.crt"
        ));
        for role in ["server", "client"] {
            pki.openssl(&format!(
                "req -config openssl.cnf -new {key} \
                 -subj /CN={name}-{role} -keyout {role}.key -out {role}.csr"
            ));
            pki.openssl(&format!(
                "x509 -req -in {role}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                 -out {role}.crt -extfile openssl.cnf -extensions {role}"
            ));
        }
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The contents of `name` (`ca.crt`, `client.key`, …).
    pub fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// Runs `openssl` with `args` (separated by whitespace) in the PKI's
    /// directory.
    fn openssl(&self, args: &str) {
        let output = match std::process::Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(&self.dir)
            .output()
        {
            Ok(output) => output,
            Err(e) => panic!(
                "cannot run openssl ({e}): run scripts/test.sh, or install it with \
                 `sudo apt-get install -y openssl`"
            ),
        };
        assert!(
            output.status.success(),
            "openssl {args} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
