//! The README's "Embedding it in your axum app" snippet as a program CI
//! builds (`tests/readme.rs` checks that every line of the snippet appears
//! here, in order, so the two cannot drift apart).
//!
//! Run with: `cargo run --example embed --features axum,jwt` and connect to
//! `ws://127.0.0.1:3000/ws` with a `jwt.<token>` subprotocol signed with the
//! demo secret below, then send `{"prompt":"…"}`.

use std::sync::Arc;
use std::time::Duration;

use axum::{Router, extract::State, response::Response, routing::any};
use serde::{Deserialize, Serialize};
use ws_lifecycle::event::{AgentEventKind::*, Envelope};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound, close::CloseFrame, id::RunId};
use ws_lifecycle::{adapters::axum::WsUpgrade, auth::JwtAuthenticator};

#[derive(Deserialize)]
struct Ask {
    prompt: String,
}
#[derive(Deserialize)]
struct Claims {
    sub: String,
}
#[derive(Serialize)]
struct Step<'a> {
    text: &'a str,
}

struct App {
    hub: Hub,
}
impl Handler for App {
    async fn on_message(&self, conn: &ConnectionHandle, msg: Inbound) -> Result<(), CloseFrame> {
        let ask: Ask = msg.json()?; // not an `Ask`: closed with 4400
        let who = conn.claims::<Claims>().map(|c| c.sub).unwrap_or_default(); // verified, typed
        let (hub, conn) = (self.hub.clone(), conn.clone());
        let run = hub.ids().mint_context(conn.user()).run;
        tokio::spawn(async move {
            tokio::select! {
                _ = conn.closed() => {} // the client left: stop the run
                _ = agent(&hub, &conn, &run, &who, &ask.prompt) => {}
            }
        });
        Ok(())
    }
}

async fn agent(hub: &Hub, conn: &ConnectionHandle, run: &RunId, who: &str, prompt: &str) {
    // A typed payload, serialised once, to every device of the user:
    let thinking = Envelope::agent(AgentThinking, run).encode(&Step { text: prompt });
    let _ = thinking.map(|event| hub.send_encoded_to_user(conn.user(), event));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done = Envelope::agent(AgentCompleted, run).encode(&Step { text: who });
    let _ = done.map(|event| hub.send_encoded_to_user(conn.user(), event));
}

#[derive(Clone)]
struct AppState {
    hub: Hub,
    auth: JwtAuthenticator,
    app: Arc<App>,
}

async fn ws(upgrade: WsUpgrade, State(s): State<AppState>) -> Response {
    upgrade.serve(&s.hub, &s.auth, s.app.clone()).await // 400/401 before the upgrade
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = b"a demo secret of at least 32 bytes!!";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let auth = JwtAuthenticator::builder()
        .hs256(secret)
        .any_issuer()
        .audience("chat")
        .build()?;
    let hub = Hub::new();
    let state = AppState {
        app: Arc::new(App { hub: hub.clone() }),
        hub,
        auth,
    };
    let router = Router::new()
        .route("/ws", any(ws))
        .with_state(state.clone());
    let config = ws_lifecycle::adapters::ServeConfig::from(state.hub.config());
    // Not `axum::serve`: this one bounds the upgrade request (slowloris).
    ws_lifecycle::adapters::axum::serve(listener, router, config, shutdown).await;
    Ok(())
}
