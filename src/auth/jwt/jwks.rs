//! Reading an identity provider's JWK set (RFC 7517) into a [`JwtKeySet`]:
//! which JWKs are left out, which make the set refused.

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, JwkSet};

use super::JwtConfigError;
use super::algorithm::{Family, JwtAlgorithm, check_algorithms};
use super::keys::{JwtKey, JwtKeySet};
use crate::auth::extract::decode_base64url;

impl JwtKeySet {
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
    /// [`JwtAuthenticator::replace_keys`](super::JwtAuthenticator::replace_keys) (or call
    /// [`JwtAuthenticator::replace_jwks`](super::JwtAuthenticator::replace_jwks)), as often as the provider's
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
