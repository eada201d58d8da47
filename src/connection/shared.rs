//! [`ConnShared`]: the part of a connection other tasks reach (the router,
//! the writer, handles), and the [`Context`] every connection of a hub
//! shares.

use std::fmt;
use std::sync::Arc;

use crate::config::HubConfig;
use crate::connection::outbox::{Accepted, Outbox, Refused, Routed};
use crate::connection::report::CloseReport;
use crate::event::WireMode;
use crate::extensions::Extensions;
use crate::id::{ConnectionId, UserId};
use crate::metrics::Metrics;
use crate::state::StateWatch;
use crate::stream::ResumeOutcome;

/// What every connection of a hub reads: its configuration and the metrics
/// it counts into.
#[derive(Debug, Default)]
pub(crate) struct Context {
    pub(crate) config: HubConfig,
    pub(crate) metrics: Metrics,
}

impl Context {
    pub(crate) fn new(config: HubConfig) -> Self {
        Context {
            config,
            metrics: Metrics::default(),
        }
    }
}

/// One authenticated connection as the rest of the crate sees it: who it
/// is, whose it is, and its outbox. It knows its owner, so it is the one
/// place that decides whether an event may enter.
pub(crate) struct ConnShared {
    pub(crate) id: ConnectionId,
    pub(crate) user: UserId,
    pub(crate) wire_mode: WireMode,
    pub(crate) outbox: Outbox,
    pub(crate) state: StateWatch,
    pub(crate) ctx: Arc<Context>,
    /// The verified claims, as the authenticator returned them, kept as
    /// their compact JSON text (`None`: none): a parsed map costs several
    /// times its text for every idle connection, and the application reads
    /// claims rarely (`ConnectionHandle::claims` parses them then).
    pub(crate) claims: Option<Box<str>>,
    /// The application's values, attached while authenticating.
    pub(crate) extensions: Extensions,
    /// How the connection ended, recorded by its last step, so that
    /// `on_close` can still be told when the future driving it is dropped.
    /// Boxed: a word per live connection, the report only once it ends.
    pub(crate) ended: parking_lot::Mutex<Option<Box<CloseReport>>>,
    /// The connection's span, for what other tasks log about it.
    pub(crate) span: tracing::Span,
    /// Where the connection joined its user's stream, set once before the
    /// on-ready hook runs. Boxed: a word per connection.
    pub(crate) resume: std::sync::OnceLock<Box<ResumeOutcome>>,
}

impl fmt::Debug for ConnShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("state", &self.state.state())
            .finish_non_exhaustive()
    }
}

impl ConnShared {
    /// A connection of `user` outside any hub, with id `id`, for the unit
    /// tests of the parts that only need its shared core.
    #[cfg(any(test, loom))]
    pub(crate) fn detached(id: ConnectionId, user: UserId, ctx: Arc<Context>) -> Self {
        ConnShared {
            id,
            user,
            wire_mode: WireMode::Named,
            outbox: Outbox::new(),
            state: crate::state::StateMachine::new().watch(),
            ctx,
            claims: None,
            extensions: Extensions::new(),
            ended: parking_lot::Mutex::new(None),
            span: tracing::Span::none(),
            resume: std::sync::OnceLock::new(),
        }
    }

    /// Queues `event` (or buffers it before Ready) with the next sequence
    /// number, after the first isolation check: an event addressed to
    /// another user or connection is refused and counted, never queued.
    pub(crate) fn push(&self, event: &Arc<Routed>) -> Result<(u64, Accepted), Refused> {
        if !event.is_for(&self.id, &self.user) {
            Metrics::inc(&self.ctx.metrics.c.isolation_refusals);
            tracing::error!(
                parent: &self.span,
                "isolation check refused an event addressed to another user or connection"
            );
            return Err(Refused::Misaddressed);
        }
        let pushed = self.outbox.push(event, &self.ctx.config, &self.ctx.metrics);
        if pushed == Err(Refused::Overflowed) {
            // Logged here, by the sender's task, inside the connection's
            // span: an operator filtering by connection sees why it closed.
            let cause = self.outbox.close_cause();
            let cause = cause.as_ref().map_or("overflow", |c| c.as_str());
            tracing::warn!(parent: &self.span, cause, "outbox full: closing connection");
        }
        pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::outbox::Addressee;
    use crate::event::{Event, EventName};
    use crate::id::{IdGenerator, UlidGenerator};

    fn routed(to: Addressee) -> Arc<Routed> {
        let name = EventName::new("e").unwrap_or_else(|e| panic!("{e}"));
        let event = Event::custom(name, serde_json::json!(1)).encode();
        Arc::new(Routed {
            to,
            off: None,
            event: event.unwrap_or_else(|e| panic!("{e}")),
        })
    }

    /// The first isolation check: an event addressed to another user or
    /// another connection is refused, counted, and takes no sequence number.
    #[test]
    fn a_misaddressed_event_is_refused_counted_and_takes_no_sequence_number() {
        let ids = UlidGenerator::new();
        let (own, other) = (ids.mint_connection_id(), ids.mint_connection_id());
        let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
        let bob = UserId::new("bob").unwrap_or_else(|e| panic!("{e}"));
        let conn = ConnShared::detached(own.clone(), alice.clone(), Arc::new(Context::default()));
        for wrong in [Addressee::User(bob), Addressee::Connection(other)] {
            assert_eq!(conn.push(&routed(wrong)), Err(Refused::Misaddressed));
        }
        assert_eq!(conn.ctx.metrics.snapshot().isolation_refusals, 2);
        assert_eq!(
            conn.push(&routed(Addressee::User(alice))),
            Ok((1, Accepted::Buffered))
        );
        assert_eq!(
            conn.push(&routed(Addressee::Connection(own))),
            Ok((2, Accepted::Buffered))
        );
    }
}
