//! Table-driven handshakes against a real `JwtAuthenticator`: every row is a
//! request and its exact outcome (user and echoed subprotocol, or error code
//! and where it surfaces, with the HTTP status or close code that implies).
//! Every row is then served through `Hub::serve_with_auth`: a rejected one
//! closes with its code and never enters the routing table, an accepted one
//! is routable while it is served.
//!
//! The expected values come from issue 3 and the design's "Auth failures:
//! where they surface" and "Close codes", not from the implementation.

#![cfg(feature = "jwt")]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::tokens::{self, SECRET};
use support::{OnReady, Scripted, frame, read_to_close, user};
use ws_lifecycle::Hub;
use ws_lifecycle::auth::{
    AuthError, Authenticator, HandshakeRequest, JwtAlgorithm, JwtAuthenticator, JwtKey, JwtKeySet,
    OriginPolicy, Surface, TokenSources,
};
use ws_lifecycle::state::ConnectionState;
use ws_lifecycle::transport::memory;

// Test keys only, generated once with openssl (see tests/fixtures/README.md).
// They are public: never use them to protect anything.
const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("fixtures/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("fixtures/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("fixtures/ec_public.pem");

/// A secret the authenticators do not trust (or trust under another `kid`).
const OTHER_SECRET: &[u8] = b"another secret, also 32+ bytes long";

const ISSUER: &str = "https://auth.example";
const AUDIENCE: &str = "ws-lifecycle";
const ORIGIN: &str = "https://app.example";
const MARKER: &str = "jwt-auth";
const PROTOCOL: &str = "Sec-WebSocket-Protocol";

/// Which authenticator a row runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    /// `.hs256(SECRET)`, `iss` and `aud` waived, everything else default.
    Hs,
    /// HS256 keys selected by `kid` only: `2024-01` is `SECRET`,
    /// `2024-02` is `OTHER_SECRET`.
    HsKid,
    /// HS256 requiring `iss` and `aud`.
    HsIssAud,
    /// HS256 reading the `access_token` query parameter.
    HsQuery,
    /// HS256 with an origin allow-list of [`ORIGIN`].
    HsOrigin,
    /// RS256 with the fixture RSA public key.
    Rs,
    /// ES256 with the fixture EC public key.
    Es,
}

struct Authenticators {
    hs: JwtAuthenticator,
    hs_kid: JwtAuthenticator,
    hs_iss_aud: JwtAuthenticator,
    hs_query: JwtAuthenticator,
    hs_origin: JwtAuthenticator,
    rs: JwtAuthenticator,
    es: JwtAuthenticator,
}

impl Authenticators {
    fn new() -> Self {
        let hs = || {
            JwtAuthenticator::builder()
                .hs256(SECRET)
                .any_issuer()
                .any_audience()
        };
        let mut query = TokenSources::default();
        query.query_param = Some("access_token".into());
        Authenticators {
            hs: hs().build().unwrap(),
            hs_kid: JwtAuthenticator::builder()
                .algorithms(&[JwtAlgorithm::HS256])
                .keys(
                    JwtKeySet::new()
                        .with_kid("2024-01", JwtKey::hmac(SECRET))
                        .with_kid("2024-02", JwtKey::hmac(OTHER_SECRET)),
                )
                .any_issuer()
                .any_audience()
                .build()
                .unwrap(),
            hs_iss_aud: JwtAuthenticator::builder()
                .hs256(SECRET)
                .issuer(ISSUER)
                .audience(AUDIENCE)
                .build()
                .unwrap(),
            hs_query: hs().sources(query).build().unwrap(),
            hs_origin: hs().origin(OriginPolicy::allow([ORIGIN])).build().unwrap(),
            rs: JwtAuthenticator::builder()
                .algorithms(&[JwtAlgorithm::RS256])
                .keys(JwtKeySet::new().with_default(JwtKey::rsa_pem(RSA_PUBLIC).unwrap()))
                .any_issuer()
                .any_audience()
                .build()
                .unwrap(),
            es: JwtAuthenticator::builder()
                .algorithms(&[JwtAlgorithm::ES256])
                .keys(JwtKeySet::new().with_default(JwtKey::ec_pem(EC_PUBLIC).unwrap()))
                .any_issuer()
                .any_audience()
                .build()
                .unwrap(),
        }
    }

    fn get(&self, config: Config) -> &JwtAuthenticator {
        match config {
            Config::Hs => &self.hs,
            Config::HsKid => &self.hs_kid,
            Config::HsIssAud => &self.hs_iss_aud,
            Config::HsQuery => &self.hs_query,
            Config::HsOrigin => &self.hs_origin,
            Config::Rs => &self.rs,
            Config::Es => &self.es,
        }
    }
}

/// A handshake's outcome, as the issue states it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Authenticated as `user`, echoing `echo`.
    Ok { user: String, echo: Option<String> },
    /// Refused before the upgrade with HTTP `status`.
    Before { code: &'static str, status: u16 },
    /// Upgraded echoing `echo`, then closed at once with `close`.
    After {
        code: &'static str,
        close: u16,
        echo: Option<String>,
    },
}

fn ok(user: &str, echo: Option<&str>) -> Outcome {
    Outcome::Ok {
        user: user.to_owned(),
        echo: echo.map(str::to_owned),
    }
}

fn before(code: &'static str, status: u16) -> Outcome {
    Outcome::Before { code, status }
}

/// After the upgrade, which always echoes the marker: the client offered it.
fn after(code: &'static str, close: u16) -> Outcome {
    Outcome::After {
        code,
        close,
        echo: Some(MARKER.to_owned()),
    }
}

/// The stable code table (issue 3, design "Close codes"): the HTTP status
/// and the close code of each error code.
fn stable(code: &str) -> (u16, u16) {
    match code {
        "token_missing"
        | "token_malformed"
        | "signature_invalid"
        | "algorithm_not_allowed"
        | "token_expired"
        | "token_not_yet_valid"
        | "claim_invalid" => (401, 4401),
        "token_too_large" => (431, 4400),
        "credentials_ambiguous" | "protocol_invalid" | "token_in_query" => (400, 4400),
        "origin_not_allowed" => (403, 4403),
        other => panic!("no such code in the table: {other}"),
    }
}

struct Row {
    name: &'static str,
    config: Config,
    /// What `HandshakeRequest::builder().build()` returned.
    request: Result<HandshakeRequest, AuthError>,
    expect: Outcome,
}

fn row(
    name: &'static str,
    config: Config,
    request: Result<HandshakeRequest, AuthError>,
    expect: Outcome,
) -> Row {
    Row {
        name,
        config,
        request,
        expect,
    }
}

fn request(headers: &[(&str, &str)], query: Option<&str>) -> Result<HandshakeRequest, AuthError> {
    let mut builder = HandshakeRequest::builder();
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(query) = query {
        builder = builder.query(query);
    }
    builder.build()
}

fn header_only(value: &str) -> Result<HandshakeRequest, AuthError> {
    request(&[("Authorization", value)], None)
}

fn bearer(token: &str) -> Result<HandshakeRequest, AuthError> {
    header_only(&format!("Bearer {token}"))
}

fn offer(value: &str) -> Result<HandshakeRequest, AuthError> {
    request(&[(PROTOCOL, value)], None)
}

/// `jwt-auth, jwt.<token>`: what a browser sends.
fn browser(token: &str) -> Result<HandshakeRequest, AuthError> {
    offer(&format!("{MARKER}, jwt.{token}"))
}

// ---- tokens ---------------------------------------------------------------

fn now() -> u64 {
    tokens::now()
}

fn hs(claims: &Value) -> String {
    tokens::hs256(claims)
}

fn alice() -> String {
    hs(&tokens::claims("alice"))
}

fn bob() -> String {
    hs(&tokens::claims("bob"))
}

/// A token with `header` verbatim, properly signed with `key`.
fn signed(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        tokens::b64url(header.to_string().as_bytes()),
        tokens::b64url(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

/// An HS256 token signed with `SECRET` whose header is `{"alg":"HS256",
/// "typ":"JWT"}` plus `extra`.
fn hs_with_header(extra: Value, claims: &Value) -> String {
    let mut header = json!({ "alg": "HS256", "typ": "JWT" });
    if let (Some(h), Value::Object(extra)) = (header.as_object_mut(), extra) {
        h.extend(extra);
    }
    signed(
        &header,
        claims,
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
}

fn with_kid(kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    tokens::sign(
        &header,
        &tokens::claims("alice"),
        &EncodingKey::from_secret(secret),
    )
}

fn rs(claims: &Value) -> String {
    tokens::sign(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
    )
}

fn es(claims: &Value) -> String {
    tokens::sign(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
    )
}

/// Claims for alice valid for an hour, with `edit` applied.
fn alice_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = tokens::claims("alice");
    if let Some(map) = claims.as_object_mut() {
        edit(map);
    }
    claims
}

/// Claims for alice valid for an hour, with `key` set to `value`.
fn alice_set(key: &str, value: Value) -> Value {
    alice_with(|c| {
        c.insert(key.to_owned(), value);
    })
}

/// Claims for alice valid for an hour, without `key`.
fn alice_without(key: &str) -> Value {
    alice_with(|c| {
        c.remove(key);
    })
}

fn segments(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    [parts[0], parts[1], parts[2]]
}

/// `token` with its signature segment in the standard base64 alphabet
/// (`+` and `/` for `-` and `_`), padded with `=` when `pad`. (The standard
/// base64 of a whole compact JWT never contains `+` or `/`: its bytes are
/// all base64url characters and dots. So `+` and `/` can only come from a
/// token whose segments were encoded with the wrong alphabet.)
fn std_alphabet(token: &str, pad: bool) -> String {
    let mut out: String = token
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let signature_len = out.rsplit('.').next().map_or(0, str::len);
    if pad {
        out.push_str(&"=".repeat((4 - signature_len % 4) % 4));
    }
    out
}

/// The first alice token (varying an extra claim) satisfying `pred`.
fn find_alice(pred: impl Fn(&str) -> bool) -> String {
    (0..100_000)
        .map(|n| hs(&alice_set("n", json!(n))))
        .find(|t| pred(t))
        .expect("no token in 100000 has the shape wanted")
}

/// Alice tokens padded by an extra claim: the longest at most `limit`
/// bytes and the shortest above it.
fn around_limit(limit: usize) -> (String, String) {
    let padded = |n: usize| hs(&alice_set("pad", json!("x".repeat(n))));
    let mut n = 0;
    while padded(n + 64).len() <= limit {
        n += 64;
    }
    while padded(n + 1).len() <= limit {
        n += 1;
    }
    (padded(n), padded(n + 1))
}

// ---- the table ------------------------------------------------------------

fn rows() -> Vec<Row> {
    use Config::*;
    let t = alice();
    let b64 = tokens::b64url(t.as_bytes());
    let [th, tp, ts] = segments(&t);
    let bob_token = bob();
    let [_, bob_payload, _] = segments(&bob_token);
    let swapped = format!("{th}.{bob_payload}.{ts}");
    let foreign = tokens::sign(
        &Header::default(),
        &tokens::claims("alice"),
        &EncodingKey::from_secret(OTHER_SECRET),
    );
    let none_claims = tokens::b64url(tokens::claims("alice").to_string().as_bytes());
    let none_header = tokens::b64url(
        json!({ "alg": "none", "typ": "JWT" })
            .to_string()
            .as_bytes(),
    );
    let confused = tokens::sign(
        &Header::new(Algorithm::HS256),
        &tokens::claims("alice"),
        &EncodingKey::from_secret(RSA_PUBLIC),
    );
    // Shapes of base64 the issue names. Header and payload of an HS256
    // token over these claims hold no `-` or `_` (only `>`, `?`, `~` and DEL
    // encode to them), so only the signature changes alphabet.
    let b64_padded = {
        let t = find_alice(|t| !tokens::b64url(t.as_bytes()).len().is_multiple_of(4));
        let unpadded = tokens::b64url(t.as_bytes());
        let pad = "=".repeat((4 - unpadded.len() % 4) % 4);
        format!("{unpadded}{pad}")
    };
    let with_slash = std_alphabet(&find_alice(|t| t.contains('_')), false);
    let with_plus = std_alphabet(&find_alice(|t| t.contains('-') && !t.contains('_')), false);
    let std_padded = std_alphabet(&t, true);
    let (at_limit, over_limit) = around_limit(8 * 1024);
    assert!(
        at_limit.len() >= 8190 && over_limit.len() <= 8194,
        "sizes off"
    );
    let n = now();

    let rows = vec![
        // Authorization header.
        row("header bearer", Hs, bearer(&t), ok("alice", None)),
        row(
            "header scheme lower case",
            Hs,
            header_only(&format!("bearer {t}")),
            ok("alice", None),
        ),
        row(
            "header scheme mixed case, header name lower case",
            Hs,
            request(&[("authorization", &format!("BeArEr {t}"))], None),
            ok("alice", None),
        ),
        row(
            "header extra spaces around the token",
            Hs,
            header_only(&format!("  Bearer    {t}  ")),
            ok("alice", None),
        ),
        row(
            "header tab between scheme and token (RFC 9110: SP only)",
            Hs,
            header_only(&format!("Bearer\t{t}")),
            before("token_malformed", 401),
        ),
        row(
            "header Basic scheme",
            Hs,
            header_only("Basic YWxpY2U6cGFzc3dvcmQ="),
            before("token_malformed", 401),
        ),
        row(
            "header empty value",
            Hs,
            header_only(""),
            before("token_malformed", 401),
        ),
        row(
            "header scheme without token",
            Hs,
            header_only("Bearer "),
            before("token_malformed", 401),
        ),
        row(
            "header twice",
            Hs,
            request(
                &[
                    ("Authorization", &format!("Bearer {t}")),
                    ("Authorization", &format!("Bearer {t}")),
                ],
                None,
            ),
            before("credentials_ambiguous", 400),
        ),
        row(
            "no credentials at all",
            Hs,
            request(&[("Origin", ORIGIN)], None),
            before("token_missing", 401),
        ),
        // Subprotocol forms.
        row(
            "subprotocol jwt. raw",
            Hs,
            browser(&t),
            ok("alice", Some(MARKER)),
        ),
        row(
            "subprotocol jwt-auth. raw",
            Hs,
            offer(&format!("{MARKER}, jwt-auth.{t}")),
            ok("alice", Some(MARKER)),
        ),
        row(
            "subprotocol jwt. base64url",
            Hs,
            browser(&b64),
            ok("alice", Some(MARKER)),
        ),
        row(
            "subprotocol jwt-auth. base64url",
            Hs,
            offer(&format!("{MARKER}, jwt-auth.{b64}")),
            ok("alice", Some(MARKER)),
        ),
        row(
            "subprotocol token before the marker",
            Hs,
            offer(&format!("jwt.{t}, {MARKER}")),
            ok("alice", Some(MARKER)),
        ),
        row(
            "subprotocol with another protocol offered too",
            Hs,
            offer(&format!("chat.v2, {MARKER}, jwt.{t}")),
            ok("alice", Some(MARKER)),
        ),
        row(
            // Also what the standard base64 of the whole token looks like.
            "subprotocol base64url with = padding (not a token char)",
            Hs,
            browser(&b64_padded),
            before("protocol_invalid", 400),
        ),
        row(
            "subprotocol standard base64 segments with = padding",
            Hs,
            browser(&std_padded),
            before("protocol_invalid", 400),
        ),
        row(
            "subprotocol standard base64 segments with /",
            Hs,
            browser(&with_slash),
            before("protocol_invalid", 400),
        ),
        row(
            "subprotocol standard base64 segments with + (token chars, not base64url)",
            Hs,
            browser(&with_plus),
            after("token_malformed", 4401),
        ),
        row(
            "header standard base64 segments with + and /",
            Hs,
            bearer(&std_alphabet(
                &find_alice(|t| t.contains('-') && t.contains('_')),
                false,
            )),
            before("token_malformed", 401),
        ),
        row(
            "header standard base64 segments with = padding",
            Hs,
            bearer(&std_padded),
            before("token_malformed", 401),
        ),
        row(
            "subprotocol whitespace around entries",
            Hs,
            offer(&format!(" \t{MARKER} ,\t jwt.{t}  ")),
            ok("alice", Some(MARKER)),
        ),
        row(
            "subprotocol whitespace inside an entry",
            Hs,
            offer(&format!("{MARKER}, jwt.{th}. {tp}.{ts}")),
            before("protocol_invalid", 400),
        ),
        row(
            "subprotocol split over two header lines",
            Hs,
            request(
                &[
                    (PROTOCOL, MARKER),
                    ("sec-websocket-protocol", &format!("jwt.{t}")),
                ],
                None,
            ),
            ok("alice", Some(MARKER)),
        ),
        row(
            "subprotocol header line duplicated",
            Hs,
            request(
                &[
                    (PROTOCOL, &format!("{MARKER}, jwt.{t}")),
                    (PROTOCOL, &format!("{MARKER}, jwt.{t}")),
                ],
                None,
            ),
            before("credentials_ambiguous", 400),
        ),
        row(
            "subprotocol header empty",
            Hs,
            offer(""),
            before("protocol_invalid", 400),
        ),
        row(
            "subprotocol empty entry between commas",
            Hs,
            offer(&format!("{MARKER},,jwt.{t}")),
            before("protocol_invalid", 400),
        ),
        row(
            "subprotocol prefix with an empty token",
            Hs,
            offer(&format!("{MARKER}, jwt.")),
            after("token_malformed", 4401),
        ),
        row(
            "marker without token",
            Hs,
            offer(MARKER),
            before("token_missing", 401),
        ),
        row(
            "token without marker",
            Hs,
            offer(&format!("jwt.{t}")),
            before("protocol_invalid", 400),
        ),
        row(
            "two token subprotocols",
            Hs,
            offer(&format!("{MARKER}, jwt.{t}, jwt-auth.{t}")),
            before("credentials_ambiguous", 400),
        ),
        row(
            "header and subprotocol name different users",
            Hs,
            request(
                &[
                    ("Authorization", &format!("Bearer {t}")),
                    (PROTOCOL, &format!("{MARKER}, jwt.{bob_token}")),
                ],
                None,
            ),
            before("credentials_ambiguous", 400),
        ),
        row(
            "header and subprotocol name the same user",
            Hs,
            request(
                &[
                    ("Authorization", &format!("Bearer {t}")),
                    (
                        PROTOCOL,
                        &format!("{MARKER}, jwt.{}", hs(&tokens::claims("alice"))),
                    ),
                ],
                None,
            ),
            ok("alice", Some(MARKER)),
        ),
        // Signatures, algorithms, keys.
        row(
            "header wrong signature (other secret)",
            Hs,
            bearer(&foreign),
            before("signature_invalid", 401),
        ),
        row(
            "subprotocol wrong signature (other secret)",
            Hs,
            browser(&foreign),
            after("signature_invalid", 4401),
        ),
        row(
            "header swapped payload (alice's header and signature, bob's payload)",
            Hs,
            bearer(&swapped),
            before("signature_invalid", 401),
        ),
        row(
            "subprotocol swapped payload",
            Hs,
            browser(&swapped),
            after("signature_invalid", 4401),
        ),
        row(
            "wrong key type: RS256 token to the HS256 config",
            Hs,
            bearer(&rs(&tokens::claims("alice"))),
            before("algorithm_not_allowed", 401),
        ),
        row(
            "alg none with a signature segment",
            Hs,
            bearer(&tokens::raw(
                &json!({ "alg": "none", "typ": "JWT" }),
                &tokens::claims("alice"),
                "c2lnbmF0dXJl",
            )),
            before("algorithm_not_allowed", 401),
        ),
        row(
            "alg None (case variant) with a signature segment",
            Hs,
            bearer(&tokens::raw(
                &json!({ "alg": "None" }),
                &tokens::claims("alice"),
                "c2lnbmF0dXJl",
            )),
            before("algorithm_not_allowed", 401),
        ),
        row(
            "alg none, unsecured form with an empty signature segment",
            Hs,
            bearer(&format!("{none_header}.{none_claims}.")),
            before("token_malformed", 401),
        ),
        row(
            "alg none, signature segment missing",
            Hs,
            bearer(&format!("{none_header}.{none_claims}")),
            before("token_malformed", 401),
        ),
        row(
            "HS/RS confusion: HS256 signed with the RSA public key PEM, to the RS256 config",
            Rs,
            bearer(&confused),
            before("algorithm_not_allowed", 401),
        ),
        row(
            "RS256 valid token to the RS256 config",
            Rs,
            bearer(&rs(&tokens::claims("alice"))),
            ok("alice", None),
        ),
        row(
            "RS256 token with bob's payload spliced in",
            Rs,
            bearer(&{
                let token = rs(&tokens::claims("alice"));
                let [h, _, s] = segments(&token);
                format!("{h}.{bob_payload}.{s}")
            }),
            before("signature_invalid", 401),
        ),
        row(
            "ES256 valid token to the ES256 config",
            Es,
            bearer(&es(&tokens::claims("alice"))),
            ok("alice", None),
        ),
        row(
            "ES256 token to the RS256 config",
            Rs,
            bearer(&es(&tokens::claims("alice"))),
            before("algorithm_not_allowed", 401),
        ),
        row(
            "HS256 token to the ES256 config (subprotocol)",
            Es,
            browser(&t),
            after("algorithm_not_allowed", 4401),
        ),
        // kid.
        row(
            "kid known",
            HsKid,
            bearer(&with_kid("2024-01", SECRET)),
            ok("alice", None),
        ),
        row(
            "kid unknown",
            HsKid,
            bearer(&with_kid("2023-12", SECRET)),
            before("signature_invalid", 401),
        ),
        row(
            "kid names the other key",
            HsKid,
            bearer(&with_kid("2024-02", SECRET)),
            before("signature_invalid", 401),
        ),
        row(
            "kid hostile: path traversal",
            HsKid,
            bearer(&with_kid("../../../../../../dev/null", SECRET)),
            before("signature_invalid", 401),
        ),
        row(
            "kid hostile: SQL",
            HsKid,
            bearer(&with_kid("x' UNION SELECT 'secret' --", SECRET)),
            before("signature_invalid", 401),
        ),
        row(
            "kid hostile: empty",
            HsKid,
            bearer(&with_kid("", b"")),
            before("signature_invalid", 401),
        ),
        row(
            "kid hostile: not a string",
            HsKid,
            bearer(&hs_with_header(
                json!({ "kid": { "$ne": null } }),
                &tokens::claims("alice"),
            )),
            before("token_malformed", 401),
        ),
        row(
            "kid unknown with only a default key (no fallback to it)",
            Hs,
            bearer(&with_kid("2023-12", SECRET)),
            before("signature_invalid", 401),
        ),
        row(
            "kid unknown with only a default key (subprotocol)",
            Hs,
            browser(&with_kid("2023-12", SECRET)),
            after("signature_invalid", 4401),
        ),
        row(
            "kid absent with a kid-only key set",
            HsKid,
            bearer(&t),
            before("signature_invalid", 401),
        ),
        row(
            "jku pointing elsewhere is never fetched",
            Hs,
            bearer(&signed(
                &json!({ "alg": "HS256", "jku": "https://evil.example/jwks.json" }),
                &tokens::claims("alice"),
                &EncodingKey::from_secret(OTHER_SECRET),
                Algorithm::HS256,
            )),
            before("signature_invalid", 401),
        ),
        // crit.
        row(
            "crit non-empty",
            Hs,
            bearer(&hs_with_header(
                json!({ "crit": ["exp"] }),
                &tokens::claims("alice"),
            )),
            before("token_malformed", 401),
        ),
        row(
            "crit non-empty (subprotocol)",
            Hs,
            browser(&hs_with_header(
                json!({ "crit": ["b64"] }),
                &tokens::claims("alice"),
            )),
            after("token_malformed", 4401),
        ),
        row(
            "crit empty array",
            Hs,
            bearer(&hs_with_header(
                json!({ "crit": [] }),
                &tokens::claims("alice"),
            )),
            ok("alice", None),
        ),
        // Time claims (default leeway 60 s).
        row(
            "expired beyond the leeway",
            Hs,
            bearer(&hs(&alice_set("exp", json!(n - 120)))),
            before("token_expired", 401),
        ),
        row(
            "expired beyond the leeway (subprotocol)",
            Hs,
            browser(&hs(&alice_set("exp", json!(n - 120)))),
            after("token_expired", 4401),
        ),
        row(
            "expired within the leeway",
            Hs,
            bearer(&hs(&alice_set("exp", json!(n - 20)))),
            ok("alice", None),
        ),
        row(
            "nbf in the future",
            Hs,
            bearer(&hs(&alice_set("nbf", json!(n + 3600)))),
            before("token_not_yet_valid", 401),
        ),
        row(
            "nbf in the future (subprotocol)",
            Hs,
            browser(&hs(&alice_set("nbf", json!(n + 3600)))),
            after("token_not_yet_valid", 4401),
        ),
        row(
            "nbf within the leeway",
            Hs,
            bearer(&hs(&alice_set("nbf", json!(n + 20)))),
            ok("alice", None),
        ),
        row(
            "exp as a string",
            Hs,
            bearer(&hs(&alice_set("exp", json!((n + 3600).to_string())))),
            before("claim_invalid", 401),
        ),
        row(
            "exp missing",
            Hs,
            bearer(&hs(&alice_without("exp"))),
            before("claim_invalid", 401),
        ),
        row(
            "iat in the future",
            Hs,
            bearer(&hs(&alice_set("iat", json!(n + 3600)))),
            before("claim_invalid", 401),
        ),
        row(
            "iat within the leeway",
            Hs,
            bearer(&hs(&alice_set("iat", json!(n + 20)))),
            ok("alice", None),
        ),
        // iss / aud, required by the config.
        row(
            "iss and aud right",
            HsIssAud,
            bearer(&hs(&alice_with(|c| {
                c.insert("iss".into(), json!(ISSUER));
                c.insert("aud".into(), json!([AUDIENCE, "other"]));
            }))),
            ok("alice", None),
        ),
        row(
            "iss wrong",
            HsIssAud,
            bearer(&hs(&alice_with(|c| {
                c.insert("iss".into(), json!("https://auth.example.evil.com"));
                c.insert("aud".into(), json!(AUDIENCE));
            }))),
            before("claim_invalid", 401),
        ),
        row(
            "iss missing",
            HsIssAud,
            bearer(&hs(&alice_set("aud", json!(AUDIENCE)))),
            before("claim_invalid", 401),
        ),
        row(
            "aud wrong",
            HsIssAud,
            bearer(&hs(&alice_with(|c| {
                c.insert("iss".into(), json!(ISSUER));
                c.insert("aud".into(), json!("ws-lifecycle-admin"));
            }))),
            before("claim_invalid", 401),
        ),
        row(
            "aud missing",
            HsIssAud,
            bearer(&hs(&alice_set("iss", json!(ISSUER)))),
            before("claim_invalid", 401),
        ),
        // The user claim.
        row(
            "sub missing",
            Hs,
            bearer(&hs(&alice_without("sub"))),
            before("claim_invalid", 401),
        ),
        row(
            "sub empty",
            Hs,
            bearer(&hs(&tokens::claims(""))),
            before("claim_invalid", 401),
        ),
        row(
            "sub not a string",
            Hs,
            bearer(&hs(&alice_set("sub", json!(42)))),
            before("claim_invalid", 401),
        ),
        row(
            "sub 257 bytes",
            Hs,
            bearer(&hs(&tokens::claims(&"a".repeat(257)))),
            before("claim_invalid", 401),
        ),
        row(
            "sub exactly 256 bytes",
            Hs,
            bearer(&hs(&tokens::claims(&"a".repeat(256)))),
            ok(&"a".repeat(256), None),
        ),
        row(
            "sub with a control character",
            Hs,
            bearer(&hs(&tokens::claims("alice\nadmin"))),
            before("claim_invalid", 401),
        ),
        row(
            "sub compared byte for byte, never case-folded",
            Hs,
            bearer(&hs(&tokens::claims("Alice"))),
            ok("Alice", None),
        ),
        // Size.
        row(
            "token at the 8 KiB limit",
            Hs,
            bearer(&at_limit),
            ok("alice", None),
        ),
        row(
            "token just over the 8 KiB limit",
            Hs,
            bearer(&over_limit),
            before("token_too_large", 431),
        ),
        row(
            "token over the limit (subprotocol)",
            Hs,
            browser(&over_limit),
            before("token_too_large", 431),
        ),
        // Shape.
        row(
            "non-ASCII in the header value",
            Hs,
            header_only(&format!("Bearer {th}.{tp}é.{ts}")),
            before("token_malformed", 401),
        ),
        row(
            "non-ASCII in the subprotocol",
            Hs,
            browser(&format!("{th}.{tp}é.{ts}")),
            before("protocol_invalid", 400),
        ),
        row(
            "truncated: two segments",
            Hs,
            bearer(&format!("{th}.{tp}")),
            before("token_malformed", 401),
        ),
        row(
            "truncated: two segments (subprotocol)",
            Hs,
            browser(&format!("{th}.{tp}")),
            after("token_malformed", 4401),
        ),
        row(
            "extra segment",
            Hs,
            bearer(&format!("{t}.{ts}")),
            before("token_malformed", 401),
        ),
        row(
            "five segments (JWE shape)",
            Hs,
            bearer(&format!("{th}.{tp}.{ts}.{tp}.{ts}")),
            before("token_malformed", 401),
        ),
        row(
            "header segment not JSON",
            Hs,
            bearer(&format!("bm90LWpzb24.{tp}.{ts}")),
            before("token_malformed", 401),
        ),
        row(
            "header segment not JSON (subprotocol)",
            Hs,
            browser(&format!("bm90LWpzb24.{tp}.{ts}")),
            after("token_malformed", 4401),
        ),
        // Query.
        row(
            "token in the query, query source off",
            Hs,
            request(&[], Some(&format!("room=1&token={t}"))),
            before("token_in_query", 400),
        ),
        row(
            "access_token in the query beside a valid header, query source off",
            Hs,
            request(
                &[("Authorization", &format!("Bearer {t}"))],
                Some(&format!("access_token={t}")),
            ),
            before("token_in_query", 400),
        ),
        row(
            "Token (capitalised) in the query, query source off",
            Hs,
            request(&[], Some(&format!("room=1&Token={t}"))),
            before("token_in_query", 400),
        ),
        row(
            "access%5Ftoken (percent-encoded) in the query, query source off",
            Hs,
            request(&[], Some(&format!("access%5Ftoken={t}&room=1"))),
            before("token_in_query", 400),
        ),
        row(
            "%4AWT (encoded and capitalised) in the query, query source off",
            Hs,
            request(&[], Some(&format!("%4AWT={t}"))),
            before("token_in_query", 400),
        ),
        row(
            "Access%5FToken in the query, query source on",
            HsQuery,
            request(&[], Some(&format!("room=1&Access%5FToken={t}"))),
            ok("alice", None),
        ),
        row(
            "access_token twice, spelled differently, query source on",
            HsQuery,
            request(&[], Some(&format!("access_token={t}&ACCESS%5fTOKEN={t}"))),
            before("credentials_ambiguous", 400),
        ),
        row(
            "token in the query, query source on",
            HsQuery,
            request(&[], Some(&format!("room=1&access_token={t}"))),
            ok("alice", None),
        ),
        row(
            "query token beside a header token, query source on",
            HsQuery,
            request(
                &[("Authorization", &format!("Bearer {t}"))],
                Some(&format!("access_token={t}")),
            ),
            before("credentials_ambiguous", 400),
        ),
        // Origin allow-list.
        row(
            "origin exact",
            HsOrigin,
            request(
                &[
                    ("Origin", ORIGIN),
                    ("Authorization", &format!("Bearer {t}")),
                ],
                None,
            ),
            ok("alice", None),
        ),
        row(
            "origin look-alike suffix",
            HsOrigin,
            request(
                &[
                    ("Origin", "https://app.example.evil.com"),
                    ("Authorization", &format!("Bearer {t}")),
                ],
                None,
            ),
            before("origin_not_allowed", 403),
        ),
        row(
            "origin look-alike prefix",
            HsOrigin,
            request(
                &[
                    ("Origin", "https://evil-app.example"),
                    ("Authorization", &format!("Bearer {t}")),
                ],
                None,
            ),
            before("origin_not_allowed", 403),
        ),
        row(
            "origin null",
            HsOrigin,
            request(
                &[
                    ("Origin", "null"),
                    (PROTOCOL, &format!("{MARKER}, jwt.{t}")),
                ],
                None,
            ),
            before("origin_not_allowed", 403),
        ),
    ];
    rows
}

// ---- running a row --------------------------------------------------------

/// What the library did with a row, in the table's terms.
async fn outcome_of(row: &Row, auth: &JwtAuthenticator) -> Result<Outcome, String> {
    let request = match &row.request {
        Ok(request) => request,
        Err(error) => {
            // Refused while parsing the request: no upgrade is possible.
            return Ok(before(error.code(), error.http_status()));
        }
    };
    Ok(match auth.authenticate(request).await {
        Ok(outcome) => {
            if outcome.expires_at.is_none() {
                return Err(format!("an outcome without expiry: {outcome:?}"));
            }
            // The connection can be extended: the token it carried
            // re-authenticates in-band, for the same user, through the
            // same authenticator.
            let credentials = auth
                .sources()
                .extract(request)
                .map_err(|f| format!("extract after success: {f:?}"))?;
            let token = [
                credentials.header,
                credentials.subprotocol,
                credentials.query,
            ]
            .into_iter()
            .flatten()
            .next()
            .ok_or("an outcome without a token")?;
            match auth.reauthenticate(request, token.expose()).await {
                Ok(again) if again.user == outcome.user => {}
                other => return Err(format!("re-authentication with its token: {other:?}")),
            }
            Outcome::Ok {
                user: outcome.user.as_str().to_owned(),
                echo: outcome.selected_subprotocol,
            }
        }
        Err(failure) => {
            let error = &failure.error;
            let code = error.code();
            if error.http_status() == 401 {
                let expected = if code == "token_missing" {
                    "Bearer"
                } else {
                    "Bearer error=\"invalid_token\""
                };
                if error.www_authenticate() != Some(expected) {
                    return Err(format!("WWW-Authenticate {:?}", error.www_authenticate()));
                }
            }
            match failure.surface {
                Surface::BeforeUpgrade => before(code, error.http_status()),
                Surface::AfterUpgrade { subprotocol } => {
                    let close = error.close_frame();
                    if close.reason.as_str() != code {
                        return Err(format!("close reason {:?}", close.reason.as_str()));
                    }
                    Outcome::After {
                        code,
                        close: close.code.as_u16(),
                        echo: subprotocol,
                    }
                }
                other => return Err(format!("unknown surface {other:?}")),
            }
        }
    })
}

/// Serves a rejected row through the hub: closed with its code, `Failed`,
/// counted once under its code, never routed.
async fn serve_rejected(
    row: &Row,
    auth: &JwtAuthenticator,
    code: &'static str,
) -> Result<(), String> {
    let hub = Hub::new();
    let close = stable(code).1;
    let report = match &row.request {
        Ok(request) => {
            let (transport, mut client) = memory::pair(16);
            let report = hub
                .serve_with_auth(transport, request, auth, &Scripted::default())
                .await;
            let (frames, received) = read_to_close(&mut client).await;
            if !frames.is_empty() {
                return Err(format!("frames before the close: {frames:?}"));
            }
            if received != Some(frame(close, code)) {
                return Err(format!(
                    "client received close {received:?}, want {close} {code}"
                ));
            }
            report
        }
        // No request, so no transport: the adapter refuses the upgrade.
        Err(error) => hub.connect().refuse(error),
    };
    if report.state != ConnectionState::Failed || report.user.is_some() {
        return Err(format!("report {report:?}"));
    }
    let metrics = hub.metrics();
    if metrics.auth_failures != BTreeMap::from([(code, 1)]) {
        return Err(format!("auth_failures {:?}", metrics.auth_failures));
    }
    if metrics.connections.get("failed") != Some(&1)
        || metrics.connections.get("authenticated") != Some(&0)
    {
        return Err(format!("connections {:?}", metrics.connections));
    }
    if hub.connection_count() != 0 || hub.user_count() != 0 {
        return Err("a rejected handshake left a routing entry".into());
    }
    Ok(())
}

/// Serves an accepted row through the hub: routable as `user` while it is
/// served, gone after.
async fn serve_accepted(row: &Row, auth: &JwtAuthenticator, name: &str) -> Result<(), String> {
    let Ok(request) = &row.request else {
        return Err("an accepted row without a request".into());
    };
    let hub = Hub::new();
    let who = user(name);
    let (tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let handler = Scripted {
        on_ready: OnReady::Signal(tx),
        ..Default::default()
    };
    let (transport, mut client) = memory::pair(16);
    let serving = hub.serve_with_auth(transport, request, auth, &handler);
    let while_served = async {
        let Some(handle) = ready.recv().await else {
            return Err("never became routable".to_owned());
        };
        if handle.user() != &who || !hub.is_online(&who) || hub.connection_count() != 1 {
            return Err(format!("not routed to {who} while served"));
        }
        handle
            .wait_ready(Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        if !handle.close(frame(1000, "done")) {
            return Err("closed before the test closed it".into());
        }
        Ok(())
    };
    let (report, served) = tokio::join!(serving, while_served);
    served?;
    let (_, received) = read_to_close(&mut client).await;
    if received != Some(frame(1000, "done")) {
        return Err(format!("client received close {received:?}"));
    }
    if report.state != ConnectionState::Closed || report.user.as_ref() != Some(&who) {
        return Err(format!("report {report:?}"));
    }
    if hub.connection_count() != 0 || !hub.metrics().auth_failures.is_empty() {
        return Err("left a routing entry or counted a failure".into());
    }
    Ok(())
}

async fn check(row: &Row, auths: &Authenticators) -> Result<(), String> {
    let auth = auths.get(row.config);
    // The row itself must agree with the stable code table.
    match &row.expect {
        Outcome::Before { code, status } if stable(code).0 != *status => {
            return Err(format!("table typo: {code} is not {status}"));
        }
        Outcome::After { code, close, .. } if stable(code).1 != *close => {
            return Err(format!("table typo: {code} is not {close}"));
        }
        _ => {}
    }
    let actual = outcome_of(row, auth).await?;
    if actual != row.expect {
        return Err(format!("expected {:?}, got {actual:?}", row.expect));
    }
    match &row.expect {
        Outcome::Ok { user, .. } => serve_accepted(row, auth, user).await,
        Outcome::Before { code, .. } | Outcome::After { code, .. } => {
            serve_rejected(row, auth, code).await
        }
    }
}

#[tokio::test]
async fn every_handshake_has_its_exact_outcome_and_rejections_never_route() {
    let auths = Authenticators::new();
    let rows = rows();
    assert!(rows.len() >= 40, "only {} rows", rows.len());
    let mut names: Vec<_> = rows.iter().map(|r| r.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rows.len(), "row names must be unique");

    let mut failures = String::new();
    let mut outcomes = BTreeMap::<&str, usize>::new();
    for row in &rows {
        let kind = match &row.expect {
            Outcome::Ok { .. } => "ok",
            Outcome::Before { .. } => "before upgrade",
            Outcome::After { .. } => "after upgrade",
        };
        *outcomes.entry(kind).or_default() += 1;
        if let Err(why) = check(row, &auths).await {
            let _ = writeln!(failures, "  {}: {why}", row.name);
        }
    }
    assert!(
        failures.is_empty(),
        "rows disagreeing with the issue:\n{failures}"
    );
    // Every kind of outcome is exercised.
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
}

#[test]
fn the_table_covers_every_stable_code_a_handshake_can_produce() {
    let rows = rows();
    let mut seen: Vec<&str> = rows
        .iter()
        .filter_map(|r| match &r.expect {
            Outcome::Ok { .. } => None,
            Outcome::Before { code, .. } | Outcome::After { code, .. } => Some(*code),
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "algorithm_not_allowed",
            "claim_invalid",
            "credentials_ambiguous",
            "origin_not_allowed",
            "protocol_invalid",
            "signature_invalid",
            "token_expired",
            "token_in_query",
            "token_malformed",
            "token_missing",
            "token_not_yet_valid",
            "token_too_large",
        ]
    );
}
