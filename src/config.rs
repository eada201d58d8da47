//! Limits, timeouts and policies, with documented defaults.
//!
//! Every field is public and every struct `#[non_exhaustive]`: start from
//! `Default` and change what you need.
//!
//! ```
//! use ws_lifecycle::config::{HubConfig, ConnectionLimitPolicy};
//!
//! let mut config = HubConfig::default();
//! config.max_connections_per_user = 4;
//! config.connection_limit_policy = ConnectionLimitPolicy::EvictOldest;
//! ```

use std::time::Duration;

use crate::event::WireMode;
use crate::limits::{PING_INTERVAL, PONG_TIMEOUT, RateLimit};
use crate::stream::HistoryConfig;

/// A bound on a per-connection buffer, in events and in bytes; whichever is
/// reached first applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferLimit {
    /// Most events held.
    pub max_events: usize,
    /// Most bytes held (approximate encoded size).
    pub max_bytes: usize,
}

impl BufferLimit {
    /// A limit of `max_events` events and `max_bytes` bytes.
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        BufferLimit {
            max_events,
            max_bytes,
        }
    }
}

impl Default for BufferLimit {
    /// 1,000 events or 1 MiB: Centrifuge bounds a client's queue at 1 MiB;
    /// 1,000 events is several minutes of a chatty agent run.
    fn default() -> Self {
        BufferLimit::new(1_000, 1 << 20)
    }
}

/// What happens when the pre-ready buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PreReadyOverflow {
    /// The new event is refused: the caller gets
    /// [`SendError::Full`](crate::SendError::Full) and the connection lives.
    Reject,
    /// The oldest buffered event is dropped (and counted) to make room: the
    /// client sees a gap in sequence numbers.
    DropOldest,
    /// The connection is closed with 1013 (try again later): a client that
    /// cannot become ready while events pile up is better reconnected.
    #[default]
    Close,
}

/// What happens when a ready connection's outbound queue is full, or a write
/// stalls past [`HubConfig::write_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowConsumerPolicy {
    /// Close with 4409 (slow consumer): the client reconnects and resyncs.
    /// Centrifuge does the same (its code 3008).
    #[default]
    Close,
    /// Drop the oldest queued event (counted); the client sees a gap.
    DropOldest,
    /// Refuse the new event (counted, reported to the sender).
    DropNewest,
}

/// What happens when a user already has
/// [`HubConfig::max_connections_per_user`] connections on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConnectionLimitPolicy {
    /// The new connection is closed with 4429.
    #[default]
    RefuseNewest,
    /// The user's oldest connection is closed with 4429 to make room.
    EvictOldest,
}

/// Configuration of a [`Hub`](crate::Hub).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// Bound on events emitted before the connection is ready.
    /// Default: 1,000 events or 1 MiB.
    pub pre_ready_buffer: BufferLimit,
    /// What happens when the pre-ready buffer is full. Default: close 1013.
    pub pre_ready_overflow: PreReadyOverflow,
    /// Bound on events queued for a ready connection's writer.
    /// Default: 1,000 events or 1 MiB (Centrifuge: 1 MiB; socketioxide: 128
    /// packets).
    pub outbound_queue: BufferLimit,
    /// What happens when the outbound queue is full. Default: close 4409.
    pub slow_consumer: SlowConsumerPolicy,
    /// Longest the transport may go without accepting a message (or
    /// finishing a flush) while the writer has something for it, before the
    /// connection is closed as a slow consumer (4409). A burst written as
    /// one batch gets this much per message, not in all: a peer on a slow
    /// link that keeps reading is never taken for one that stopped.
    /// Default: 1 s.
    pub write_timeout: Duration,
    /// Longest the HTTP upgrade request may take to arrive, in total (a
    /// slowloris defence). The tokio-tungstenite adapter enforces it itself;
    /// axum and warp apps pass it to `adapters::axum::serve` or
    /// `adapters::warp::serve` with `ServeConfig::from(hub.config())`.
    /// Default: 10 s.
    pub upgrade_timeout: Duration,
    /// Longest authentication may take once the transport is open
    /// ([`Hub::serve_with_auth`](crate::Hub::serve_with_auth)); then close
    /// 4408. Default: 15 s (Centrifuge closes a connection that has not
    /// authenticated after 15 s; SignalR's handshake timeout is 15 s).
    pub auth_timeout: Duration,
    /// How long before its credentials expire a connection is sent
    /// `reauth_required`. Default: 60 s.
    pub reauth_ahead: Duration,
    /// How long after its credentials expire a connection that has not
    /// re-authenticated is closed with 4401 `token_expired`. Default: 60 s
    /// (the JWT leeway's default, so clocks a minute apart agree).
    pub expiry_grace: Duration,
    /// Longest the application's on-ready hook may take; then close 1013.
    /// Default: 10 s.
    pub services_ready_timeout: Duration,
    /// Longest a closing connection may spend flushing queued events before
    /// it is closed regardless. Default: 5 s.
    pub close_timeout: Duration,
    /// Largest inbound message, in bytes; larger ones close the connection
    /// with 1009. Default: 64 KiB (Centrifugo's default; tungstenite's
    /// 64 MiB is far too generous for a control channel). Adapters also
    /// configure it on the WebSocket stack so oversized frames are never
    /// buffered.
    pub max_message_size: usize,
    /// Read buffer of each WebSocket, where the stack lets the adapter set
    /// it (axum and tokio-tungstenite; warp does not expose it): allocated
    /// up front and kept for the connection's life, and the most one socket
    /// read takes in. tungstenite's default is 128 KiB, which dominated the
    /// memory of idle connections; inbound traffic on an event stream is
    /// small, and a larger message still arrives whole, over several reads.
    /// Default: 1 KiB.
    pub read_buffer_size: usize,
    /// How many bytes of outbound frames a WebSocket gathers before writing
    /// to the socket (axum and tokio-tungstenite): the writer flushes after
    /// each batch anyway, so this only splits a large batch into several
    /// writes. Not allocated up front. Default: 8 KiB.
    pub write_buffer_size: usize,
    /// Whether each write batch records the `metrics` feature's two
    /// per-batch histograms, `ws_lifecycle_outbox_depth_events` and
    /// `ws_lifecycle_write_batch_events` (docs/observability.md). Off by
    /// default: in a fan-out every writer writes batches of one, so these
    /// are two samples per delivery, and an exporter's histogram costs tens
    /// of nanoseconds a sample (the Prometheus exporter's ~80 ns made
    /// delivery up to 41% slower, docs/benchmarks.md); tokio keeps its own
    /// poll-time histogram opt-in for the same reason. Turn it on to see
    /// queues build up. Without the `metrics` feature it does nothing.
    /// Default: `false`.
    pub write_histograms: bool,
    /// How long a connection may be silent before the server pings it.
    /// Default: 25 s (Centrifuge 25 s, Socket.IO 25 s).
    pub ping_interval: Duration,
    /// How long after a ping a silent peer is given before it is closed as
    /// gone: a half-open TCP peer is detected within `ping_interval +
    /// pong_timeout`. Default: 10 s (Centrifuge 10 s).
    pub pong_timeout: Duration,
    /// Inbound message rate per connection; past it, close 4429. `None`
    /// turns it off. Default: 20/s, bursts of 50.
    pub inbound_rate: Option<RateLimit>,
    /// Upgrades (handshake checks and authentication) in progress at once;
    /// past it, new upgrades get 503 at once. Default: 256.
    pub max_upgrades_in_flight: usize,
    /// Live connections on this hub; past it, upgrades get 503. Default:
    /// `None` (no cap).
    pub max_connections: Option<usize>,
    /// Connections asked to close at once by [`Hub::shutdown`](crate::Hub::shutdown).
    /// Default: 100.
    pub shutdown_batch: usize,
    /// Pause between shutdown batches (shortened so all batches fit in
    /// half the deadline). Default: 100 ms.
    pub shutdown_batch_interval: Duration,
    /// Connections one user may hold on this node. Default: 16.
    pub max_connections_per_user: usize,
    /// Enforce [`max_connections_per_user`](HubConfig::max_connections_per_user)
    /// across every node of the backplane too (the newest connection past
    /// it is refused with 4429, whatever the local policy). Costs one
    /// backplane round trip per connection; if the backplane cannot answer,
    /// the connection is admitted (availability over the limit) and a
    /// warning logged. Default: off.
    pub cluster_connection_limit: bool,
    /// What happens past that limit. Default: refuse the newest (close 4429).
    pub connection_limit_policy: ConnectionLimitPolicy,
    /// How event types are spelled on the wire. Default: names.
    pub wire_mode: WireMode,
    /// Shards of the routing table (rounded up to a power of two). More
    /// shards, less contention between cores. The table of the users'
    /// streams takes four per core, at least 8, and no more than this (a
    /// fan-out writes into each of its shards). Default: 64.
    pub router_shards: usize,
    /// How much of each user's stream is kept for resuming clients
    /// (see [`stream`](crate::stream)). Default: 2 minutes, at most 1,000
    /// events per user, 64 MiB in all.
    pub history: HistoryConfig,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            pre_ready_buffer: BufferLimit::default(),
            pre_ready_overflow: PreReadyOverflow::default(),
            outbound_queue: BufferLimit::default(),
            slow_consumer: SlowConsumerPolicy::default(),
            write_timeout: Duration::from_secs(1),
            upgrade_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(15),
            reauth_ahead: Duration::from_secs(60),
            expiry_grace: Duration::from_secs(60),
            services_ready_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_message_size: 64 * 1024,
            read_buffer_size: 1024,
            write_histograms: false,
            write_buffer_size: 8 * 1024,
            ping_interval: PING_INTERVAL,
            pong_timeout: PONG_TIMEOUT,
            inbound_rate: Some(RateLimit::default()),
            max_upgrades_in_flight: 256,
            max_connections: None,
            shutdown_batch: 100,
            shutdown_batch_interval: Duration::from_millis(100),
            max_connections_per_user: 16,
            cluster_connection_limit: false,
            connection_limit_policy: ConnectionLimitPolicy::default(),
            wire_mode: WireMode::default(),
            router_shards: 64,
            history: HistoryConfig::default(),
        }
    }
}

/// A [`HubConfig`] setting out of range, found by [`HubConfig::validate`]
/// (which [`HubBuilder::build`](crate::HubBuilder::build) runs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HubConfig::{field} {requirement}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The field, for example `ping_interval` or `inbound_rate.burst`.
    pub field: &'static str,
    /// What it must be.
    pub requirement: &'static str,
}

impl HubConfig {
    /// Checks every setting a timer, a socket or a limit relies on: a zero
    /// duration would turn a heartbeat into a busy loop or fail every
    /// write, a zero socket buffer or shard count leaves nothing to work
    /// with. Durations that may be zero (`reauth_ahead`, `expiry_grace`,
    /// `shutdown_batch_interval`) are not checked, nor are the event
    /// buffers' bounds: a zero bound is a policy (nothing is buffered
    /// before Ready, say), applied by the overflow policy.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ws_lifecycle::config::HubConfig;
    ///
    /// let mut config = HubConfig::default();
    /// assert!(config.validate().is_ok());
    /// config.ping_interval = Duration::ZERO;
    /// let error = config.validate().unwrap_err();
    /// assert_eq!(error.to_string(), "HubConfig::ping_interval must be at least 1 ms");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, requirement| Err(ConfigError { field, requirement });
        let ms = Duration::from_millis(1);
        for (field, value) in [
            ("write_timeout", self.write_timeout),
            ("upgrade_timeout", self.upgrade_timeout),
            ("auth_timeout", self.auth_timeout),
            ("services_ready_timeout", self.services_ready_timeout),
            ("close_timeout", self.close_timeout),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
        ] {
            if value < ms {
                return fail(field, "must be at least 1 ms");
            }
        }
        for (field, value) in [
            ("max_message_size", self.max_message_size),
            ("read_buffer_size", self.read_buffer_size),
            ("write_buffer_size", self.write_buffer_size),
            ("max_upgrades_in_flight", self.max_upgrades_in_flight),
            ("shutdown_batch", self.shutdown_batch),
            ("max_connections_per_user", self.max_connections_per_user),
            ("router_shards", self.router_shards),
        ] {
            if value == 0 {
                return fail(field, "must be at least 1");
            }
        }
        let history = &self.history;
        if history.enabled {
            if history.window < ms {
                return fail("history.window", "must be at least 1 ms (or history off)");
            }
            if history.max_events_per_user == 0 || history.max_bytes == 0 {
                return fail(
                    "history.max_events_per_user and max_bytes",
                    "must be at least 1 (or history off)",
                );
            }
        }
        if self.max_connections == Some(0) {
            return fail("max_connections", "must be at least 1 (or None for no cap)");
        }
        if let Some(rate) = self.inbound_rate {
            if !(rate.per_second.is_finite() && rate.per_second > 0.0) {
                return fail("inbound_rate.per_second", "must be a finite number above 0");
            }
            if !(rate.burst.is_finite() && rate.burst >= 1.0) {
                return fail(
                    "inbound_rate.burst",
                    "must be a finite number of at least 1",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_valid() {
        assert_eq!(HubConfig::default().validate(), Ok(()));
    }

    #[test]
    fn every_zero_duration_and_bound_is_refused_by_name() {
        type Breaker = fn(&mut HubConfig);
        let cases: [(&str, Breaker); 8] = [
            ("write_timeout", |c| c.write_timeout = Duration::ZERO),
            ("ping_interval", |c| c.ping_interval = Duration::ZERO),
            ("pong_timeout", |c| c.pong_timeout = Duration::ZERO),
            ("close_timeout", |c| c.close_timeout = Duration::ZERO),
            ("read_buffer_size", |c| c.read_buffer_size = 0),
            ("max_connections", |c| c.max_connections = Some(0)),
            ("inbound_rate.per_second", |c| {
                c.inbound_rate = Some(RateLimit::new(0.0, 5.0));
            }),
            ("inbound_rate.burst", |c| {
                c.inbound_rate = Some(RateLimit::new(5.0, f64::NAN));
            }),
        ];
        for (field, break_it) in cases {
            let mut config = HubConfig::default();
            break_it(&mut config);
            assert_eq!(config.validate().map_err(|e| e.field), Err(field));
        }
    }
}
