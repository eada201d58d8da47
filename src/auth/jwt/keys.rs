//! Key material: [`JwtKey`] (HMAC secrets and PEM public keys), the
//! [`JwtKeySet`] tokens are verified with, and the checks a set must pass
//! against the allowed algorithms (one family, HMAC secrets at least as long
//! as the hash output).

use std::collections::HashMap;

use jsonwebtoken::DecodingKey;

use super::JwtConfigError;
use super::algorithm::{Family, JwtAlgorithm};

/// A verification key.
#[derive(Clone)]
pub struct JwtKey {
    pub(super) family: Family,
    pub(super) key: DecodingKey,
    /// The secret's length, for an HMAC key (checked against the hash
    /// output when the authenticator is built).
    pub(super) hmac_len: Option<usize>,
    /// The one algorithm this key verifies (a JWK's `alg`, or its curve);
    /// `None`: any allowed algorithm of its family.
    pub(super) algorithm: Option<JwtAlgorithm>,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("family", &self.family)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    fn parsed(
        family: Family,
        key: jsonwebtoken::errors::Result<DecodingKey>,
        what: &'static str,
    ) -> Result<Self, JwtConfigError> {
        key.map(|key| JwtKey {
            family,
            key,
            hmac_len: None,
            algorithm: None,
        })
        .map_err(|_| JwtConfigError::InvalidKey(what))
    }

    /// An HMAC secret (for HS256/384/512). It must be at least as long as
    /// the hash output of every allowed algorithm (32 bytes for HS256, 48
    /// for HS384, 64 for HS512; RFC 7518 §3.2): a shorter one is refused
    /// when the authenticator is built or the keys replaced
    /// ([`JwtConfigError::HmacKeyTooShort`]). Use random bytes, not a
    /// password.
    pub fn hmac(secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        JwtKey {
            family: Family::Hmac,
            key: DecodingKey::from_secret(secret),
            hmac_len: Some(secret.len()),
            algorithm: None,
        }
    }

    /// An RSA public key in PEM (for RS* and PS*).
    ///
    /// # Errors
    ///
    /// [`JwtConfigError::InvalidKey`] when the PEM does not parse.
    pub fn rsa_pem(pem: impl AsRef<[u8]>) -> Result<Self, JwtConfigError> {
        Self::parsed(
            Family::Rsa,
            DecodingKey::from_rsa_pem(pem.as_ref()),
            "not an RSA public key in PEM",
        )
    }

    /// An EC public key in PEM (for ES256/384).
    ///
    /// # Errors
    ///
    /// [`JwtConfigError::InvalidKey`] when the PEM does not parse.
    pub fn ec_pem(pem: impl AsRef<[u8]>) -> Result<Self, JwtConfigError> {
        Self::parsed(
            Family::Ec,
            DecodingKey::from_ec_pem(pem.as_ref()),
            "not an EC public key in PEM",
        )
    }

    /// An Ed25519 public key in PEM (for EdDSA).
    ///
    /// # Errors
    ///
    /// [`JwtConfigError::InvalidKey`] when the PEM does not parse.
    pub fn ed_pem(pem: impl AsRef<[u8]>) -> Result<Self, JwtConfigError> {
        Self::parsed(
            Family::Ed,
            DecodingKey::from_ed_pem(pem.as_ref()),
            "not an Ed25519 public key in PEM",
        )
    }
}

/// The keys tokens are verified with: an optional default key and keys by
/// `kid`. Rotate by building a new set and calling
/// [`JwtAuthenticator::replace_keys`](super::JwtAuthenticator::replace_keys).
///
/// Selection is by the token header's `kid`, and only by it:
///
/// * a token **with** a `kid` is verified with the key of that `kid`; a
///   `kid` naming no key is refused (`signature_invalid`), even when a
///   default key is configured (there is no fallback);
/// * a token **without** a `kid` is verified with the default key, and
///   refused when there is none.
///
/// So an identity provider that puts a `kid` in its tokens needs its keys
/// added with [`with_kid`](JwtKeySet::with_kid) (or taken from its JWK set
/// with [`from_jwks`](JwtKeySet::from_jwks)), not as the default.
#[derive(Debug, Clone, Default)]
pub struct JwtKeySet {
    pub(super) default: Option<JwtKey>,
    pub(super) by_kid: HashMap<String, JwtKey>,
}

impl JwtKeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key used for tokens without a `kid` (a token with a `kid`
    /// never uses it).
    #[must_use]
    pub fn with_default(mut self, key: JwtKey) -> Self {
        self.default = Some(key);
        self
    }

    /// Adds a key selected by the token header's `kid`.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>, key: JwtKey) -> Self {
        self.by_kid.insert(kid.into(), key);
        self
    }

    /// The `kid`s with a key, sorted (the default key has none).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &JwtKey> {
        self.default.iter().chain(self.by_kid.values())
    }

    /// The key for a token: the key of its `kid` when it has one, the
    /// default key when it has none. A `kid` that names no key finds
    /// nothing, even when a default key is configured: it never falls back.
    pub(super) fn select(&self, kid: Option<&str>) -> Option<&JwtKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => self.default.as_ref(),
        }
    }
}

/// Checks `keys` against the allowed `algorithms` (one family, checked
/// before): at least one key, every key of that family, and every HMAC key
/// at least as long as the longest hash output allowed.
pub(super) fn check_keys(
    algorithms: &[JwtAlgorithm],
    keys: &JwtKeySet,
) -> Result<(), JwtConfigError> {
    let family = algorithms.first().map(|a| a.family());
    if keys.keys().next().is_none() {
        return Err(JwtConfigError::NoKeys);
    }
    if keys.keys().any(|k| Some(k.family) != family) {
        return Err(JwtConfigError::KeyFamilyMismatch);
    }
    let strictest = algorithms
        .iter()
        .filter_map(|a| a.min_hmac_key_len().map(|min| (min, a.name())))
        .max();
    if let Some((min, algorithm)) = strictest
        && let Some(actual) = keys.keys().filter_map(|k| k.hmac_len).find(|&l| l < min)
    {
        return Err(JwtConfigError::HmacKeyTooShort {
            algorithm,
            min,
            actual,
        });
    }
    Ok(())
}
