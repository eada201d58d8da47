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
    /// The verified claims, as the authenticator returned them (a JSON
    /// object; empty when there were none).
    pub(crate) claims: serde_json::Value,
    /// The application's values, attached while authenticating.
    pub(crate) extensions: Extensions,
    /// How the connection ended, recorded by its last step, so that
    /// `on_close` can still be told when the future driving it is dropped.
    pub(crate) ended: parking_lot::Mutex<Option<CloseReport>>,
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
    /// Queues `event` (or buffers it before Ready) with the next sequence
    /// number, after the first isolation check: an event addressed to
    /// another user or connection is refused and counted, never queued.
    pub(crate) fn push(&self, event: &Arc<Routed>) -> Result<(u64, Accepted), Refused> {
        if !event.is_for(&self.id, &self.user) {
            Metrics::inc(&self.ctx.metrics.c.isolation_refusals);
            tracing::error!(
                connection_id = %self.id,
                "isolation check refused an event addressed to another user or connection"
            );
            return Err(Refused::Misaddressed);
        }
        self.outbox.push(event, &self.ctx.config, &self.ctx.metrics)
    }
}
