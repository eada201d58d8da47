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

/// Forwards a loopback port to a Redis server until cut; after the cut,
/// every forwarded connection is dropped and new ones are refused.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    pub async fn to(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let mut cut_rx = cut.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = cut_rx.changed() => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    return;
                };
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Cuts every connection through the proxy, for good.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
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
