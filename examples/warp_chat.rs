//! The demo chat and agent-run server on warp: the same app, page and
//! protocol as `axum_chat`.
//!
//! Run with: `cargo run --example warp_chat --features warp`
//! then open <http://127.0.0.1:3000/> in two tabs.
//!
//! `--addr HOST:PORT` or `WS_LIFECYCLE_ADDR` changes where it listens.
//! Ctrl-C shuts down gracefully: clients are closed with 1012 (restart) in
//! batches, after their queued events, within 10 s.

#[path = "common/chat.rs"]
mod chat;
#[path = "common/server.rs"]
mod server;
#[path = "common/warp_app.rs"]
mod warp_app;

use ws_lifecycle::Hub;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    server::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let addr = server::listen_addr()?;
    let hub = Hub::builder().config(server::hub_config()?).build();
    let routes = warp_app::routes(hub.clone(), &server::demo_secret())?;
    let listener = server::listen(addr)?;
    println!(
        "ws-lifecycle warp_chat listening on http://{}/",
        listener.local_addr()?
    );
    let shutdown = server::shutdown_on_ctrl_c(hub.clone());
    warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    Ok(())
}
