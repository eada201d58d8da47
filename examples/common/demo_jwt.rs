//! The examples' one JWT signer: HS256 demo tokens under the public demo
//! secret, for the servers' `/demo-token` and for the clients that act as
//! their users (`examples/loadgen.rs`, `examples/chaos_soak`).
//! EXAMPLE ONLY: a real server gets its tokens from its identity provider.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The demo secret when `WS_LIFECYCLE_DEMO_SECRET` is not set: 32 bytes or
/// more, as HS256 requires (RFC 7518 section 3.2).
/// EXAMPLE ONLY: it is public, here in the source.
pub(crate) const DEMO_SECRET: &str = "ws-lifecycle demo secret: public, never use it in production";

/// Seconds since the Unix epoch (0 before it), as JWT times are written.
pub(crate) fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// `claims` signed with `secret` under `algorithm` (an HMAC one).
pub(crate) fn sign(
    secret: &str,
    algorithm: Algorithm,
    claims: &Value,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// A valid HS256 token for `user` (`sub`), for an hour (`exp`).
/// EXAMPLE ONLY: anyone holding the secret can mint one for any user.
pub(crate) fn token(secret: &str, user: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let claims = json!({ "sub": user, "exp": unix_now().saturating_add(3600) });
    sign(secret, Algorithm::HS256, &claims)
}
