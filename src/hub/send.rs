//! The send paths: one event to a user, to many users, to one connection.
//! Each serialises the event once and goes through one routing helper,
//! `Inner::route`, then (with a backplane) `Inner::publish`.

use std::sync::Arc;

use crate::backplane::{BackplaneError, Remote};
use crate::close::{CloseCause, CloseFrame};
use crate::connection::outbox::{Accepted, Refused, Routed};
use crate::connection::{ConnectionHandle, SendError};
use crate::event::control::{Control, GapReason};
use crate::event::{EncodeError, EncodedEvent, Event};
use crate::hub::{Hub, Inner};
use crate::id::{ConnectionId, UserId};
use crate::metrics::Metrics;

/// The outcome of [`Hub::send_to_user`]: how many of the user's connections
/// took the event, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "a Delivery says whether anyone got the event"]
pub struct Delivery {
    /// Ready connections that queued it for writing.
    pub queued: u32,
    /// Connections not ready yet that buffered it (flushed at Ready).
    pub buffered: u32,
    /// Connections that refused it (closing, full, too large for their
    /// buffer, or misaddressed); each refusal is also counted in the hub's
    /// metrics.
    pub refused: u32,
    /// Whether it was handed on to the other nodes.
    pub remote: Remote,
    /// Its offset in the user's stream (the frames' `off`), when this node
    /// assigned it. `None` when the backplane keeps the streams: it assigns
    /// the offset as it publishes, and this node's connections get the
    /// event back through it too (then `queued`, `buffered` and `refused`
    /// are 0, and [`remote`](Delivery::remote) says whether it went out).
    pub offset: Option<u64>,
}

impl Delivery {
    /// Connections that accepted the event (queued or buffered).
    pub fn accepted(&self) -> u32 {
        self.queued + self.buffered
    }

    /// Whether the user had no connection on this node at all.
    pub fn is_miss(&self) -> bool {
        self.accepted() == 0 && self.refused == 0
    }
}

/// The outcome of [`Hub::send_to_users`], summed over the users (each
/// count saturates at `u32::MAX`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "a FanOut says whether anyone got the event"]
#[non_exhaustive]
pub struct FanOut {
    /// Users addressed.
    pub users: u32,
    /// Users with no connection on this node (each also counted as a
    /// routing miss in the metrics).
    pub missed: u32,
    /// Ready connections that queued the event for writing.
    pub queued: u32,
    /// Connections not ready yet that buffered it (flushed at Ready).
    pub buffered: u32,
    /// Connections that refused it (closing, full, or misaddressed); each
    /// refusal is also counted in the hub's metrics.
    pub refused: u32,
    /// Users for whom the backplane could not take the event (their other
    /// nodes will not see it; counted as backplane failures). Always 0
    /// without a backplane.
    pub remote_failed: u32,
    /// Users whose stream this node gave the event an offset in (all of
    /// them, unless the backplane keeps the streams; see
    /// [`Delivery::offset`]). For each user's offset, send to each with
    /// [`Hub::send_to_user`].
    pub streamed: u32,
}

impl FanOut {
    /// Connections that accepted the event (queued or buffered).
    pub fn accepted(&self) -> u32 {
        self.queued.saturating_add(self.buffered)
    }

    /// Counts one user's delivery.
    fn add(&mut self, d: &Delivery) {
        self.users = self.users.saturating_add(1);
        self.missed = self
            .missed
            .saturating_add(u32::from(d.is_miss() && d.offset.is_some()));
        self.queued = self.queued.saturating_add(d.queued);
        self.buffered = self.buffered.saturating_add(d.buffered);
        self.refused = self.refused.saturating_add(d.refused);
        self.streamed = self.streamed.saturating_add(u32::from(d.offset.is_some()));
        if let Remote::Failed(_) = d.remote {
            self.remote_failed = self.remote_failed.saturating_add(1);
        }
    }
}

impl Hub {
    /// Sends `event` to every connection of `user` on this node. The event
    /// is serialised once; each connection splices in its own sequence
    /// number. Never blocks: a full connection applies its overflow policy.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the event cannot be serialised (nothing was sent).
    ///
    /// With a [`Backplane`](crate::backplane::Backplane), the same bytes are
    /// also published for the other nodes; [`Delivery::remote`] says whether
    /// that worked (local delivery never depends on it).
    pub fn send_to_user(&self, user: &UserId, event: &Event) -> Result<Delivery, EncodeError> {
        Ok(self.send_encoded_to_user(user, event.encode()?))
    }

    /// Sends an event already serialised (an [`Envelope`](crate::event::Envelope)
    /// with a typed payload, or [`Event::encode`]) to every connection of
    /// `user`, as [`send_to_user`](Hub::send_to_user) does. It cannot fail
    /// to serialise, so it returns the [`Delivery`] itself; the event is
    /// moved into the connections' queues without a copy.
    ///
    /// ```
    /// # use ws_lifecycle::{Hub, event::{Envelope, EventName}, id::UserId};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(serde::Serialize)]
    /// struct Note<'a> {
    ///     text: &'a str,
    /// }
    ///
    /// let hub = Hub::new();
    /// let alice = UserId::new("alice")?;
    /// let event = Envelope::custom(EventName::new("note")?).encode(&Note { text: "hi" })?;
    /// let delivery = hub.send_encoded_to_user(&alice, event);
    /// assert!(delivery.is_miss()); // alice is not connected
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_encoded_to_user(&self, user: &UserId, event: EncodedEvent) -> Delivery {
        self.inner.send(user, event)
    }

    /// Sends `event` to every connection of each of `users` on this node
    /// (and, with a [`Backplane`](crate::backplane::Backplane), to their
    /// connections on other nodes): a broadcast to a team or a room. The
    /// event is serialised once for all of them; each connection splices in
    /// its own sequence number. Never blocks, like
    /// [`send_to_user`](Hub::send_to_user).
    ///
    /// A user listed twice gets the event twice.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the event cannot be serialised (nothing was sent).
    ///
    /// ```
    /// # use ws_lifecycle::{Hub, event::{Event, EventName}, id::UserId};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::new();
    /// let team = [UserId::new("alice")?, UserId::new("bob")?];
    /// let event = Event::custom(EventName::new("standup")?, serde_json::json!("in 5 min"));
    /// let sent = hub.send_to_users(&team, &event)?;
    /// assert_eq!((sent.users, sent.missed), (2, 2)); // nobody is connected
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_to_users<'u>(
        &self,
        users: impl IntoIterator<Item = &'u UserId>,
        event: &Event,
    ) -> Result<FanOut, EncodeError> {
        Ok(self.send_encoded_to_users(users, &event.encode()?))
    }

    /// Sends an event already serialised (an [`Envelope`](crate::event::Envelope)
    /// with a typed payload, or [`Event::encode`]) to every connection of
    /// each of `users`, as [`send_to_users`](Hub::send_to_users) does.
    pub fn send_encoded_to_users<'u>(
        &self,
        users: impl IntoIterator<Item = &'u UserId>,
        encoded: &EncodedEvent,
    ) -> FanOut {
        let mut out = FanOut::default();
        if self.inner.remote_streams {
            for user in users {
                out.add(&self.inner.send(user, encoded.clone()));
            }
            return out;
        }
        let users: Vec<&UserId> = users.into_iter().collect();
        self.inner.streams.append_many(
            &users,
            encoded,
            encoded.weight(),
            |user, off, event| {
                let delivery = self.inner.route_and_publish(user, off, event);
                (delivery, !delivery.is_miss())
            },
            |user| self.inner.router.has_user(user),
            |off, mut delivery: Delivery| {
                delivery.offset = Some(off);
                out.add(&delivery);
            },
        );
        out
    }

    /// Sends `event` to one connection; returns its sequence number there.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] when no such connection is routable (never
    /// authenticated, or closing), otherwise as [`ConnectionHandle::emit`].
    pub fn send_to_connection(
        &self,
        id: &ConnectionId,
        event: Event,
    ) -> Result<u64, SendError<Event>> {
        match self.connection(id) {
            Some(handle) => handle.emit(event),
            None => {
                Metrics::inc(&self.inner.ctx.metrics.c.routing_misses);
                Err(SendError::Closed(event))
            }
        }
    }

    /// Sends an event already serialised to one connection; returns its
    /// sequence number there.
    ///
    /// # Errors
    ///
    /// As [`send_to_connection`](Hub::send_to_connection) (never
    /// [`SendError::Encode`]), handing the event back.
    pub fn send_encoded_to_connection(
        &self,
        id: &ConnectionId,
        event: EncodedEvent,
    ) -> Result<u64, SendError<EncodedEvent>> {
        match self.connection(id) {
            Some(handle) => handle.emit_encoded_event(event),
            None => {
                Metrics::inc(&self.inner.ctx.metrics.c.routing_misses);
                Err(SendError::Closed(event))
            }
        }
    }

    /// Closes `user`'s connections on every node with `frame` (revocation:
    /// for example 4403). Local ones are asked at once; the others through
    /// the backplane. Returns how many local connections were asked.
    ///
    /// # Errors
    ///
    /// [`BackplaneError`] when the other nodes could not be told (the local
    /// connections are closing regardless).
    pub fn disconnect_user(
        &self,
        user: &UserId,
        frame: CloseFrame,
    ) -> Result<usize, BackplaneError> {
        let local = self.inner.close_user_locally(user, &frame);
        if let Some(backplane) = &self.inner.backplane {
            backplane.disconnect_user(user, &frame)?;
        }
        Ok(local)
    }

    /// `user`'s routable connections on this node.
    pub fn connections_of(&self, user: &UserId) -> Vec<ConnectionHandle> {
        self.inner.router.with_user(user, |conns| {
            conns
                .iter()
                .map(|shared| ConnectionHandle {
                    shared: Arc::clone(shared),
                })
                .collect()
        })
    }

    /// A routable connection by id.
    pub fn connection(&self, id: &ConnectionId) -> Option<ConnectionHandle> {
        self.inner
            .router
            .connection(id)
            .map(|shared| ConnectionHandle { shared })
    }
}

impl Inner {
    /// The one send path for an event of `user`'s stream. This node
    /// assigns the offset, keeps the event in the history and hands it to
    /// the local connections and the backplane, all under the user's
    /// stream lock, so every connection sees the user's offsets in order.
    /// When the backplane keeps the streams, it does all of that instead,
    /// and this node's connections get the event back through it.
    pub(super) fn send(&self, user: &UserId, event: EncodedEvent) -> Delivery {
        if self.remote_streams {
            let remote = self.publish(user, &event);
            if let Remote::Failed(_) = remote {
                // Nobody got it, this node's connections included: they
                // learn it now rather than from a silent hole.
                let gap = Control::Gap(GapReason::BackplaneLostEvents).encode();
                self.tell_gap(user, &gap);
            }
            return Delivery {
                remote,
                ..Delivery::default()
            };
        }
        let weight = event.weight();
        let (off, mut delivery) = self.streams.append(
            user,
            event,
            weight,
            |off, event| {
                let d = self.route_and_publish(user, off, event);
                (d, !d.is_miss())
            },
            |user| self.router.has_user(user),
        );
        delivery.offset = Some(off);
        delivery
    }

    /// Hands `event`, at `off` in `user`'s stream, to the user's local
    /// connections and to the backplane (under the stream's lock: the
    /// caller holds it).
    fn route_and_publish(&self, user: &UserId, off: u64, event: EncodedEvent) -> Delivery {
        let routed = Routed::for_user(user.clone(), off, event);
        let mut d = self.route(user, &routed);
        d.remote = self.publish(user, &routed.event);
        d
    }

    /// The one routing helper: offers `routed` to each of `user`'s
    /// connections on this node (each checks the addressee and applies its
    /// own policy) and counts a miss.
    pub(super) fn route(&self, user: &UserId, routed: &Arc<Routed>) -> Delivery {
        let delivery = self.router.with_user(user, |conns| {
            let mut d = Delivery::default();
            for conn in conns {
                match conn.push(routed) {
                    Ok((_, Accepted::Queued)) => d.queued += 1,
                    Ok((_, Accepted::Buffered)) => d.buffered += 1,
                    // It has it already: nothing to count.
                    Ok((_, Accepted::Repeat)) => {}
                    Err(
                        Refused::Closed
                        | Refused::Full
                        | Refused::Overflowed
                        | Refused::Misaddressed
                        | Refused::TooLarge,
                    ) => d.refused += 1,
                }
            }
            d
        });
        if delivery.is_miss() {
            Metrics::inc(&self.ctx.metrics.c.routing_misses);
        }
        delivery
    }

    /// Hands `event` for `user` to the backplane, counting the outcome.
    pub(super) fn publish(&self, user: &UserId, event: &EncodedEvent) -> Remote {
        let Some(backplane) = &self.backplane else {
            return Remote::LocalOnly;
        };
        let c = &self.ctx.metrics.c;
        match backplane.publish(user, event) {
            Ok(()) => {
                Metrics::inc(&c.backplane_published);
                Remote::Published
            }
            Err(error) => {
                Metrics::inc(&c.backplane_failures);
                Remote::Failed(error)
            }
        }
    }

    /// Asks this node's connections of `user` to close with `frame`.
    pub(super) fn close_user_locally(&self, user: &UserId, frame: &CloseFrame) -> usize {
        let conns = self.router.with_user(user, <[_]>::to_vec);
        conns
            .iter()
            .filter(|c| c.outbox.request_close(CloseCause::Requested(frame.clone())))
            .count()
    }
}
