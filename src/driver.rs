//! Driving one connection's life: [`Hub::serve`], [`Hub::serve_with_auth`]
//! and [`Hub::run`], the reader loop with its heartbeat, rate limit and
//! credential expiry.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::auth::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
use crate::close::CloseCause;
use crate::connection::{Accepted as AcceptedStage, Authenticated, Connection};
use crate::handle::ConnectionHandle;
use crate::handler::{CloseReport, Handler, Inbound};
use crate::hub::Hub;
use crate::limits::Bucket;
use crate::reauth::{Admission, Reauthenticate, reauth_token};
use crate::transport::{Message, Transport, TransportError, TransportStream};

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
    pub async fn serve_with_auth<T: Transport, A: Authenticator, H: Handler>(
        &self,
        transport: T,
        request: &HandshakeRequest,
        authenticator: &A,
        handler: &H,
    ) -> CloseReport {
        let mut conn = self.connect().accept(transport);
        let config = &self.env().config;
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
        self.serve_authenticated(conn, request, authenticator, outcome, handler)
            .await
    }

    /// The adapters' first-message path ([`upgrade::decide`](crate::upgrade::decide)
    /// found no credentials in the handshake and the authenticator allows
    /// them in-band): reads the first message within `auth_timeout`, with
    /// control frames counted against the inbound burst, and holds the
    /// upgrade permit until it is decided.
    pub(crate) async fn serve_first_message<T: Transport, A: Authenticator, H: Handler>(
        &self,
        mut conn: Connection<AcceptedStage<T>>,
        request: &HandshakeRequest,
        authenticator: &A,
        permit: tokio::sync::OwnedSemaphorePermit,
        handler: &H,
    ) -> CloseReport {
        let config = &self.env().config;
        let span = conn.span().clone();
        let authenticated = async {
            let token = first_message_token(&mut conn, config).await?;
            authenticator.authenticate_message(request, &token).await
        };
        let outcome = tokio::time::timeout(config.auth_timeout, authenticated.instrument(span))
            .await
            .unwrap_or_else(|_| Err(AuthError::Timeout.into()));
        drop(permit);
        self.serve_authenticated(conn, request, authenticator, outcome, handler)
            .await
    }

    /// Binds the user of an in-band authentication and serves the
    /// connection (re-authenticating through `authenticator`), or closes it
    /// with the failure's close frame (4401, 4403, 4408 …), counted.
    async fn serve_authenticated<T: Transport, A: Authenticator, H: Handler>(
        &self,
        conn: Connection<AcceptedStage<T>>,
        request: &HandshakeRequest,
        authenticator: &A,
        outcome: Result<AuthOutcome, AuthFailure>,
        handler: &H,
    ) -> CloseReport {
        let admission = Admission::keep(authenticator, request, &outcome);
        match outcome {
            Ok(outcome) => match Box::pin(conn.authenticate(outcome)).await {
                Ok(conn) => {
                    let reauth = admission.as_ref().map(|a| a as &dyn Reauthenticate);
                    self.run_with(conn, handler, reauth).await
                }
                Err(report) => report,
            },
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
        self.run_inner(conn, handler, reauth).instrument(span)
    }

    async fn run_inner<T: Transport, H: Handler>(
        &self,
        conn: Connection<Authenticated<T>>,
        handler: &H,
        reauth: Option<&dyn Reauthenticate>,
    ) -> CloseReport {
        let config = &self.env().config;
        let handle = conn.handle();
        // The one-off steps (the hook, the backplane, the close) are boxed:
        // inline, their states would size this future, which lives as long
        // as the connection, for its whole life (docs/benchmarks.md).
        let hook = Box::pin(AssertUnwindSafe(handler.on_ready(&handle)).catch_unwind());
        let early = match tokio::time::timeout(config.services_ready_timeout, hook).await {
            Err(_) => Some(CloseCause::NotReadyInTime),
            Ok(Err(_)) => Some(CloseCause::HandlerPanicked),
            Ok(Ok(Err(frame))) => Some(CloseCause::Requested(frame)),
            // An orderly close asked for meanwhile (`ConnectionHandle::close`)
            // still becomes Ready, so what was buffered is written before the
            // close frame; any other cause ends the connection here.
            Ok(Ok(Ok(()))) => handle.shared.outbox.close_cause().filter(|c| !c.drains()),
        };
        if let Some(cause) = early {
            let report = Box::pin(conn.close(cause)).await;
            notify_close(handler, &handle, &report);
            return report;
        }
        // Every event published after Ready must reach this connection, so
        // the backplane listens for its user first. A backplane that is down
        // answers at once: local delivery goes on, and the connection gets a
        // `gap` event once the backplane is back.
        if let Some(backplane) = self.backplane() {
            let subscribed = tokio::time::timeout(
                config.services_ready_timeout,
                Box::pin(backplane.ready_for(handle.user())),
            )
            .await;
            if !matches!(subscribed, Ok(Ok(()))) {
                tracing::warn!(
                    "backplane not listening for this user yet: remote events may be missed"
                );
            }
        }
        let mut conn = conn.services_ready().ready();
        let mut expiry = conn.take_expiry();
        let mut bucket = config.inbound_rate.map(Bucket::new);
        // Heartbeat: a ping after `ping_interval` of silence, then the peer
        // has `pong_timeout` to show any sign of life.
        let mut next_ping = Instant::now() + config.ping_interval;
        let mut pong_due: Option<Instant> = None;
        let cause = loop {
            let deadline = expiry
                .as_ref()
                .and_then(|e| e.deadline(config.reauth_ahead, config.expiry_grace));
            let next = tokio::select! {
                biased;
                cause = handle.shared.outbox.closed() => break cause,
                () = until(deadline) => {
                    match expiry.as_mut().and_then(|e| e.on_deadline(&handle)) {
                        Some(cause) => break cause,
                        None => continue,
                    }
                }
                () = tokio::time::sleep_until(pong_due.unwrap_or(next_ping)) => {
                    if pong_due.is_some() {
                        break CloseCause::HeartbeatTimeout;
                    }
                    handle.shared.outbox.request_ping();
                    pong_due = Some(Instant::now() + config.pong_timeout);
                    continue;
                }
                next = conn.stage.stream.next() => next,
            };
            // Anything from the peer is a sign of life.
            pong_due = None;
            next_ping = Instant::now() + config.ping_interval;
            // Control frames count against the inbound rate like messages:
            // a ping flood costs a pong each.
            let control = matches!(next, Some(Ok(Message::Ping(_) | Message::Pong(_))));
            if control && bucket.as_mut().is_some_and(|b| !b.take()) {
                break CloseCause::RateLimited;
            }
            let inbound = match next {
                // The peer went away without a close frame (1006, abnormal
                // closure): not a protocol error of the server's.
                None | Some(Err(TransportError::Closed)) => break CloseCause::PeerGone,
                Some(Err(TransportError::MessageTooBig { .. })) => break CloseCause::MessageTooBig,
                Some(Err(TransportError::Protocol(_))) => break CloseCause::ProtocolError,
                Some(Err(TransportError::InvalidPayload)) => break CloseCause::InvalidPayload,
                Some(Err(_)) => break CloseCause::TransportError,
                Some(Ok(Message::Close(frame))) => break CloseCause::PeerClosed(frame),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) if message.len() > config.max_message_size => {
                    break CloseCause::MessageTooBig;
                }
                Some(Ok(_)) if bucket.as_mut().is_some_and(|b| !b.take()) => {
                    break CloseCause::RateLimited;
                }
                // A `reauth` message is the hub's when it can decide one:
                // credentials that expire, and the authenticator that
                // admitted the connection.
                Some(Ok(Message::Text(text))) => match (expiry.as_mut(), reauth) {
                    (Some(expiry), Some(authenticator)) => match reauth_token(&text) {
                        Some(token) => {
                            // Boxed: rare, and its state would size this
                            // future for the connection's whole life.
                            let decided = Box::pin(expiry.reauthenticate(
                                &token,
                                authenticator,
                                config.auth_timeout,
                                &handle,
                                &self.env().metrics,
                            ));
                            match decided.await {
                                Ok(()) => continue,
                                Err(cause) => break cause,
                            }
                        }
                        None => Inbound::Text(text),
                    },
                    _ => Inbound::Text(text),
                },
                Some(Ok(Message::Binary(bytes))) => Inbound::Binary(bytes),
            };
            match AssertUnwindSafe(handler.on_message(&handle, inbound))
                .catch_unwind()
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(frame)) => break CloseCause::Requested(frame),
                Err(_) => break CloseCause::HandlerPanicked,
            }
        };
        let report = Box::pin(conn.close(cause)).await;
        notify_close(handler, &handle, &report);
        report
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn notify_close<H: Handler>(handler: &H, handle: &ConnectionHandle, report: &CloseReport) {
    let closed = std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_close(handle, report)));
    if closed.is_err() {
        tracing::error!("on_close callback panicked");
    }
}

/// Reads the first data message of a connection that authenticates in-band
/// and returns its token. Pings and pongs before it are skipped, but count
/// against the inbound burst (a socket that never authenticates cannot make
/// the server answer pongs without limit); anything else fails.
async fn first_message_token<T: Transport>(
    conn: &mut Connection<AcceptedStage<T>>,
    config: &crate::config::HubConfig,
) -> Result<String, AuthFailure> {
    let malformed = || AuthError::ProtocolInvalid("the first message is not an auth message");
    let mut bucket = config.inbound_rate.map(Bucket::new);
    loop {
        match conn.stage.stream.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_)))
                if bucket.as_mut().is_some_and(|b| !b.take()) =>
            {
                return Err(AuthError::ProtocolInvalid(
                    "control frames faster than the inbound rate before authenticating",
                )
                .into());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(text))) if text.len() <= config.max_message_size => {
                return crate::reauth::auth_token(&text).ok_or_else(|| malformed().into());
            }
            Some(Ok(_)) => return Err(malformed().into()),
            None | Some(Err(_)) => return Err(AuthError::TokenMissing.into()),
        }
    }
}
