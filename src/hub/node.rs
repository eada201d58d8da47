//! The hub's side of its two seams: the services a connection asks of it
//! ([`Owner`]) and what a backplane may ask of it ([`Node`]). Both are
//! traits the other side defines, so neither `connection` nor `backplane`
//! imports the hub.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::backplane::{Node, Placement};
use crate::close::{CloseCause, CloseFrame};
use crate::connection::outbox::{Addressee, Routed};
use crate::connection::{ConnShared, Context, EnterError, Joined, Owner};
use crate::event::EncodedEvent;
use crate::event::control::{Control, GapReason};
use crate::hub::Inner;
use crate::id::UserId;
use crate::metrics::Metrics;
use crate::router::InsertError;
use crate::stream::table::Positioned;
use crate::stream::{Epoch, HistoryConfig, Position};

impl Owner for Inner {
    fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    fn admit<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Option<bool>> {
        let config = &self.ctx.config;
        let Some(backplane) = self
            .backplane
            .as_ref()
            .filter(|_| config.cluster_connection_limit)
        else {
            return std::future::ready(None).boxed();
        };
        async move {
            match backplane.admit(user, config.max_connections_per_user).await {
                Ok(admitted) => Some(admitted),
                Err(error) => {
                    // Availability over the limit: the connection is still
                    // released when it ends.
                    tracing::warn!(
                        code = error.code(),
                        "cluster connection limit not checked: admitting"
                    );
                    Some(true)
                }
            }
        }
        .boxed()
    }

    fn release(&self, user: &UserId) {
        if let Some(backplane) = &self.backplane {
            backplane.release(user);
        }
    }

    fn enter(&self, conn: &Arc<ConnShared>) -> Result<(), EnterError> {
        let config = &self.ctx.config;
        let inserted = self
            .router
            .insert(
                conn,
                config.max_connections_per_user,
                config.connection_limit_policy,
                |user| {
                    if let Some(backplane) = &self.backplane {
                        backplane.user_joined(user);
                    }
                },
            )
            .map_err(|error| match error {
                InsertError::LimitReached => EnterError::LimitReached,
                InsertError::DuplicateId => EnterError::DuplicateId,
            })?;
        // Inserted first, checked second: a shutdown sets the latch before
        // it scans the table, so a connection racing it is caught by one
        // side or the other.
        if let Some(frame) = self.admission.closing() {
            conn.outbox.request_close(CloseCause::Requested(frame));
        }
        if let Some(old) = inserted.evicted {
            Metrics::inc(&self.ctx.metrics.c.connection_limit_closes);
            old.outbox.request_close(CloseCause::ConnectionLimit);
        }
        Ok(())
    }

    fn leave(&self, conn: &Arc<ConnShared>) {
        let last = self.router.remove(conn, |user| {
            if let Some(backplane) = &self.backplane {
                backplane.user_left(user);
            }
        });
        if last {
            // Checked again under the stream's lock: a connection that
            // arrived meanwhile keeps the entry.
            self.streams
                .release(&conn.user, |user| self.router.has_user(user));
        }
    }

    fn listening<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, bool> {
        let Some(backplane) = &self.backplane else {
            return std::future::ready(true).boxed();
        };
        // A backplane that is down answers at once: local delivery goes
        // on, and the connection gets a `gap` event once it is back.
        let deadline = self.ctx.config.services_ready_timeout;
        tokio::time::timeout(deadline, backplane.ready_for(user))
            .map(|subscribed| matches!(subscribed, Ok(Ok(()))))
            .boxed()
    }

    fn join_stream<'a>(
        &'a self,
        user: &'a UserId,
        since: Option<&'a Position>,
    ) -> BoxFuture<'a, Joined> {
        if !self.remote_streams {
            let read = self.streams.read(user, since);
            let joined = Joined::new(user, read.position, read.history);
            return std::future::ready(joined).boxed();
        }
        async move {
            let read = match &self.backplane {
                Some(backplane) => backplane.read_stream(user, since).await,
                None => Err(crate::backplane::BackplaneError::NoStreams),
            };
            match read {
                Ok(read) => {
                    self.streams.join_at(user, &read.position);
                    Joined::new(user, read.position, read.events)
                }
                Err(error) => {
                    // Not recovered; the position is this node's last
                    // delivery if it has one (else an epoch nobody knows).
                    tracing::warn!(
                        code = error.code(),
                        "the user's stream could not be read: not recovered"
                    );
                    let position = self.streams.position(user).unwrap_or(Position {
                        epoch: Epoch::mint(),
                        offset: 0,
                    });
                    Joined::new(user, position, None)
                }
            }
        }
        .boxed()
    }

    fn ended(&self) {
        self.admission.release_live();
    }
}

impl Inner {
    /// `user`'s connections here missed remote events: with node-local
    /// streams, the stream restarts (its history has a hole, so no resume
    /// may be recovered from before it), then they are told.
    fn missed(&self, user: &UserId, gap: &EncodedEvent) -> usize {
        if !self.remote_streams {
            self.streams.restart(user);
        }
        self.tell_gap(user, gap)
    }

    /// Tells `user`'s local connections of a gap (a control event: no
    /// offset, not part of the stream); how many took it.
    pub(super) fn tell_gap(&self, user: &UserId, gap: &EncodedEvent) -> usize {
        let routed = Arc::new(Routed {
            to: Addressee::User(user.clone()),
            off: None,
            event: gap.clone(),
        });
        let told = self.route(user, &routed).accepted() as usize;
        Metrics::add(&self.ctx.metrics.c.gaps_notified, told as u64);
        told
    }
}

impl Node for Inner {
    fn deliver(&self, user: &UserId, event: EncodedEvent) -> usize {
        Metrics::inc(&self.ctx.metrics.c.backplane_received);
        // This node's stream of the user: the remote event gets the next
        // offset here, like a local send.
        let weight = event.weight();
        let (_, told) = self.streams.append(
            user,
            event,
            weight,
            |off, event| {
                let d = self.route(user, &Routed::for_user(user.clone(), off, event));
                (d.accepted() as usize, !d.is_miss())
            },
            |user| self.router.has_user(user),
        );
        told
    }

    fn deliver_at(&self, user: &UserId, position: &Position, event: EncodedEvent) -> Placement {
        Metrics::inc(&self.ctx.metrics.c.backplane_received);
        let routed = Routed::for_user(user.clone(), position.offset, event);
        let mut told = 0;
        let placed = self.streams.deliver_at(
            user,
            position,
            |placed| {
                if placed == Positioned::Restarted {
                    self.tell_gap(user, &Control::Gap(GapReason::StreamRestarted).encode());
                    // Offsets start again: not repeats of the old ones.
                    self.router.with_user(user, |conns| {
                        conns.iter().for_each(|c| c.outbox.restart_stream());
                    });
                }
                told = self.route(user, &routed).accepted() as usize;
            },
            |user| self.router.has_user(user),
        );
        match placed {
            Positioned::Next => Placement::Delivered(told),
            Positioned::Restarted => Placement::Restarted(told),
            Positioned::Repeat => Placement::Repeat,
            Positioned::Hole { after } => Placement::Hole { after },
        }
    }

    fn skip_to(&self, user: &UserId, position: &Position) -> usize {
        self.streams.skip_to(user, position);
        self.tell_gap(user, &Control::Gap(GapReason::StreamHole).encode())
    }

    fn history(&self) -> HistoryConfig {
        self.ctx.config.history
    }

    fn disconnect_local(&self, user: &UserId, frame: &CloseFrame) -> usize {
        self.close_user_locally(user, frame)
    }

    fn notify_gap(&self, reason: GapReason) -> usize {
        // Serialised once; each user's copy only differs in its addressee.
        let gap = Control::Gap(reason).encode();
        self.router
            .users()
            .iter()
            .map(|user| self.missed(user, &gap))
            .sum()
    }

    fn notify_gap_to(&self, user: &UserId, reason: GapReason) -> usize {
        self.missed(user, &Control::Gap(reason).encode())
    }

    fn record_lost(&self, n: u64) {
        Metrics::add(&self.ctx.metrics.c.backplane_lost, n);
    }

    fn record_rejected(&self) {
        Metrics::inc(&self.ctx.metrics.c.backplane_rejected);
    }

    fn local_users(&self) -> Vec<UserId> {
        self.router.users()
    }
}
