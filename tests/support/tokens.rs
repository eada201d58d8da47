//! Minting test JWTs (HS256 by default) with jsonwebtoken, plus raw
//! base64url for hand-built hostile tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

/// The shared secret the test authenticators trust.
pub const SECRET: &[u8] = b"ws-lifecycle test secret, 32+ bytes long";

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Claims for `sub` valid for an hour.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 3600, "iat": now() })
}

/// An HS256 token over `claims`, signed with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    sign(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
}

/// A token with any header and key.
pub fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap_or_else(|e| panic!("signing failed: {e}"))
}

/// Unpadded base64url.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A token whose header is `header` verbatim (for `alg: none`, `crit`, …),
/// with `signature` appended as is.
pub fn raw(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        signature
    )
}
