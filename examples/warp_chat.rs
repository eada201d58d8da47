//! The demo chat and agent-run server on warp: the same app, page, protocol,
//! routes and command line as `axum_chat` (one `main`, in
//! `examples/common/cluster.rs`); only the stack differs.
//!
//! Run with: `cargo run --example warp_chat --features warp`
//! then open <http://127.0.0.1:3000/> in two tabs.
//!
//! * `/` the demo page;
//! * `/demo-token?user=NAME` an HS256 demo token (EXAMPLE ONLY, as in
//!   `axum_chat`);
//! * `/ws` the WebSocket endpoint (the protocol in `examples/common/chat.rs`);
//! * `/metrics` the same Prometheus text as `axum_chat`'s;
//! * `/node` which node this is.
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
    // The hub's `upgrade_timeout` (10 s) as the deadline on every request
    // head, and aborted upgrades logged at DEBUG (`ServeConfig`).
    cluster::main("warp_chat", "warp", warp_app::serve)
}
