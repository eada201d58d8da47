//! Hostile handshakes never panic and never authenticate without the valid
//! token.
//!
//! * Arbitrary header names and values, subprotocol lines and queries
//!   (arbitrary bytes made UTF-8 lossily, token-alphabet soup, and the valid
//!   token dropped into junk): `HandshakeRequest::builder().build()` and
//!   `JwtAuthenticator::authenticate` never panic, and a success needs the
//!   untouched valid token (raw or base64url) somewhere in the request.
//! * Near misses of a valid token (bit flips, segment swaps and splices,
//!   truncation, extension, deletion, insertion, duplicated segments) in
//!   every valid carrier never authenticate, nor through the first-message
//!   and re-authentication paths.
//! * The valid token under changed carrier prefixes (auth scheme,
//!   subprotocol prefix, marker) authenticates exactly when the carrier is
//!   one the issue defines.
//!
//! Every case runs its async calls on its own current-thread runtime.

#![cfg(feature = "jwt")]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use support::tokens::{self, SECRET};
use ws_lifecycle::auth::{
    AuthFailure, AuthOutcome, Authenticator, HandshakeRequest, JwtAuthenticator, TokenSources,
};

const MARKER: &str = "jwt-auth";

struct Fixture {
    /// Alice's valid HS256 token.
    token: String,
    /// Its base64url encoding.
    encoded: String,
    /// A valid token for bob whose three segments all differ from alice's.
    other: String,
    /// Default sources.
    auth: JwtAuthenticator,
    /// Also reads the `access_token` query parameter.
    auth_query: JwtAuthenticator,
    /// Also accepts the first message.
    auth_first: JwtAuthenticator,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let token = tokens::hs256(&tokens::claims("alice"));
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        let other = tokens::sign(
            &header,
            &tokens::claims("bob"),
            &EncodingKey::from_secret(SECRET),
        );
        let hs = || {
            JwtAuthenticator::builder()
                .hs256(SECRET)
                .any_issuer()
                .any_audience()
        };
        let mut query = TokenSources::default();
        query.query_param = Some("access_token".into());
        let mut first = TokenSources::default();
        first.first_message = true;
        Fixture {
            encoded: tokens::b64url(token.as_bytes()),
            token,
            other,
            auth: hs().build().unwrap(),
            auth_query: hs().sources(query).build().unwrap(),
            auth_first: hs().sources(first).build().unwrap(),
        }
    })
}

/// Runs `future` on a fresh current-thread runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Authenticates `request` with every configuration.
fn authenticate_all(request: &HandshakeRequest) -> Vec<Result<AuthOutcome, AuthFailure>> {
    let f = fixture();
    block_on(async {
        vec![
            f.auth.authenticate(request).await,
            f.auth_query.authenticate(request).await,
            f.auth_first.authenticate(request).await,
        ]
    })
}

fn lossy() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<u8>(), 0..96)
        .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Strings near the grammar: token characters, separators, whitespace.
fn soup() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/=,; \t-]{0,120}"
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("Authorization".to_owned()),
        3 => Just("Sec-WebSocket-Protocol".to_owned()),
        1 => Just("sec-websocket-protocol".to_owned()),
        1 => Just("AUTHORIZATION".to_owned()),
        1 => Just("Origin".to_owned()),
        1 => lossy(),
    ]
}

/// A header value: junk, or junk around the valid token, or a valid carrier.
fn header_value() -> impl Strategy<Value = String> {
    let f = fixture();
    prop_oneof![
        3 => lossy(),
        3 => soup(),
        2 => (soup(), soup()).prop_map(|(a, b)| format!("{a}{}{b}", f.token)),
        1 => (soup(), soup()).prop_map(|(a, b)| format!("{a}{}{b}", f.encoded)),
        1 => Just(format!("Bearer {}", f.token)),
        1 => Just(format!("{MARKER}, jwt.{}", f.token)),
        1 => Just(format!("{MARKER}, jwt-auth.{}", f.encoded)),
        1 => Just(MARKER.to_owned()),
        1 => Just(format!("jwt.{}", f.token)),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    let f = fixture();
    proptest::option::of(prop_oneof![
        2 => lossy(),
        2 => soup(),
        1 => soup().prop_map(|a| format!("{a}&access_token={}", f.token)),
        1 => Just(format!("token={}", f.token)),
    ])
}

/// A change that always yields a string other than the token.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of byte `index` (the result is made UTF-8 lossily).
    FlipBit { index: usize, bit: u8 },
    /// Reorder the three segments (never the identity).
    Permute(usize),
    /// Replace segment `n` with the other token's.
    Splice(usize),
    /// Keep the first `n` bytes (`n` < length).
    Truncate(usize),
    /// Append a non-empty suffix.
    Extend(String),
    /// Delete the byte at `index`.
    Delete(usize),
    /// Insert `char` at `index`.
    Insert(usize, char),
    /// Repeat segment `n` after itself.
    Duplicate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(index, bit)| Mutation::FlipBit { index, bit }),
        1 => (0usize..5).prop_map(Mutation::Permute),
        1 => (0usize..3).prop_map(Mutation::Splice),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => "[A-Za-z0-9._=-]{1,8}".prop_map(Mutation::Extend),
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => (any::<usize>(), "[A-Za-z0-9._=+/ -]").prop_map(|(i, c)| {
            Mutation::Insert(i, c.chars().next().unwrap_or('A'))
        }),
        1 => (0usize..3).prop_map(Mutation::Duplicate),
    ]
}

fn apply(mutation: &Mutation, token: &str, other: &str) -> String {
    let segments: Vec<&str> = token.split('.').collect();
    let others: Vec<&str> = other.split('.').collect();
    match mutation {
        Mutation::FlipBit { index, bit } => {
            let mut bytes = token.as_bytes().to_vec();
            let i = index % bytes.len();
            bytes[i] ^= 1 << bit;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::Permute(n) => {
            const ORDERS: [[usize; 3]; 5] = [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
            let order = ORDERS[n % 5];
            order.map(|i| segments[i]).join(".")
        }
        Mutation::Splice(n) => {
            let mut spliced = segments.clone();
            spliced[n % 3] = others[n % 3];
            spliced.join(".")
        }
        Mutation::Truncate(n) => token[..n % token.len()].to_owned(),
        Mutation::Extend(suffix) => format!("{token}{suffix}"),
        Mutation::Delete(index) => {
            let i = index % token.len();
            format!("{}{}", &token[..i], &token[i + 1..])
        }
        Mutation::Insert(index, c) => {
            let i = index % (token.len() + 1);
            format!("{}{c}{}", &token[..i], &token[i..])
        }
        Mutation::Duplicate(n) => {
            let mut doubled = segments.clone();
            doubled.insert(n % 3, segments[n % 3]);
            doubled.join(".")
        }
    }
}

/// Where a (mutated) token travels: every carrier the issue defines.
#[derive(Debug, Clone, Copy)]
enum Carrier {
    Bearer,
    Jwt,
    JwtAuth,
    JwtEncoded,
    JwtAuthEncoded,
    Query,
}

fn carrier() -> impl Strategy<Value = Carrier> {
    prop_oneof![
        Just(Carrier::Bearer),
        Just(Carrier::Jwt),
        Just(Carrier::JwtAuth),
        Just(Carrier::JwtEncoded),
        Just(Carrier::JwtAuthEncoded),
        Just(Carrier::Query),
    ]
}

fn carry(carrier: Carrier, token: &str) -> Result<HandshakeRequest, ws_lifecycle::auth::AuthError> {
    let protocol = |value: String| {
        HandshakeRequest::builder()
            .header("Sec-WebSocket-Protocol", value)
            .build()
    };
    let encoded = || tokens::b64url(token.as_bytes());
    match carrier {
        Carrier::Bearer => HandshakeRequest::builder()
            .header("Authorization", format!("Bearer {token}"))
            .build(),
        Carrier::Jwt => protocol(format!("{MARKER}, jwt.{token}")),
        Carrier::JwtAuth => protocol(format!("{MARKER}, jwt-auth.{token}")),
        Carrier::JwtEncoded => protocol(format!("{MARKER}, jwt.{}", encoded())),
        Carrier::JwtAuthEncoded => protocol(format!("{MARKER}, jwt-auth.{}", encoded())),
        Carrier::Query => HandshakeRequest::builder()
            .query(format!("access_token={token}"))
            .build(),
    }
}

/// Whether the request carries the valid token untouched, raw or encoded.
fn carries_token(headers: &[(String, String)], query: Option<&str>) -> bool {
    let f = fixture();
    let has = |text: &str| text.contains(&f.token) || text.contains(&f.encoded);
    headers.iter().any(|(_, v)| has(v)) || query.is_some_and(has)
}

fn assert_is_alice(outcome: &AuthOutcome) {
    assert_eq!(outcome.user.as_str(), "alice");
    assert!(
        matches!(outcome.selected_subprotocol.as_deref(), None | Some(MARKER)),
        "echoed {:?}",
        outcome.selected_subprotocol
    );
}

/// A query parameter name as a client may spell it: each character in
/// either case, any of them percent-encoded (hex digits in either case).
fn disguised(name: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<(bool, bool, bool)>(), name.len()).prop_map(move |choices| {
        name.bytes()
            .zip(choices)
            .map(|(b, (upper, encode, upper_hex))| {
                let b = if upper { b.to_ascii_uppercase() } else { b };
                match (encode, upper_hex) {
                    (false, _) => char::from(b).to_string(),
                    (true, true) => format!("%{b:02X}"),
                    (true, false) => format!("%{b:02x}"),
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_query_token_is_refused_however_its_name_is_spelled(
        name in prop_oneof![disguised("token"), disguised("access_token"), disguised("jwt")],
        first in any::<bool>(),
    ) {
        let f = fixture();
        let query = if first {
            format!("{name}={}&room=1", f.token)
        } else {
            format!("room=1&{name}={}", f.token)
        };
        let request = HandshakeRequest::builder().query(query).build().unwrap();
        let refused = block_on(f.auth.authenticate(&request)).map(|o| o.user);
        prop_assert_eq!(
            refused.map_err(|failure| failure.error.code()),
            Err("token_in_query"),
            "{}", name
        );
    }

    #[test]
    fn the_query_source_reads_its_parameter_however_it_is_spelled(
        name in disguised("access_token"),
    ) {
        let f = fixture();
        let request = HandshakeRequest::builder()
            .query(format!("room=1&{name}={}", f.token))
            .build()
            .unwrap();
        let outcome = block_on(f.auth_query.authenticate(&request));
        prop_assert!(outcome.is_ok(), "{}", name);
    }

    #[test]
    fn arbitrary_requests_never_panic_and_never_authenticate_without_the_token(
        headers in proptest::collection::vec((header_name(), header_value()), 0..5),
        query in query(),
    ) {
        let mut builder = HandshakeRequest::builder();
        for (name, value) in &headers {
            builder = builder.header(name.clone(), value.clone());
        }
        if let Some(query) = &query {
            builder = builder.query(query.clone());
        }
        let Ok(request) = builder.build() else {
            return Ok(());
        };
        for outcome in authenticate_all(&request).iter().flatten() {
            prop_assert!(
                carries_token(&headers, query.as_deref()),
                "authenticated without the valid token: {headers:?} {query:?}"
            );
            assert_is_alice(outcome);
        }
    }

    #[test]
    fn near_misses_of_a_valid_token_never_authenticate(
        mutation in mutation(),
        carrier in carrier(),
    ) {
        let f = fixture();
        let mutated = apply(&mutation, &f.token, &f.other);
        prop_assert_ne!(&mutated, &f.token);
        // Whitespace added only at the token's edges leaves the token itself
        // untouched (headers and subprotocol entries are trimmed): that is
        // not a near miss, and accepting it is right.
        prop_assume!(mutated.trim_matches([' ', '\t']) != f.token);
        if let Ok(request) = carry(carrier, &mutated) {
            for result in authenticate_all(&request) {
                prop_assert!(result.is_err(), "{mutation:?} in {carrier:?} authenticated");
            }
        }
        prop_assert!(f.auth.verify_token(&mutated).is_err(), "{mutation:?} verified");
        let empty = HandshakeRequest::default();
        let again = block_on(f.auth.reauthenticate(&empty, &mutated));
        prop_assert!(again.is_err(), "{mutation:?} re-authenticated");
        let first = block_on(f.auth_first.authenticate_message(&empty, &mutated));
        prop_assert!(first.is_err(), "{mutation:?} authenticated as a first message");
    }

    #[test]
    fn the_token_authenticates_exactly_in_a_valid_carrier(
        scheme in prop_oneof![
            Just(("Bearer ", true)), Just(("bearer ", true)), Just(("BEARER ", true)),
            Just(("bEaReR   ", true)), Just(("Bearer\t", false)), Just(("Bearer: ", false)),
            Just(("Bearerx ", false)), Just(("Bear ", false)), Just(("", false)),
            Just(("Token ", false)), Just(("Basic ", false)), Just(("JWT ", false)),
        ],
        prefix in prop_oneof![
            Just(("jwt.", true)), Just(("jwt-auth.", true)), Just(("JWT.", false)),
            Just(("jwt", false)), Just(("jwt-", false)), Just(("jwt..", false)),
            Just(("xjwt.", false)), Just(("jwt-auth-", false)), Just(("bearer.", false)),
            Just(("Jwt-Auth.", false)),
        ],
        marker in prop_oneof![
            Just((Some(MARKER), true)), Just((Some("JWT-AUTH"), false)),
            Just((Some("jwt_auth"), false)), Just((None, false)),
        ],
        encoded in any::<bool>(),
        use_header in any::<bool>(),
    ) {
        let f = fixture();
        let (request, valid) = if use_header {
            let request = HandshakeRequest::builder()
                .header("Authorization", format!("{}{}", scheme.0, f.token))
                .build();
            (request, scheme.1)
        } else {
            let token = if encoded { &f.encoded } else { &f.token };
            let offered = match marker.0 {
                Some(marker) => format!("{marker}, {}{token}", prefix.0),
                None => format!("{}{token}", prefix.0),
            };
            let request = HandshakeRequest::builder()
                .header("Sec-WebSocket-Protocol", offered)
                .build();
            (request, prefix.1 && marker.1)
        };
        let request = request.unwrap();
        let result = block_on(f.auth.authenticate(&request));
        match result {
            Ok(outcome) => {
                prop_assert!(valid, "authenticated through an invalid carrier");
                assert_is_alice(&outcome);
                let echo = if use_header { None } else { Some(MARKER) };
                prop_assert_eq!(outcome.selected_subprotocol.as_deref(), echo);
            }
            Err(failure) => prop_assert!(
                !valid,
                "a valid carrier was refused: {}",
                failure.error.code()
            ),
        }
    }
}

#[test]
fn the_fixture_token_authenticates_in_every_carrier() {
    let f = fixture();
    for carrier in [
        Carrier::Bearer,
        Carrier::Jwt,
        Carrier::JwtAuth,
        Carrier::JwtEncoded,
        Carrier::JwtAuthEncoded,
    ] {
        let request = carry(carrier, &f.token).unwrap();
        let outcome = block_on(f.auth.authenticate(&request))
            .unwrap_or_else(|e| panic!("{carrier:?}: {}", e.error.code()));
        assert_is_alice(&outcome);
    }
    let request = carry(Carrier::Query, &f.token).unwrap();
    assert!(block_on(f.auth_query.authenticate(&request)).is_ok());
    assert!(f.auth.verify_token(&f.token).is_ok());
}
