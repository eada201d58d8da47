//! The smallest server on the tokio-tungstenite adapter: every text message
//! comes back to the connection that sent it, with its sequence number.
//!
//! Run with: `cargo run --example tungstenite_echo --features tungstenite`
//! and connect with a demo token from the axum example, or any HS256 token
//! signed with `WS_LIFECYCLE_DEMO_SECRET` (32 bytes or more; default: the
//! public demo secret in `examples/common/demo_jwt.rs`).

#[allow(dead_code)] // the token endpoint is the axum example's
#[path = "common/server.rs"]
mod server;

use std::sync::Arc;

use ws_lifecycle::adapters::tungstenite;
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

struct Echo;

impl Handler for Echo {
    async fn on_message(
        &self,
        conn: &ConnectionHandle,
        message: Inbound,
    ) -> Result<(), CloseFrame> {
        if let (Inbound::Text(text), Ok(name)) = (message, EventName::new("echo")) {
            let _ = conn.emit(Event::custom(name, serde_json::Value::String(text.into())));
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    server::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let addr = server::Args::parse(std::env::args().skip(1), &["addr"], &[])?.listen_addr()?;
    let hub = Hub::new();
    let auth = Arc::new(server::demo_authenticator(&server::demo_secret()?)?);
    let listener = server::listen(addr)?;
    println!(
        "ws-lifecycle tungstenite_echo listening on ws://{}/",
        listener.local_addr()?
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                // No Nagle: the hub batches frames itself.
                let _ = stream.set_nodelay(true);
                let (hub, auth) = (hub.clone(), Arc::clone(&auth));
                tokio::spawn(async move { tungstenite::serve(stream, Some(peer), &hub, &*auth, &Echo).await });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let report = hub.shutdown(std::time::Duration::from_secs(10)).await;
    println!("shut down: {report:?}");
    Ok(())
}
