//! The README's "Embedding it in your axum app" snippet as a program CI
//! builds (`tests/readme.rs` checks that every line of the snippet appears
//! here, in order, so the two cannot drift apart).
//!
//! Run with: `cargo run --example embed --features axum,jwt` and connect to
//! `ws://127.0.0.1:3000/ws` with a `jwt.<token>` subprotocol signed with the
//! demo secret below.

use axum::{Router, extract::State, response::Response, routing::any};
use std::sync::Arc;
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::UserId;
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound, close::CloseFrame};
use ws_lifecycle::{adapters::axum::WsUpgrade, auth::JwtAuthenticator};

struct App; // your per-message logic
impl Handler for App {
    async fn on_message(&self, conn: &ConnectionHandle, msg: Inbound) -> Result<(), CloseFrame> {
        let _ = (conn, msg);
        Ok(())
    }
}

#[derive(Clone)]
struct AppState {
    hub: Hub,
    auth: JwtAuthenticator,
    app: Arc<App>,
}

async fn ws(upgrade: WsUpgrade, State(s): State<AppState>) -> Response {
    // 400/401/426 before the upgrade, or upgrade + echo `jwt-auth` + serve.
    upgrade.serve(&s.hub, &s.auth, s.app.clone()).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = b"a demo secret of at least 32 bytes!!";
    let your_router = Router::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let (alice, bob) = (UserId::new("alice")?, UserId::new("bob")?);
    let event = Event::custom(EventName::new("hello")?, serde_json::json!("hi"));

    // In your startup code:
    let auth = JwtAuthenticator::builder()
        .hs256(secret) // at least 32 bytes (RFC 7518)
        .issuer("https://auth.example") // the `iss` your identity provider sets
        .audience("chat") // this service's `aud`
        .build()?;
    let state = AppState {
        hub: Hub::new(),
        auth,
        app: Arc::new(App),
    };
    let router = your_router.route("/ws", any(ws)).with_state(state.clone());
    // Not `axum::serve`: this one bounds the upgrade request (the hub's
    // `upgrade_timeout`, 10 s), so slowloris clients cannot hold sockets.
    let config = ws_lifecycle::adapters::ServeConfig::from(state.hub.config());
    tokio::spawn(ws_lifecycle::adapters::axum::serve(
        listener, router, config, shutdown,
    ));

    // Anywhere: every device of alice, nobody else's.
    let delivery = state.hub.send_to_user(&alice, &event)?;
    // A team or a room: serialised once for all of them.
    let fan_out = state.hub.send_to_users(&[alice, bob], &event)?;

    println!("{delivery:?} {fan_out:?}");
    std::future::pending::<()>().await;
    Ok(())
}
