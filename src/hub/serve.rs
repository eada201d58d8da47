//! Driving one connection's whole life: [`Hub::serve`],
//! [`Hub::serve_with_auth`] and [`Hub::run`]. The reader loop itself is the
//! connection's (`connection::reader`).

use tracing::Instrument;

use crate::app::Handler;
use crate::auth::reauth::{Admission, Reauthenticate};
use crate::auth::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
use crate::close::{CloseCause, CloseCode, CloseFrame, CloseReason};
use crate::connection::{
    Accepted as AcceptedStage, Adapter, Authenticated, CloseReport, Connection, Origin,
    first_message_token,
};
use crate::hub::Hub;
use crate::stream::Position;
use crate::transport::Transport;

/// The close reason of a connection whose `since` query parameter is
/// malformed (with 4400), after an upgrade that did not refuse it.
const SINCE_INVALID: CloseReason = CloseReason::from_static("since_invalid");

impl Hub {
    /// Runs a whole connection over `transport` for a user authenticated at
    /// the upgrade (the adapters' path): mint the id, accept, bind the user
    /// (entering the routing table), run [`Handler::on_ready`], become Ready
    /// and flush what was buffered, dispatch inbound messages until the
    /// connection ends, clean up.
    ///
    /// Returns how it ended. Every exit, including this future being
    /// dropped, removes the connection from the routing table.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future ends the connection (`Failed`, cause `dropped`)
    /// and removes it from the routing table; queued events are counted as
    /// dropped.
    pub async fn serve<T: Transport, H: Handler>(
        &self,
        transport: T,
        auth: impl Into<AuthOutcome>,
        handler: &H,
    ) -> CloseReport {
        let conn = self.connect().accept(transport);
        self.serve_accepted(conn, Ok(auth.into()), None, handler)
            .await
    }

    /// [`serve`](Hub::serve) from an accepted connection; an `Err` closes it
    /// at once with the error's close frame (counted, never routed). The
    /// adapters accept before they build the connection's future, so the
    /// socket is not carried in its state for the connection's whole life.
    /// In-band re-authentication goes through `reauth`, the authenticator
    /// that admitted the connection (none: `reauth` messages are the
    /// handler's).
    pub(crate) async fn serve_accepted<T: Transport, H: Handler>(
        &self,
        conn: Connection<AcceptedStage<T>>,
        auth: Result<AuthOutcome, AuthError>,
        reauth: Option<&dyn Reauthenticate>,
        handler: &H,
    ) -> CloseReport {
        match auth {
            Ok(outcome) => match Box::pin(conn.authenticate(outcome)).await {
                Ok(conn) => self.run_with(conn, handler, reauth).await,
                Err(report) => report,
            },
            Err(error) => Box::pin(conn.reject(&error)).await,
        }
    }

    /// Like [`serve`](Hub::serve), but authenticates after the transport is
    /// open, with `authenticator` reading `request` (and, when it allows,
    /// the first message: `{"type":"auth","token":"…"}`), all within
    /// [`HubConfig::auth_timeout`](crate::config::HubConfig::auth_timeout). A failure closes the connection with
    /// [`AuthError::close_frame`] (4401, 4403, 4408 …) and counts it; the
    /// connection never enters the routing table.
    ///
    /// This is the path for clients that must learn *why* they were refused
    /// (a browser cannot read the HTTP status of a refused upgrade).
    ///
    /// The `since` query parameter ([`HandshakeRequest::since`]) is read
    /// first: a malformed one closes the connection with 4400
    /// `since_invalid` before anything is authenticated; a valid one asks
    /// to resume the user's stream ([`AuthOutcome::since`], unless the
    /// authenticator set it).
    pub async fn serve_with_auth<T: Transport, A: Authenticator, H: Handler>(
        &self,
        transport: T,
        request: &HandshakeRequest,
        authenticator: &A,
        handler: &H,
    ) -> CloseReport {
        let origin = Origin::of(Adapter::None, request);
        let mut conn = self.connect_from(origin).accept(transport);
        let since = match request.since() {
            Ok(since) => since,
            Err(error) => return since_invalid(conn, error.code()).await,
        };
        let config = self.config();
        let span = conn.span().clone();
        let authenticated = async {
            match authenticator.authenticate(request).await {
                Err(failure)
                    if failure.error == AuthError::TokenMissing
                        && authenticator.first_message_auth() =>
                {
                    let token = first_message_token(&mut conn, config).await?;
                    authenticator.authenticate_message(request, &token).await
                }
                other => other,
            }
        };
        let outcome = tokio::time::timeout(config.auth_timeout, authenticated.instrument(span))
            .await
            .unwrap_or_else(|_| Err(AuthError::Timeout.into()));
        self.serve_authenticated(conn, request, authenticator, outcome, since, handler)
            .await
    }

    /// The adapters' first-message path ([`upgrade::decide`](crate::upgrade::decide)
    /// found no credentials in the handshake and the authenticator allows
    /// them in-band): reads the first message within `auth_timeout`, with
    /// control frames counted against the inbound burst, and holds the
    /// upgrade permit until it is decided. The request's `since` goes to
    /// the connection (`decide` refused a malformed one already; should
    /// one get here, it closes with 4400 `since_invalid`).
    pub(crate) async fn serve_first_message<T: Transport, A: Authenticator, H: Handler>(
        &self,
        mut conn: Connection<AcceptedStage<T>>,
        request: &HandshakeRequest,
        authenticator: &A,
        permit: tokio::sync::OwnedSemaphorePermit,
        handler: &H,
    ) -> CloseReport {
        let since = match request.since() {
            Ok(since) => since,
            Err(error) => return since_invalid(conn, error.code()).await,
        };
        let config = self.config();
        let span = conn.span().clone();
        let authenticated = async {
            let token = first_message_token(&mut conn, config).await?;
            authenticator.authenticate_message(request, &token).await
        };
        let outcome = tokio::time::timeout(config.auth_timeout, authenticated.instrument(span))
            .await
            .unwrap_or_else(|_| Err(AuthError::Timeout.into()));
        drop(permit);
        self.serve_authenticated(conn, request, authenticator, outcome, since, handler)
            .await
    }

    /// Binds the user of an in-band authentication and serves the
    /// connection (re-authenticating through `authenticator`), resuming its
    /// stream after `since` (the request's, unless the authenticator set
    /// one), or closes it with the failure's close frame (4401, 4403, 4408
    /// …), counted.
    async fn serve_authenticated<T: Transport, A: Authenticator, H: Handler>(
        &self,
        conn: Connection<AcceptedStage<T>>,
        request: &HandshakeRequest,
        authenticator: &A,
        outcome: Result<AuthOutcome, AuthFailure>,
        since: Option<Position>,
        handler: &H,
    ) -> CloseReport {
        let admission = Admission::keep(authenticator, request, &outcome);
        match outcome {
            Ok(mut outcome) => {
                if outcome.since.is_none() {
                    outcome.since = since;
                }
                match Box::pin(conn.authenticate(outcome)).await {
                    Ok(conn) => {
                        let reauth = admission.as_ref().map(|a| a as &dyn Reauthenticate);
                        self.run_with(conn, handler, reauth).await
                    }
                    Err(report) => report,
                }
            }
            Err(failure) => {
                tracing::info!(parent: conn.span(), code = failure.error.code(), "authentication failed");
                conn.reject(&failure.error).await
            }
        }
    }

    /// Drives an authenticated connection to its end: on-ready hook (bounded
    /// by `services_ready_timeout`), Ready, the reader loop, close.
    ///
    /// No authenticator is known here, so `reauth` messages are passed to
    /// the handler like any other, and credentials that expire end the
    /// connection (4401) at expiry plus the grace. In-band
    /// re-authentication needs the path that admitted the connection:
    /// [`serve_with_auth`](Hub::serve_with_auth), an adapter, or
    /// [`upgrade::Admitted::serve`](crate::upgrade::Admitted::serve).
    pub fn run<'a, T: Transport, H: Handler>(
        &'a self,
        conn: Connection<Authenticated<T>>,
        handler: &'a H,
    ) -> impl Future<Output = CloseReport> + 'a {
        self.run_with(conn, handler, None)
    }

    /// [`run`](Hub::run), re-authenticating through `reauth`.
    pub(crate) fn run_with<'a, T: Transport, H: Handler>(
        &'a self,
        conn: Connection<Authenticated<T>>,
        handler: &'a H,
        reauth: Option<&'a dyn Reauthenticate>,
    ) -> impl Future<Output = CloseReport> + 'a {
        let span = conn.span().clone();
        conn.serve(handler, reauth).instrument(span)
    }
}

/// Closes an upgraded connection whose `since` query parameter is malformed
/// (`code`, the [`SinceError`](crate::stream::SinceError) code, is logged):
/// 4400 `since_invalid`, before anything is authenticated.
async fn since_invalid<T: Transport>(
    conn: Connection<AcceptedStage<T>>,
    code: &'static str,
) -> CloseReport {
    tracing::debug!(parent: conn.span(), code, "malformed since: closing");
    let frame = CloseFrame::new(CloseCode::APP_PROTOCOL_ERROR, SINCE_INVALID);
    conn.close(CloseCause::Requested(frame)).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::app::Inbound;
    use crate::connection::ConnectionHandle;
    use crate::id::UserId;
    use crate::transport::{Message, memory};

    /// Admits alice, counting its calls.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Authenticator for Counting {
        async fn authenticate(&self, _: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(AuthOutcome::new(UserId::new("alice").unwrap()))
        }
    }

    /// Records the `since` each connection asked to resume from, then
    /// closes it.
    #[derive(Default)]
    struct Resumes(Mutex<Vec<Option<Position>>>);

    impl Handler for Resumes {
        async fn on_ready(&self, conn: &ConnectionHandle) -> Result<(), CloseFrame> {
            let requested = conn.resume().and_then(|r| r.requested.clone());
            self.0.lock().unwrap().push(requested);
            Err(CloseFrame::new(
                CloseCode::NORMAL,
                CloseReason::from_static("done"),
            ))
        }

        async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn serve_with_auth_closes_a_malformed_since_with_4400_before_authenticating() {
        let hub = Hub::new();
        let (auth, handler) = (Counting::default(), Resumes::default());
        let since_invalid = CloseFrame::new(CloseCode::APP_PROTOCOL_ERROR, SINCE_INVALID);
        for query in [
            "since=e:-1",
            "since=abc",
            "since=e:1&since=e:2",
            "since=%ZZ",
        ] {
            let request = HandshakeRequest::builder().query(query).build().unwrap();
            let (transport, mut client) = memory::pair(4);
            let report = hub
                .serve_with_auth(transport, &request, &auth, &handler)
                .await;
            assert_eq!(report.cause.frame(), Some(since_invalid.clone()), "{query}");
            assert_eq!(report.user, None, "{query}");
            assert_eq!(
                client.recv().await,
                Some(Message::Close(Some(since_invalid.clone()))),
                "{query}"
            );
        }
        assert_eq!(auth.0.load(Ordering::Relaxed), 0, "nothing authenticated");
        assert!(handler.0.lock().unwrap().is_empty());
        assert_eq!(hub.metrics().auth_failures.values().sum::<u64>(), 0);
    }

    #[tokio::test]
    async fn serve_with_auth_carries_a_valid_since_to_the_connection() {
        let hub = Hub::new();
        let (auth, handler) = (Counting::default(), Resumes::default());
        for query in ["room=1&since=e%3A7", "room=1"] {
            let request = HandshakeRequest::builder().query(query).build().unwrap();
            let (transport, _client) = memory::pair(4);
            let report = hub
                .serve_with_auth(transport, &request, &auth, &handler)
                .await;
            assert_eq!(report.user.as_ref().map(UserId::as_str), Some("alice"));
        }
        let asked = Position::parse_since("e:7").unwrap();
        assert_eq!(*handler.0.lock().unwrap(), [Some(asked), None]);
    }
}
