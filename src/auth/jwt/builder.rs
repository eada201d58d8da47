//! [`JwtAuthenticatorBuilder`]: the settings, checked once at `build`.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use parking_lot::RwLock;

use super::algorithm::{JwtAlgorithm, check_algorithms};
use super::keys::{JwtKey, JwtKeySet, check_keys};
use super::{Inner, JwtAuthenticator, JwtConfigError};
use crate::auth::{OriginPolicy, TokenSources};

/// Builds a [`JwtAuthenticator`].
#[derive(Debug, Clone)]
#[must_use]
pub struct JwtAuthenticatorBuilder {
    settings: Settings,
    keys: KeySource,
}

/// Where the builder's keys come from: a JWK set is read at `build`, once
/// the algorithms are known.
#[derive(Debug, Clone)]
enum KeySource {
    Set(JwtKeySet),
    Jwks(JwkSet),
}

/// Everything but the keys: fixed once the authenticator is built.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) algorithms: Vec<JwtAlgorithm>,
    pub(super) issuers: Vec<String>,
    /// `any_issuer()` was called.
    pub(super) any_issuer: bool,
    pub(super) audiences: Vec<String>,
    /// `any_audience()` was called.
    pub(super) any_audience: bool,
    pub(super) leeway: Duration,
    pub(super) user_claim: String,
    pub(super) sources: TokenSources,
    pub(super) origin: OriginPolicy,
    pub(super) subprotocol_failures_after_upgrade: bool,
}

impl JwtAuthenticatorBuilder {
    /// The defaults [`JwtAuthenticator::builder`] starts from.
    pub(super) fn new() -> Self {
        Self {
            settings: Settings {
                algorithms: Vec::new(),
                issuers: Vec::new(),
                any_issuer: false,
                audiences: Vec::new(),
                any_audience: false,
                leeway: Duration::from_secs(60),
                user_claim: "sub".into(),
                sources: TokenSources::default(),
                origin: OriginPolicy::default(),
                subprotocol_failures_after_upgrade: true,
            },
            keys: KeySource::Set(JwtKeySet::new()),
        }
    }

    /// The algorithms tokens may use, all of one key family. Required.
    pub fn algorithms(mut self, algorithms: &[JwtAlgorithm]) -> Self {
        self.settings.algorithms = algorithms.to_vec();
        self
    }

    /// The verification keys. Required: this, [`jwks`](Self::jwks) or
    /// [`hs256`](Self::hs256) (the last call wins).
    pub fn keys(mut self, keys: JwtKeySet) -> Self {
        self.keys = KeySource::Set(keys);
        self
    }

    /// The verification keys from an identity provider's JWK set, read at
    /// [`build`](Self::build) for the configured algorithms as
    /// [`JwtKeySet::from_jwks`] does (keys for other algorithms left out,
    /// `alg` pinned per key). Replaces [`keys`](Self::keys). Rotate with
    /// [`JwtAuthenticator::replace_jwks`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::auth::{JwkSet, JwtAlgorithm, JwtAuthenticator};
    ///
    /// let jwks: JwkSet = serde_json::from_str(r#"{"keys": [
    ///     {"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "2026-01",
    ///      "x": "x6mXOh65nNYOtL1S8g5mmN5KrJBBNxTTwrDZpj58aUc",
    ///      "y": "pk-6uXvSozTDYRPnnsJjkye3V8iNOEXG34wS9CbVJro"}
    /// ]}"#)?;
    /// let auth = JwtAuthenticator::builder()
    ///     .algorithms(&[JwtAlgorithm::ES256])
    ///     .jwks(&jwks)
    ///     .issuer("https://auth.example")
    ///     .audience("chat")
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn jwks(mut self, jwks: &JwkSet) -> Self {
        self.keys = KeySource::Jwks(jwks.clone());
        self
    }

    /// Shorthand: allow HS256 with one shared secret, as the default key
    /// (so for tokens without a `kid`: a token with one is refused, see
    /// [`JwtKeySet`]).
    pub fn hs256(self, secret: impl AsRef<[u8]>) -> Self {
        self.algorithms(&[JwtAlgorithm::HS256])
            .keys(JwtKeySet::new().with_default(JwtKey::hmac(secret)))
    }

    /// Require `iss` to be this issuer (callable more than once: any of
    /// them). A policy for `iss` is required: this, or
    /// [`any_issuer`](Self::any_issuer).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.settings.issuers.push(issuer.into());
        self
    }

    /// Waive the `iss` check: tokens from any issuer (or with no `iss`) are
    /// accepted. Only when the keys are yours alone, as with a secret no
    /// other issuer holds.
    pub fn any_issuer(mut self) -> Self {
        self.settings.any_issuer = true;
        self
    }

    /// Require `aud` to contain this audience (callable more than once: any
    /// of them). A policy for `aud` is required: this, or
    /// [`any_audience`](Self::any_audience).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.settings.audiences.push(audience.into());
        self
    }

    /// Waive the `aud` check: tokens minted for any service (or with no
    /// `aud`) are accepted. Only when no token meant for another service
    /// is signed with these keys.
    pub fn any_audience(mut self) -> Self {
        self.settings.any_audience = true;
        self
    }

    /// Clock leeway for `exp`, `nbf` and `iat`. Default: 60 s.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.settings.leeway = leeway;
        self
    }

    /// The claim naming the user. Default: `sub`.
    pub fn user_claim(mut self, claim: impl Into<String>) -> Self {
        self.settings.user_claim = claim.into();
        self
    }

    /// Where tokens are read from. Default: [`TokenSources::default`].
    pub fn sources(mut self, sources: TokenSources) -> Self {
        self.settings.sources = sources;
        self
    }

    /// Which origins may connect. Default: any.
    pub fn origin(mut self, origin: OriginPolicy) -> Self {
        self.settings.origin = origin;
        self
    }

    /// Whether a subprotocol token that fails validation is reported after
    /// the upgrade (close 4401/4403, the default: a browser can read that)
    /// or before it (an HTTP status the browser cannot read).
    pub fn subprotocol_failures_after_upgrade(mut self, after: bool) -> Self {
        self.settings.subprotocol_failures_after_upgrade = after;
        self
    }

    /// Checks the configuration and builds the authenticator.
    ///
    /// Also installs jsonwebtoken's `rust_crypto` provider as the process
    /// default unless the application installed one first, so a second
    /// crypto backend enabled elsewhere in the dependency graph cannot make
    /// verification panic.
    ///
    /// # Errors
    ///
    /// A [`JwtConfigError`] naming what is wrong.
    pub fn build(self) -> Result<JwtAuthenticator, JwtConfigError> {
        check_algorithms(&self.settings.algorithms)?;
        let keys = match self.keys {
            KeySource::Set(keys) => keys,
            KeySource::Jwks(jwks) => JwtKeySet::from_jwks(&jwks, &self.settings.algorithms)?,
        };
        check_keys(&self.settings.algorithms, &keys)?;
        if self.settings.user_claim.is_empty() {
            return Err(JwtConfigError::EmptyUserClaim);
        }
        let settings = &self.settings;
        let issuer_missing = settings.issuers.is_empty() && !settings.any_issuer;
        let audience_missing = settings.audiences.is_empty() && !settings.any_audience;
        if issuer_missing || audience_missing {
            return Err(JwtConfigError::ClaimPolicyMissing {
                issuer: issuer_missing,
                audience: audience_missing,
            });
        }
        if !settings.issuers.is_empty() && settings.any_issuer {
            return Err(JwtConfigError::ClaimPolicyConflict { claim: "issuer" });
        }
        if !settings.audiences.is_empty() && settings.any_audience {
            return Err(JwtConfigError::ClaimPolicyConflict { claim: "audience" });
        }
        // Err means a provider is already installed: the application chose.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
        Ok(JwtAuthenticator {
            inner: Arc::new(Inner {
                settings: self.settings,
                keys: RwLock::new(Arc::new(keys)),
            }),
        })
    }
}
