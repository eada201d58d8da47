//! `RedisBackplane` as the hub sees it: the [`Backplane`] implementation.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::wire::Kind;
use super::{
    RedisBackplane, admission, duration_ms, now_ms, presence, publisher, stream, subscriber,
};
use crate::backplane::{Backplane, BackplaneError, BoxFuture, NodeLink, StreamRead};
use crate::close::CloseFrame;
use crate::event::EncodedEvent;
use crate::id::UserId;
use crate::stream::Position;

impl Backplane for RedisBackplane {
    fn start(&self, node: NodeLink) {
        let Some(queue) = self.queue.lock().take() else {
            return;
        };
        let shared = &self.shared;
        let _ = shared.started.set((node.clone(), node.history()));
        tokio::spawn(publisher::run(
            Arc::clone(shared),
            node.clone(),
            queue,
            self.stop.subscribe(),
        ));
        tokio::spawn(subscriber::run(
            Arc::clone(shared),
            node,
            self.stop.subscribe(),
        ));
        tokio::spawn(presence::run(Arc::clone(shared), self.stop.subscribe()));
    }

    fn publish(&self, user: &UserId, event: &EncodedEvent) -> Result<(), BackplaneError> {
        // In stream mode the append script in Redis places the event in the
        // user's stream and publishes it (to this node too).
        let kind = if self.shared.config.streams {
            Kind::Stream
        } else {
            Kind::Event
        };
        self.enqueue(user, kind, event.wire_len(), |out| {
            event.write_wire(out);
        })
    }

    fn user_joined(&self, user: &UserId) {
        self.shared.subs.lock().desired.insert(user.clone());
        self.shared.generation.send_modify(|g| *g += 1);
        self.shared.subscriber_wake.notify_one();
        self.shared.presence_wake.notify_one();
    }

    fn user_left(&self, user: &UserId) {
        self.shared.subs.lock().desired.remove(user);
        self.shared.generation.send_modify(|g| *g += 1);
        self.shared.subscriber_wake.notify_one();
        self.shared.presence_wake.notify_one();
    }

    fn ready_for<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<(), BackplaneError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut generation = shared.generation.subscribe();
            loop {
                {
                    let mut subs = shared.subs.lock();
                    if !shared.subscriber_up.load(Ordering::Acquire) {
                        // The connection goes Ready unlistened: it is told
                        // of a possible gap once the subscriber is up.
                        subs.unlistened = true;
                        return Err(BackplaneError::Down);
                    }
                    if subs.subscribed.contains(user) {
                        return Ok(());
                    }
                }
                if generation.changed().await.is_err() {
                    return Err(BackplaneError::Down);
                }
            }
        })
    }

    fn disconnect_user(&self, user: &UserId, frame: &CloseFrame) -> Result<(), BackplaneError> {
        let body = format!("{}\n{}", frame.code.as_u16(), frame.reason.as_str());
        self.enqueue(user, Kind::Disconnect, body.len(), |out| {
            out.push_str(&body)
        })
    }

    fn is_online<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.query_connection().await?;
            // Claims are scored by their expiry: one live claim is enough.
            let live: Vec<String> = shared
                .within(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(shared.key("where", user))
                        .arg(now_ms())
                        .arg("+inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(1)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(!live.is_empty())
        })
    }

    fn admit<'a>(
        &'a self,
        user: &'a UserId,
        limit: usize,
    ) -> BoxFuture<'a, Result<bool, BackplaneError>> {
        Box::pin(async move {
            let shared = &self.shared;
            // Reserved first: dropped (refused, failed, cancelled), the
            // reservation is given back and the user's field rewritten.
            let reservation = shared.admission.reserve(user);
            let asked = async {
                let mut conn = shared.query_connection().await?;
                shared
                    .within(
                        redis::cmd("EVAL")
                            .arg(admission::ADMIT)
                            .arg(1)
                            .arg(shared.key("count", user))
                            .arg(&shared.node)
                            .arg(limit)
                            .arg(&shared.config.prefix)
                            .arg(reservation.count)
                            .query_async::<i64>(&mut conn),
                    )
                    .await
            };
            match asked.await {
                Ok(1) => {
                    reservation.keep();
                    Ok(true)
                }
                Ok(_) => Ok(false),
                Err(error) => {
                    // The hub admits the connection uncounted-by-Redis but
                    // it is live: it stays in this node's table (released
                    // when it ends), and the next flush writes it.
                    reservation.keep();
                    Err(error)
                }
            }
        })
    }

    fn release(&self, user: &UserId) {
        self.shared.admission.release(user);
    }

    fn keeps_streams(&self) -> bool {
        self.shared.config.streams
    }

    fn read_stream<'a>(
        &'a self,
        user: &'a UserId,
        since: Option<&'a Position>,
    ) -> BoxFuture<'a, Result<StreamRead, BackplaneError>> {
        Box::pin(stream::read(&self.shared, user, since))
    }

    fn online_count(&self) -> BoxFuture<'_, Result<u64, BackplaneError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut conn = shared.query_connection().await?;
            let prefix = &shared.config.prefix;
            let since = now_ms().saturating_sub(duration_ms(shared.config.presence_ttl));
            let nodes: Vec<String> = shared
                .within(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(format!("{prefix}:nodes"))
                        .arg(since)
                        .arg("+inf")
                        .query_async(&mut conn),
                )
                .await?;
            if nodes.is_empty() {
                return Ok(0);
            }
            let mut union = redis::cmd("SUNION");
            for node in &nodes {
                union.arg(format!("{prefix}:users:{node}"));
            }
            let users: Vec<String> = shared.within(union.query_async(&mut conn)).await?;
            Ok(users.len() as u64)
        })
    }
}
