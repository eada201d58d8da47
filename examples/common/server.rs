//! What the chat examples share besides the app: where to listen, the demo
//! token endpoint's signing, and the demo authenticator.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use ws_lifecycle::auth::{JwtAuthenticator, JwtConfigError};
use ws_lifecycle::id::UserId;

/// `--addr HOST:PORT`, else `WS_LIFECYCLE_ADDR`, else 127.0.0.1:3000.
pub(crate) fn listen_addr() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let from_args = match args.next().as_deref() {
        Some("--addr") => args.next(),
        Some(other) => return Err(format!("unknown argument {other:?}; use --addr HOST:PORT")),
        None => None,
    };
    let text = from_args
        .or_else(|| std::env::var("WS_LIFECYCLE_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    text.parse()
        .map_err(|e| format!("bad address {text:?}: {e}"))
}

/// The demo secret: `WS_LIFECYCLE_DEMO_SECRET`, else `demo-secret`.
/// EXAMPLE ONLY: a real server gets tokens from its identity provider.
pub(crate) fn demo_secret() -> String {
    std::env::var("WS_LIFECYCLE_DEMO_SECRET").unwrap_or_else(|_| "demo-secret".to_owned())
}

/// The authenticator trusting the demo secret.
pub(crate) fn demo_authenticator(secret: &str) -> Result<JwtAuthenticator, JwtConfigError> {
    JwtAuthenticator::builder().hs256(secret).build()
}

/// An HS256 demo token for `user`, valid for an hour.
/// EXAMPLE ONLY: anyone can mint one for any user.
pub(crate) fn demo_token(
    secret: &str,
    user: &UserId,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(Duration::from_secs(3600))
        .as_secs();
    let claims = serde_json::json!({ "sub": user.as_str(), "exp": exp });
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}
