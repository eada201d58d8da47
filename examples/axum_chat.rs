//! The demo chat and agent-run server on axum.
//!
//! Run with: `cargo run --example axum_chat --features axum`
//! then open <http://127.0.0.1:3000/> in two tabs.
//!
//! * `/` the demo page;
//! * `/demo-token?user=NAME` an HS256 demo token (EXAMPLE ONLY: anyone can
//!   mint one for any user; secret from `WS_LIFECYCLE_DEMO_SECRET`, 32 bytes
//!   or more or the example refuses to start, else a public demo secret);
//! * `/ws` the WebSocket endpoint (the protocol in `examples/common/chat.rs`);
//! * `/metrics` the hub's metrics, Prometheus text, plus the routing
//!   table's connections and users and the runtime's alive tasks;
//! * `/node` which node this is: `{"node":"<node id>"}`, or
//!   `{"node":"single node"}`.
//!
//! `--addr HOST:PORT` or `WS_LIFECYCLE_ADDR` changes where it listens;
//! `--redis redis://HOST:PORT/` or `WS_LIFECYCLE_REDIS_URL` makes it a node
//! of the cluster on that Redis (build with `--features axum,redis`; the
//! README starts two nodes); `WS_LIFECYCLE_INBOUND_RATE=0` turns the
//! per-connection inbound rate limit off (for load tests:
//! `scripts/bench.sh`).
//! Ctrl-C shuts down gracefully: clients are closed with 1012 (restart) in
//! batches, after their queued events, within 10 s.

#[path = "common/axum_app.rs"]
mod axum_app;
#[path = "common/chat.rs"]
mod chat;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/server.rs"]
mod server;

fn main() -> Result<(), cluster::BoxError> {
    // `TCP_NODELAY` on, and the hub's `upgrade_timeout` (10 s) as the
    // deadline on every request head (`ServeConfig`).
    cluster::main("axum_chat", "axum", axum_app::serve)
}
