//! The chat examples' node: the command line, the cluster it joins (if
//! any), and the one `main` that both `axum_chat` and `warp_chat` run, each
//! handing it its stack's `serve` (`axum_app.rs`, `warp_app.rs`). The
//! including crate declares `server` (from `examples/common/`).
//!
//! `--redis redis://HOST:PORT/` (else `WS_LIFECYCLE_REDIS_URL`) makes the
//! process one node of the cluster on that Redis, through
//! [`RedisBackplane`](ws_lifecycle::backplane::redis::RedisBackplane): a
//! message published on any node reaches every connection of its addressee
//! on every node. Without it the process runs alone. The backplane is
//! behind the `redis` feature; a build without it refuses `--redis`.
//!
//! The node logs `backplane up` and `backplane down` (target `…::cluster`) as
//! Redis comes and goes (`examples/chaos_soak` waits for the first).

use std::error::Error;
use std::future::Future;
use std::pin::Pin;

use tokio::net::TcpListener;
use ws_lifecycle::{Hub, HubBuilder};

use crate::server;

/// What the examples' errors are.
pub(crate) type BoxError = Box<dyn Error>;

/// Resolves once the hub has shut down gracefully after Ctrl-C.
pub(crate) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How `/node` names a process that is not part of a cluster.
pub(crate) const SINGLE_NODE: &str = "single node";

/// A node: its hub, and its name for `/node` (the backplane's node id, or
/// [`SINGLE_NODE`]).
struct Node {
    hub: Hub,
    name: String,
}

/// The chat examples' `main`: the demo secret (checked first: one too
/// short to sign with stops the example before anything starts), logging,
/// the command line (`--addr`, `--redis`), the Prometheus recorder, the hub
/// (with the Redis backplane when asked), the listener, Ctrl-C; then
/// `serve(listener, hub, secret, node name, shutdown)` runs the example's
/// stack until `shutdown` resolves.
/// `example` names the binary (`axum_chat`), `adapter` its cargo feature
/// (`axum`), for the messages.
pub(crate) fn main<F, Fut>(example: &str, adapter: &str, serve: F) -> Result<(), BoxError>
where
    F: FnOnce(TcpListener, Hub, &str, &str, Shutdown) -> Result<Fut, BoxError>,
    Fut: Future<Output = ()>,
{
    let secret = server::demo_secret()?;
    server::runtime()?.block_on(async move {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .init();
        let args = server::Args::parse(std::env::args().skip(1), &["addr", "redis"], &[])?;
        let addr = args.listen_addr()?;
        let redis = args
            .get("redis")
            .map(str::to_owned)
            .or_else(|| std::env::var("WS_LIFECYCLE_REDIS_URL").ok())
            .filter(|url| !url.is_empty());
        // The recorder first: the hub registers its metrics when built.
        if let Some(handle) = server::prometheus() {
            tokio::spawn(server::prometheus_upkeep(handle));
        }
        let builder = Hub::builder().config(server::hub_config()?);
        let node = match redis {
            None => Node {
                hub: builder.build()?,
                name: SINGLE_NODE.to_owned(),
            },
            Some(url) => join(builder, &url, example, adapter)?,
        };
        let listener = server::listen(addr)?;
        println!(
            "ws-lifecycle {example} listening on http://{}/",
            listener.local_addr()?
        );
        // Not the URL: it may carry a password.
        println!("ws-lifecycle {example} node: {}", node.name);
        let shutdown = Box::pin(server::shutdown_on_ctrl_c(node.hub.clone()));
        serve(listener, node.hub, &secret, &node.name, shutdown)?.await;
        Ok(())
    })
}

/// The hub of one node of the cluster on the Redis at `url`.
#[cfg(feature = "redis")]
fn join(builder: HubBuilder, url: &str, _example: &str, _adapter: &str) -> Result<Node, BoxError> {
    let backplane = backplane(url)?;
    let name = backplane.node_id().to_owned();
    let mut health = backplane.health();
    let hub = builder.backplane(backplane).build()?;
    tokio::spawn(async move {
        // It starts down, until the backplane's tasks connect (which may
        // already have happened): every change from there is logged.
        let mut logged = false;
        loop {
            let up = *health.borrow_and_update();
            if up != logged {
                if up {
                    tracing::info!("backplane up");
                } else {
                    tracing::warn!("backplane down");
                }
                logged = up;
            }
            if health.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(Node { hub, name })
}

/// This build has no backplane: it refuses to start rather than run alone
/// when asked to join a cluster.
#[cfg(not(feature = "redis"))]
fn join(_builder: HubBuilder, _url: &str, example: &str, adapter: &str) -> Result<Node, BoxError> {
    Err(format!(
        "--redis needs the Redis backplane, which this build of {example} does not have: \
         add `--features redis`, as in \
         `cargo run --example {example} --features {adapter},redis -- --redis redis://127.0.0.1:6379/`"
    )
    .into())
}

/// EXAMPLE ONLY, like the demo secret: a real cluster gets its key from its
/// secret store. 32 bytes at least, as `WS_LIFECYCLE_CLUSTER_KEY` must be.
#[cfg(feature = "redis")]
const DEMO_CLUSTER_KEY: &str = "demo-cluster-key-EXAMPLE-ONLY-do-not-deploy";

/// The key every node of the cluster shares (an HMAC key):
/// `WS_LIFECYCLE_CLUSTER_KEY`, else the demo key. Never printed; a short one
/// is refused with `ClusterKey`'s own message.
#[cfg(feature = "redis")]
fn cluster_key() -> Result<ws_lifecycle::backplane::redis::ClusterKey, BoxError> {
    let key =
        std::env::var("WS_LIFECYCLE_CLUSTER_KEY").unwrap_or_else(|_| DEMO_CLUSTER_KEY.to_owned());
    ws_lifecycle::backplane::redis::ClusterKey::new(key)
        .map_err(|e| format!("WS_LIFECYCLE_CLUSTER_KEY: {e}").into())
}

/// The one place the examples configure the Redis backplane.
#[cfg(feature = "redis")]
pub(crate) fn backplane(
    url: &str,
) -> Result<ws_lifecycle::backplane::redis::RedisBackplane, BoxError> {
    use ws_lifecycle::backplane::redis::{RedisBackplane, RedisConfig};
    Ok(RedisBackplane::new(RedisConfig::new(url, cluster_key()?))?)
}
