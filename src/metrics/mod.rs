//! Counters, gauges and histograms: read in process as a
//! [`MetricsSnapshot`], and, with the `metrics` feature, emitted through the
//! [`metrics`](https://docs.rs/metrics) facade to whatever exporter the
//! application installs (the names are in `metrics::names`, with the
//! feature, and in `docs/observability.md`).
//!
//! Every event handed to the crate ends in exactly one of: written to a
//! transport, refused to its caller (counted under `refused_*`), or dropped
//! (counted under `dropped_*`). Nothing is lost silently.
//!
//! # The `metrics` facade
//!
//! A hub registers its handles once, when it is built, with the recorder
//! current at that moment: install the exporter's recorder before building
//! the hub. Each count is kept in the snapshot and sent to the facade from
//! the same call, so the two never disagree. Without the feature nothing is
//! registered or emitted and the counting costs what it did before.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::close::CloseCause;
use crate::state::{ConnectionState, StateMachine};

#[cfg(feature = "metrics")]
mod facade;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod names;
#[cfg(feature = "redis")]
mod timer;

#[cfg(feature = "redis")]
pub(crate) use timer::PublishTimer;

/// One counter: the snapshot's value and, with the `metrics` feature, the
/// facade's handle (a no-op handle for counts the facade does not carry).
#[derive(Debug)]
pub(crate) struct Count {
    n: AtomicU64,
    #[cfg(feature = "metrics")]
    facade: ::metrics::Counter,
}

impl Count {
    fn new(#[cfg_attr(not(feature = "metrics"), allow(unused_variables))] name: &str) -> Self {
        Count {
            n: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            facade: facade::counter_for(name),
        }
    }

    fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug)]
        pub(crate) struct Counters {
            $(pub(crate) $name: Count,)*
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
            fn new() -> Self {
                Counters {
                    $($name: Count::new(stringify!($name)),)*
                }
            }

            fn fill(&self, s: &mut MetricsSnapshot) {
                $(s.$name = self.$name.get();)*
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
    /// Connections that asked to resume (`since`) and got every missed
    /// event replayed.
    resumes_recovered,
    /// Connections that asked to resume and could not be (another epoch,
    /// history trimmed or off, ahead of the stream, backplane unreachable):
    /// told `recovered: false`, nothing replayed.
    resumes_not_recovered,
    /// Events replayed to resuming connections.
    events_replayed,
    /// Upgrades refused with 503 (too many in flight, connection cap, or
    /// shutting down).
    upgrades_refused,
    /// State transitions the crate attempted that the state machine
    /// refused. Always a bug in the crate (debug builds assert): any
    /// non-zero value is worth reporting.
    illegal_transitions,
}

/// The hub's live metrics.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) c: Counters,
    states: [AtomicI64; ConnectionState::ALL.len()],
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    closes: Mutex<BTreeMap<&'static str, u64>>,
    #[cfg(feature = "metrics")]
    facade: facade::Facade,
}

impl Default for Metrics {
    /// Registers the facade's handles (with the `metrics` feature) with the
    /// recorder current on this thread.
    fn default() -> Self {
        Metrics {
            c: Counters::new(),
            states: Default::default(),
            auth_failures: Mutex::default(),
            closes: Mutex::default(),
            #[cfg(feature = "metrics")]
            facade: facade::Facade::register(),
        }
    }
}

impl Metrics {
    pub(crate) fn inc(counter: &Count) {
        counter.n.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        counter.facade.increment(1);
    }

    pub(crate) fn add(counter: &Count, n: u64) {
        if n > 0 {
            counter.n.fetch_add(n, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            counter.facade.increment(n);
        }
    }

    /// A connection was minted: it enters `Connecting`.
    pub(crate) fn opened(&self) {
        self.enter(ConnectionState::Connecting);
        #[cfg(feature = "metrics")]
        self.facade.opened();
    }

    /// Moves one connection from `from` to `to` in the state gauges;
    /// `machine` (already in `to`) says how long the connection has lived,
    /// for the time-to-Ready and duration histograms.
    pub(crate) fn transition(
        &self,
        from: ConnectionState,
        to: ConnectionState,
        #[cfg_attr(not(feature = "metrics"), allow(unused_variables))] machine: &StateMachine,
    ) {
        if let Some(gauge) = self.states.get(from.index()) {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        self.enter(to);
        #[cfg(feature = "metrics")]
        self.facade.transition(from, to, machine);
    }

    fn enter(&self, state: ConnectionState) {
        if let Some(gauge) = self.states.get(state.index()) {
            gauge.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an authentication failure under its stable error code.
    pub(crate) fn auth_failure(&self, code: &'static str) {
        *self.auth_failures.lock().entry(code).or_default() += 1;
        #[cfg(feature = "metrics")]
        self.facade.auth_failure(code);
    }

    /// Counts a connection's end under its cause (and, in the facade, the
    /// close code sent).
    pub(crate) fn closed(&self, cause: &CloseCause) {
        *self.closes.lock().entry(cause.as_str()).or_default() += 1;
        #[cfg(feature = "metrics")]
        self.facade.closed(cause);
    }

    /// The writer took a batch of `batch` events from an outbox that held
    /// `depth` (the batch included). Only the facade records it.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub(crate) fn write_batch(&self, depth: usize, batch: usize) {
        #[cfg(feature = "metrics")]
        self.facade.write_batch(depth, batch);
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
