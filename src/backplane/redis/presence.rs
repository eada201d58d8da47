//! The presence task: this node's heartbeat, which users it has, and its
//! per-user connection counts — all written by one connection, refreshed
//! every third of the presence TTL and flushed at once after a change.
//!
//! Keys (all expiring, so nothing outlives a dead cluster):
//!
//! * `<prefix>:node:<node>` — the heartbeat, `PX` the TTL: the lease of
//!   everything else this node writes.
//! * `<prefix>:nodes` — sorted set of node ids by last refresh.
//! * `<prefix>:users:<node>` — set of this node's users (hex).
//! * `<prefix>:where:<hex user>` — sorted set of node ids by the time their
//!   claim on the user expires; stale members are pruned at every refresh,
//!   so a lookup is one `ZRANGEBYSCORE … LIMIT 0 1`.
//! * `<prefix>:count:<hex user>` — hash of node id -> connection count
//!   ([`admission`](super::admission)).
//!
//! Presence never gates readiness: a Redis that refuses writes (a read-only
//! replica after a failover, out of memory) degrades presence, counted in
//! [`RedisStats::presence_failures`](super::RedisStats) and shown by
//! [`RedisBackplane::presence_ok`](super::RedisBackplane::presence_ok),
//! while delivery goes on.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use super::wire::hex;
use super::{Shared, duration_ms, now_ms};
use crate::id::UserId;

/// Keeps this node's presence and counts.
pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let ttl = duration_ms(shared.config.presence_ttl).max(1);
    // `validate` keeps this at 10 ms or more.
    let mut tick = tokio::time::interval(shared.config.presence_ttl / 3);
    let mut conn: Option<MultiplexedConnection> = None;
    let mut written: HashSet<UserId> = HashSet::new();
    loop {
        let full = tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => true,
            () = shared.presence_wake.notified() => false,
            () = shared.admission.changed.notified() => false,
        };
        if conn.is_none() {
            conn = shared.within(shared.connect()).await.ok();
            *shared.queries.lock() = conn.clone();
            // A restarted Redis has lost everything: write it all again.
            written.clear();
            shared.claimed.lock().clear();
        }
        let Some(c) = conn.as_mut() else {
            failed(&shared, "no connection");
            continue;
        };
        let desired = shared.subs.lock().desired.clone();
        let counts = shared.admission.take_writes(full || written.is_empty());
        let pipe = refresh(&shared, ttl, full, &desired, &written, &counts);
        match shared.within(pipe.query_async::<()>(c)).await {
            Ok(()) => {
                written = desired;
                shared.claimed.lock().clone_from(&written);
                shared.generation.send_modify(|g| *g += 1);
                if !shared.presence_up.send_replace(true) {
                    tracing::info!("Redis backplane: presence written again");
                }
            }
            Err(_) => {
                shared.admission.failed(counts);
                failed(&shared, "write refused or timed out");
                // A fresh connection next time: the old one may be dead.
                conn = None;
                *shared.queries.lock() = None;
            }
        }
        if shared.admission.has_dirty() {
            // Failed, or changed while the writes were in flight: go again
            // (after a failure, at the next change or refresh).
            if conn.is_some() {
                shared.admission.changed.notify_one();
            }
        }
    }
}

fn failed(shared: &Shared, why: &'static str) {
    shared
        .stats
        .presence_failures
        .fetch_add(1, Ordering::Relaxed);
    if shared.presence_up.send_replace(false) {
        tracing::warn!(
            why,
            "Redis backplane: presence not written (delivery goes on; presence and the \
             cluster connection limit are stale until it is)"
        );
    }
}

/// One pipeline: heartbeat, node index, users joined and left (all of them
/// on a `full` refresh), and connection counts.
fn refresh(
    shared: &Shared,
    ttl: u64,
    full: bool,
    desired: &HashSet<UserId>,
    written: &HashSet<UserId>,
    counts: &[(UserId, Option<u64>)],
) -> redis::Pipeline {
    let prefix = &shared.config.prefix;
    let node = &shared.node;
    let now = now_ms();
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(format!("{prefix}:node:{node}"))
        .arg(1)
        .arg("PX")
        .arg(ttl)
        .ignore();
    pipe.cmd("ZADD")
        .arg(format!("{prefix}:nodes"))
        .arg(now)
        .arg(node)
        .ignore();
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(format!("{prefix}:nodes"))
        .arg("-inf")
        .arg(now.saturating_sub(ttl))
        .ignore();
    let users_key = format!("{prefix}:users:{node}");
    let claims: Vec<&UserId> = if full {
        desired.iter().collect()
    } else {
        desired.difference(written).collect()
    };
    for user in claims {
        let hex_user = hex(user.as_str().as_bytes());
        let where_key = format!("{prefix}:where:{hex_user}");
        pipe.cmd("ZADD")
            .arg(&where_key)
            .arg(now.saturating_add(ttl))
            .arg(node)
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&where_key)
            .arg("-inf")
            .arg(now)
            .ignore();
        pipe.cmd("PEXPIRE").arg(&where_key).arg(ttl).ignore();
        pipe.cmd("SADD").arg(&users_key).arg(&hex_user).ignore();
    }
    for user in written.difference(desired) {
        let hex_user = hex(user.as_str().as_bytes());
        pipe.cmd("ZREM")
            .arg(format!("{prefix}:where:{hex_user}"))
            .arg(node)
            .ignore();
        pipe.cmd("SREM").arg(&users_key).arg(&hex_user).ignore();
    }
    pipe.cmd("PEXPIRE").arg(&users_key).arg(ttl).ignore();
    for (user, count) in counts {
        let count_key = format!("{prefix}:count:{}", hex(user.as_str().as_bytes()));
        match count {
            Some(count) => {
                pipe.cmd("HSET")
                    .arg(&count_key)
                    .arg(node)
                    .arg(*count)
                    .ignore();
                pipe.cmd("PEXPIRE").arg(&count_key).arg(ttl).ignore();
            }
            None => {
                pipe.cmd("HDEL").arg(&count_key).arg(node).ignore();
            }
        }
    }
    pipe
}
