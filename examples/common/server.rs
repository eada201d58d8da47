//! What the examples share besides the app: the command line, where to
//! listen, the demo secret and authenticator (tokens are signed in
//! `demo_jwt.rs`, beside this file), and the `/metrics` text.

use std::net::SocketAddr;
use std::time::Duration;

use ws_lifecycle::auth::{JwtAuthenticator, JwtConfigError};
use ws_lifecycle::id::UserId;

/// The examples' one JWT signer.
#[path = "demo_jwt.rs"]
mod demo_jwt;

pub(crate) use demo_jwt::DEMO_SECRET;

/// The examples' command-line parser.
#[allow(
    dead_code,
    reason = "the servers take values only; flags and numbers are for the clients"
)]
#[path = "args.rs"]
mod args;

pub(crate) use args::Args;

impl Args {
    /// `--addr HOST:PORT`, else `WS_LIFECYCLE_ADDR`, else 127.0.0.1:3000.
    pub(crate) fn listen_addr(&self) -> Result<SocketAddr, String> {
        let text = self
            .get("addr")
            .map(str::to_owned)
            .or_else(|| std::env::var("WS_LIFECYCLE_ADDR").ok())
            .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
        text.parse()
            .map_err(|e| format!("bad address {text:?}: {e}"))
    }
}

/// The demo secret: `WS_LIFECYCLE_DEMO_SECRET`, else [`DEMO_SECRET`].
/// EXAMPLE ONLY: a real server gets tokens from its identity provider.
///
/// # Errors
///
/// Why the secret cannot be used (shorter than HS256 allows): the example
/// refuses to start.
pub(crate) fn demo_secret() -> Result<String, String> {
    checked_demo_secret(std::env::var("WS_LIFECYCLE_DEMO_SECRET").ok())
}

/// `given` (the environment's value), else [`DEMO_SECRET`], if the demo
/// authenticator accepts it.
pub(crate) fn checked_demo_secret(given: Option<String>) -> Result<String, String> {
    let secret = given.unwrap_or_else(|| DEMO_SECRET.to_owned());
    match demo_authenticator(&secret) {
        Ok(_) => Ok(secret),
        Err(e) => Err(format!("WS_LIFECYCLE_DEMO_SECRET cannot be used: {e}")),
    }
}

/// The authenticator trusting the demo secret.
///
/// `iss` and `aud` are waived: the demo mints its own tokens with a secret
/// nothing else holds, so no other service's token can be signed with it.
/// A real server names its identity provider's issuer and its own audience
/// (`.issuer(…)`, `.audience(…)`).
pub(crate) fn demo_authenticator(secret: &str) -> Result<JwtAuthenticator, JwtConfigError> {
    JwtAuthenticator::builder()
        .hs256(secret)
        .any_issuer()
        .any_audience()
        .build()
}

/// An HS256 demo token for `user`, valid for an hour (`/demo-token`).
/// EXAMPLE ONLY: anyone can mint one for any user.
pub(crate) fn demo_token(
    secret: &str,
    user: &UserId,
) -> Result<String, jsonwebtoken::errors::Error> {
    demo_jwt::token(secret, user.as_str())
}

/// The hub's configuration, from the environment where the examples allow
/// it: `WS_LIFECYCLE_INBOUND_RATE` messages per second per connection
/// (`0` turns the limit off, for load tests; default 20, bursts of 50).
pub(crate) fn hub_config() -> Result<ws_lifecycle::config::HubConfig, String> {
    let mut config = ws_lifecycle::config::HubConfig::default();
    if let Ok(rate) = std::env::var("WS_LIFECYCLE_INBOUND_RATE") {
        let rate: f64 = rate
            .parse()
            .map_err(|e| format!("WS_LIFECYCLE_INBOUND_RATE: {e}"))?;
        config.inbound_rate =
            (rate > 0.0).then(|| ws_lifecycle::limits::RateLimit::new(rate, rate * 2.5));
    }
    Ok(config)
}

/// The browser client (`client/ws-lifecycle.js`), served at `/client.js`
/// for the demo page.
pub(crate) const CLIENT_JS: &str = include_str!("../../client/ws-lifecycle.js");

/// Its content type: module scripts must be served as JavaScript.
pub(crate) const CLIENT_JS_TYPE: &str = "text/javascript; charset=utf-8";

/// The hub's metrics, Prometheus text, then three gauges in the same
/// format: the routing table's connections and users, and the runtime's
/// alive tasks (what `examples/chaos_soak` compares with its baseline to
/// find leaks). The task count includes the task serving the request. Served
/// as `/metrics` by both chat examples, identically.
pub(crate) fn metrics(hub: &ws_lifecycle::Hub) -> String {
    use std::fmt::Write as _;
    let mut text = hub.metrics().to_string();
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    // Writing to a String cannot fail.
    let _ = writeln!(
        text,
        "ws_lifecycle_router_connections {}",
        hub.connection_count()
    );
    let _ = writeln!(text, "ws_lifecycle_router_users {}", hub.user_count());
    let _ = writeln!(text, "tokio_alive_tasks {tasks}");
    text
}

/// Listens on `addr` with a backlog of 4,096: a connection storm (the load
/// generator keeps 256 handshakes in flight) must not overflow the accept
/// queue, or clients wait a whole SYN retransmission (1 s).
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The examples' runtime: tokio's multi-thread scheduler when the process
/// may run on several cores, its current-thread scheduler when it has one
/// (as under `taskset -c 0` in `scripts/bench.sh`).
///
/// Why: a multi-thread worker keeps at most 256 woken tasks in its local
/// queue and moves the rest to the global queue, which it visits once per
/// 61 tasks while local work remains. A fan-out burst wakes hundreds of
/// writer tasks at once, so with one worker the overflow waited behind
/// everything woken later: a 25–45 ms delivery p99 where the current-thread
/// scheduler, one FIFO queue, gives 5–7 ms (docs/benchmarks.md).
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut builder = if cores > 1 {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build()
}

/// Resolves after Ctrl-C once `hub` has shut down gracefully: clients closed
/// with 1012 in batches, after their queued events, within 10 s.
pub(crate) async fn shutdown_on_ctrl_c(hub: ws_lifecycle::Hub) {
    let _ = tokio::signal::ctrl_c().await;
    let report = hub.shutdown(Duration::from_secs(10)).await;
    println!("shut down: {report:?}");
}
