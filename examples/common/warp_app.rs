//! The warp routes of the demo server and how it serves them: shared by
//! `examples/warp_chat.rs` and the adapter tests. Same app, same protocol and
//! page as the axum example. The including crate declares `chat` and
//! `server` (from `examples/common/`).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use ws_lifecycle::Hub;
use ws_lifecycle::adapters::ServeConfig;
use ws_lifecycle::adapters::warp::{WarpUpgrade, upgrade};
use ws_lifecycle::id::UserId;

use crate::chat::ChatApp;
use crate::server;

#[derive(serde::Deserialize)]
struct TokenQuery {
    user: String,
}

/// The demo server on `listener` until `shutdown` resolves: [`routes`]
/// through the crate's `adapters::warp::serve` (not `warp::serve`, which
/// bounds no request head and logs every aborted upgrade at ERROR), so the
/// hub's `upgrade_timeout` is the deadline on every request head, the
/// upgrade's included.
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
    let routes = routes(hub, secret, node)?;
    Ok(ws_lifecycle::adapters::warp::serve(
        listener, routes, config, shutdown,
    ))
}

/// The demo server's routes over `hub`, trusting tokens signed with `secret`;
/// `/node` names the node (`node`: its backplane's node id, or "single
/// node"), for the demo page.
pub(crate) fn routes(
    hub: Hub,
    secret: &str,
    node: &str,
) -> Result<
    impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + use<>,
    Box<dyn std::error::Error>,
> {
    let auth = Arc::new(server::demo_authenticator(secret)?);
    let app = Arc::new(ChatApp::new(hub.clone()));
    let secret: Arc<str> = Arc::from(secret);

    let page =
        warp::path::end().map(|| warp::reply::html(include_str!("demo.html")).into_response());
    let client_js = warp::path("client.js").map(|| {
        warp::reply::with_header(server::CLIENT_JS, "content-type", server::CLIENT_JS_TYPE)
            .into_response()
    });
    let token = warp::path("demo-token")
        .and(warp::query::<TokenQuery>())
        .map(move |q: TokenQuery| {
            let Ok(user) = UserId::new(&q.user) else {
                return warp::reply::with_status("bad user", StatusCode::BAD_REQUEST)
                    .into_response();
            };
            match server::demo_token(&secret, &user) {
                Ok(token) => {
                    warp::reply::json(&serde_json::json!({ "token": token })).into_response()
                }
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        });
    // The same text as axum's (`server::metrics`).
    let metrics = warp::path("metrics").map({
        let hub = hub.clone();
        move || server::metrics(&hub).into_response()
    });
    let node = warp::path("node").map({
        let body = serde_json::json!({ "node": node });
        move || warp::reply::json(&body).into_response()
    });
    let ws = warp::path("ws").and(upgrade()).then(move |u: WarpUpgrade| {
        let (hub, auth, app) = (hub.clone(), Arc::clone(&auth), Arc::clone(&app));
        async move { u.serve(&hub, &*auth, app).await }
    });
    Ok(ws
        .or(page)
        .unify()
        .or(client_js)
        .unify()
        .or(token)
        .unify()
        .or(metrics)
        .unify()
        .or(node)
        .unify())
}
