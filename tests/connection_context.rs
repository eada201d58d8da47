//! What a handler can know about its connection (the verified claims, the
//! application's extensions), the `closed()` signal, and `on_close` running
//! exactly once on every exit path.

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use ws_lifecycle::auth::{AuthOutcome, Authenticator};
use ws_lifecycle::close::{CloseCause, CloseFrame};
use ws_lifecycle::connection::{Authenticated, Connection};
use ws_lifecycle::id::UserId;
use ws_lifecycle::transport::memory::{self, MemoryClient, MemoryTransport};
use ws_lifecycle::{CloseReport, ConnectionHandle, Handler, Hub, Inbound};

use support::{frame, user};

/// The application's per-connection value, attached while authenticating.
#[derive(Debug, Clone, PartialEq)]
struct Tenant(String);

/// The application's claims type.
#[derive(Debug, Deserialize, PartialEq)]
struct Claims {
    sub: String,
    plan: String,
}

/// What each callback saw, and every `on_close`.
#[derive(Default)]
struct Seen {
    on_ready: Vec<(Option<Tenant>, Option<String>)>,
    on_message: Vec<(Option<Tenant>, Option<String>)>,
    closes: Vec<(CloseCause, Option<Tenant>)>,
}

#[derive(Clone, Copy, Default)]
enum Behaviour {
    #[default]
    Quiet,
    PanicOnMessage,
    PanicOnReady,
    HangOnReady,
}

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    behaviour: Behaviour,
}

fn context(conn: &ConnectionHandle) -> (Option<Tenant>, Option<String>) {
    let tenant = conn.extensions().get::<Tenant>().cloned();
    let plan = conn.claims::<Claims>().ok().map(|c| c.plan);
    (tenant, plan)
}

impl Handler for Recorder {
    async fn on_ready(&self, conn: &ConnectionHandle) -> Result<(), CloseFrame> {
        self.seen.lock().on_ready.push(context(conn));
        match self.behaviour {
            Behaviour::PanicOnReady => panic!("on_ready panicked on purpose"),
            Behaviour::HangOnReady => std::future::pending().await,
            _ => Ok(()),
        }
    }

    async fn on_message(&self, conn: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        self.seen.lock().on_message.push(context(conn));
        if let Behaviour::PanicOnMessage = self.behaviour {
            panic!("on_message panicked on purpose");
        }
        Ok(())
    }

    fn on_close(&self, conn: &ConnectionHandle, report: &CloseReport) {
        let tenant = conn.extensions().get::<Tenant>().cloned();
        self.seen.lock().closes.push((report.cause.clone(), tenant));
    }
}

fn outcome(user: &UserId) -> AuthOutcome {
    let mut outcome = AuthOutcome::new(user.clone()).with_extension(Tenant("acme".into()));
    outcome.claims.insert("sub".into(), user.as_str().into());
    outcome.claims.insert("plan".into(), "team".into());
    outcome
}

async fn bind(
    hub: &Hub,
    user: &UserId,
) -> (Connection<Authenticated<MemoryTransport>>, MemoryClient) {
    let (transport, client) = memory::pair(64);
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(outcome(user))
        .await
        .unwrap();
    (conn, client)
}

#[tokio::test]
async fn claims_and_extensions_reach_every_callback() {
    let hub = Hub::new();
    let recorder = Recorder::default();
    let (conn, mut client) = bind(&hub, &user("alice")).await;
    let handle = conn.handle();
    assert_eq!(
        handle.claims::<Claims>().unwrap(),
        Claims {
            sub: "alice".into(),
            plan: "team".into()
        }
    );
    let raw: serde_json::Value = serde_json::from_str(handle.claims_json()).unwrap();
    assert_eq!(raw["plan"], "team");
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Wrong {
        seats: u32,
    }
    assert!(
        handle.claims::<Wrong>().is_err(),
        "a missing claim is an error"
    );

    let server = tokio::spawn({
        let (hub, recorder) = (hub.clone(), recorder.clone());
        async move { hub.run(conn, &recorder).await }
    });
    handle.wait_ready(Duration::from_secs(5)).await.unwrap();
    client.send_text(r#"{"type":"hello"}"#).await.unwrap();
    client.close(None).await;
    let report = server.await.unwrap();

    let seen = recorder.seen.lock();
    let expected = (Some(Tenant("acme".into())), Some("team".to_owned()));
    assert_eq!(seen.on_ready, vec![expected.clone()]);
    assert_eq!(seen.on_message, vec![expected]);
    assert_eq!(
        seen.closes,
        vec![(report.cause, Some(Tenant("acme".into())))]
    );
}

/// The verified claims of a real JWT reach the handle, typed.
#[tokio::test]
async fn a_jwts_verified_claims_are_readable_typed() {
    use ws_lifecycle::auth::JwtAuthenticator;
    let auth = JwtAuthenticator::builder()
        .hs256(support::tokens::SECRET)
        .any_issuer()
        .any_audience()
        .build()
        .unwrap();
    let mut claims = support::tokens::claims("carol");
    claims["plan"] = "enterprise".into();
    let token = support::tokens::hs256(&claims);
    let request = ws_lifecycle::auth::HandshakeRequest::builder()
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Authorization", format!("Bearer {token}"))
        .build()
        .unwrap();
    let outcome = auth.authenticate(&request).await.unwrap();
    let hub = Hub::new();
    let (transport, _client) = memory::pair(8);
    let conn = hub
        .connect()
        .accept(transport)
        .authenticate(outcome)
        .await
        .unwrap();
    let claims = conn.handle().claims::<Claims>().unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.plan.as_str()),
        ("carol", "enterprise")
    );
}

#[tokio::test]
async fn closed_resolves_for_every_waiter_with_the_cause() {
    let hub = Hub::new();
    let (conn, _client) = bind(&hub, &user("dave")).await;
    let handle = conn.handle();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.closed().await })
        })
        .collect();
    // A waiter dropped before the close loses nothing for the others.
    {
        let dropped = handle.closed();
        let mut dropped = std::pin::pin!(dropped);
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(dropped.as_mut().poll(cx))).await;
        assert!(first.is_pending());
    }
    let revoked = frame(4403, "revoked");
    assert!(handle.close(revoked.clone()));
    for waiter in waiters {
        let cause = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("closed() never resolved")
            .unwrap();
        assert_eq!(cause, CloseCause::Requested(revoked.clone()));
    }
    // Already closing: at once.
    assert_eq!(handle.closed().await, CloseCause::Requested(revoked));
    drop(conn);
}

#[tokio::test]
async fn closed_resolves_when_the_connection_is_dropped() {
    let hub = Hub::new();
    let (conn, _client) = bind(&hub, &user("erin")).await;
    let handle = conn.handle();
    let waiter = tokio::spawn({
        let handle = handle.clone();
        async move { handle.closed().await }
    });
    tokio::task::yield_now().await;
    drop(conn);
    let cause = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("closed() never resolved")
        .unwrap();
    assert_eq!(cause, CloseCause::Dropped);
}

/// Runs a connection with `behaviour`, ends it with `end`, and returns the
/// causes `on_close` was called with.
async fn closes_after(
    behaviour: Behaviour,
    end: impl AsyncFnOnce(&mut MemoryClient, &ConnectionHandle, tokio::task::JoinHandle<CloseReport>),
) -> Vec<CloseCause> {
    let hub = support::hub_with(|c| c.services_ready_timeout = Duration::from_millis(200));
    let recorder = Recorder {
        behaviour,
        ..Recorder::default()
    };
    let (conn, mut client) = bind(&hub, &user("frank")).await;
    let handle = conn.handle();
    let server = tokio::spawn({
        let (hub, recorder) = (hub.clone(), recorder.clone());
        async move { hub.run(conn, &recorder).await }
    });
    end(&mut client, &handle, server).await;
    tokio::time::timeout(Duration::from_secs(5), hub.idle())
        .await
        .expect("the connection never ended");
    let seen = recorder.seen.lock();
    seen.closes.iter().map(|(cause, _)| cause.clone()).collect()
}

#[tokio::test]
async fn on_close_runs_once_when_the_peer_closes() {
    let causes = closes_after(Behaviour::Quiet, async |client, handle, server| {
        handle.wait_ready(Duration::from_secs(5)).await.unwrap();
        client.close(None).await;
        server.await.unwrap();
    })
    .await;
    assert_eq!(causes, vec![CloseCause::PeerClosed(None)]);
}

#[tokio::test]
async fn on_close_runs_once_when_the_peer_vanishes() {
    let causes = closes_after(Behaviour::Quiet, async |client, handle, server| {
        handle.wait_ready(Duration::from_secs(5)).await.unwrap();
        client.abort();
        server.await.unwrap();
    })
    .await;
    assert_eq!(causes, vec![CloseCause::PeerGone]);
}

#[tokio::test]
async fn on_close_runs_once_when_on_message_panics() {
    let causes = closes_after(Behaviour::PanicOnMessage, async |client, handle, server| {
        handle.wait_ready(Duration::from_secs(5)).await.unwrap();
        client.send_text("boom").await.unwrap();
        server.await.unwrap();
    })
    .await;
    assert_eq!(causes, vec![CloseCause::HandlerPanicked]);
}

#[tokio::test]
async fn on_close_runs_once_when_on_ready_panics() {
    let causes = closes_after(Behaviour::PanicOnReady, async |_, _, server| {
        server.await.unwrap();
    })
    .await;
    assert_eq!(causes, vec![CloseCause::HandlerPanicked]);
}

#[tokio::test]
async fn on_close_runs_once_when_on_ready_times_out() {
    let causes = closes_after(Behaviour::HangOnReady, async |_, _, server| {
        server.await.unwrap();
    })
    .await;
    assert_eq!(causes, vec![CloseCause::NotReadyInTime]);
}

#[tokio::test]
async fn on_close_runs_once_when_the_serving_future_is_dropped() {
    let causes = closes_after(Behaviour::Quiet, async |_, handle, server| {
        handle.wait_ready(Duration::from_secs(5)).await.unwrap();
        server.abort();
        assert!(server.await.unwrap_err().is_cancelled());
    })
    .await;
    assert_eq!(causes, vec![CloseCause::Dropped]);
}

#[tokio::test]
async fn on_close_runs_once_when_the_server_closes_it() {
    let causes = closes_after(Behaviour::Quiet, async |_, handle, server| {
        handle.wait_ready(Duration::from_secs(5)).await.unwrap();
        handle.close(frame(4403, "revoked"));
        server.await.unwrap();
    })
    .await;
    assert_eq!(causes, vec![CloseCause::Requested(frame(4403, "revoked"))]);
}
