//! Verifying one token: header checks (`alg`, `crit`, `kid`), the
//! signature and registered claims through jsonwebtoken, then `iat` and the
//! user claim; and the one mapping from jsonwebtoken's errors to
//! [`AuthError`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use super::JwtAuthenticator;
use super::algorithm::JwtAlgorithm;
use crate::auth::AuthError;
use crate::auth::extract::{Token, decode_base64url, is_compact_jws};
use crate::id::UserId;

/// A verified token.
pub(super) struct Verified {
    pub(super) user: UserId,
    pub(super) claims: Map<String, Value>,
    pub(super) expires_at: SystemTime,
}

impl JwtAuthenticator {
    pub(super) fn verify(&self, token: &Token) -> Result<Verified, AuthError> {
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
