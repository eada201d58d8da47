//! The hub's table of user streams: each user's epoch, latest offset and
//! retained history, in memory, sharded ([`shards_for`]).
//!
//! The offset is assigned, the event handed to the user's connections and
//! retained under the user's shard lock, so every connection of the user
//! sees offsets in increasing order whoever sends concurrently, and an
//! event is in the history before the lock is released, so before any
//! read can look for it (a resuming connection listens first, reads
//! second, under the same lock: whatever it misses live is in what it
//! reads).
//!
//! What a shard retains, and how it forgets, is in [`shard`](super::shard):
//! an event once per shard, a 4-byte arrival per user it went to. A
//! fan-out ([`Table::append_many`]) takes each shard's lock once for all
//! its users there, and retains the event once there. A resume reads its
//! user's arrivals from the back of the queue until it reaches its
//! position: a cost paid per resume, not per send.
//!
//! Memory is bounded by [`HistoryConfig`]: the byte budget is split evenly
//! across the shards, each of which forgets its oldest events first (the
//! bookkeeping of a retained event is counted with it). A user's entry
//! lives while the user has a connection here or retained history; the
//! hub removes it otherwise ([`Table::release`]).

use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use parking_lot::Mutex;

use crate::id::UserId;
use crate::stream::shard::{ARRIVAL_COST, EVENT_COST, MARKER_COST, Shard, Stream};
use crate::stream::{Epoch, HistoryConfig, Position};

/// What [`Table::read`] found.
pub(crate) struct Read<T> {
    /// The stream's epoch and latest offset.
    pub(crate) position: Position,
    /// The retained events after the requested offset, when they cover it
    /// all (`None`: not coverable, or nothing was asked).
    pub(crate) history: Option<Vec<(u64, T)>>,
}

/// What [`Table::deliver_at`] made of an event positioned elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Positioned {
    /// The next offset: handed on.
    Next,
    /// At or below the latest one: a repeat, dropped.
    Repeat,
    /// Past the next one: `after + 1 .. off` are missing. Nothing was done.
    Hole { after: u64 },
    /// Another epoch: the stream was restarted; the cursor moved to it and
    /// the event was handed on.
    Restarted,
}

pub(crate) struct Table<T> {
    shards: Box<[Mutex<Shard<T>>]>,
    /// Never used: [`Table::shard`] masks its index by the shards' count,
    /// a power of two; this spares it an indexing that could panic.
    spare: Mutex<Shard<T>>,
    hasher: RandomState,
    config: HistoryConfig,
    budget: usize,
}

/// Shards of a hub's stream table: four per core, at least 8, and no
/// more than the routing table's (`router_shards`).
///
/// Fewer than the routing table's on small machines, because a fan-out
/// writes into every shard it reaches: each shard's queues are their own
/// memory, and on a 2-core VM a 1,000-user fan-out with history on was
/// 13 – 27 % slower than with it off over 64 shards, 0 – 11 % over 8
/// (docs/benchmarks.md). Four per core keeps concurrent senders apart.
pub(crate) fn shards_for(router_shards: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    router_shards.min(cores.saturating_mul(4).max(8))
}

impl<T: Clone> Table<T> {
    pub(crate) fn new(shards: usize, config: HistoryConfig) -> Self {
        let shards = shards.clamp(1, 4096).next_power_of_two();
        Table {
            shards: (0..shards).map(|_| Mutex::new(Shard::new())).collect(),
            spare: Mutex::new(Shard::new()),
            hasher: RandomState::new(),
            budget: config.max_bytes / shards,
            config,
        }
    }

    fn shard_index(&self, user: &UserId) -> usize {
        let hash = self.hasher.hash_one(user) as usize;
        hash & (self.shards.len() - 1)
    }

    fn shard(&self, user: &UserId) -> &Mutex<Shard<T>> {
        self.shards
            .get(self.shard_index(user))
            .unwrap_or(&self.spare)
    }

    /// Assigns `user`'s next offset to `item`, keeps it and hands it on,
    /// under the user's lock: `route` offers it to the user's connections
    /// (and says whether any is here). Returns the offset and what `route`
    /// returned.
    ///
    /// Without history, a user nobody is connected for keeps no entry: the
    /// offset is then 1 of a fresh epoch that nobody will ever see.
    pub(crate) fn append<R>(
        &self,
        user: &UserId,
        item: T,
        weight: usize,
        route: impl FnOnce(u64, T) -> (R, bool),
        connected: impl Fn(&UserId) -> bool,
    ) -> (u64, R) {
        let keep = self.config.keeps();
        let mut guard = self.shard(user).lock();
        let shard = &mut *guard;
        let now = keep.then(Instant::now);
        if let Some(now) = now {
            self.evict(shard, now, weight + EVENT_COST + ARRIVAL_COST, &connected);
        }
        let kept = keep.then(|| item.clone());
        let (off, slot, result) = self.step(shard, user, keep, |off| route(off, item));
        if let (Some(now), Some(slot), Some(kept)) = (now, slot, kept) {
            shard.keep(kept, weight + EVENT_COST, now, &[slot]);
        }
        (off, result)
    }

    /// [`append`](Table::append) for each of `users` (a fan-out), each
    /// shard's lock taken once for all its users, and the event retained
    /// once per shard. `route` is called for each user in turn (in the
    /// shards' order, not the list's), `each` with what it returned and
    /// the user's offset. A user listed twice gets two offsets.
    pub(crate) fn append_many<'u, R>(
        &self,
        users: &[&'u UserId],
        item: &T,
        weight: usize,
        mut route: impl FnMut(&'u UserId, u64, T) -> (R, bool),
        connected: impl Fn(&UserId) -> bool,
        mut each: impl FnMut(u64, R),
    ) {
        let keep = self.config.keeps();
        let now = keep.then(Instant::now);
        let order = self.by_shard(users);
        let mut slots: Vec<u32> = Vec::new();
        let mut rest = order.as_slice();
        while let Some(&(index, _)) = rest.first() {
            let split = rest.partition_point(|(shard, _)| *shard == index);
            let (run, next) = rest.split_at(split);
            rest = next;
            let mut guard = self.shards.get(index).unwrap_or(&self.spare).lock();
            let shard = &mut *guard;
            if let Some(now) = now {
                let room = weight + EVENT_COST + run.len() * ARRIVAL_COST;
                self.evict(shard, now, room, &connected);
            }
            slots.clear();
            for &(_, user) in run {
                let (off, slot, result) =
                    self.step(shard, user, keep, |off| route(user, off, item.clone()));
                if let Some(slot) = slot.filter(|_| keep) {
                    slots.push(slot);
                }
                each(off, result);
            }
            // The arrivals are written together, after the routing, so the
            // CPU overlaps their stores rather than waiting on each of them
            // at the next lock the routing takes; the shard lock is still
            // held, so no reader sees one routed and not yet retained.
            if let (Some(now), false) = (now, slots.is_empty()) {
                shard.keep(item.clone(), weight + EVENT_COST, now, &slots);
            }
        }
    }

    /// `users` with their shards' indexes, grouped by shard (a stable sort:
    /// a user listed twice keeps its two places' order).
    fn by_shard<'u>(&self, users: &[&'u UserId]) -> Vec<(usize, &'u UserId)> {
        let mut order: Vec<(usize, &'u UserId)> = users
            .iter()
            .map(|user| (self.shard_index(user), *user))
            .collect();
        order.sort_by_key(|(shard, _)| *shard);
        order
    }

    /// Assigns `user`'s next offset and routes with it, creating the
    /// user's entry if it has none (unless there is no history and nobody
    /// took the event). Returns the offset, the entry's slot and what
    /// `route` returned.
    fn step<R>(
        &self,
        shard: &mut Shard<T>,
        user: &UserId,
        keep: bool,
        route: impl FnOnce(u64) -> (R, bool),
    ) -> (u64, Option<u32>, R) {
        let slot = shard.slot(user);
        let (off, slot) = match slot.and_then(|s| shard.entry_mut(s).map(|e| (s, e))) {
            Some((slot, entry)) => {
                if keep {
                    entry.refer();
                }
                let stream = &mut entry.stream;
                stream.head += 1;
                if keep {
                    // Past the per-user cap, the user's oldest is
                    // forgotten; it stays counted until the shard's queue
                    // reaches it.
                    let cap = self.config.max_events_per_user as u64;
                    stream.floor = stream.floor.max((stream.head + 1).saturating_sub(cap));
                }
                (stream.head, Some(slot))
            }
            None => (1, None),
        };
        let (result, here) = route(off);
        if slot.is_some() || (!keep && !here) {
            return (off, slot, result);
        }
        let mut stream = Stream::new(Epoch::mint(), off);
        if keep {
            stream.floor = off;
        }
        let slot = shard.insert(user, stream);
        if keep && let Some(entry) = slot.and_then(|s| shard.entry_mut(s)) {
            entry.refer();
        }
        (off, slot, result)
    }

    fn evict(
        &self,
        shard: &mut Shard<T>,
        now: Instant,
        room: usize,
        connected: &impl Fn(&UserId) -> bool,
    ) {
        shard.evict(now, room, self.config.window, self.budget, connected);
    }

    /// The user's position, and with `since` the retained events after it
    /// when they cover everything up to the latest. Creates the user's
    /// entry (a fresh epoch at 0) when there is none: the caller is a
    /// connection of the user, which keeps it alive.
    pub(crate) fn read(&self, user: &UserId, since: Option<&Position>) -> Read<T> {
        let mut guard = self.shard(user).lock();
        let shard = &mut *guard;
        let slot = match shard.slot(user) {
            Some(slot) => Some(slot),
            None => shard.insert(user, Stream::new(Epoch::mint(), 0)),
        };
        let Some((slot, entry)) = slot.and_then(|s| shard.entry(s).map(|e| (s, e))) else {
            // Inserted just above, under the same lock.
            return Read {
                position: Position {
                    epoch: Epoch::mint(),
                    offset: 0,
                },
                history: None,
            };
        };
        let position = Position {
            epoch: entry.stream.epoch.clone(),
            offset: entry.stream.head,
        };
        let history = since
            .filter(|since| since.epoch == position.epoch && since.offset <= position.offset)
            .filter(|_| self.config.keeps())
            .and_then(|since| {
                if since.offset == position.offset {
                    return Some(Vec::new());
                }
                shard.history(slot, since.offset, Instant::now(), self.config.window)
            });
        Read { position, history }
    }

    /// The user's position, if the table has the user.
    pub(crate) fn position(&self, user: &UserId) -> Option<Position> {
        let mut shard = self.shard(user).lock();
        shard.stream_mut(user).map(|s| Position {
            epoch: s.epoch.clone(),
            offset: s.head,
        })
    }

    /// For a stream kept elsewhere (a backplane's): places an event at
    /// `position` against what this node delivered last, and hands it on
    /// with `route` (told how it was placed) when it is the next one (or
    /// the first, or of a new epoch), under the user's lock. Retains
    /// nothing.
    ///
    /// A user with no connection here gets no entry (nobody to deliver
    /// to): an entry is only ever as old as the user's connections here,
    /// so a connection that joins never inherits a stale cursor.
    pub(crate) fn deliver_at(
        &self,
        user: &UserId,
        position: &Position,
        route: impl FnOnce(Positioned),
        connected: impl Fn(&UserId) -> bool,
    ) -> Positioned {
        let mut guard = self.shard(user).lock();
        let shard = &mut *guard;
        let Some(stream) = shard.stream_mut(user) else {
            if connected(user) {
                shard.insert(user, Stream::new(position.epoch.clone(), position.offset));
                route(Positioned::Next);
            }
            return Positioned::Next;
        };
        if stream.epoch != position.epoch {
            *stream = Stream::new(position.epoch.clone(), position.offset);
            route(Positioned::Restarted);
            return Positioned::Restarted;
        }
        match position.offset {
            off if off <= stream.head => Positioned::Repeat,
            off if off == stream.head + 1 => {
                *stream = Stream::new(position.epoch.clone(), off);
                route(Positioned::Next);
                Positioned::Next
            }
            _ => Positioned::Hole { after: stream.head },
        }
    }

    /// For a stream kept elsewhere: where a connection found it when it
    /// started. Starts this node's cursor there when it has none; one in
    /// the same epoch stays where it is, even behind: the events between
    /// are on their way to this node and still due to the user's other
    /// connections here (the new one drops them as older than its start).
    pub(crate) fn join_at(&self, user: &UserId, position: &Position) {
        let mut guard = self.shard(user).lock();
        let shard = &mut *guard;
        match shard.stream_mut(user) {
            Some(s) if s.epoch == position.epoch => {}
            Some(s) => *s = Stream::new(position.epoch.clone(), position.offset),
            None => {
                shard.insert(user, Stream::new(position.epoch.clone(), position.offset));
            }
        }
    }

    /// Starts a new life of `user`'s stream in place: a fresh epoch, the
    /// history forgotten, offsets going on. For a node-local stream that
    /// missed events (a backplane gap): a resume from before it must not
    /// be recovered from a history with a hole. Returns whether the user
    /// had an entry.
    pub(crate) fn restart(&self, user: &UserId) -> bool {
        let mut shard = self.shard(user).lock();
        match shard.stream_mut(user) {
            Some(s) => {
                s.epoch = Epoch::mint();
                s.floor = s.head + 1;
                true
            }
            None => false,
        }
    }

    /// Moves the cursor past a hole that could not be repaired: the last
    /// offset delivered becomes `position`'s.
    pub(crate) fn skip_to(&self, user: &UserId, position: &Position) {
        let mut shard = self.shard(user).lock();
        if let Some(s) = shard.stream_mut(user)
            && s.epoch == position.epoch
        {
            *s = Stream::new(position.epoch.clone(), s.head.max(position.offset));
        }
    }

    /// `user` may have lost their last connection here. Without history
    /// their entry goes at once (nothing could be resumed from it). With
    /// history, an entry with retained events goes with the last of them,
    /// and one with none stays for the window, so a client that saw
    /// nothing yet can still resume from its `ready` position: a marker is
    /// queued with the shard's events, and the entry goes when the queue
    /// reaches it, unless the user is back.
    pub(crate) fn release(&self, user: &UserId, connected: impl Fn(&UserId) -> bool) {
        let mut guard = self.shard(user).lock();
        let shard = &mut *guard;
        let Some(slot) = shard.slot(user) else {
            return;
        };
        if connected(user) {
            return;
        }
        if !self.config.keeps() {
            shard.remove(slot);
            return;
        }
        if shard.is_referenced(slot) {
            return;
        }
        // Counted like any event, so connection churn alone stays within
        // the budget too. Evicting first cannot take this entry: no
        // arrival points at it.
        let now = Instant::now();
        self.evict(shard, now, MARKER_COST, &connected);
        shard.mark(slot, now);
    }

    /// Bytes counted against the budget, over all shards.
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes()).sum()
    }

    /// Events retained, once per user they are kept for.
    pub(crate) fn retained(&self) -> usize {
        self.shards.iter().map(|s| s.lock().retained()).sum()
    }

    /// Users with an entry.
    pub(crate) fn users(&self) -> usize {
        self.shards.iter().map(|s| s.lock().users()).sum()
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "table_props.rs"]
mod props;
