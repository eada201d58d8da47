//! The names the crate emits through the `metrics` facade, for an
//! exporter's configuration (histogram buckets, say). Each is described,
//! with its labels and what to alert on, in `docs/observability.md`.

/// Gauge, label `state` (`connecting` … `closing`): live connections in
/// each non-terminal state.
pub const CONNECTIONS: &str = "ws_lifecycle_connections";
/// Counter: connections minted.
pub const CONNECTIONS_OPENED: &str = "ws_lifecycle_connections_opened_total";
/// Counter, labels `code` (the close code sent, `none` when no frame is
/// sent) and `cause`: connections ended.
pub const CLOSES: &str = "ws_lifecycle_closes_total";
/// Counter, label `reason` (the [`AuthError`](crate::auth::AuthError)
/// code): failed authentications.
pub const AUTH_FAILURES: &str = "ws_lifecycle_auth_failures_total";
/// Histogram, seconds: from the connection's id being minted to Ready.
pub const TIME_TO_READY: &str = "ws_lifecycle_time_to_ready_seconds";
/// Histogram, seconds: from the connection's id being minted to its end.
pub const CONNECTION_DURATION: &str = "ws_lifecycle_connection_duration_seconds";
/// Counter, labels `outcome` (`written`, `dropped`, `refused`) and, for
/// `dropped` and `refused`, `reason`: events handed to connections.
pub const DELIVERIES: &str = "ws_lifecycle_deliveries_total";
/// Histogram, events: a connection's outbox depth each time its writer
/// takes a batch (the batch included).
pub const OUTBOX_DEPTH: &str = "ws_lifecycle_outbox_depth_events";
/// Histogram, events: the events in each write batch (one flush each).
pub const WRITE_BATCH: &str = "ws_lifecycle_write_batch_events";
/// Histogram, seconds: one Redis backplane publish pipeline, from sending
/// to its reply.
pub const BACKPLANE_PUBLISH: &str = "ws_lifecycle_backplane_publish_duration_seconds";
/// Counter: `gap` events accepted by connections.
pub const GAPS_SIGNALLED: &str = "ws_lifecycle_gaps_signalled_total";
/// Counter, label `outcome` (`recovered`, `not_recovered`): connections
/// that asked to resume their user's stream (`since`).
pub const RESUMES: &str = "ws_lifecycle_resumes_total";
/// Counter, events: events replayed to resuming connections.
pub const EVENTS_REPLAYED: &str = "ws_lifecycle_events_replayed_total";
