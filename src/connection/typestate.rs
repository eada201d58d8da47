//! [`Connection<S>`]: the owning side of one connection, as a typestate
//! (see the [module docs](super)).

use std::sync::Arc;

use tracing::Instrument;

use crate::auth::{AuthError, AuthOutcome};
use crate::close::{CloseCause, CloseCode, CloseFrame, CloseReason};
use crate::connection::expiry::Expiry;
use crate::connection::handle::{ConnectionHandle, SendError};
use crate::connection::outbox::{Outbox, Routed};
use crate::connection::owner::{EnterError, Owner};
use crate::connection::report::CloseReport;
use crate::connection::shared::{ConnShared, Context};
use crate::connection::span::{self, Origin};
use crate::connection::writer;
use crate::event::Event;
use crate::id::{ConnectionId, UserId};
use crate::metrics::Metrics;
use crate::state::{ConnectionState, StateMachine, StateWatch, Transition};
use crate::stream::Position;
use crate::transport::{Transport, TransportSink};

mod sealed {
    pub trait Sealed {}
}

/// A stage of a [`Connection`]. Sealed: the stages below are all there is.
pub trait Stage: sealed::Sealed {}

/// Id minted; no transport yet (the upgrade has not happened).
#[derive(Debug)]
pub struct Connecting;

/// The transport is open; no user bound yet.
pub struct Accepted<T: Transport> {
    sink: T::Sink,
    pub(super) stream: T::Stream,
}

/// A user is bound and the connection is in the routing table; events
/// addressed to it are buffered.
pub struct Authenticated<T: Transport> {
    pub(super) shared: Arc<ConnShared>,
    sink: T::Sink,
    stream: T::Stream,
    /// Where the client asks to resume its user's stream.
    pub(super) since: Option<Position>,
}

/// The application's on-ready hook finished; events are still buffered.
pub struct ServicesReady<T: Transport> {
    shared: Arc<ConnShared>,
    sink: T::Sink,
    stream: T::Stream,
}

/// Events flow: the writer task owns the write half.
pub struct Ready<T: Transport> {
    shared: Arc<ConnShared>,
    pub(super) stream: T::Stream,
}

impl sealed::Sealed for Connecting {}
impl Stage for Connecting {}
impl<T: Transport> sealed::Sealed for Accepted<T> {}
impl<T: Transport> Stage for Accepted<T> {}
impl<T: Transport> sealed::Sealed for Authenticated<T> {}
impl<T: Transport> Stage for Authenticated<T> {}
impl<T: Transport> sealed::Sealed for ServicesReady<T> {}
impl<T: Transport> Stage for ServicesReady<T> {}
impl<T: Transport> sealed::Sealed for Ready<T> {}
impl<T: Transport> Stage for Ready<T> {}

/// One connection, owned by the code driving it. See the [module
/// docs](crate::connection).
pub struct Connection<S: Stage> {
    pub(super) core: Core,
    pub(super) stage: S,
}

impl<S: Stage> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.core.id)
            .field("state", &self.core.sm.state())
            .finish_non_exhaustive()
    }
}

/// What every stage carries. Its `Drop` is the exit path of last resort.
pub(super) struct Core {
    pub(super) owner: Arc<dyn Owner>,
    pub(super) ctx: Arc<Context>,
    id: ConnectionId,
    sm: StateMachine,
    span: tracing::Span,
    shared: Option<Arc<ConnShared>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    expiry: Option<Expiry>,
    /// The user this connection is counted for cluster-wide, until released.
    counted: Option<UserId>,
}

impl Core {
    /// Moves the state machine on. Every call site only asks for a
    /// transition its stage makes legal, so a refusal is a bug in the
    /// crate: asserted in debug builds, counted and logged in release (the
    /// state is left as it was, as the machine guarantees).
    fn advance(&mut self, to: ConnectionState, reason: &'static str) {
        match self.sm.transition(to, reason) {
            Ok(from) => {
                self.ctx.metrics.transition(from, to, &self.sm);
                tracing::debug!(parent: &self.span, %from, %to, reason, "state transition");
            }
            Err(error) => {
                Metrics::inc(&self.ctx.metrics.c.illegal_transitions);
                tracing::error!(parent: &self.span, %error, reason, "illegal state transition");
                debug_assert!(false, "illegal state transition: {error}");
            }
        }
    }

    fn unroute(&self) {
        if let Some(shared) = &self.shared {
            self.owner.leave(shared);
        }
    }

    /// The synchronous end of every exit path: leave the routing table, stop
    /// the writer, count what was never written, reach a terminal state.
    fn finish(&mut self, cause: &CloseCause) -> CloseReport {
        self.unroute();
        if let Some(user) = self.counted.take() {
            self.owner.release(&user);
        }
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
        let undelivered = match &self.shared {
            Some(shared) => shared.outbox.discard(&self.ctx.metrics),
            None => 0,
        };
        if !self.sm.state().is_terminal() {
            // Both targets are legal from every non-terminal state (Closed
            // via Closing).
            if cause.is_failure() {
                self.advance(ConnectionState::Failed, cause.as_str());
            } else {
                if self.sm.state() != ConnectionState::Closing {
                    self.advance(ConnectionState::Closing, cause.as_str());
                }
                self.advance(ConnectionState::Closed, cause.as_str());
            }
            self.ctx.metrics.closed(cause);
            self.owner.ended();
        }
        tracing::info!(parent: &self.span, cause = cause.as_str(), undelivered, "connection ended");
        let report = CloseReport {
            connection_id: self.id.clone(),
            user: self.shared.as_ref().map(|s| s.user.clone()),
            cause: cause.clone(),
            state: self.sm.state(),
            undelivered,
        };
        if let Some(shared) = &self.shared {
            *shared.ended.lock() = Some(Box::new(report.clone()));
        }
        report
    }

    /// Sends the close frame for `cause` (if any) on a sink the connection
    /// still owns, then finishes.
    async fn close_with<K: TransportSink>(
        &mut self,
        sink: &mut K,
        cause: CloseCause,
    ) -> CloseReport {
        let cause = self
            .shared
            .as_ref()
            .and_then(|s| {
                s.outbox.request_close(cause.clone());
                s.outbox.close_cause()
            })
            .unwrap_or(cause);
        self.unroute();
        if !cause.is_failure() {
            self.advance(ConnectionState::Closing, cause.as_str());
        }
        if cause != CloseCause::Terminated {
            let timeout = self.ctx.config.write_timeout;
            let _ = tokio::time::timeout(timeout, sink.close(cause.frame())).await;
        }
        self.finish(&cause)
    }
}

/// The claims as compact JSON text, `None` when there are none. A map of
/// JSON values always serialises, so the fallback never happens in practice.
fn compact_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Option<Box<str>> {
    if claims.is_empty() {
        return None;
    }
    serde_json::to_string(claims)
        .ok()
        .map(String::into_boxed_str)
}

impl Drop for Core {
    fn drop(&mut self) {
        if !self.sm.state().is_terminal() {
            self.finish(&CloseCause::Dropped);
        }
    }
}

impl<S: Stage> Connection<S> {
    /// The connection's id: minted first, never replaced.
    pub fn id(&self) -> &ConnectionId {
        &self.core.id
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.core.sm.state()
    }

    /// The last transitions, oldest first (at most
    /// [`HISTORY_LEN`](crate::state::HISTORY_LEN)).
    pub fn history(&self) -> impl ExactSizeIterator<Item = &Transition> {
        self.core.sm.history()
    }

    /// A watch other tasks can use to wait for readiness.
    pub fn watch(&self) -> StateWatch {
        self.core.sm.watch()
    }

    /// The connection's tracing span, `ws_connection`: it carries
    /// `connection_id`, `adapter` (`axum`, `warp`, `tungstenite`, or `none`
    /// for a connection driven by hand), `peer` (the peer's address, when
    /// the adapter knew it) and, once bound, `user_id`. The connection's
    /// steps and its tasks (reader, writer) log inside it.
    pub fn span(&self) -> &tracing::Span {
        &self.core.span
    }
}

impl Connection<Connecting> {
    /// A connection of `owner`'s, which already counts it as live, from
    /// `origin` (its span's `adapter` and `peer`).
    pub(crate) fn new(owner: Arc<dyn Owner>, id: ConnectionId, origin: Origin) -> Self {
        let span = span::new(&id, origin);
        let ctx = Arc::clone(owner.context());
        ctx.metrics.opened();
        Connection {
            core: Core {
                owner,
                ctx,
                id,
                sm: StateMachine::new(),
                span,
                shared: None,
                writer: None,
                expiry: None,
                counted: None,
            },
            stage: Connecting,
        }
    }

    /// The upgrade completed: take the transport.
    pub fn accept<T: Transport>(mut self, transport: T) -> Connection<Accepted<T>> {
        let (sink, stream) = transport.split();
        self.core.advance(ConnectionState::Accepted, "upgraded");
        Connection {
            core: self.core,
            stage: Accepted { sink, stream },
        }
    }

    /// Authentication failed before the upgrade: the connection ends
    /// `Failed` without ever having had a transport, and the failure is
    /// counted under its code. The adapter answers with
    /// [`AuthError::http_status`].
    pub fn refuse(mut self, error: &AuthError) -> CloseReport {
        self.core.ctx.metrics.auth_failure(error.code());
        let cause = CloseCause::AuthFailed(error.close_frame());
        self.core.finish(&cause)
    }
}

impl<T: Transport> Connection<Accepted<T>> {
    /// Binds the authenticated user and enters the routing table: from now
    /// on events addressed to the user are buffered for this connection.
    ///
    /// # Errors
    ///
    /// When the user already has
    /// [`max_connections_per_user`](crate::config::HubConfig::max_connections_per_user)
    /// connections and the policy refuses the newest, the connection is
    /// closed with 4429 and its report returned.
    pub async fn authenticate(
        mut self,
        outcome: AuthOutcome,
    ) -> Result<Connection<Authenticated<T>>, CloseReport> {
        let ctx = Arc::clone(&self.core.ctx);
        match self.core.owner.admit(&outcome.user).await {
            Some(false) => {
                Metrics::inc(&ctx.metrics.c.connection_limit_closes);
                let cause = CloseCause::ConnectionLimit;
                return Err(self.core.close_with(&mut self.stage.sink, cause).await);
            }
            Some(true) => self.core.counted = Some(outcome.user.clone()),
            None => {}
        }
        let shared = Arc::new(ConnShared {
            id: self.core.id.clone(),
            user: outcome.user,
            wire_mode: outcome.wire_mode.unwrap_or(ctx.config.wire_mode),
            outbox: Outbox::new(),
            state: self.core.sm.watch(),
            ctx: Arc::clone(&ctx),
            claims: compact_claims(&outcome.claims),
            extensions: outcome.extensions,
            ended: parking_lot::Mutex::new(None),
            span: self.core.span.clone(),
            resume: std::sync::OnceLock::new(),
        });
        match self.core.owner.enter(&shared) {
            Ok(()) => {}
            Err(EnterError::LimitReached) => {
                Metrics::inc(&ctx.metrics.c.connection_limit_closes);
                let cause = CloseCause::ConnectionLimit;
                return Err(self.core.close_with(&mut self.stage.sink, cause).await);
            }
            Err(EnterError::DuplicateId) => {
                // The id generator repeated an id: routing by it could cross
                // users, so the connection is refused (1011: a server bug).
                tracing::error!(parent: &self.core.span, "the id generator minted a connection id already in use");
                let frame = CloseFrame::new(
                    CloseCode::INTERNAL_ERROR,
                    CloseReason::from_static("duplicate_connection_id"),
                );
                let cause = CloseCause::Requested(frame);
                return Err(self.core.close_with(&mut self.stage.sink, cause).await);
            }
        }
        self.core.expiry = outcome.expires_at.map(Expiry::new);
        self.core
            .span
            .record("user_id", tracing::field::display(&shared.user));
        self.core.shared = Some(Arc::clone(&shared));
        self.core.advance(ConnectionState::Authenticated, "auth_ok");
        Ok(Connection {
            core: self.core,
            stage: Authenticated {
                shared,
                sink: self.stage.sink,
                stream: self.stage.stream,
                since: outcome.since,
            },
        })
    }

    /// Authentication failed after the upgrade: counts the failure under
    /// its code and closes with [`AuthError::close_frame`] (4401, 4403, …),
    /// so a browser learns why. The connection never entered the routing
    /// table.
    pub async fn reject(self, error: &AuthError) -> CloseReport {
        self.core.ctx.metrics.auth_failure(error.code());
        self.close(CloseCause::AuthFailed(error.close_frame()))
            .await
    }

    /// Closes the connection and returns its report.
    pub async fn close(mut self, cause: CloseCause) -> CloseReport {
        self.core.close_with(&mut self.stage.sink, cause).await
    }
}

impl<T: Transport> Connection<Authenticated<T>> {
    /// A handle for the application and other tasks.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            shared: Arc::clone(&self.stage.shared),
        }
    }

    /// The application's services are ready.
    pub fn services_ready(mut self) -> Connection<ServicesReady<T>> {
        self.core
            .advance(ConnectionState::ServicesReady, "services_ready");
        Connection {
            core: self.core,
            stage: ServicesReady {
                shared: self.stage.shared,
                sink: self.stage.sink,
                stream: self.stage.stream,
            },
        }
    }

    /// Closes the connection and returns its report.
    pub async fn close(mut self, cause: CloseCause) -> CloseReport {
        self.core.close_with(&mut self.stage.sink, cause).await
    }
}

impl<T: Transport> Connection<ServicesReady<T>> {
    /// A handle for the application and other tasks.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            shared: Arc::clone(&self.stage.shared),
        }
    }

    /// Becomes Ready: the writer task takes the write half and flushes the
    /// pre-ready buffer, in order, before anything emitted later: the
    /// connection's own events first, then the events of its user's stream
    /// that arrived meanwhile.
    ///
    /// # Panics
    ///
    /// Spawns the writer with [`tokio::spawn`], so it must be called within
    /// a Tokio runtime (as every async entry point of the crate is).
    pub fn ready(self) -> Connection<Ready<T>> {
        self.ready_after(Vec::new(), 0)
    }

    /// [`ready`](Connection::ready) for a connection that joined its
    /// user's stream at offset `after`: `replay` (a resume's missed events)
    /// goes first, then the held events past it.
    pub(super) fn ready_after(
        mut self,
        replay: Vec<Arc<Routed>>,
        after: u64,
    ) -> Connection<Ready<T>> {
        let shared = self.stage.shared;
        // In this order, so both hold: whoever sees Ready (`wait_ready`) and
        // then sends finds the event queued for writing, not buffered
        // (`tests/cluster_cases`: the send_to_users case saw that race on a
        // multi-thread runtime), and nothing is written before the state
        // says Ready (the writer starts last; what was queued meanwhile
        // left it a wake-up).
        shared.outbox.open(replay, after);
        self.core.advance(ConnectionState::Ready, "ready");
        let task =
            writer::run(Arc::clone(&shared), self.stage.sink).instrument(self.core.span.clone());
        self.core.writer = Some(tokio::spawn(task));
        Connection {
            core: self.core,
            stage: Ready {
                shared,
                stream: self.stage.stream,
            },
        }
    }

    /// Closes the connection and returns its report.
    pub async fn close(mut self, cause: CloseCause) -> CloseReport {
        self.core.close_with(&mut self.stage.sink, cause).await
    }
}

impl<T: Transport> Connection<Ready<T>> {
    /// A handle for the application and other tasks.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            shared: Arc::clone(&self.stage.shared),
        }
    }

    /// The credentials' expiry, for the reader loop.
    pub(super) fn take_expiry(&mut self) -> Option<Expiry> {
        self.core.expiry.take()
    }

    /// Sends `event` on this connection; returns its sequence number.
    ///
    /// # Errors
    ///
    /// As [`ConnectionHandle::emit`].
    pub fn send(&self, event: Event) -> Result<u64, SendError<Event>> {
        self.handle().emit(event)
    }

    /// Closes the connection: no new events are accepted; queued ones are
    /// written first when `cause` is an orderly close (at most
    /// [`close_timeout`](crate::config::HubConfig::close_timeout)), then the
    /// close frame. Returns the report.
    pub async fn close(mut self, cause: CloseCause) -> CloseReport {
        let outbox = &self.stage.shared.outbox;
        outbox.request_close(cause.clone());
        let cause = outbox.close_cause().unwrap_or(cause);
        self.core.unroute();
        self.core.advance(ConnectionState::Closing, cause.as_str());
        // The handle stays in `core` while we wait: if this future is
        // dropped, `Core::drop` -> `finish` aborts the writer.
        if let Some(writer) = self.core.writer.as_mut() {
            let timeout = self.core.ctx.config.close_timeout;
            let drained = tokio::select! {
                finished = tokio::time::timeout(timeout, &mut *writer) => finished.is_ok(),
                // A forced close (shutdown past its deadline) stops waiting
                // for a writer stuck on a peer that does not read.
                () = self.stage.shared.outbox.forced() => false,
            };
            if !drained {
                // Await the aborted task too: its batch guard must have
                // counted what it never wrote before the report is made.
                writer.abort();
                let _ = writer.await;
            }
        }
        self.core.finish(&cause)
    }
}
