//! The publishing task: one connection, the queue drained in order, and
//! every loss turned into a `gap` for the users it touched.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, mpsc, watch};

use super::wire::{self, Kind, Outgoing};
use super::{Shared, append, stream};
use crate::backplane::NodeLink;
use crate::event::control::GapReason;
use crate::id::UserId;

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

/// Messages this node had accepted and lost: their users are owed a gap.
#[derive(Debug, Default)]
struct Lost {
    events: u64,
    /// Users of lost stream events: their connections *on this node* missed
    /// them too (they would have got them back through Redis).
    here: HashSet<UserId>,
}

impl Lost {
    fn add(&mut self, shared: &Shared, item: &Outgoing) {
        self.events += u64::from(item.kind.is_event());
        if item.kind == Kind::Stream {
            self.here.insert(item.user.clone());
        }
        // The other nodes' connections hear of it through a `G` message.
        shared
            .losses
            .record(&item.user, shared.config.publish_queue);
    }

    /// Counts the loss and tells this node's connections of the users of
    /// lost stream events (once each).
    fn report(self, shared: &Shared, link: &NodeLink) -> u64 {
        shared.stats.lost.fetch_add(self.events, Ordering::Relaxed);
        link.record_lost(self.events);
        for user in &self.here {
            link.notify_gap_to(user, GapReason::BackplaneLostEvents);
        }
        self.events
    }
}

/// Most messages sent in one pipeline. With streams on, a pipeline's stream
/// events are one call of the append script, whose cost per event falls as
/// the call grows (a user's events share its meta's read and write): 512
/// against 256 gave 8 – 22 % more cross-node throughput on a loaded
/// machine (docs/benchmarks.md).
const PUBLISH_BATCH: usize = 512;

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
        if shared.config.streams {
            // A server that restarted has forgotten them; `EVAL` stands in
            // for a script it does not have (NOSCRIPT) anyway.
            append::APPEND_SCRIPT.load(&shared, &mut conn).await;
            stream::READ_SCRIPT.load(&shared, &mut conn).await;
        }
        backoff = super::FIRST_BACKOFF;
        shared.publisher_up.send_replace(true);
        shared.update_health();
        let served = serve(
            &shared,
            &link,
            &mut conn,
            &mut queue,
            &mut stop,
            &mut resets,
        )
        .await;
        let Some(mut lost) = served else {
            return;
        };
        shared.publisher_up.send_replace(false);
        shared.update_health();
        // What was queued behind the failure cannot be trusted to arrive in
        // order after a reconnect: it is dropped, and its users told.
        while let Ok(item) = queue.try_recv() {
            dequeued(&shared, std::slice::from_ref(&item));
            lost.add(&shared, &item);
        }
        let lost_events = lost.report(&shared, &link);
        tracing::warn!(
            lost = lost_events,
            "Redis backplane: publishing connection lost; reconnecting (the users concerned \
             get a gap once it is back)"
        );
    }
}

/// Publishes until the connection fails (returns what was lost with it)
/// or the backplane stops (returns `None`).
async fn serve(
    shared: &Shared,
    link: &NodeLink,
    conn: &mut MultiplexedConnection,
    queue: &mut mpsc::Receiver<Outgoing>,
    stop: &mut watch::Receiver<bool>,
    resets: &mut watch::Receiver<u64>,
) -> Option<Lost> {
    // An idle connection is pinged, so a server that went away is noticed
    // before the next event is trusted to it.
    let mut ping = tokio::time::interval(shared.config.command_timeout);
    let mut batch = Vec::with_capacity(16);
    let timer = crate::metrics::PublishTimer::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            _ = resets.changed() => return Some(Lost::default()),
            _ = ping.tick() => {
                let ping = redis::cmd("PING");
                if shared.within(ping.query_async::<redis::Value>(conn)).await.is_err() {
                    return Some(Lost::default());
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
        // One event refused by Redis (out of memory, read-only) does not
        // fail the others: each script's reply is looked at.
        pipe.ignore_errors();
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
        // Stream events go in calls of the append script, each a run of
        // consecutive ones (up to `APPEND_BATCH`); the other messages stay
        // where they were between them, so a channel's order is kept.
        // Within a run, each user's events go together (their order kept):
        // the script reads and writes a user's meta once per group.
        let calls = appends(&batch);
        for call in &calls {
            if let Some(items) = batch.get_mut(call.clone()) {
                append::group_by_user(items);
            }
        }
        let mut at = 0;
        for call in &calls {
            for item in batch.get(at..call.start).unwrap_or_default() {
                pipe.cmd("PUBLISH")
                    .arg(&item.channel)
                    .arg(&item.payload)
                    .ignore();
            }
            let items = batch.get(call.clone()).unwrap_or_default();
            append::append(&mut pipe, shared, items, true);
            at = call.end;
        }
        for item in batch.get(at..).unwrap_or_default() {
            pipe.cmd("PUBLISH")
                .arg(&item.channel)
                .arg(&item.payload)
                .ignore();
        }
        let started = timer.start();
        let replies = shared
            .within(pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(conn))
            .await;
        let Ok(replies) = replies else {
            // Some of the pipeline may have landed: the users of all of it
            // are told, which errs on the side of a gap too many.
            let limit = shared.config.publish_queue;
            shared.losses.restore(gaps, limit);
            let mut lost = Lost::default();
            for item in batch.drain(..) {
                lost.add(shared, &item);
            }
            return Some(lost);
        };
        timer.done(started);
        let told = gaps.users.len() as u64 + u64::from(gaps.everyone);
        shared
            .stats
            .gaps_published
            .fetch_add(told, Ordering::Relaxed);
        if !calls.is_empty() {
            let refused = settle(shared, conn, &batch, &calls, replies).await;
            match refused {
                Settled::Lost(lost) if lost.events > 0 => {
                    let events = lost.report(shared, link);
                    tracing::warn!(
                        lost = events,
                        "Redis backplane: Redis refused events (out of memory, read-only?); \
                         their users get a gap"
                    );
                }
                Settled::Lost(_) => {}
                Settled::ConnectionLost(lost) => {
                    batch.clear();
                    return Some(lost);
                }
            }
        }
        batch.clear();
    }
}

/// The calls of the append script for `batch`'s stream events: its runs of
/// consecutive stream events, cut every [`append::APPEND_BATCH`] events.
fn appends(batch: &[Outgoing]) -> Vec<Range<usize>> {
    let mut calls: Vec<Range<usize>> = Vec::new();
    for (i, item) in batch.iter().enumerate() {
        if item.kind != Kind::Stream {
            continue;
        }
        match calls.last_mut() {
            Some(call) if call.end == i && call.len() < append::APPEND_BATCH => call.end = i + 1,
            _ => calls.push(i..i + 1),
        }
    }
    calls
}

enum Settled {
    /// These events were refused by Redis (the others landed).
    Lost(Lost),
    /// The connection failed while retrying: these are lost with it.
    ConnectionLost(Lost),
}

/// Looks at the replies of a pipeline's append calls (`replies`, one per
/// call of `calls`, in order). A call Redis ran tells, per event, its
/// offset or why it refused it: a refused event is lost. A call whose script
/// was missing from the server's cache (it restarted, or someone ran
/// `SCRIPT FLUSH`) ran nothing: its events are sent again by text (`EVAL`),
/// unless a later call of the pipeline ran, which a retry would overtake
/// (then they are lost, and told as a gap). Any other failure of a call
/// loses all its events.
async fn settle(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    batch: &[Outgoing],
    calls: &[Range<usize>],
    replies: Vec<redis::RedisResult<redis::Value>>,
) -> Settled {
    let last_ran = replies.iter().rposition(|reply| !unrun(reply));
    let mut lost = Lost::default();
    let mut retry = Vec::new();
    let mut replies = replies.into_iter();
    for (i, call) in calls.iter().enumerate() {
        let items = batch.get(call.clone()).unwrap_or_default();
        match replies.next() {
            Some(reply) if unrun(&reply) && last_ran.is_none_or(|l| i > l) => {
                retry.push(call.clone());
            }
            Some(reply) => tally(shared, items, reply, &mut lost),
            // Fewer replies than calls: nothing says these landed.
            None => items.iter().for_each(|item| lost.add(shared, item)),
        }
    }
    if retry.is_empty() {
        return Settled::Lost(lost);
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for call in &retry {
        let items = batch.get(call.clone()).unwrap_or_default();
        append::append(&mut pipe, shared, items, false);
    }
    let replies = shared
        .within(pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(conn))
        .await;
    match replies {
        Ok(replies) => {
            let mut replies = replies.into_iter();
            for call in retry {
                let items = batch.get(call).unwrap_or_default();
                match replies.next() {
                    Some(reply) => tally(shared, items, reply, &mut lost),
                    None => items.iter().for_each(|item| lost.add(shared, item)),
                }
            }
            Settled::Lost(lost)
        }
        Err(_) => {
            for call in retry {
                for item in batch.get(call).unwrap_or_default() {
                    lost.add(shared, item);
                }
            }
            Settled::ConnectionLost(lost)
        }
    }
}

/// Whether an append call ran nothing: its script was missing (`NOSCRIPT`).
fn unrun(reply: &redis::RedisResult<redis::Value>) -> bool {
    reply.as_ref().is_err_and(stream::is_noscript)
}

/// Adds to `lost` the events of one append call (`items`) that `reply`
/// does not show placed: the events Redis refused, or all of them when the
/// call failed or its reply is not the script's.
fn tally(
    shared: &Shared,
    items: &[Outgoing],
    reply: redis::RedisResult<redis::Value>,
    lost: &mut Lost,
) {
    use redis::Value;
    match reply {
        Ok(Value::Array(results)) if results.len() == items.len() => {
            for (item, result) in items.iter().zip(results) {
                if !matches!(result, Value::Int(_)) {
                    tracing::debug!(?result, "Redis backplane: an event was refused");
                    lost.add(shared, item);
                }
            }
        }
        Ok(reply) => {
            tracing::warn!(
                ?reply,
                "Redis backplane: the append script's reply is not one it gives; its events \
                 are counted lost"
            );
            items.iter().for_each(|item| lost.add(shared, item));
        }
        Err(error) => {
            tracing::debug!(%error, "Redis backplane: events were refused");
            items.iter().for_each(|item| lost.add(shared, item));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn outgoing(kind: Kind) -> Outgoing {
        Outgoing {
            user: UserId::new("u").unwrap(),
            kind,
            channel: String::new(),
            payload: String::new(),
            body_at: 0,
        }
    }

    #[test]
    fn stream_events_go_in_runs_cut_at_the_call_cap_and_other_messages_split_them() {
        let cap = append::APPEND_BATCH;
        let mut batch: Vec<Outgoing> = (0..cap + 3).map(|_| outgoing(Kind::Stream)).collect();
        batch.push(outgoing(Kind::Disconnect));
        batch.push(outgoing(Kind::Stream));
        batch.push(outgoing(Kind::Gap));
        batch.push(outgoing(Kind::Disconnect));
        batch.push(outgoing(Kind::Stream));
        batch.push(outgoing(Kind::Stream));
        assert_eq!(
            appends(&batch),
            vec![0..cap, cap..cap + 3, cap + 4..cap + 5, cap + 7..cap + 9]
        );
        assert!(appends(&[outgoing(Kind::Disconnect)]).is_empty());
        assert!(appends(&[]).is_empty());
    }

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
