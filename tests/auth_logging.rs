//! No credential reaches a log line or a `Debug` string: every `tracing`
//! event at TRACE level is captured while valid and hostile handshakes,
//! sends, re-authentication and closes run through `Hub::serve_with_auth`,
//! and neither the capture nor the `Debug` output of requests, failures,
//! outcomes and reports may contain a token, an `Authorization` value, a raw
//! `Sec-WebSocket-Protocol` value, or any 12-character piece of a token's
//! signature.

#![cfg(feature = "jwt")]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::io;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use support::tokens::{self, SECRET};
use support::{Scripted, event, frame, next_json, read_to_close};
use tracing::Level;
use ws_lifecycle::Hub;
use ws_lifecycle::auth::{
    Authenticator, HandshakeRequest, JwtAuthenticator, OriginPolicy, TokenSources,
};
use ws_lifecycle::transport::memory;

/// Everything the output must not contain.
#[derive(Default)]
struct Secrets {
    /// Must not appear whole.
    whole: Vec<String>,
    /// Must not appear in any 12-character piece.
    pieces: Vec<String>,
}

impl Secrets {
    /// A token: whole, its signature in pieces, its base64url form whole
    /// and in pieces.
    fn token(&mut self, token: &str) -> String {
        self.whole.push(token.to_owned());
        if let Some(signature) = token.rsplit('.').next() {
            self.pieces.push(signature.to_owned());
        }
        let encoded = tokens::b64url(token.as_bytes());
        self.whole.push(encoded.clone());
        self.pieces.push(encoded);
        token.to_owned()
    }

    /// A raw header value (`Authorization` or a token-bearing
    /// `Sec-WebSocket-Protocol` line).
    fn value(&mut self, value: &str) -> String {
        self.whole.push(value.to_owned());
        value.to_owned()
    }

    /// What `text` leaks, described without repeating the secret.
    fn leaks(&self, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (i, secret) in self.whole.iter().enumerate() {
            if text.contains(secret.as_str()) {
                found.push(format!(
                    "secret #{i} ({} bytes) appears whole",
                    secret.len()
                ));
            }
        }
        for (i, secret) in self.pieces.iter().enumerate() {
            let bytes = secret.as_bytes();
            for start in 0..bytes.len().saturating_sub(11) {
                let piece = &secret[start..start + 12];
                if text.contains(piece) {
                    found.push(format!("a piece of secret #{i} appears at offset {start}"));
                    break;
                }
            }
        }
        found
    }
}

/// A `MakeWriter` appending to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn build(headers: &[(&str, &str)], query: Option<&str>) -> HandshakeRequest {
    try_build(headers, query).unwrap_or_else(|e| panic!("{e}"))
}

fn try_build(
    headers: &[(&str, &str)],
    query: Option<&str>,
) -> Result<HandshakeRequest, ws_lifecycle::auth::AuthError> {
    let mut builder = HandshakeRequest::builder();
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(query) = query {
        builder = builder.query(query);
    }
    builder.build()
}

/// A hostile handshake: the authenticator, the headers and the query.
type Hostile<'a> = (&'a JwtAuthenticator, Vec<(&'a str, String)>, Option<String>);

/// Runs the whole scenario; returns the `Debug` and `Display` strings it
/// produced, for the same leak check as the log output.
async fn scenario(secrets: &mut Secrets) -> Vec<String> {
    let mut shown = Vec::new();
    let hub = Hub::new();
    let hs = || {
        JwtAuthenticator::builder()
            .hs256(SECRET)
            .any_issuer()
            .any_audience()
    };
    let auth = hs().build().unwrap();
    let mut first_message = TokenSources::default();
    first_message.first_message = true;
    let auth_first = hs().sources(first_message).build().unwrap();
    let auth_origin = hs()
        .origin(OriginPolicy::allow(["https://app.example"]))
        .build()
        .unwrap();

    let alice = secrets.token(&tokens::hs256(&tokens::claims("alice")));
    let alice_again = secrets.token(&tokens::hs256(&tokens::claims("alice")));
    let bob = secrets.token(&tokens::hs256(&tokens::claims("bob")));
    let foreign = secrets.token(&tokens::sign(
        &Header::default(),
        &tokens::claims("alice"),
        &EncodingKey::from_secret(b"not the secret the server trusts!!"),
    ));
    let expired = secrets.token(&tokens::hs256(
        &json!({ "sub": "alice", "exp": tokens::now() - 3600 }),
    ));
    let none = secrets.token(&tokens::raw(
        &json!({ "alg": "none" }),
        &tokens::claims("alice"),
        "bm9uZS1zaWduYXR1cmUtc2VnbWVudA",
    ));
    let crit = secrets.token(&tokens::raw(
        &json!({ "alg": "HS256", "crit": ["exp"] }),
        &tokens::claims("alice"),
        "Y3JpdC1zaWduYXR1cmUtc2VnbWVudA",
    ));
    let huge = secrets.token(&tokens::hs256(&json!({
        "sub": "alice", "exp": tokens::now() + 3600, "pad": "p".repeat(9000)
    })));
    let alice_b64 = tokens::b64url(alice.as_bytes());

    // 1. A header client: sends, re-authenticates (same user, then a bad
    //    token, then another user's token, which closes it).
    let authorization = secrets.value(&format!("Bearer {alice}"));
    let request = build(&[("Authorization", &authorization)], None);
    shown.push(format!("{request:?}"));
    let outcome = auth.authenticate(&request).await.unwrap();
    shown.push(format!("{outcome:?}"));
    let (transport, mut client) = memory::pair(64);
    let handler = Scripted::default();
    let serving = hub.serve_with_auth(transport, &request, &auth, &handler);
    let script = async {
        let reauth = |token: &str| json!({ "type": "reauth", "token": token }).to_string();
        client.send_text(reauth(&alice_again)).await.unwrap();
        assert_eq!(next_json(&mut client).await["type"], "reauth_ok");
        let delivery = hub
            .send_to_user(&support::user("alice"), &event("note", json!("hi")))
            .unwrap();
        assert_eq!(delivery.queued, 1);
        assert_eq!(next_json(&mut client).await["type"], "note");
        client.send_text("application traffic").await.unwrap();
        client.send_text(reauth(&foreign)).await.unwrap();
        let failed = next_json(&mut client).await;
        assert_eq!(failed["type"], "reauth_failed");
        assert_eq!(failed["payload"]["code"], "signature_invalid");
        client.send_text(reauth(&bob)).await.unwrap();
        let (_, close) = read_to_close(&mut client).await;
        assert_eq!(close, Some(frame(4403, "user_mismatch")));
    };
    let (report, ()) = tokio::join!(serving, script);
    shown.push(format!("{report:?}"));

    // 2. Browser clients, raw and base64url; the client closes.
    for offered in [
        format!("jwt-auth, jwt.{alice}"),
        format!("jwt-auth, jwt-auth.{alice_b64}"),
    ] {
        let offered = secrets.value(&offered);
        let request = build(&[("Sec-WebSocket-Protocol", &offered)], None);
        shown.push(format!("{request:?}"));
        shown.push(format!("{:?}", auth.authenticate(&request).await.unwrap()));
        let (transport, mut client) = memory::pair(16);
        let serving = hub.serve_with_auth(transport, &request, &auth, &handler);
        let script = async {
            client.send_text("hello").await.unwrap();
            client.close(Some(frame(1000, "bye"))).await;
        };
        let (report, ()) = tokio::join!(serving, script);
        shown.push(format!("{report:?}"));
    }

    // 3. First-message authentication, good and bad.
    for (token, close) in [
        (&alice, None),
        (&foreign, Some(frame(4401, "signature_invalid"))),
    ] {
        let request = build(&[], None);
        let (transport, mut client) = memory::pair(16);
        let serving = hub.serve_with_auth(transport, &request, &auth_first, &handler);
        let script = async {
            let auth = json!({ "type": "auth", "token": token }).to_string();
            client.send_text(auth).await.unwrap();
            if close.is_none() {
                client.close(None).await;
            } else {
                assert_eq!(read_to_close(&mut client).await.1, close);
            }
        };
        let (report, ()) = tokio::join!(serving, script);
        shown.push(format!("{report:?}"));
    }

    // 4. Hostile handshakes: each fails, through the hub and directly.
    let hostile: Vec<Hostile<'_>> = vec![
        (
            &auth,
            vec![("Authorization", format!("Bearer {foreign}"))],
            None,
        ),
        (
            &auth,
            vec![("Authorization", format!("bearer {none}"))],
            None,
        ),
        (
            &auth,
            vec![("Authorization", format!("Bearer {crit}"))],
            None,
        ),
        (
            &auth,
            vec![("Authorization", format!("Bearer {huge}"))],
            None,
        ),
        (
            &auth,
            vec![("Authorization", format!("Bearer {alice}é"))],
            None,
        ),
        (
            &auth,
            vec![("Authorization", "Basic YWxpY2U6aHVudGVyMg==".to_owned())],
            None,
        ),
        (
            &auth,
            vec![("Sec-WebSocket-Protocol", format!("jwt-auth, jwt.{foreign}"))],
            None,
        ),
        (
            &auth,
            vec![("Sec-WebSocket-Protocol", format!("jwt-auth, jwt.{expired}"))],
            None,
        ),
        (
            &auth,
            vec![("Sec-WebSocket-Protocol", format!("jwt.{alice}"))],
            None,
        ),
        (
            &auth,
            vec![(
                "Sec-WebSocket-Protocol",
                format!("jwt-auth, jwt.{alice}, jwt-auth.{bob}"),
            )],
            None,
        ),
        (
            &auth,
            vec![
                ("Authorization", format!("Bearer {alice}")),
                ("Sec-WebSocket-Protocol", format!("jwt-auth, jwt.{bob}")),
            ],
            None,
        ),
        (&auth, vec![], Some(format!("token={alice}"))),
        (
            &auth_origin,
            vec![
                ("Origin", "null".to_owned()),
                ("Authorization", format!("Bearer {alice}")),
            ],
            None,
        ),
    ];
    for (authenticator, headers, query) in &hostile {
        for (name, value) in headers {
            if *name != "Origin" {
                secrets.value(value);
            }
        }
        if let Some(query) = query {
            secrets.value(query);
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let request = build(&headers, query.as_deref());
        shown.push(format!("{request:?}"));
        let failure = authenticator.authenticate(&request).await.unwrap_err();
        shown.push(format!("{failure:?}"));
        shown.push(failure.to_string());
        shown.push(format!("{:?}", failure.error.close_frame()));
        let (transport, mut client) = memory::pair(16);
        let report = hub
            .serve_with_auth(transport, &request, *authenticator, &handler)
            .await;
        let (_, close) = read_to_close(&mut client).await;
        assert_eq!(
            close.map(|f| f.reason.as_str().to_owned()),
            Some(failure.error.code().to_owned())
        );
        shown.push(format!("{report:?}"));
    }

    // 5. Requests the builder refuses.
    for offered in [
        format!("jwt-auth, jwt.{alice_b64}=="),
        format!("jwt-auth, jwt.{alice}/x"),
        format!("jwt-auth, jwt.{alice} {bob}"),
    ] {
        let offered = secrets.value(&offered);
        let error = try_build(&[("Sec-WebSocket-Protocol", &offered)], None).unwrap_err();
        assert_eq!(error.code(), "protocol_invalid");
        shown.push(format!("{error:?}"));
        shown.push(error.to_string());
        shown.push(format!("{:?}", hub.connect().refuse(&error)));
    }
    shown
}

#[test]
fn no_credential_reaches_a_log_line_or_a_debug_string() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut secrets = Secrets::default();
    let shown =
        tracing::subscriber::with_default(subscriber, || runtime.block_on(scenario(&mut secrets)));

    let output = capture.text();
    // The capture must have seen the handshakes, or the test proves nothing.
    for expected in [
        "authentication failed",
        "code=\"signature_invalid\"",
        "re-authentication failed",
        "state transition",
        "connection ended",
        "DEBUG",
    ] {
        assert!(
            output.contains(expected),
            "the capture lacks {expected:?}:\n{output}"
        );
    }
    assert!(secrets.whole.len() >= 20, "{}", secrets.whole.len());

    let leaks = secrets.leaks(&output);
    assert!(leaks.is_empty(), "the log output leaks: {leaks:#?}");
    for text in &shown {
        let leaks = secrets.leaks(text);
        assert!(leaks.is_empty(), "a Debug/Display string leaks: {leaks:#?}");
    }
}
