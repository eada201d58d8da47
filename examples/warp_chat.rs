//! The demo chat and agent-run server on warp: the same app, page, protocol,
//! routes and command line as `axum_chat`.
//!
//! Run with: `cargo run --example warp_chat --features warp`
//! then open <http://127.0.0.1:3000/> in two tabs.
//!
//! `--addr HOST:PORT` or `WS_LIFECYCLE_ADDR` changes where it listens;
//! `--redis redis://HOST:PORT/` or `WS_LIFECYCLE_REDIS_URL` makes it a node
//! of the cluster on that Redis (build with `--features warp,redis`).
//! Ctrl-C shuts down gracefully: clients are closed with 1012 (restart) in
//! batches, after their queued events, within 10 s.

#[path = "common/chat.rs"]
mod chat;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/server.rs"]
mod server;
#[path = "common/warp_app.rs"]
mod warp_app;

fn main() -> Result<(), cluster::BoxError> {
    // First: a demo secret too short to sign with refuses to start.
    let secret = server::demo_secret()?;
    cluster::main("warp_chat", "warp", |node, listener, shutdown| async move {
        // The hub's `upgrade_timeout` (10 s) as the deadline on every request
        // head, and aborted upgrades logged at DEBUG (`ServeConfig`).
        warp_app::serve(listener, node.hub, &secret, &node.name, shutdown)?.await;
        Ok(())
    })
}
