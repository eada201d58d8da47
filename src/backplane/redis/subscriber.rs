//! The subscribing task: one pub/sub connection that follows the users this
//! node has, checks what arrives, and delivers it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{Notify, watch};

use super::wire::{self, Kind, Rejected};
use super::{Shared, stream};
use crate::backplane::{BackplaneError, NodeLink, Placement};
use crate::close::{CloseCode, CloseFrame, CloseReason};
use crate::event::EncodedEvent;
use crate::event::control::GapReason;
use crate::id::UserId;
use crate::stream::Position;

/// Which users this node wants to hear about, and which it is subscribed
/// for. Both sets live under one lock so that "subscribed" can never
/// include a user whose UNSUBSCRIBE is on its way: the user leaves
/// `subscribed` in the same critical section that decides to unsubscribe.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    /// The users with a connection on this node (the router's users: the
    /// hub updates this under the router's shard lock).
    pub(super) desired: HashSet<UserId>,
    /// The users whose channel subscription Redis has confirmed and that
    /// are not about to be unsubscribed.
    pub(super) subscribed: HashSet<UserId>,
    /// Whether a connection became Ready while the subscriber was down (it
    /// is told of a possible gap once the subscriber is back).
    pub(super) unlistened: bool,
}

/// Most channels in one SUBSCRIBE or UNSUBSCRIBE.
const CHUNK: usize = 512;

/// Owns the subscribing connection: follows `desired`, delivers what
/// arrives (reading on while it resubscribes, so redis-rs never buffers an
/// unbounded backlog), pings to detect a hung server, resubscribes after
/// reconnecting.
pub(super) async fn run(shared: Arc<Shared>, link: NodeLink, mut stop: watch::Receiver<bool>) {
    let mut backoff = super::FIRST_BACKOFF;
    let mut reconnecting = false;
    // Says why Redis cannot be reached (an untrusted certificate, a refused
    // connection), once per streak rather than at every retry.
    let mut failures = super::client::FailureLog::default();
    loop {
        let pubsub = shared
            .within(async { failures.observe(shared.client.get_async_pubsub().await) })
            .await;
        let (mut sink, mut stream) = match pubsub {
            Ok(pubsub) => pubsub.split(),
            Err(_) => {
                if !super::back_off(&mut backoff, shared.config.max_backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        shared.subs.lock().subscribed.clear();
        shared.generation.send_modify(|g| *g += 1);
        let missed = Notify::new();
        let subscriptions = keep_subscribed(&shared, &mut sink, reconnecting, &missed);
        tokio::pin!(subscriptions);
        let tell_gap = tell_gap_once_healthy(&shared, &link, &missed);
        tokio::pin!(tell_gap);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = &mut subscriptions => break,
                () = &mut tell_gap => {}
                message = stream.next() => match message {
                    // Awaits only to repair a hole in a user's stream from
                    // its history (bounded by the command timeout).
                    Some(message) => receive(&shared, &link, &message).await,
                    None => break,
                },
            }
        }
        if shared.subscriber_up.swap(false, Ordering::AcqRel) {
            // It had worked: the next attempt starts from the shortest wait.
            backoff = super::FIRST_BACKOFF;
        }
        shared.update_health();
        // The publishing connection, idle or not, may be talking to a
        // server that no longer exists: it reconnects too.
        shared.subscriber_losses.send_modify(|n| *n += 1);
        shared.generation.send_modify(|g| *g += 1);
        tracing::warn!("Redis backplane: subscription lost; reconnecting");
        reconnecting = true;
        if !super::back_off(&mut backoff, shared.config.max_backoff, &mut stop).await {
            return;
        }
    }
}

/// The sink side of one connection: subscribe to the control channel and
/// every local user, report healthy, then follow changes and ping. Returns
/// when the connection fails. Notifies `missed` when local connections may
/// have missed remote events: after an outage, or when connections became
/// Ready while the backplane was not listening (at start-up).
async fn keep_subscribed(
    shared: &Shared,
    sink: &mut PubSubSink,
    reconnecting: bool,
    missed: &Notify,
) -> BackplaneError {
    let control = wire::control_channel(&shared.config.prefix);
    if let Err(error) = shared.within(sink.subscribe(control)).await {
        return error;
    }
    if let Err(error) = reconcile(shared, sink).await {
        return error;
    }
    // Healthy only once every local user is listened for again. Up and
    // "some connection went Ready unlistened" change under one lock, so no
    // such connection is missed.
    let unlistened = {
        let mut subs = shared.subs.lock();
        shared.subscriber_up.store(true, Ordering::Release);
        std::mem::take(&mut subs.unlistened)
    };
    shared.update_health();
    shared.generation.send_modify(|g| *g += 1);
    if reconnecting || unlistened {
        missed.notify_one();
    }
    let mut ping = tokio::time::interval(shared.config.command_timeout);
    loop {
        let step = tokio::select! {
            () = shared.subscriber_wake.notified() => reconcile(shared, sink).await,
            // In subscribed mode the reply is an array: accept any reply.
            _ = ping.tick() => shared.within(sink.ping::<redis::Value>()).await.map(drop),
        };
        if let Err(error) = step {
            return error;
        }
    }
}

/// Once `missed` is notified, tells every local connection of a possible
/// gap as soon as delivery works both ways again (the publisher is up too).
/// Never resolves.
async fn tell_gap_once_healthy(shared: &Shared, link: &NodeLink, missed: &Notify) {
    missed.notified().await;
    let mut health = shared.health.subscribe();
    if health.wait_for(|up| *up).await.is_ok() {
        let told = link.notify_gap(GapReason::BackplaneReconnected);
        tracing::warn!(
            told,
            "Redis backplane: reconnected; local connections told of a possible gap"
        );
    }
    std::future::pending::<()>().await;
}

/// Subscribes to the users this node has and unsubscribes from the others,
/// until the two agree.
async fn reconcile(shared: &Shared, sink: &mut PubSubSink) -> Result<(), BackplaneError> {
    let prefix = &shared.config.prefix;
    loop {
        let (join, leave) = {
            let mut subs = shared.subs.lock();
            let join: Vec<UserId> = subs
                .desired
                .difference(&subs.subscribed)
                .take(CHUNK)
                .cloned()
                .collect();
            let leave: Vec<UserId> = subs
                .subscribed
                .difference(&subs.desired)
                .take(CHUNK)
                .cloned()
                .collect();
            for user in &leave {
                subs.subscribed.remove(user);
            }
            (join, leave)
        };
        if join.is_empty() && leave.is_empty() {
            return Ok(());
        }
        if !leave.is_empty() {
            shared.generation.send_modify(|g| *g += 1);
        }
        if !leave.is_empty() {
            let channels: Vec<String> = leave
                .iter()
                .map(|u| wire::user_channel(prefix, u))
                .collect();
            shared.within(sink.unsubscribe(channels)).await?;
        }
        if !join.is_empty() {
            let channels: Vec<String> =
                join.iter().map(|u| wire::user_channel(prefix, u)).collect();
            shared.within(sink.subscribe(channels)).await?;
            // Confirmed: from here on every message published for these
            // users reaches this node. (One that left meanwhile is still
            // subscribed for real; the next round unsubscribes it.)
            shared.subs.lock().subscribed.extend(join);
            shared.generation.send_modify(|g| *g += 1);
        }
    }
}

/// Handles one message: checked (signature first), then delivered.
async fn receive(shared: &Shared, link: &NodeLink, message: &redis::Msg) {
    let channel = message.get_channel_name();
    let opened = shared.signer.open(channel, message.get_payload_bytes());
    let message = match opened {
        Ok(message) => message,
        Err(rejected) => {
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            link.record_rejected();
            match rejected {
                Rejected::BadSignature => tracing::warn!(
                    "Redis backplane: dropped a message with a bad signature (a node with \
                     another cluster key, or someone publishing on the Redis server)"
                ),
                Rejected::Malformed => {
                    tracing::warn!("Redis backplane: dropped a malformed message");
                }
            }
            return;
        }
    };
    if message.node == shared.node && message.kind != Kind::Stream {
        // Delivered (or told) locally already. A stream event is not: the
        // hub leaves its own users' delivery to the stream's order.
        return;
    }
    let Some(user) = wire::user_of(&shared.config.prefix, channel) else {
        if message.kind == Kind::Gap {
            link.notify_gap(GapReason::BackplaneLostEvents);
        }
        return;
    };
    match message.kind {
        Kind::Event if shared.config.streams => {
            // Delivered here it would take an offset this node made up.
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            link.record_rejected();
            tracing::warn!(
                "Redis backplane: dropped an event from a node that does not keep streams in \
                 Redis (`RedisConfig::streams` must be the same on every node)"
            );
        }
        Kind::Event => deliver(shared, link, &user, message.body),
        Kind::Stream => match message.position {
            Some(position) if shared.config.streams => {
                deliver_at(shared, link, &user, &position, message.body).await;
            }
            // A node that numbers streams itself takes the event as any.
            _ => deliver(shared, link, &user, message.body),
        },
        Kind::Disconnect => {
            let frame = message.body.split_once('\n').and_then(|(code, reason)| {
                let code = CloseCode::new(code.parse().ok()?)?;
                Some(CloseFrame::new(code, CloseReason::new(reason.to_owned())?))
            });
            if let Some(frame) = frame {
                link.disconnect_local(&user, &frame);
            }
        }
        Kind::Gap => {
            link.notify_gap_to(&user, GapReason::BackplaneLostEvents);
        }
    }
}

/// Decodes an event's body, counting a malformed one.
fn decode(shared: &Shared, link: &NodeLink, body: &str) -> Option<EncodedEvent> {
    match EncodedEvent::from_wire(body) {
        Ok(event) => Some(event),
        Err(_) => {
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            link.record_rejected();
            tracing::warn!("Redis backplane: dropped a malformed event");
            None
        }
    }
}

fn deliver(shared: &Shared, link: &NodeLink, user: &UserId, body: &str) {
    if let Some(event) = decode(shared, link, body) {
        let _ = link.deliver(user, event);
    }
}

/// Delivers a stream event at its place. Pub/sub is at most once: when
/// events before it never arrived here (a [`Placement::Hole`]), they are
/// read from the history and delivered first; when the history cannot
/// supply them all, the user's connections here are told (a `gap`) and
/// delivery goes on from this event. So this node never delivers an event
/// of a user's stream before one that precedes it.
async fn deliver_at(
    shared: &Shared,
    link: &NodeLink,
    user: &UserId,
    position: &Position,
    body: &str,
) {
    let Some(event) = decode(shared, link, body) else {
        return;
    };
    let Some(Placement::Hole { after }) = link.deliver_at(user, position, event) else {
        return;
    };
    let before = position.offset.saturating_sub(1);
    let filled = stream::fill(shared, user, &position.epoch, after, before).await;
    let mut repaired = filled.is_some();
    for (offset, missed) in filled.into_iter().flatten() {
        let at = Position {
            epoch: position.epoch.clone(),
            offset,
        };
        if let Some(Placement::Hole { .. }) = link.deliver_at(user, &at, missed) {
            repaired = false;
            break;
        }
    }
    if !repaired {
        tracing::warn!(
            missing = before.saturating_sub(after),
            "Redis backplane: events of a user's stream never arrived and the history cannot \
             supply them; the user's connections here get a gap"
        );
        link.skip_to(
            user,
            &Position {
                epoch: position.epoch.clone(),
                offset: before,
            },
        );
    }
    // Decoded again rather than cloned on every delivery: holes are rare.
    if let Some(event) = decode(shared, link, body)
        && let Some(Placement::Hole { .. }) = link.deliver_at(user, position, event)
    {
        // Moved meanwhile (another epoch's cursor, a concurrent join):
        // delivery goes on from here all the same.
        link.skip_to(
            user,
            &Position {
                epoch: position.epoch.clone(),
                offset: before,
            },
        );
        if let Some(event) = decode(shared, link, body) {
            let _ = link.deliver_at(user, position, event);
        }
    }
}
