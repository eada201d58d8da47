//! The publishing task: one connection, the queue drained in order, and
//! every loss turned into a `gap` for the users it touched.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc, watch};

use super::Shared;
use super::wire::{self, Kind};
use crate::backplane::NodeLink;
use crate::id::UserId;

/// One message waiting for the publishing connection, signed already (on
/// the sender's thread: its buffer is allocated and freed there's no lock
/// between).
pub(super) struct Outgoing {
    /// Whom it is for: told of a gap if the message is lost.
    pub(super) user: UserId,
    pub(super) kind: Kind,
    pub(super) channel: String,
    pub(super) payload: String,
}

/// Users whose events this node accepted (or was asked to publish) and the
/// other nodes did not get. Flushed as `G` messages once the publishing
/// connection works; bounded: past `limit` users it collapses into one
/// cluster-wide gap.
#[derive(Debug, Default)]
pub(super) struct Losses {
    inner: Mutex<LostUsers>,
    /// Wakes the publisher when a loss is recorded.
    pub(super) wake: Notify,
}

#[derive(Debug, Default)]
struct LostUsers {
    users: HashSet<UserId>,
    everyone: bool,
}

impl Losses {
    pub(super) fn record(&self, user: &UserId, limit: usize) {
        {
            let mut lost = self.inner.lock();
            if lost.everyone || lost.users.contains(user) {
                return;
            }
            if lost.users.len() >= limit {
                lost.users = HashSet::new();
                lost.everyone = true;
            } else {
                lost.users.insert(user.clone());
            }
        }
        self.wake.notify_one();
    }

    fn take(&self) -> LostUsers {
        std::mem::take(&mut *self.inner.lock())
    }

    fn restore(&self, taken: LostUsers, limit: usize) {
        if taken.everyone {
            let mut lost = self.inner.lock();
            lost.users = HashSet::new();
            lost.everyone = true;
        } else {
            for user in &taken.users {
                self.record(user, limit);
            }
        }
    }
}

/// Gives back the queue's byte budget for messages taken out of it.
fn dequeued(shared: &Shared, items: &[Outgoing]) {
    let bytes: usize = items.iter().map(|item| item.payload.len()).sum();
    shared
        .queued_bytes
        .fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
}

/// Most messages sent in one pipeline.
const PUBLISH_BATCH: usize = 256;

/// Owns the publishing connection; drains the queue in order.
pub(super) async fn run(
    shared: Arc<Shared>,
    link: NodeLink,
    mut queue: mpsc::Receiver<Outgoing>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = super::FIRST_BACKOFF;
    loop {
        // Watched from before the connection exists: a subscriber loss
        // reported while connecting still resets it; one reported before
        // (a stale signal) does not.
        let mut resets = shared.subscriber_losses.subscribe();
        resets.mark_unchanged();
        let mut conn = match shared.within(shared.connect()).await {
            Ok(conn) => conn,
            Err(_) => {
                if !super::back_off(&mut backoff, shared.config.max_backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        backoff = super::FIRST_BACKOFF;
        shared.publisher_up.send_replace(true);
        shared.update_health();
        let served = serve(&shared, &mut conn, &mut queue, &mut stop, &mut resets).await;
        let Some(mut lost_events) = served else {
            return;
        };
        shared.publisher_up.send_replace(false);
        shared.update_health();
        // What was queued behind the failure cannot be trusted to arrive in
        // order after a reconnect: it is dropped, and its users told.
        while let Ok(item) = queue.try_recv() {
            dequeued(&shared, std::slice::from_ref(&item));
            lost_events += u64::from(item.kind == Kind::Event);
            shared
                .losses
                .record(&item.user, shared.config.publish_queue);
        }
        shared.stats.lost.fetch_add(lost_events, Ordering::Relaxed);
        link.record_lost(lost_events);
        tracing::warn!(
            lost = lost_events,
            "Redis backplane: publishing connection lost; reconnecting (the users concerned \
             get a gap once it is back)"
        );
    }
}

/// Publishes until the connection fails (returns the events lost with it)
/// or the backplane stops (returns `None`).
async fn serve(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    queue: &mut mpsc::Receiver<Outgoing>,
    stop: &mut watch::Receiver<bool>,
    resets: &mut watch::Receiver<u64>,
) -> Option<u64> {
    // An idle connection is pinged, so a server that went away is noticed
    // before the next event is trusted to it.
    let mut ping = tokio::time::interval(shared.config.command_timeout);
    let mut batch = Vec::with_capacity(16);
    let timer = crate::metrics::PublishTimer::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            _ = resets.changed() => return Some(0),
            _ = ping.tick() => {
                let ping = redis::cmd("PING");
                if shared.within(ping.query_async::<redis::Value>(conn)).await.is_err() {
                    return Some(0);
                }
                continue;
            }
            () = shared.losses.wake.notified() => {}
            received = queue.recv_many(&mut batch, PUBLISH_BATCH) => {
                if received == 0 {
                    return None;
                }
                dequeued(shared, &batch);
            }
        }
        // Gaps first, then whatever is queued, in order: one pipeline per
        // wake-up, not one round trip per event.
        let gaps = shared.losses.take();
        if batch.is_empty() && !gaps.everyone && gaps.users.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        let prefix = &shared.config.prefix;
        if gaps.everyone {
            let channel = wire::control_channel(prefix);
            let payload = shared
                .signer
                .seal(&channel, &shared.node, Kind::Gap, 0, |_| {});
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        for user in &gaps.users {
            let channel = wire::user_channel(prefix, user);
            let payload = shared
                .signer
                .seal(&channel, &shared.node, Kind::Gap, 0, |_| {});
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        for item in &batch {
            pipe.cmd("PUBLISH")
                .arg(&item.channel)
                .arg(&item.payload)
                .ignore();
        }
        let started = timer.start();
        if shared.within(pipe.query_async::<()>(conn)).await.is_err() {
            // Some of the pipeline may have landed: the users of all of it
            // are told, which errs on the side of a gap too many.
            let limit = shared.config.publish_queue;
            shared.losses.restore(gaps, limit);
            let mut lost = 0;
            for item in batch.drain(..) {
                lost += u64::from(item.kind == Kind::Event);
                shared.losses.record(&item.user, limit);
            }
            return Some(lost);
        }
        timer.done(started);
        let told = gaps.users.len() as u64 + u64::from(gaps.everyone);
        shared
            .stats
            .gaps_published
            .fetch_add(told, Ordering::Relaxed);
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn losses_collapse_into_one_cluster_wide_gap_past_their_bound() {
        let losses = Losses::default();
        let users: Vec<UserId> = (0..4)
            .map(|i| UserId::new(format!("u{i}")).unwrap())
            .collect();
        for user in &users[..3] {
            losses.record(user, 3);
            losses.record(user, 3);
        }
        let taken = losses.take();
        assert_eq!((taken.users.len(), taken.everyone), (3, false));
        for user in &users {
            losses.record(user, 3);
        }
        let taken = losses.take();
        assert!(taken.everyone && taken.users.is_empty());
        assert!(losses.take().users.is_empty());
        losses.restore(taken, 3);
        assert!(losses.take().everyone);
    }
}
