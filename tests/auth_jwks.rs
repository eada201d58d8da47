//! Keys from a JWK set (RFC 7517), as identity providers publish them:
//! selection by `kid`, keys of another family or algorithm refused, `alg`
//! pinned per key, rotation through `replace_jwks`, and the set's own
//! defects (malformed keys, repeated `kid`s, short secrets) refused whole.

#![cfg(feature = "jwt")]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::tokens::{self, SECRET};
use ws_lifecycle::auth::{
    AuthError, Authenticator, HandshakeRequest, JwkSet, JwtAlgorithm, JwtAuthenticator,
    JwtConfigError, JwtKeySet,
};

// Test keys only (see tests/fixtures/README.md).
const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/rsa_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("fixtures/ec_private.pem");
const JWKS: &str = include_str!("fixtures/jwks.json");

const RSA_KID: &str = "rsa-2026-01";
const EC_KID: &str = "ec-2026-01";
const HMAC_KID: &str = "hmac-2026-01";

/// The fixture set's JWK with `kid`, as JSON.
fn fixture_jwk(kid: &str) -> Value {
    let set: Value = serde_json::from_str(JWKS).unwrap();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .unwrap()
}

/// An `oct` JWK holding `secret`.
fn oct(kid: &str, secret: &[u8]) -> Value {
    json!({ "kty": "oct", "alg": "HS256", "kid": kid, "k": tokens::b64url(secret) })
}

/// `jwk` with `field` set to `value`.
fn with(mut jwk: Value, field: &str, value: Value) -> Value {
    jwk[field] = value;
    jwk
}

fn set(keys: &[Value]) -> JwkSet {
    serde_json::from_value(json!({ "keys": keys })).unwrap()
}

/// The fixture's RSA key and an HMAC secret, in one set.
fn rsa_and_oct() -> JwkSet {
    set(&[fixture_jwk(RSA_KID), oct(HMAC_KID, SECRET)])
}

fn authenticator(algorithms: &[JwtAlgorithm], jwks: &JwkSet) -> JwtAuthenticator {
    JwtAuthenticator::builder()
        .algorithms(algorithms)
        .jwks(jwks)
        .any_issuer()
        .any_audience()
        .build()
        .unwrap()
}

fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    header
}

fn rsa_token(alg: Algorithm, kid: Option<&str>) -> String {
    tokens::sign(
        &header(alg, kid),
        &tokens::claims("alice"),
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
}

fn ec_token(kid: Option<&str>) -> String {
    tokens::sign(
        &header(Algorithm::ES256, kid),
        &tokens::claims("alice"),
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
    )
}

fn hmac_token(kid: Option<&str>, secret: &[u8]) -> String {
    tokens::sign(
        &header(Algorithm::HS256, kid),
        &tokens::claims("alice"),
        &EncodingKey::from_secret(secret),
    )
}

/// The user `token` authenticates as in an `Authorization` header, or the
/// error code.
async fn user_of(auth: &JwtAuthenticator, token: &str) -> Result<String, &'static str> {
    let request = HandshakeRequest::builder()
        .header("Authorization", format!("Bearer {token}"))
        .build()
        .unwrap();
    auth.authenticate(&request)
        .await
        .map(|outcome| outcome.user.as_str().to_owned())
        .map_err(|failure| failure.error.code())
}

fn alice() -> Result<String, &'static str> {
    Ok("alice".to_owned())
}

#[test]
fn the_fixture_set_parses_and_keeps_both_signature_keys_of_their_family() {
    let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
    let rsa = JwtKeySet::from_jwks(&jwks, &[JwtAlgorithm::RS256]).unwrap();
    assert_eq!(rsa.kids(), [RSA_KID]);
    let ec = JwtKeySet::from_jwks(&jwks, &[JwtAlgorithm::ES256]).unwrap();
    assert_eq!(ec.kids(), [EC_KID]);
}

/// A set holding an RSA and an `oct` key: configured for RS256, the `oct`
/// key is refused (its `kid` is unknown), and the other way round.
#[tokio::test]
async fn keys_of_another_family_than_the_configured_algorithms_are_refused() {
    let jwks = rsa_and_oct();

    let rs = authenticator(&[JwtAlgorithm::RS256], &jwks);
    assert_eq!(
        JwtKeySet::from_jwks(&jwks, &[JwtAlgorithm::RS256])
            .unwrap()
            .kids(),
        [RSA_KID]
    );
    assert_eq!(
        user_of(&rs, &rsa_token(Algorithm::RS256, Some(RSA_KID))).await,
        alice()
    );
    // The HMAC key never verifies anything here: not as HS256 …
    assert_eq!(
        user_of(&rs, &hmac_token(Some(HMAC_KID), SECRET)).await,
        Err("algorithm_not_allowed")
    );
    // … and its kid names no key for RS256 either.
    assert_eq!(
        user_of(&rs, &rsa_token(Algorithm::RS256, Some(HMAC_KID))).await,
        Err("signature_invalid")
    );

    let hs = authenticator(&[JwtAlgorithm::HS256], &jwks);
    assert_eq!(
        JwtKeySet::from_jwks(&jwks, &[JwtAlgorithm::HS256])
            .unwrap()
            .kids(),
        [HMAC_KID]
    );
    assert_eq!(
        user_of(&hs, &hmac_token(Some(HMAC_KID), SECRET)).await,
        alice()
    );
    assert_eq!(
        user_of(&hs, &rsa_token(Algorithm::RS256, Some(RSA_KID))).await,
        Err("algorithm_not_allowed")
    );
    // Signed with the RSA key's kid but an HMAC secret: no such HMAC key.
    assert_eq!(
        user_of(&hs, &hmac_token(Some(RSA_KID), SECRET)).await,
        Err("signature_invalid")
    );
}

/// A `kid` is required to select a key from a set: an unknown one, or none
/// when every key has one, is refused.
#[tokio::test]
async fn an_unknown_or_missing_kid_is_refused() {
    let rs = authenticator(&[JwtAlgorithm::RS256], &rsa_and_oct());
    for token in [
        rsa_token(Algorithm::RS256, Some("rsa-2025-12")),
        rsa_token(Algorithm::RS256, Some("")),
        rsa_token(Algorithm::RS256, None),
    ] {
        assert_eq!(user_of(&rs, &token).await, Err("signature_invalid"));
    }
}

/// JWKs whose `alg`, `use`, `key_ops` or curve disagree with the
/// configuration, or with their own `kty`, are left out of the set.
#[tokio::test]
async fn keys_whose_alg_use_or_curve_disagree_are_left_out() {
    let rsa = fixture_jwk(RSA_KID);
    let ec = fixture_jwk(EC_KID);
    let jwks = set(&[
        rsa.clone(),
        // An RSA key claiming an HMAC algorithm: key confusion bait.
        with(
            with(rsa.clone(), "kid", json!("confused")),
            "alg",
            json!("HS256"),
        ),
        // An RSA key for another RSA algorithm than the configured ones.
        with(
            with(rsa.clone(), "kid", json!("rs512")),
            "alg",
            json!("RS512"),
        ),
        // An encryption key, by `use` and by `alg`.
        with(with(rsa.clone(), "kid", json!("enc")), "use", json!("enc")),
        with(
            with(rsa.clone(), "kid", json!("oaep")),
            "alg",
            json!("RSA-OAEP"),
        ),
        // Not for verifying, by `key_ops`.
        with(
            with(rsa.clone(), "kid", json!("encrypt")),
            "key_ops",
            json!(["encrypt"]),
        ),
        // An unknown algorithm.
        with(with(rsa, "kid", json!("future")), "alg", json!("RS1024")),
        // A P-256 key claiming ES384.
        with(with(ec, "kid", json!("wrong-curve")), "alg", json!("ES384")),
    ]);
    let algorithms = [JwtAlgorithm::RS256, JwtAlgorithm::PS256];
    let keys = JwtKeySet::from_jwks(&jwks, &algorithms).unwrap();
    assert_eq!(keys.kids(), [RSA_KID]);
    let rs = authenticator(&algorithms, &jwks);
    for kid in ["confused", "rs512", "enc", "oaep", "encrypt", "future"] {
        assert_eq!(
            user_of(&rs, &rsa_token(Algorithm::RS256, Some(kid))).await,
            Err("signature_invalid"),
            "{kid}"
        );
    }
    let es = JwtKeySet::from_jwks(&jwks, &[JwtAlgorithm::ES384]);
    assert!(
        matches!(es, Err(JwtConfigError::NoUsableJwk { skipped: 8 })),
        "{es:?}"
    );
}

/// A JWK's `alg` pins its key: a key published for RS256 does not verify a
/// PS256 token, even with PS256 allowed. A JWK without `alg` serves every
/// configured algorithm.
#[tokio::test]
async fn a_jwk_alg_pins_its_key_to_that_algorithm() {
    let pinned = fixture_jwk(RSA_KID);
    let mut open = with(pinned.clone(), "kid", json!("any-rsa"));
    open.as_object_mut().unwrap().remove("alg");
    let algorithms = [JwtAlgorithm::RS256, JwtAlgorithm::PS256];
    let auth = authenticator(&algorithms, &set(&[pinned, open]));
    assert_eq!(
        user_of(&auth, &rsa_token(Algorithm::RS256, Some(RSA_KID))).await,
        alice()
    );
    assert_eq!(
        user_of(&auth, &rsa_token(Algorithm::PS256, Some(RSA_KID))).await,
        Err("algorithm_not_allowed")
    );
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        assert_eq!(
            user_of(&auth, &rsa_token(alg, Some("any-rsa"))).await,
            alice(),
            "{alg:?}"
        );
    }
}

/// Rotation: a new set replaces the old one through `replace_jwks`; a set
/// that cannot be used is refused and the old one stays.
#[tokio::test]
async fn a_new_jwk_set_rotates_the_keys_and_a_bad_one_changes_nothing() {
    let auth = authenticator(&[JwtAlgorithm::RS256], &rsa_and_oct());
    let old = rsa_token(Algorithm::RS256, Some(RSA_KID));
    let new = rsa_token(Algorithm::RS256, Some("rsa-2026-02"));
    assert_eq!(user_of(&auth, &old).await, alice());
    assert_eq!(user_of(&auth, &new).await, Err("signature_invalid"));

    // The provider publishes the next key beside the current one …
    let next = with(fixture_jwk(RSA_KID), "kid", json!("rsa-2026-02"));
    auth.replace_jwks(&set(&[fixture_jwk(RSA_KID), next.clone()]))
        .unwrap();
    assert_eq!(user_of(&auth, &old).await, alice());
    assert_eq!(user_of(&auth, &new).await, alice());

    // … then retires the current one.
    auth.replace_jwks(&set(&[next])).unwrap();
    assert_eq!(user_of(&auth, &old).await, Err("signature_invalid"));
    assert_eq!(user_of(&auth, &new).await, alice());

    // A set with nothing for RS256 is refused; the keys stay as they were.
    let refused = auth.replace_jwks(&set(&[oct(HMAC_KID, SECRET)]));
    assert_eq!(refused, Err(JwtConfigError::NoUsableJwk { skipped: 1 }));
    assert_eq!(user_of(&auth, &new).await, alice());

    // A JWK set through `replace_keys` too.
    let keys = JwtKeySet::from_jwks(&rsa_and_oct(), &[JwtAlgorithm::RS256]).unwrap();
    auth.replace_keys(keys).unwrap();
    assert_eq!(user_of(&auth, &old).await, alice());
    assert_eq!(user_of(&auth, &new).await, Err("signature_invalid"));
}

/// Defects of the keys meant for this configuration refuse the whole set:
/// a key that does not parse, two keys under one `kid`, an HMAC secret
/// shorter than the hash.
#[test]
fn a_set_with_a_broken_key_for_this_configuration_is_refused_whole() {
    let rsa = fixture_jwk(RSA_KID);
    let rs = [JwtAlgorithm::RS256];
    let two_kids = set(&[rsa.clone(), with(rsa.clone(), "kid", json!("b"))]);
    assert_eq!(
        JwtKeySet::from_jwks(&two_kids, &rs).unwrap().kids(),
        ["b", RSA_KID]
    );

    let bad_modulus = set(&[
        rsa.clone(),
        with(with(rsa.clone(), "kid", json!("b")), "n", json!("!!")),
    ]);
    assert_eq!(
        JwtKeySet::from_jwks(&bad_modulus, &rs).map(|_| ()),
        Err(JwtConfigError::InvalidJwk {
            kid: "b".into(),
            reason: "the key parameters are not base64url"
        })
    );
    let twice = set(&[rsa.clone(), rsa.clone()]);
    assert_eq!(
        JwtKeySet::from_jwks(&twice, &rs).map(|_| ()),
        Err(JwtConfigError::InvalidJwk {
            kid: RSA_KID.into(),
            reason: "two keys have this kid"
        })
    );
    let mut no_kid = rsa.clone();
    no_kid.as_object_mut().unwrap().remove("kid");
    let two_without_kid = set(&[no_kid.clone(), no_kid.clone()]);
    assert_eq!(
        JwtKeySet::from_jwks(&two_without_kid, &rs).map(|_| ()),
        Err(JwtConfigError::InvalidJwk {
            kid: String::new(),
            reason: "two keys have no kid"
        })
    );
    let mut short_ec = fixture_jwk(EC_KID);
    short_ec["x"] = json!(tokens::b64url(&[1; 31]));
    assert_eq!(
        JwtKeySet::from_jwks(&set(&[short_ec]), &[JwtAlgorithm::ES256]).map(|_| ()),
        Err(JwtConfigError::InvalidJwk {
            kid: EC_KID.into(),
            reason: "the EC point's coordinates do not have the curve's length"
        })
    );

    // A short HMAC secret: refused when the authenticator is built.
    let short = set(&[oct(HMAC_KID, b"only 20 bytes long..")]);
    let built = JwtAuthenticator::builder()
        .algorithms(&[JwtAlgorithm::HS256])
        .jwks(&short)
        .any_issuer()
        .any_audience()
        .build()
        .map(|_| ());
    assert_eq!(
        built,
        Err(JwtConfigError::HmacKeyTooShort {
            algorithm: "HS256",
            min: 32,
            actual: 20
        })
    );
}

/// One key without a `kid` is the default key, for tokens without one.
#[tokio::test]
async fn a_single_jwk_without_kid_serves_tokens_without_kid() {
    let mut ec = fixture_jwk(EC_KID);
    ec.as_object_mut().unwrap().remove("kid");
    let auth = authenticator(&[JwtAlgorithm::ES256], &set(&[ec]));
    assert_eq!(user_of(&auth, &ec_token(None)).await, alice());
    assert_eq!(
        user_of(&auth, &ec_token(Some(EC_KID))).await,
        Err("signature_invalid")
    );
}

/// The set's errors name what to fix.
#[test]
fn jwk_errors_say_what_is_wrong() {
    let none = JwtKeySet::from_jwks(&rsa_and_oct(), &[JwtAlgorithm::EdDSA])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(none, JwtConfigError::NoUsableJwk { skipped: 2 });
    assert_eq!(
        none.to_string(),
        "the JWK set has no key usable with the configured algorithms \
         (2 left out for their kty, alg, curve or use)"
    );
    let invalid = JwtConfigError::InvalidJwk {
        kid: "b".into(),
        reason: "the key parameters are not base64url",
    };
    assert_eq!(
        invalid.to_string(),
        "JWK \"b\" cannot be used: the key parameters are not base64url"
    );
    assert_eq!(
        JwtKeySet::from_jwks(&rsa_and_oct(), &[]).map(|_| ()),
        Err(JwtConfigError::NoAlgorithms)
    );
    assert_eq!(
        JwtKeySet::from_jwks(&rsa_and_oct(), &[JwtAlgorithm::RS256, JwtAlgorithm::HS256])
            .map(|_| ()),
        Err(JwtConfigError::MixedFamilies)
    );
    // A token's refusal for an unknown kid stays the documented code.
    assert_eq!(AuthError::SignatureInvalid.code(), "signature_invalid");
}
