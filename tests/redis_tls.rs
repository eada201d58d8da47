//! The Redis backplane over TLS (`rediss://`), against a real TLS-only
//! `redis-server` each test starts with a CA and certificates made at run
//! time by the `openssl` command-line tool (`redis_server::TestPki`): two
//! hubs deliver across nodes, a node that does not trust the server's CA (or
//! lacks the client certificate a server requires) never becomes healthy
//! and logs why, once.
//!
//! Behind the `redis-tls` feature; `scripts/test.sh` installs `redis-server`
//! and `openssl` when missing.

#![cfg(feature = "redis-tls")]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod redis_server;
mod support;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis_server::{RedisServer, TestPki, healthy};
use serde_json::{Value, json};
use support::{OnReady, Scripted, bind, event, next_json, user};
use tokio::sync::{mpsc, watch};
use tracing::Level;
use ws_lifecycle::Hub;
use ws_lifecycle::backplane::Remote;
use ws_lifecycle::backplane::redis::{RedisBackplane, RedisConfig, TlsOptions};

/// Short timeouts and backoff, so a failing node retries many times within
/// the tests' waits.
fn config(url: &str, tls: Option<TlsOptions>) -> RedisConfig {
    let mut config = RedisConfig::new(
        url,
        ws_lifecycle::backplane::redis::ClusterKey::new(redis_server::CLUSTER_KEY).unwrap(),
    );
    config.command_timeout = Duration::from_millis(500);
    config.max_backoff = Duration::from_millis(200);
    config.tls = tls;
    config
}

/// A hub on a backplane built from `config`, and the backplane's health.
fn node(config: RedisConfig) -> (Hub, watch::Receiver<bool>) {
    let backplane = RedisBackplane::new(config).unwrap();
    let health = backplane.health();
    (Hub::builder().backplane(backplane).build().unwrap(), health)
}

/// Waits `wait` and checks the backplane was never healthy meanwhile.
async fn never_healthy(health: &mut watch::Receiver<bool>, wait: Duration) {
    let became = tokio::time::timeout(wait, health.wait_for(|h| *h))
        .await
        .is_ok();
    assert!(!became, "the backplane became healthy");
    assert!(!*health.borrow());
}

/// Everything logged at INFO and above on this thread (the backplane's
/// tasks run there on a current-thread runtime) while the guard lives.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .with_ansi(false)
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_across_nodes_over_tls() {
    let pki = TestPki::generate();
    let server = RedisServer::start_tls(&pki, false).await;
    assert!(server.url().starts_with("rediss://"));
    let tls = TlsOptions::new().root_ca_pem(pki.pem("ca.crt"));
    let (a, mut a_health) = node(config(&server.url(), Some(tls.clone())));
    let b_backplane =
        std::sync::Arc::new(RedisBackplane::new(config(&server.url(), Some(tls))).unwrap());
    let mut b_health = b_backplane.health();
    let b = Hub::builder()
        .backplane(std::sync::Arc::clone(&b_backplane))
        .build()
        .unwrap();
    healthy(&mut a_health).await;
    healthy(&mut b_health).await;

    // Alice is connected on node B only; node A sends to her.
    let alice = user("alice");
    let (conn, mut client) = bind(&b, &alice, 64).await;
    let handle = conn.handle();
    let (signal, _ready) = mpsc::unbounded_channel();
    let handler = Scripted {
        on_ready: OnReady::Signal(signal),
        ..Default::default()
    };
    let hub = b.clone();
    tokio::spawn(async move { hub.run(conn, &handler).await });
    handle.wait_ready(Duration::from_secs(20)).await.unwrap();
    // Presence follows Ready within a round trip (it does not gate it).
    tokio::time::timeout(Duration::from_secs(20), b_backplane.claimed(&alice))
        .await
        .expect("node B never wrote alice's presence");
    assert!(a.is_online_anywhere(&alice).await.unwrap());

    let delivery = a
        .send_to_user(&alice, &event("m", json!({ "over": "tls" })))
        .unwrap();
    assert_eq!(delivery.remote, Remote::Published);
    assert_eq!(delivery.queued, 0, "not on node A itself");
    // A `gap` may come first: a connection made just as the backplane came
    // up can be told of one (a start-up race of the backplane, not of TLS).
    let mut frame: Value = next_json(&mut client).await;
    while frame["type"] == "gap" {
        frame = next_json(&mut client).await;
    }
    assert_eq!(frame["type"], "m");
    assert_eq!(frame["payload"]["over"], "tls");
}

#[tokio::test]
async fn a_node_that_does_not_trust_the_servers_ca_never_becomes_healthy_and_says_why() {
    let (logs, _guard) = Logs::capture();
    let pki = TestPki::generate();
    let other_ca = TestPki::generate();
    let server = RedisServer::start_tls(&pki, false).await;

    // Trusting another CA only: the server's certificate has an unknown issuer.
    let tls = TlsOptions::new().root_ca_pem(other_ca.pem("ca.crt"));
    let (_hub, mut health) = node(config(&server.url(), Some(tls)));
    // With a 200 ms backoff cap, a dozen attempts fail in 3 s.
    never_healthy(&mut health, Duration::from_secs(3)).await;
    let text = logs.text();
    let reports: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(
        reports.len(),
        1,
        "one report for the streak, not one per retry:\n{text}"
    );
    for expected in [
        "TLS certificate is not trusted",
        "UnknownIssuer",
        "TlsOptions::root_ca_pem",
    ] {
        assert!(reports[0].contains(expected), "{expected:?} in {text}");
    }

    // The system's roots do not include the test CA either.
    let (_hub, mut health) = node(config(&server.url(), None));
    never_healthy(&mut health, Duration::from_secs(1)).await;
    let text = logs.text();
    assert_eq!(
        text.matches("TLS certificate is not trusted").count(),
        2,
        "{text}"
    );
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let (logs, _guard) = Logs::capture();
    let pki = TestPki::generate();
    let server = RedisServer::start_tls(&pki, true).await;
    let ca = TlsOptions::new().root_ca_pem(pki.pem("ca.crt"));

    let with_identity = ca
        .clone()
        .client_identity_pem(pki.pem("client.crt"), pki.pem("client.key"));
    let (_hub, mut health) = node(config(&server.url(), Some(with_identity)));
    healthy(&mut health).await;
    assert!(!logs.text().contains("WARN"), "{}", logs.text());

    // A key that is not the certificate's is refused when the backplane is built.
    let mismatched = ca
        .clone()
        .client_identity_pem(pki.pem("client.crt"), pki.pem("server.key"));
    let err = RedisBackplane::new(config(&server.url(), Some(mismatched))).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");

    let (_hub, mut health) = node(config(&server.url(), Some(ca)));
    never_healthy(&mut health, Duration::from_secs(2)).await;
    let text = logs.text();
    assert!(
        text.contains("refused the TLS handshake") && text.contains("client_identity_pem"),
        "{text}"
    );
}

#[test]
fn a_plaintext_url_with_tls_options_is_refused() {
    let config = config(
        "redis://127.0.0.1:6379/",
        Some(TlsOptions::new().root_ca_pem(Vec::new())),
    );
    let err = RedisBackplane::new(config).unwrap_err().to_string();
    assert!(err.contains("rediss://"), "{err}");
}
