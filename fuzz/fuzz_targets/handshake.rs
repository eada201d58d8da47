//! Fuzzes token extraction and JWT decoding: the input, made UTF-8 lossily,
//! is split on `\n` into up to five fields:
//!
//! 0. the `Authorization` value,
//! 1. the `Sec-WebSocket-Protocol` lines (split again on `\r`),
//! 2. the query string,
//! 3. the `Origin` value,
//! 4. a first-message / re-authentication token.
//!
//! A field that is absent (fewer `\n`) or empty adds no header. Each request runs
//! through `HandshakeRequest::builder().build()`, `TokenSources::extract`
//! and `JwtAuthenticator::authenticate` under two configurations, and the
//! last field through `authenticate_message` and `verify_token`. Besides
//! not panicking, a success must name the one user the seeds' tokens are
//! signed for and echo only the marker.
//!
//! The seeds in `fuzz/seeds/handshake/` (the corpus directory is
//! git-ignored) carry a valid token (HS256, the secret below, `exp` in 2100)
//! in each carrier, so the fuzzer starts deep. Run it with
//!
//! ```sh
//! mkdir -p fuzz/corpus/handshake
//! cargo +nightly fuzz run handshake fuzz/corpus/handshake fuzz/seeds/handshake
//! ```

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ws_lifecycle::auth::{
    AuthOutcome, Authenticator, HandshakeRequest, JwtAuthenticator, OriginPolicy, TokenSources,
};

/// The secret the seed tokens are signed with.
const SECRET: &[u8] = b"ws-lifecycle fuzz secret, 32+ bytes";
/// The only user a seed token names.
const USER: &str = "fuzz-user";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    /// Default sources.
    strict: JwtAuthenticator,
    /// Every optional source on, an origin allow-list, iss/aud unchecked.
    open: JwtAuthenticator,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut sources = TokenSources::default();
        sources.query_param = Some("access_token".into());
        sources.first_message = true;
        sources
            .subprotocol_prefixes
            .push("base64url.bearer.fuzz.".into());
        let build = |builder: ws_lifecycle::auth::JwtAuthenticatorBuilder| match builder.build() {
            Ok(auth) => auth,
            Err(e) => panic!("fuzz fixture: {e}"),
        };
        Fixture {
            runtime: match tokio::runtime::Builder::new_current_thread().build() {
                Ok(runtime) => runtime,
                Err(e) => panic!("fuzz fixture: {e}"),
            },
            strict: build(
                JwtAuthenticator::builder()
                    .hs256(SECRET)
                    .any_issuer()
                    .any_audience(),
            ),
            open: build(
                JwtAuthenticator::builder()
                    .hs256(SECRET)
                    .any_issuer()
                    .any_audience()
                    .sources(sources)
                    .origin(OriginPolicy::allow(["https://app.example"])),
            ),
        }
    })
}

fn check(outcome: &AuthOutcome) {
    assert_eq!(outcome.user.as_str(), USER, "authenticated another user");
    assert!(
        matches!(
            outcome.selected_subprotocol.as_deref(),
            None | Some("jwt-auth")
        ),
        "echoed a token-bearing subprotocol"
    );
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let text = String::from_utf8_lossy(data);
    let fields: Vec<&str> = text.splitn(5, '\n').collect();
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());

    let mut builder = HandshakeRequest::builder();
    if let Some(value) = field(0) {
        builder = builder.header("Authorization", value);
    }
    if let Some(lines) = field(1) {
        for line in lines.split('\r') {
            builder = builder.header("Sec-WebSocket-Protocol", line);
        }
    }
    if let Some(query) = field(2) {
        builder = builder.query(query);
    }
    if let Some(origin) = field(3) {
        builder = builder.header("Origin", origin);
    }
    let Ok(request) = builder.build() else {
        return;
    };
    let _ = f.strict.sources().extract(&request);
    let _ = f.open.sources().extract(&request);
    f.runtime.block_on(async {
        for auth in [&f.strict, &f.open] {
            if let Ok(outcome) = auth.authenticate(&request).await {
                check(&outcome);
            }
        }
        if let Some(token) = field(4) {
            if let Ok(outcome) = f.open.authenticate_message(&request, token).await {
                check(&outcome);
            }
            if let Ok(outcome) = f.strict.verify_token(token) {
                check(&outcome);
            }
        }
    });
});
