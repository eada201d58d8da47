//! Per-user streams: offsets, history and session resume.
//!
//! Every event addressed to a user ([`Hub::send_to_user`](crate::Hub::send_to_user),
//! [`send_to_users`](crate::Hub::send_to_users), remote deliveries) gets an
//! **offset** in that user's stream: 1, 2, 3, … in publish order, the same
//! number on every connection of the user. Frames carry it as `"off"`.
//! Events for one connection (control frames,
//! [`ConnectionHandle::emit`](crate::ConnectionHandle::emit)) carry none.
//! Do not confuse it with `seq`, which counts one connection's frames.
//!
//! A stream's [`Epoch`] names one life of it; it changes whenever the
//! stream's history is lost. The hub keeps a window of **history** per user
//! ([`HistoryConfig`]) so that a client that reconnects with
//! `since=<epoch>:<offset>` receives what it missed, exactly once, before
//! live events ([`ResumeOutcome`]); when the history cannot cover the gap
//! it says so (`recovered: false`) and replays nothing. The whole model,
//! with the failure cases and the cost, is in `docs/resume.md`.

use std::time::Duration;

mod merge;
mod position;
mod shard;
pub(crate) mod table;

pub(crate) use merge::replay;
pub use position::{EPOCH_MAX_LEN, Epoch, Position, SinceError};

/// How much of each user's stream a hub keeps for resuming clients.
///
/// Events are kept for [`window`](HistoryConfig::window), at most
/// [`max_events_per_user`](HistoryConfig::max_events_per_user) per user,
/// and within [`max_bytes`](HistoryConfig::max_bytes) over all users
/// (oldest first out). In memory on a single node; in Redis with the
/// [`RedisBackplane`](crate::backplane::redis::RedisBackplane).
///
/// ```
/// use std::time::Duration;
/// use ws_lifecycle::{Hub, config::HubConfig, stream::HistoryConfig};
///
/// let mut config = HubConfig::default();
/// config.history.window = Duration::from_secs(30);
/// let hub = Hub::builder().config(config).build()?;
/// # let _ = hub;
/// // Or none at all: offsets are still assigned, resumes say `recovered: false`.
/// let mut off = HubConfig::default();
/// off.history = HistoryConfig::off();
/// # let _ = off;
/// # Ok::<(), ws_lifecycle::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryConfig {
    /// Whether history is kept. Off: offsets are still assigned, and every
    /// resume says `recovered: false`. Default: on.
    pub enabled: bool,
    /// How long an event stays resumable. Default: 2 minutes.
    pub window: Duration,
    /// Most events kept per user (the oldest go first). Default: 1,000.
    pub max_events_per_user: usize,
    /// Most bytes kept in memory over all users, counting each event's
    /// shared bytes and its bookkeeping (the oldest go first; split evenly
    /// across the table's shards). Default: 64 MiB. Redis history is
    /// bounded per user instead ([`max_events_per_user`](HistoryConfig::max_events_per_user)
    /// and the key's expiry).
    pub max_bytes: usize,
}

impl HistoryConfig {
    /// No history: offsets only.
    pub const fn off() -> Self {
        HistoryConfig {
            enabled: false,
            window: Duration::ZERO,
            max_events_per_user: 0,
            max_bytes: 0,
        }
    }

    /// Whether anything is kept at all.
    pub(crate) fn keeps(&self) -> bool {
        self.enabled && !self.window.is_zero() && self.max_events_per_user > 0 && self.max_bytes > 0
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            enabled: true,
            window: Duration::from_secs(120),
            max_events_per_user: 1_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// How a connection's stream began: where it joined the user's stream and,
/// when the client asked to resume, whether it did. Read it with
/// [`ConnectionHandle::resume`](crate::ConnectionHandle::resume) from
/// [`Handler::on_ready`](crate::Handler::on_ready) on, for example to put
/// it in the application's `ready` frame.
///
/// ```
/// # use ws_lifecycle::{ConnectionHandle, close::CloseFrame};
/// # async fn on_ready(conn: &ConnectionHandle) -> Result<(), CloseFrame> {
/// if let Some(resume) = conn.resume() {
///     if resume.requested.is_some() && !resume.recovered {
///         // Tell the client to fetch its state another way.
///     }
///     println!("joined at {} ({} replayed)", resume.position, resume.replayed);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumeOutcome {
    /// The position the client asked to resume from (`since`), if any.
    pub requested: Option<Position>,
    /// The stream's epoch and the offset of its latest event when this
    /// connection started listening (0 for an empty stream): the `ready`
    /// frame's `epoch` and `off`. Live events follow with larger offsets.
    pub position: Position,
    /// Whether the missed events (`requested.offset + 1 ..= position.offset`)
    /// are replayed, each once, in order, before live events. `false`
    /// without a request, and whenever the history could not cover it: then
    /// nothing is replayed.
    pub recovered: bool,
    /// How many events are replayed.
    pub replayed: u64,
}

impl ResumeOutcome {
    /// An outcome, for tests and for applications that drive connections
    /// by hand.
    pub fn new(
        requested: Option<Position>,
        position: Position,
        recovered: bool,
        replayed: u64,
    ) -> Self {
        ResumeOutcome {
            requested,
            position,
            recovered,
            replayed,
        }
    }
}

/// What a hub's stream table holds ([`Hub::history_usage`](crate::Hub::history_usage)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryUsage {
    /// Users with a stream entry on this node.
    pub streams: usize,
    /// Bytes counted against [`HistoryConfig::max_bytes`]: the retained
    /// events' shared bytes plus their bookkeeping, and each entry's.
    pub bytes: usize,
    /// Events retained, counted once per user they are kept for (a fan-out
    /// to ten users counts ten), including those past a user's
    /// [`max_events_per_user`](HistoryConfig::max_events_per_user) that
    /// still wait for their turn to be forgotten.
    pub retained: usize,
}
