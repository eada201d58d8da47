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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, Validation};
use parking_lot::RwLock;
use serde_json::{Map, Value};

use super::extract::{Token, decode_base64url, is_compact_jws};
use super::{
    AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest, OriginPolicy,
    TokenSources,
};
use crate::id::UserId;

/// A signature algorithm the configuration may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

/// The key family an algorithm (and a key) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl JwtAlgorithm {
    const ALL: [JwtAlgorithm; 12] = [
        JwtAlgorithm::HS256,
        JwtAlgorithm::HS384,
        JwtAlgorithm::HS512,
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// The shortest HMAC key this algorithm may use: its hash output
    /// (RFC 7518 §3.2). `None` for the other families.
    fn min_hmac_key_len(self) -> Option<usize> {
        match self {
            JwtAlgorithm::HS256 => Some(32),
            JwtAlgorithm::HS384 => Some(48),
            JwtAlgorithm::HS512 => Some(64),
            _ => None,
        }
    }

    fn family(self) -> Family {
        match self {
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => Family::Hmac,
            JwtAlgorithm::RS256
            | JwtAlgorithm::RS384
            | JwtAlgorithm::RS512
            | JwtAlgorithm::PS256
            | JwtAlgorithm::PS384
            | JwtAlgorithm::PS512 => Family::Rsa,
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => Family::Ec,
            JwtAlgorithm::EdDSA => Family::Ed,
        }
    }

    fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            JwtAlgorithm::HS256 => A::HS256,
            JwtAlgorithm::HS384 => A::HS384,
            JwtAlgorithm::HS512 => A::HS512,
            JwtAlgorithm::RS256 => A::RS256,
            JwtAlgorithm::RS384 => A::RS384,
            JwtAlgorithm::RS512 => A::RS512,
            JwtAlgorithm::PS256 => A::PS256,
            JwtAlgorithm::PS384 => A::PS384,
            JwtAlgorithm::PS512 => A::PS512,
            JwtAlgorithm::ES256 => A::ES256,
            JwtAlgorithm::ES384 => A::ES384,
            JwtAlgorithm::EdDSA => A::EdDSA,
        }
    }
}

/// A verification key.
#[derive(Clone)]
pub struct JwtKey {
    family: Family,
    key: DecodingKey,
    /// The secret's length, for an HMAC key (checked against the hash
    /// output when the authenticator is built).
    hmac_len: Option<usize>,
    /// The one algorithm this key verifies (a JWK's `alg`, or its curve);
    /// `None`: any allowed algorithm of its family.
    algorithm: Option<JwtAlgorithm>,
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
/// [`JwtAuthenticator::replace_keys`].
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
    default: Option<JwtKey>,
    by_kid: HashMap<String, JwtKey>,
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

    /// The keys of an identity provider's JWK set (RFC 7517) usable with
    /// `algorithms` (all of one family): each key under its `kid`, a key
    /// without `kid` as the default (for tokens without one). A JWK's `alg`
    /// pins its key to that algorithm.
    ///
    /// JWKs that are not for these algorithms are left out (logged at
    /// WARN), so a set that also publishes other keys still works; a token
    /// naming one of them finds no key (`signature_invalid`):
    ///
    /// * a `kty` of another family than `algorithms` (an `oct` secret when
    ///   RS256 is configured, an RSA key when HS256 is …);
    /// * an `alg` that is not one of `algorithms` (another algorithm of the
    ///   family, one of another family, an encryption algorithm, an
    ///   unknown one);
    /// * `use` other than `sig`, or `key_ops` without `verify`;
    /// * an EC curve or OKP curve the algorithms cannot use (ES256 needs
    ///   P-256, ES384 P-384, EdDSA Ed25519).
    ///
    /// `jku`, `x5u` and `x5c` are not read: nothing is fetched. To rotate,
    /// build a set from the provider's current JWK set and hand it to
    /// [`JwtAuthenticator::replace_keys`] (or call
    /// [`JwtAuthenticator::replace_jwks`]), as often as the provider's
    /// cache headers say; see `docs/auth.md`.
    ///
    /// # Errors
    ///
    /// [`JwtConfigError::NoAlgorithms`] or [`JwtConfigError::MixedFamilies`]
    /// for `algorithms`; [`JwtConfigError::InvalidJwk`] when a key for
    /// these algorithms does not parse (bad base64url, wrong point length),
    /// two of them share a `kid` or two have none; and
    /// [`JwtConfigError::NoUsableJwk`] when none is left. HMAC secrets too
    /// short are refused when the set is installed
    /// ([`JwtConfigError::HmacKeyTooShort`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::auth::{JwkSet, JwtAlgorithm, JwtKeySet};
    ///
    /// // What `https://auth.example/.well-known/jwks.json` returned.
    /// let jwks: JwkSet = serde_json::from_str(r#"{"keys": [
    ///     {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "2026-01",
    ///      "x": "x6mXOh65nNYOtL1S8g5mmN5KrJBBNxTTwrDZpj58aUc",
    ///      "y": "pk-6uXvSozTDYRPnnsJjkye3V8iNOEXG34wS9CbVJro"},
    ///     {"kty": "RSA", "alg": "RSA-OAEP", "use": "enc", "kid": "enc-1", "n": "AQAB", "e": "AQAB"}
    /// ]}"#)?;
    /// let keys = JwtKeySet::from_jwks(&jwks, &[JwtAlgorithm::ES256])?;
    /// assert_eq!(keys.kids(), ["2026-01"]); // the encryption key is left out
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_jwks(jwks: &JwkSet, algorithms: &[JwtAlgorithm]) -> Result<Self, JwtConfigError> {
        let family = check_algorithms(algorithms)?;
        let mut set = JwtKeySet::new();
        let mut skipped = 0;
        for jwk in &jwks.keys {
            let kid = jwk.common.key_id.as_deref();
            let key = match jwk_key(jwk, family, algorithms) {
                Ok(key) => key,
                Err(JwkRefusal::Skip(reason)) => {
                    tracing::warn!(kid, reason, "JWK left out");
                    skipped += 1;
                    continue;
                }
                Err(JwkRefusal::Invalid(reason)) => {
                    return Err(JwtConfigError::InvalidJwk {
                        kid: kid.unwrap_or_default().to_owned(),
                        reason,
                    });
                }
            };
            let invalid = |reason| JwtConfigError::InvalidJwk {
                kid: kid.unwrap_or_default().to_owned(),
                reason,
            };
            match kid {
                Some(kid) if set.by_kid.contains_key(kid) => {
                    return Err(invalid("two keys have this kid"));
                }
                Some(kid) => {
                    set.by_kid.insert(kid.to_owned(), key);
                }
                None if set.default.is_some() => return Err(invalid("two keys have no kid")),
                None => set.default = Some(key),
            }
        }
        if set.keys().next().is_none() {
            return Err(JwtConfigError::NoUsableJwk { skipped });
        }
        Ok(set)
    }

    /// The `kid`s with a key, sorted (the default key has none).
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    fn keys(&self) -> impl Iterator<Item = &JwtKey> {
        self.default.iter().chain(self.by_kid.values())
    }

    /// The key for a token: the key of its `kid` when it has one, the
    /// default key when it has none. A `kid` that names no key finds
    /// nothing, even when a default key is configured: it never falls back.
    fn select(&self, kid: Option<&str>) -> Option<&JwtKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid),
            None => self.default.as_ref(),
        }
    }
}

/// Why a JWK is not taken.
enum JwkRefusal {
    /// Not for this configuration: left out.
    Skip(&'static str),
    /// For this configuration, but broken: the set is refused.
    Invalid(&'static str),
}

/// The key of `jwk` for `algorithms` (all of `family`).
fn jwk_key(jwk: &Jwk, family: Family, algorithms: &[JwtAlgorithm]) -> Result<JwtKey, JwkRefusal> {
    use JwkRefusal::{Invalid, Skip};
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyOperations, PublicKeyUse};

    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err(Skip("its use is not sig")),
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| matches!(op, KeyOperations::Verify)))
    {
        return Err(Skip("its key_ops do not include verify"));
    }
    // The key's family and the algorithm its curve implies.
    let (kty, curve_algorithm) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Family::Rsa, None),
        AlgorithmParameters::OctetKey(_) => (Family::Hmac, None),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => (Family::Ec, Some(JwtAlgorithm::ES256)),
            EllipticCurve::P384 => (Family::Ec, Some(JwtAlgorithm::ES384)),
            _ => return Err(Skip("its curve is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => (Family::Ed, Some(JwtAlgorithm::EdDSA)),
            _ => return Err(Skip("its curve is not supported")),
        },
        _ => return Err(Skip("its key type is not supported")),
    };
    if kty != family {
        return Err(Skip(
            "its key type is not of the configured algorithms' family",
        ));
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => match JwtAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == alg.to_string())
        {
            Some(alg) if alg.family() == kty => Some(alg),
            Some(_) => return Err(Skip("its alg is not of its key type's family")),
            None => return Err(Skip("its alg is not a signature algorithm")),
        },
    };
    let algorithm = match (declared, curve_algorithm) {
        (Some(declared), Some(curve)) if declared != curve => {
            return Err(Skip("its alg does not match its curve"));
        }
        (declared, curve) => declared.or(curve),
    };
    if algorithm.is_some_and(|a| !algorithms.contains(&a)) {
        return Err(Skip("its alg is not one of the configured algorithms"));
    }
    let decode =
        |text: &str| decode_base64url(text).ok_or(Invalid("the key parameters are not base64url"));
    let hmac_len = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let (n, e) = (decode(&rsa.n)?, decode(&rsa.e)?);
            if n.iter().all(|&b| b == 0) || e.iter().all(|&b| b == 0) {
                return Err(Invalid("the RSA modulus or exponent is empty"));
            }
            None
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let len = if curve_algorithm == Some(JwtAlgorithm::ES384) {
                48
            } else {
                32
            };
            if decode(&ec.x)?.len() != len || decode(&ec.y)?.len() != len {
                return Err(Invalid(
                    "the EC point's coordinates do not have the curve's length",
                ));
            }
            None
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if decode(&okp.x)?.len() != 32 {
                return Err(Invalid("the Ed25519 public key is not 32 bytes"));
            }
            None
        }
        AlgorithmParameters::OctetKey(oct) => Some(decode(&oct.value)?.len()),
        _ => return Err(Skip("its key type is not supported")),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| Invalid("the key does not parse"))?;
    Ok(JwtKey {
        family: kty,
        key,
        hmac_len,
        algorithm,
    })
}

/// The one family `algorithms` belong to.
fn check_algorithms(algorithms: &[JwtAlgorithm]) -> Result<Family, JwtConfigError> {
    let family = match algorithms.first() {
        None => return Err(JwtConfigError::NoAlgorithms),
        Some(first) => first.family(),
    };
    if algorithms.iter().any(|a| a.family() != family) {
        return Err(JwtConfigError::MixedFamilies);
    }
    Ok(family)
}

/// A [`JwtAuthenticator`] configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// No algorithm is allowed.
    #[error("no JWT algorithm allowed: call `algorithms` with at least one")]
    NoAlgorithms,
    /// The allowed algorithms span key families (for example HS256 and
    /// RS256): that is how key-confusion attacks work.
    #[error("allowed JWT algorithms mix key families (HMAC, RSA, EC, Ed25519): configure one")]
    MixedFamilies,
    /// No key is configured.
    #[error("no JWT key configured")]
    NoKeys,
    /// A key does not belong to the allowed algorithms' family.
    #[error("a JWT key does not match the allowed algorithms' key family")]
    KeyFamilyMismatch,
    /// A key did not parse.
    #[error("invalid JWT key: {0}")]
    InvalidKey(&'static str),
    /// The user claim name is empty.
    #[error("the user claim name is empty")]
    EmptyUserClaim,
    /// An HMAC key is shorter than the hash output of an allowed
    /// algorithm (RFC 7518 §3.2): such a key is easier to brute-force than
    /// the algorithm is to break.
    #[error(
        "an HMAC key is {actual} bytes, but {algorithm} needs at least {min} (RFC 7518 section 3.2): use a random secret of {min} bytes or more"
    )]
    HmacKeyTooShort {
        /// The allowed algorithm with the longest hash.
        algorithm: &'static str,
        /// Its hash output, in bytes: the shortest key it may use.
        min: usize,
        /// The key's length, in bytes.
        actual: usize,
    },
    /// The builder was given no policy for `iss`, or none for `aud`: call
    /// [`issuer`](JwtAuthenticatorBuilder::issuer) or
    /// [`any_issuer`](JwtAuthenticatorBuilder::any_issuer), and
    /// [`audience`](JwtAuthenticatorBuilder::audience) or
    /// [`any_audience`](JwtAuthenticatorBuilder::any_audience). Without
    /// them, a token your identity provider minted for another of its
    /// services would be accepted.
    #[error("{}", claim_policy_missing(*issuer, *audience))]
    ClaimPolicyMissing {
        /// No policy for `iss`.
        issuer: bool,
        /// No policy for `aud`.
        audience: bool,
    },
    /// A JWK meant for the configured algorithms cannot be used, so the
    /// JWK set is refused (the keys in place stay): the identity provider's
    /// set is broken, or was not fetched whole.
    #[error("JWK {kid:?} cannot be used: {reason}")]
    InvalidJwk {
        /// The JWK's `kid` (empty when it has none).
        kid: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The JWK set holds no key usable with the configured algorithms:
    /// check the algorithms against what the identity provider publishes
    /// (each JWK's `kty`, `alg`, `crv` and `use`).
    #[error(
        "the JWK set has no key usable with the configured algorithms ({skipped} left out for their kty, alg, curve or use)"
    )]
    NoUsableJwk {
        /// How many JWKs were left out.
        skipped: usize,
    },
    /// Both `issuer(…)` and `any_issuer()` (or `audience(…)` and
    /// `any_audience()`) were called: keep the one you mean.
    #[error(
        "both `{claim}(…)` and `any_{claim}()` were called: require the {claim} or waive the check, not both"
    )]
    ClaimPolicyConflict {
        /// `issuer` or `audience`.
        claim: &'static str,
    },
}

/// The message of [`JwtConfigError::ClaimPolicyMissing`].
fn claim_policy_missing(issuer: bool, audience: bool) -> &'static str {
    match (issuer, audience) {
        (true, true) => {
            "no policy for `iss` nor `aud`: call `issuer(…)` with the issuer your identity provider \
             puts in `iss` or `any_issuer()`, and `audience(…)` with this service's audience or \
             `any_audience()`; otherwise a token minted for another service of the same identity \
             provider would be accepted"
        }
        (true, false) => {
            "no policy for `iss`: call `issuer(…)` with the issuer your identity provider puts in \
             `iss`, or `any_issuer()` to accept any issuer"
        }
        _ => {
            "no policy for `aud`: call `audience(…)` with this service's audience, or \
             `any_audience()` to accept tokens minted for any service"
        }
    }
}

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
struct Settings {
    algorithms: Vec<JwtAlgorithm>,
    issuers: Vec<String>,
    /// `any_issuer()` was called.
    any_issuer: bool,
    audiences: Vec<String>,
    /// `any_audience()` was called.
    any_audience: bool,
    leeway: Duration,
    user_claim: String,
    sources: TokenSources,
    origin: OriginPolicy,
    subprotocol_failures_after_upgrade: bool,
}

impl JwtAuthenticatorBuilder {
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

/// Checks `keys` against the allowed `algorithms` (one family, checked
/// before): at least one key, every key of that family, and every HMAC key
/// at least as long as the longest hash output allowed.
fn check_keys(algorithms: &[JwtAlgorithm], keys: &JwtKeySet) -> Result<(), JwtConfigError> {
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

/// A verified token.
struct Verified {
    user: UserId,
    claims: Map<String, Value>,
    expires_at: SystemTime,
}

impl JwtAuthenticator {
    /// A builder: set the algorithms and keys (or
    /// [`hs256`](JwtAuthenticatorBuilder::hs256)), and what `iss` and `aud`
    /// must be ([`issuer`](JwtAuthenticatorBuilder::issuer) and
    /// [`audience`](JwtAuthenticatorBuilder::audience), or the explicit
    /// waivers [`any_issuer`](JwtAuthenticatorBuilder::any_issuer) and
    /// [`any_audience`](JwtAuthenticatorBuilder::any_audience)).
    pub fn builder() -> JwtAuthenticatorBuilder {
        JwtAuthenticatorBuilder {
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

    fn verify(&self, token: &Token) -> Result<Verified, AuthError> {
        let inner = &self.inner;
        let token = token.expose();
        if token.len() > inner.settings.sources.max_token_len {
            return Err(AuthError::TokenTooLarge {
                limit: inner.settings.sources.max_token_len,
            });
        }
        if !is_compact_jws(token) {
            return Err(AuthError::TokenMalformed("not a compact JWS"));
        }
        let header = token.split('.').next().unwrap_or_default();
        let header: Map<String, Value> = decode_base64url(header)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(AuthError::TokenMalformed(
                "the header is not base64url JSON",
            ))?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.as_str(),
            _ => return Err(AuthError::TokenMalformed("the header has no alg")),
        };
        let algorithm = JwtAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == alg && inner.settings.algorithms.contains(a))
            .ok_or(AuthError::AlgorithmNotAllowed)?;
        match header.get("crit") {
            None => {}
            Some(Value::Array(crit)) if crit.is_empty() => {}
            Some(_) => return Err(AuthError::TokenMalformed("the header has a crit extension")),
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(AuthError::TokenMalformed("the header kid is not a string")),
        };
        let keys = Arc::clone(&inner.keys.read());
        let key = keys.select(kid).ok_or(AuthError::SignatureInvalid)?;
        if key.algorithm.is_some_and(|pinned| pinned != algorithm) {
            return Err(AuthError::AlgorithmNotAllowed);
        }

        let mut validation = Validation::new(algorithm.jsonwebtoken());
        validation.leeway = inner.settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if inner.settings.issuers.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&inner.settings.issuers);
            required.push("iss");
        }
        if inner.settings.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&inner.settings.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| map_error(e.kind()))?;
        let claims = data.claims;

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        match claims.get("iat") {
            None => {}
            Some(Value::Number(iat)) => {
                let iat = iat.as_f64().unwrap_or(f64::INFINITY);
                if iat > (now.saturating_add(inner.settings.leeway.as_secs())) as f64 {
                    return Err(AuthError::ClaimInvalid("iat is in the future"));
                }
            }
            Some(_) => return Err(AuthError::ClaimInvalid("iat is not a number")),
        }
        let user = match claims.get(&inner.settings.user_claim) {
            Some(Value::String(user)) => UserId::new(user)
                .map_err(|_| AuthError::ClaimInvalid("the user claim is not a valid user id"))?,
            _ => {
                return Err(AuthError::ClaimInvalid(
                    "the user claim is missing or not a string",
                ));
            }
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::ClaimInvalid("exp is not a number"))?;
        let expires_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(exp))
            .ok_or(AuthError::ClaimInvalid("exp is out of range"))?;
        Ok(Verified {
            user,
            claims,
            expires_at,
        })
    }

    fn outcome(&self, verified: Verified, marker: Option<String>) -> AuthOutcome {
        let mut outcome = AuthOutcome::new(verified.user);
        outcome.claims = verified.claims;
        outcome.expires_at = Some(verified.expires_at);
        outcome.selected_subprotocol = marker;
        outcome
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::RsaFailedSigning
        | ErrorKind::Signing(_)
        | ErrorKind::Provider(_) => AuthError::SignatureInvalid,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::ImmatureSignature => AuthError::TokenNotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::ClaimInvalid(match claim.as_str() {
            "exp" => "exp is missing",
            "iss" => "iss is missing",
            "aud" => "aud is missing",
            _ => "a required claim is missing",
        }),
        ErrorKind::InvalidClaimFormat(claim) => AuthError::ClaimInvalid(match claim.as_str() {
            "exp" => "exp is not a number",
            "nbf" => "nbf is not a number",
            _ => "a claim has the wrong type",
        }),
        ErrorKind::InvalidIssuer => AuthError::ClaimInvalid("iss is not an accepted issuer"),
        ErrorKind::InvalidAudience => AuthError::ClaimInvalid("aud is not an accepted audience"),
        ErrorKind::InvalidSubject => AuthError::ClaimInvalid("sub is not accepted"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::TokenMalformed("the token does not decode"),
        _ => AuthError::TokenMalformed("the token was refused"),
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
