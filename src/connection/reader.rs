//! The reader loop of a Ready connection: inbound messages to the
//! application, the heartbeat, the inbound rate limit, credential expiry
//! and in-band re-authentication; and the first-message read of in-band
//! authentication.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::time::Instant;

use crate::app::{Handler, Inbound};
use crate::auth::reauth::Reauthenticate;
use crate::auth::{AuthError, AuthFailure};
use crate::close::CloseCause;
use crate::config::HubConfig;
use crate::connection::handle::ConnectionHandle;
use crate::connection::outbox::Routed;
use crate::connection::owner::Owner;
use crate::connection::report::CloseReport;
use crate::connection::typestate::{Accepted, Authenticated, Connection};
use crate::event::control::ClientControl;
use crate::limits::Bucket;
use crate::metrics::Metrics;
use crate::stream::{self, Position, ResumeOutcome};
use crate::transport::{Message, Transport, TransportError, TransportStream};

impl<T: Transport> Connection<Authenticated<T>> {
    /// Drives the connection to its end: the on-ready hook (bounded by
    /// `services_ready_timeout`), Ready, the reader loop, the close, and
    /// `on_close`. `reauth`: the authenticator that admitted it, for
    /// in-band re-authentication (none: `reauth` messages are the
    /// handler's).
    pub(crate) async fn drive<H: Handler>(
        self,
        handler: &H,
        reauth: Option<&dyn Reauthenticate>,
    ) -> CloseReport {
        let mut conn = self;
        let ctx = Arc::clone(&conn.core.ctx);
        let owner = Arc::clone(&conn.core.owner);
        let config = &ctx.config;
        let handle = conn.handle();
        // The one-off steps (joining the stream, the hook, the close) are
        // boxed: inline, their states would size this future, which lives
        // as long as the connection, for its whole life
        // (docs/benchmarks.md).
        let since = conn.stage.since.take();
        let (replay, after) = Box::pin(join_stream(&*owner, &handle, since)).await;
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
            return Box::pin(conn.close(cause)).await;
        }
        let mut conn = conn.services_ready().ready_after(replay, after);
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
                    (Some(expiry), Some(authenticator)) => match ClientControl::reauth_token(&text)
                    {
                        Some(token) => {
                            // Boxed: rare, and its state would size this
                            // future for the connection's whole life.
                            let decided = Box::pin(expiry.reauthenticate(
                                &token,
                                authenticator,
                                config.auth_timeout,
                                &handle,
                                &ctx.metrics,
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
        Box::pin(conn.close(cause)).await
    }

    /// [`drive`](Self::drive), then [`Handler::on_close`], exactly once on
    /// every exit path: also when this future is dropped before the end
    /// (then after the connection has been dropped, with its report, cause
    /// `dropped`).
    ///
    /// The driving future stays inline (boxing it cost ~1.7 KiB per idle
    /// connection: its state no longer shared room with the upgrade's). The
    /// order of drops does the work instead: the guard is declared before
    /// the driving future, so when this future is dropped mid-await the
    /// driving future (and the connection, whose `Drop` records the report)
    /// goes first, then the guard, which finds the report.
    pub(crate) async fn serve<H: Handler>(
        self,
        handler: &H,
        reauth: Option<&dyn Reauthenticate>,
    ) -> CloseReport {
        let mut guard = OnClose {
            handler,
            handle: self.handle(),
            told: false,
        };
        let report = self.drive(handler, reauth).await;
        guard.tell(&report);
        report
    }
}

/// Tells the application how a connection ended, once: when its driving
/// future returns, or, if that future is dropped first, from the report
/// the connection recorded as it was dropped.
struct OnClose<'a, H: Handler> {
    handler: &'a H,
    handle: ConnectionHandle,
    told: bool,
}

impl<H: Handler> OnClose<'_, H> {
    fn tell(&mut self, report: &CloseReport) {
        if !std::mem::replace(&mut self.told, true) {
            notify_close(self.handler, &self.handle, report);
        }
    }
}

impl<H: Handler> Drop for OnClose<'_, H> {
    fn drop(&mut self) {
        if self.told {
            return;
        }
        let report = self.handle.shared.ended.lock().take();
        if let Some(report) = report {
            self.tell(&report);
        }
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
pub(crate) async fn first_message_token<T: Transport>(
    conn: &mut Connection<Accepted<T>>,
    config: &HubConfig,
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
                return match ClientControl::auth_token(&text) {
                    Some(token) => Ok(token),
                    None => Err(malformed().into()),
                };
            }
            Some(Ok(_)) => return Err(malformed().into()),
            None | Some(Err(_)) => return Err(AuthError::TokenMissing.into()),
        }
    }
}

/// Joins the connection's user's stream before its on-ready hook: listen
/// first (the backplane confirms the user's subscription; the connection is
/// already in the routing table, so local events are held), then read the
/// stream's position and, with `since`, the history after it. Records the
/// [`ResumeOutcome`] on the connection and returns what to replay and the
/// offset after which held live events follow.
async fn join_stream(
    owner: &dyn Owner,
    handle: &ConnectionHandle,
    since: Option<Position>,
) -> (Vec<Arc<Routed>>, u64) {
    // Every event published after Ready must reach this connection, so the
    // backplane listens for its user first. A backplane that is down
    // answers at once: local delivery goes on, and the connection gets a
    // `gap` event once the backplane is back.
    if !owner.listening(handle.user()).await {
        tracing::warn!("backplane not listening for this user yet: remote events may be missed");
    }
    let joined = owner.join_stream(handle.user(), since.as_ref()).await;
    let asked = since
        .as_ref()
        .filter(|since| since.epoch == joined.position.epoch)
        .map(|since| since.offset);
    let history = joined.history.map(|events| {
        events
            .into_iter()
            .map(|r| (r.off.map_or(0, std::num::NonZeroU64::get), r))
            .collect()
    });
    let mut replay = stream::replay(asked, joined.position.offset, history);
    let mut position = joined.position;
    if !replay.recovered {
        // Not resumed: the connection starts where it started listening.
        // What reached it since (held for Ready) is its to deliver, though
        // it was published before the stream was read.
        if let Some(first) = handle.shared.outbox.first_held() {
            replay.after = replay.after.min(first.saturating_sub(1));
        }
        position.offset = replay.after;
    }
    if since.is_some() {
        let c = &handle.shared.ctx.metrics.c;
        if replay.recovered {
            Metrics::inc(&c.resumes_recovered);
            Metrics::add(&c.events_replayed, replay.replayed);
        } else {
            Metrics::inc(&c.resumes_not_recovered);
        }
        tracing::info!(
            recovered = replay.recovered,
            replayed = replay.replayed,
            "resume"
        );
    }
    let outcome = ResumeOutcome {
        requested: since,
        position,
        recovered: replay.recovered,
        replayed: replay.replayed,
    };
    let _ = handle.shared.resume.set(Box::new(outcome));
    let events = replay.events.into_iter().map(|(_, r)| r).collect();
    (events, replay.after)
}
