//! The axum routes of the demo server and how it serves them: shared by
//! `examples/axum_chat.rs` and the adapter tests, which drive exactly what a
//! newcomer runs. The including crate declares `chat` and `server` (from
//! `examples/common/`).

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use tokio::net::TcpListener;
use ws_lifecycle::Hub;
use ws_lifecycle::adapters::ServeConfig;
use ws_lifecycle::adapters::axum::WsUpgrade;
use ws_lifecycle::auth::JwtAuthenticator;
use ws_lifecycle::id::UserId;

use crate::chat::ChatApp;
use crate::server;

#[derive(Clone)]
struct AppState {
    hub: Hub,
    auth: JwtAuthenticator,
    app: Arc<ChatApp>,
    secret: Arc<str>,
    /// What `/node` answers.
    node: Arc<str>,
}

async fn ws(upgrade: WsUpgrade, State(s): State<AppState>) -> Response {
    upgrade.serve(&s.hub, &s.auth, Arc::clone(&s.app)).await
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    user: String,
}

async fn demo_token(Query(q): Query<TokenQuery>, State(s): State<AppState>) -> Response {
    let Ok(user) = UserId::new(&q.user) else {
        return (
            StatusCode::BAD_REQUEST,
            "user: 1 to 256 bytes, no control characters",
        )
            .into_response();
    };
    match server::demo_token(&s.secret, &user) {
        Ok(token) => Json(serde_json::json!({ "token": token })).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `/metrics`: the same text on every example (`server::metrics`).
async fn metrics(State(s): State<AppState>) -> String {
    server::metrics(&s.hub)
}

/// The demo server on `listener` until `shutdown` resolves: [`router`]'s
/// routes through the crate's `adapters::axum::serve` (not `axum::serve`,
/// which bounds no request head), so the hub's `upgrade_timeout` is the
/// deadline on every request head, the upgrade's included.
pub(crate) fn serve<S>(
    listener: TcpListener,
    hub: Hub,
    secret: &str,
    node: &str,
    shutdown: S,
) -> Result<impl Future<Output = ()> + Send + use<S>, Box<dyn std::error::Error>>
where
    S: Future<Output = ()> + Send + 'static,
{
    let config = ServeConfig::from(hub.config());
    let router = router(hub, secret, node)?;
    Ok(ws_lifecycle::adapters::axum::serve(
        listener, router, config, shutdown,
    ))
}

/// The demo server's routes over `hub`, trusting tokens signed with `secret`;
/// `/node` names the node (`node`: its backplane's node id, or "single
/// node"), for the demo page.
pub(crate) fn router(
    hub: Hub,
    secret: &str,
    node: &str,
) -> Result<Router, Box<dyn std::error::Error>> {
    let state = AppState {
        app: Arc::new(ChatApp::new(hub.clone())),
        auth: server::demo_authenticator(secret)?,
        hub,
        secret: Arc::from(secret),
        node: Arc::from(node),
    };
    Ok(Router::new()
        .route("/", get(|| async { Html(include_str!("demo.html")) }))
        .route(
            "/client.js",
            get(|| async { ([(CONTENT_TYPE, server::CLIENT_JS_TYPE)], server::CLIENT_JS) }),
        )
        .route("/demo-token", get(demo_token))
        // `any`, so a malformed upgrade (a POST, say) gets the crate's 400.
        .route("/ws", any(ws))
        .route("/metrics", get(metrics))
        .route(
            "/node",
            get(|State(s): State<AppState>| async move {
                Json(serde_json::json!({ "node": &*s.node }))
            }),
        )
        .with_state(state))
}
