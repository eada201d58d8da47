//! Counters and gauges, read as a [`MetricsSnapshot`].
//!
//! Every event handed to the crate ends in exactly one of: written to a
//! transport, refused to its caller (counted under `refused_*`), or dropped
//! (counted under `dropped_*`). Nothing is lost silently.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::state::ConnectionState;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A point-in-time copy of a hub's metrics.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct MetricsSnapshot {
            /// Live connections in each non-terminal state, and the running
            /// totals of connections that ended `closed` and `failed`, by
            /// state name.
            pub connections: BTreeMap<&'static str, i64>,
            /// Authentication failures by error code.
            pub auth_failures: BTreeMap<&'static str, u64>,
            /// Connections ended, by cause
            /// ([`CloseCause::as_str`](crate::close::CloseCause::as_str):
            /// `peer_closed`, `peer_gone`, `slow_consumer`, …).
            pub closes: BTreeMap<&'static str, u64>,
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            fn fill(&self, s: &mut MetricsSnapshot) {
                $(s.$name = self.$name.load(Ordering::Relaxed);)*
            }
        }

        impl fmt::Display for MetricsSnapshot {
            /// Prometheus text format.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for (state, n) in &self.connections {
                    writeln!(f, "ws_lifecycle_connections{{state=\"{state}\"}} {n}")?;
                }
                for (code, n) in &self.auth_failures {
                    writeln!(f, "ws_lifecycle_auth_failures_total{{code=\"{code}\"}} {n}")?;
                }
                for (cause, n) in &self.closes {
                    writeln!(f, "ws_lifecycle_closes_total{{cause=\"{cause}\"}} {n}")?;
                }
                $(writeln!(f, concat!("ws_lifecycle_", stringify!($name), "_total {}"), self.$name)?;)*
                Ok(())
            }
        }
    };
}

counters! {
    /// Events accepted into a pre-ready buffer.
    events_buffered,
    /// Events accepted into a ready connection's outbound queue.
    events_queued,
    /// Events written to a transport.
    events_written,
    /// Events refused because the connection was closing or closed.
    refused_closed,
    /// Events refused because the pre-ready buffer was full (policy
    /// `Reject`, or `Close` for the event that overflowed it).
    refused_before_ready,
    /// Events refused because the outbound queue was full (policy
    /// `DropNewest`, or `Close` for the event that overflowed it).
    refused_queue_full,
    /// Events refused because, on their own, they were larger than the
    /// connection's whole pre-ready buffer or outbound queue (in bytes):
    /// handed back to the caller, the connection untouched.
    refused_too_large,
    /// Events refused because their addressee was not the connection's
    /// user. Any non-zero value is a bug worth reporting.
    isolation_refusals,
    /// Buffered or queued events dropped to make room (`DropOldest`).
    dropped_overflow,
    /// Buffered or queued events dropped because their connection closed
    /// before they could be written.
    dropped_on_close,
    /// `send_to_user` / `send_to_connection` calls that found no connection.
    routing_misses,
    /// Connections closed because their user hit the per-user limit.
    connection_limit_closes,
    /// Events handed to the backplane for other nodes.
    backplane_published,
    /// Events the backplane could not hand on (down or overloaded).
    backplane_failures,
    /// Events received from other nodes through the backplane.
    backplane_received,
    /// Events the backplane had accepted for other nodes and then lost
    /// (its connection failed under them); their users on the other nodes
    /// are sent a `gap` event.
    backplane_lost,
    /// Messages from the backplane dropped unread: not authentic (bad
    /// signature) or malformed. Any non-zero value deserves a look: a
    /// node with another cluster key, or someone publishing on the
    /// backplane's server.
    backplane_rejected,
    /// `gap` events accepted by connections: they may have missed events
    /// (a backplane outage or loss) and should resync.
    gaps_notified,
    /// Upgrades refused with 503 (too many in flight, connection cap, or
    /// shutting down).
    upgrades_refused,
    /// State transitions the crate attempted that the state machine
    /// refused. Always a bug in the crate (debug builds assert): any
    /// non-zero value is worth reporting.
    illegal_transitions,
}

/// The hub's live metrics.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) c: Counters,
    states: [AtomicI64; ConnectionState::ALL.len()],
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    closes: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Moves one connection from `from` (if any) to `to` in the state gauges.
    pub(crate) fn transition(&self, from: Option<ConnectionState>, to: ConnectionState) {
        if let Some(gauge) = from.and_then(|s| self.states.get(s.index())) {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(gauge) = self.states.get(to.index()) {
            gauge.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an authentication failure under its stable error code.
    pub(crate) fn auth_failure(&self, code: &'static str) {
        *self.auth_failures.lock().entry(code).or_default() += 1;
    }

    /// Counts a connection's end under its cause.
    pub(crate) fn closed(&self, cause: &'static str) {
        *self.closes.lock().entry(cause).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let mut s = MetricsSnapshot::default();
        self.c.fill(&mut s);
        for state in ConnectionState::ALL {
            let n = self
                .states
                .get(state.index())
                .map_or(0, |g| g.load(Ordering::Relaxed));
            s.connections.insert(state.as_str(), n);
        }
        s.auth_failures = self.auth_failures.lock().clone();
        s.closes = self.closes.lock().clone();
        s
    }
}
