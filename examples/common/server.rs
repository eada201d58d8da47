//! What the examples share besides the app: the command line, where to
//! listen, the demo secret and authenticator (tokens are signed in
//! `demo_jwt.rs`, beside this file), and `/metrics` (a Prometheus recorder).

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

/// Histogram buckets for the crate's histograms (names as in
/// `docs/observability.md`); the exporter renders summaries otherwise.
fn buckets() -> [(metrics_exporter_prometheus::Matcher, &'static [f64]); 4] {
    use metrics_exporter_prometheus::Matcher::{Full, Suffix};
    [
        (
            Full("ws_lifecycle_time_to_ready_seconds".into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
        ),
        (
            Full("ws_lifecycle_connection_duration_seconds".into()),
            &[1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0],
        ),
        (
            Full("ws_lifecycle_backplane_publish_duration_seconds".into()),
            &[0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0],
        ),
        (
            // The outbox depth and the write batch, in events.
            Suffix("_events".into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 256.0, 1024.0],
        ),
    ]
}

/// The process's Prometheus recorder (`metrics-exporter-prometheus`,
/// rendering only): installed as the `metrics` facade's global recorder on
/// the first call, its handle returned on every call. The chat examples
/// call it before building their hub, whose handles are registered with
/// the recorder current at that moment. `None` if another recorder was
/// installed first (logged).
pub(crate) fn prometheus() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::PrometheusBuilder;
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = buckets()
                .into_iter()
                .try_fold(PrometheusBuilder::new(), |builder, (matcher, buckets)| {
                    builder.set_buckets_for_metric(matcher, buckets)
                });
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "no Prometheus recorder: /metrics stays empty");
                    None
                }
            }
        })
        .clone()
}

/// Drains the recorder's histogram samples every few seconds between
/// scrapes (rendering drains them too), so an unscraped process does not
/// grow. Spawned by the chat examples' `main`.
pub(crate) async fn prometheus_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

/// `/metrics`, Prometheus text: whatever the process emitted through the
/// `metrics` facade (the hub's metrics when ws-lifecycle is built with its
/// `metrics` feature) and three gauges set here: the routing table's
/// connections and users, and the runtime's alive tasks (what
/// `examples/chaos_soak` compares with its baseline to find leaks; the
/// count includes the task serving the request). Served by both chat
/// examples, identically.
pub(crate) fn metrics(hub: &ws_lifecycle::Hub) -> String {
    let Some(handle) = prometheus() else {
        return String::new();
    };
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    metrics::gauge!("ws_lifecycle_router_connections").set(hub.connection_count() as f64);
    metrics::gauge!("ws_lifecycle_router_users").set(hub.user_count() as f64);
    metrics::gauge!("tokio_alive_tasks").set(tasks as f64);
    handle.render()
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
