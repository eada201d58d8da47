//! [`JwtAuthenticator`]: JWT validation on jsonwebtoken's pure-Rust
//! (`rust_crypto`) backend.
//!
//! What it refuses, and why:
//!
//! * an `alg` outside the configured list (`none` is never in it), and any
//!   list that mixes key families (HMAC with RSA, …): no key confusion;
//! * a missing `exp`, an `exp`/`nbf` past/before now beyond the leeway
//!   (default 60 s), an `iat` in the future, a wrong or missing `iss`/`aud`
//!   when configured;
//! * a non-empty `crit` header (no extension is understood);
//! * a `kid` that names no configured key, even when a default key is
//!   configured (no fallback: the default key is for tokens without a
//!   `kid`); a `kid` is only an opaque key into the configured set, and
//!   `jku`, `x5u` and `jwk` are never fetched or trusted;
//! * a user claim (default `sub`) that is not a non-empty string of at most
//!   256 bytes without control characters.

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use parking_lot::RwLock;

use super::extract::Token;
use super::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest, TokenSources};

mod algorithm;
mod builder;
mod error;
mod jwks;
mod keys;
mod verify;

pub use algorithm::JwtAlgorithm;
pub use builder::JwtAuthenticatorBuilder;
use builder::Settings;
pub use error::JwtConfigError;
use keys::check_keys;
pub use keys::{JwtKey, JwtKeySet};
use verify::Verified;

#[derive(Debug)]
struct Inner {
    settings: Settings,
    keys: RwLock<Arc<JwtKeySet>>,
}

/// Authenticates WebSocket handshakes with JWTs from the header, a
/// subprotocol, or (when enabled) the query or the first message. Cheap to
/// clone.
///
/// # Examples
///
/// ```
/// use ws_lifecycle::auth::{Authenticator, HandshakeRequest, JwtAuthenticator};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let auth = JwtAuthenticator::builder()
///     .hs256("a secret of at least 32 bytes, from config!")
///     .issuer("https://auth.example")
///     .audience("chat")
///     .build()?;
///
/// // A browser-style offer whose token is not a JWT at all.
/// let request = HandshakeRequest::builder()
///     .header("Sec-WebSocket-Protocol", "jwt-auth, jwt.not-a-token")
///     .build()?;
/// let failure = auth.authenticate(&request).await.unwrap_err();
/// assert_eq!(failure.error.code(), "token_malformed");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

impl JwtAuthenticator {
    /// A builder: set the algorithms and keys (or
    /// [`hs256`](JwtAuthenticatorBuilder::hs256)), and what `iss` and `aud`
    /// must be ([`issuer`](JwtAuthenticatorBuilder::issuer) and
    /// [`audience`](JwtAuthenticatorBuilder::audience), or the explicit
    /// waivers [`any_issuer`](JwtAuthenticatorBuilder::any_issuer) and
    /// [`any_audience`](JwtAuthenticatorBuilder::any_audience)).
    pub fn builder() -> JwtAuthenticatorBuilder {
        JwtAuthenticatorBuilder::new()
    }

    /// Replaces the key set (rotation). Tokens verified from now on use the
    /// new set; verifications already running finish with the old one.
    ///
    /// # Errors
    ///
    /// [`JwtConfigError::NoKeys`], [`JwtConfigError::KeyFamilyMismatch`]
    /// or [`JwtConfigError::HmacKeyTooShort`]; the old set stays in place.
    pub fn replace_keys(&self, keys: JwtKeySet) -> Result<(), JwtConfigError> {
        check_keys(&self.inner.settings.algorithms, &keys)?;
        *self.inner.keys.write() = Arc::new(keys);
        Ok(())
    }

    /// Replaces the keys with those of `jwks` usable with the configured
    /// algorithms ([`JwtKeySet::from_jwks`]): the rotation of keys
    /// published as a JWK set. Call it with the identity provider's current
    /// set whenever the application refreshes it (the crate fetches
    /// nothing; see `docs/auth.md`).
    ///
    /// # Errors
    ///
    /// As [`JwtKeySet::from_jwks`] and [`replace_keys`](Self::replace_keys);
    /// the keys in place stay.
    pub fn replace_jwks(&self, jwks: &JwkSet) -> Result<(), JwtConfigError> {
        self.replace_keys(JwtKeySet::from_jwks(jwks, &self.inner.settings.algorithms)?)
    }

    /// The token sources this authenticator reads.
    pub fn sources(&self) -> &TokenSources {
        &self.inner.settings.sources
    }

    fn outcome(&self, verified: Verified, marker: Option<String>) -> AuthOutcome {
        let mut outcome = AuthOutcome::new(verified.user);
        outcome.claims = verified.claims;
        outcome.expires_at = Some(verified.expires_at);
        outcome.selected_subprotocol = marker;
        outcome
    }
}

impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, request: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
        let inner = &self.inner;
        inner.settings.origin.check(request.origin())?;
        let credentials = inner.settings.sources.extract(request).map_err(|failure| {
            if inner.settings.subprotocol_failures_after_upgrade {
                failure
            } else {
                AuthFailure::before_upgrade(failure.error)
            }
        })?;
        let marker = credentials.marker.clone();
        let verify = |token: Option<Token>| token.map(|t| self.verify(&t)).transpose();
        let header = verify(credentials.header)?;
        let subprotocol = verify(credentials.subprotocol).map_err(|error| {
            if inner.settings.subprotocol_failures_after_upgrade {
                AuthFailure::after_upgrade(error, marker.clone())
            } else {
                AuthFailure::before_upgrade(error)
            }
        })?;
        let query = verify(credentials.query)?;
        let verified = match (header, subprotocol, query) {
            (Some(h), Some(s), _) if h.user != s.user => {
                return Err(AuthError::CredentialsAmbiguous(
                    "the header and subprotocol tokens name different users",
                )
                .into());
            }
            // Both verified for one user: the one expiring first bounds the
            // connection.
            (Some(h), Some(s), _) => {
                if s.expires_at < h.expires_at {
                    s
                } else {
                    h
                }
            }
            (Some(v), None, _) | (None, Some(v), _) | (None, None, Some(v)) => v,
            (None, None, None) => return Err(AuthError::TokenMissing.into()),
        };
        Ok(self.outcome(verified, marker))
    }

    fn first_message_auth(&self) -> bool {
        self.inner.settings.sources.first_message
    }

    async fn authenticate_message(
        &self,
        request: &HandshakeRequest,
        token: &str,
    ) -> Result<AuthOutcome, AuthFailure> {
        let inner = &self.inner;
        let marker = request
            .subprotocols()
            .contains(&inner.settings.sources.marker)
            .then(|| inner.settings.sources.marker.clone());
        let after = |error| AuthFailure::after_upgrade(error, marker.clone());
        inner
            .settings
            .origin
            .check(request.origin())
            .map_err(after)?;
        let token = inner
            .settings
            .sources
            .check_first_message_token(token)
            .map_err(after)?;
        let verified = self.verify(&token).map_err(after)?;
        Ok(self.outcome(verified, marker))
    }
}

impl JwtAuthenticator {
    /// Verifies one token, as the JWT alone says: signature, algorithm,
    /// key, claims. No origin check, and none of an application's own
    /// checks when it wraps this authenticator: the hub never uses it for
    /// re-authentication (that goes through
    /// [`Authenticator::reauthenticate`]). For tokens that arrive outside a
    /// WebSocket handshake.
    ///
    /// # Errors
    ///
    /// The [`AuthError`] saying why the token is not valid.
    pub fn verify_token(&self, token: &str) -> Result<AuthOutcome, AuthError> {
        let token = self
            .inner
            .settings
            .sources
            .check_first_message_token(token)?;
        let verified = self.verify(&token)?;
        Ok(self.outcome(verified, None))
    }
}
