//! A real `redis-server` for the backplane tests: spawned on a free loopback
//! port, ready when it says so on stdout, removed on drop. Plus a TCP proxy
//! whose cut looks, to the node behind it, like a network partition.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub async fn start() -> RedisServer {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        RedisServer::start_on(port).await
    }

    /// Starts a server on `port` (again, after [`RedisServer::kill`]).
    pub async fn start_on(port: u16) -> RedisServer {
        let mut child = match Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
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
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
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
