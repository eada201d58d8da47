//! [`JwtConfigError`]: why a configuration cannot work.

/// A [`JwtAuthenticator`](super::JwtAuthenticator) configuration that cannot work.
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
    /// [`issuer`](super::JwtAuthenticatorBuilder::issuer) or
    /// [`any_issuer`](super::JwtAuthenticatorBuilder::any_issuer), and
    /// [`audience`](super::JwtAuthenticatorBuilder::audience) or
    /// [`any_audience`](super::JwtAuthenticatorBuilder::any_audience). Without
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
