//! The hub's table of user streams: each user's epoch, latest offset and
//! retained history, in memory, sharded like the routing table.
//!
//! The offset is assigned, the event retained and handed to the user's
//! connections under the user's shard lock, so every connection of the
//! user sees offsets in increasing order whoever sends concurrently, and
//! an event is in the history before any connection can have it (a
//! resuming connection listens first, reads second: whatever it misses
//! live is in what it reads).
//!
//! A shard keeps its retained events in one queue, in arrival order, each a
//! share of the event the connections' queues had (the serialised bytes
//! are shared by every user of a fan-out and by the history): retaining is
//! a reference count, not a copy. Forgetting is popping the queue's front,
//! in runs of an eighth of the budget at a time so that it streams through
//! memory laid out in order; a send reads nothing else of the queue. A
//! resume reads its user's events from the back of the queue until it
//! reaches its position: a cost paid per resume, not per send.
//!
//! Memory is bounded by [`HistoryConfig`]: the byte budget is split evenly
//! across the shards, each of which forgets its oldest events first (the
//! bookkeeping of a retained event is counted with it). A user's entry
//! lives while the user has a connection here or retained history; the
//! hub removes it otherwise ([`Table::release`]).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use parking_lot::Mutex;

use crate::id::UserId;
use crate::stream::{Epoch, HistoryConfig, Position};

/// Bytes counted for a user's entry, and for each retained event beyond
/// its weight (its record, with slack for the queue's growth), so that a
/// flood of tiny events to many users stays within the budget too.
pub(crate) const ENTRY_COST: usize = 160;
pub(crate) const RETAINED_COST: usize = 96;
const MARKER_COST: usize = 64;

struct Stream {
    epoch: Epoch,
    /// The latest offset assigned (or, for a backplane's stream, delivered).
    head: u64,
    /// The oldest offset still retained (`head + 1`: none).
    first: u64,
}

impl Stream {
    fn new(epoch: Epoch, head: u64) -> Self {
        Stream {
            epoch,
            head,
            first: head + 1,
        }
    }
}

/// One retained event (or, with no item, an idle entry's marker, see
/// [`Table::release`]), in its shard's order of arrival.
struct Arrival<T> {
    user: UserId,
    off: u64,
    at: Instant,
    cost: usize,
    item: Option<T>,
}

struct Shard<T> {
    streams: HashMap<UserId, Stream>,
    arrivals: VecDeque<Arrival<T>>,
    bytes: usize,
    /// When the queue's front arrived (kept here so a send need not read
    /// the front to know nothing has expired).
    oldest: Option<Instant>,
}

impl<T: Clone> Shard<T> {
    fn empty() -> Mutex<Self> {
        Mutex::new(Shard {
            streams: HashMap::new(),
            arrivals: VecDeque::new(),
            bytes: 0,
            oldest: None,
        })
    }

    /// `user`'s retained events after `after` up to `head`, oldest first,
    /// when they are all there and none is older than `window`.
    fn history(
        &self,
        user: &UserId,
        after: u64,
        head: u64,
        now: Instant,
        window: std::time::Duration,
    ) -> Option<Vec<(u64, T)>> {
        let mut found = Vec::new();
        let mut want = head;
        for arrival in self.arrivals.iter().rev() {
            let Some(item) = &arrival.item else { continue };
            if !(arrival.user.ptr_eq(user) || arrival.user == *user) {
                continue;
            }
            if arrival.off != want || now.saturating_duration_since(arrival.at) > window {
                return None;
            }
            found.push((arrival.off, item.clone()));
            if want == after + 1 {
                found.reverse();
                return Some(found);
            }
            want -= 1;
        }
        None
    }
}

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

impl<T: Clone> Table<T> {
    pub(crate) fn new(shards: usize, config: HistoryConfig) -> Self {
        let shards = shards.clamp(1, 4096).next_power_of_two();
        Table {
            shards: (0..shards).map(|_| Shard::empty()).collect(),
            spare: Shard::empty(),
            hasher: RandomState::new(),
            budget: config.max_bytes / shards,
            config,
        }
    }

    fn shard(&self, user: &UserId) -> &Mutex<Shard<T>> {
        let hash = self.hasher.hash_one(user) as usize;
        let index = hash & (self.shards.len() - 1);
        self.shards.get(index).unwrap_or(&self.spare)
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
        let (off, fresh) = match shard.streams.get_mut(user) {
            Some(stream) => {
                stream.head += 1;
                (stream.head, false)
            }
            None => (1, true),
        };
        let kept = keep.then(|| item.clone());
        let (result, here) = route(off, item);
        if fresh {
            if !keep && !here {
                return (off, result);
            }
            let mut stream = Stream::new(Epoch::mint(), 0);
            stream.head = off;
            shard.streams.insert(user.clone(), stream);
            shard.bytes += ENTRY_COST;
        }
        if let Some(kept) = kept {
            let now = Instant::now();
            let cost = weight + RETAINED_COST;
            self.evict(shard, now, cost, &connected);
            if let Some(stream) = shard.streams.get_mut(user) {
                stream.first = stream.first.min(off);
                if stream.head + 1 - stream.first > self.config.max_events_per_user as u64 {
                    // The user's oldest is forgotten; it stays counted
                    // until the shard's queue reaches it.
                    stream.first += 1;
                }
            }
            shard.arrivals.push_back(Arrival {
                user: user.clone(),
                off,
                at: now,
                cost,
                item: Some(kept),
            });
            shard.oldest.get_or_insert(now);
            shard.bytes += cost;
        }
        (off, result)
    }

    /// Forgets, oldest first, what is past the window, and what keeps
    /// `room` more bytes from fitting the budget.
    fn evict(
        &self,
        shard: &mut Shard<T>,
        now: Instant,
        room: usize,
        connected: &impl Fn(&UserId) -> bool,
    ) {
        // Decided from the shard's own fields, which the send has in cache:
        // the queue's front is touched only to evict. Over the budget, it
        // makes room for an eighth of it at once, so evictions come in runs
        // through memory laid out in order (which the CPU prefetches), not
        // one cold read per send.
        let expired = |oldest: Option<Instant>| {
            oldest.is_some_and(|at| now.saturating_duration_since(at) > self.config.window)
        };
        if !expired(shard.oldest) && shard.bytes + room <= self.budget {
            return;
        }
        let low = self.budget - self.budget / 8;
        while let Some(front) = shard.arrivals.front() {
            if !expired(Some(front.at)) && shard.bytes + room <= low {
                break;
            }
            let Some(arrival) = shard.arrivals.pop_front() else {
                break;
            };
            shard.bytes = shard.bytes.saturating_sub(arrival.cost);
            let Some(stream) = shard.streams.get_mut(&arrival.user) else {
                continue;
            };
            if arrival.off >= stream.first {
                stream.first = arrival.off + 1;
            }
            if stream.first > stream.head && !connected(&arrival.user) {
                shard.streams.remove(&arrival.user);
                shard.bytes = shard.bytes.saturating_sub(ENTRY_COST);
            }
        }
        shard.oldest = shard.arrivals.front().map(|a| a.at);
    }

    /// The user's position, and with `since` the retained events after it
    /// when they cover everything up to the latest. Creates the user's
    /// entry (a fresh epoch at 0) when there is none: the caller is a
    /// connection of the user, which keeps it alive.
    pub(crate) fn read(&self, user: &UserId, since: Option<&Position>) -> Read<T> {
        let mut guard = self.shard(user).lock();
        let shard = &mut *guard;
        if !shard.streams.contains_key(user) {
            shard.bytes += ENTRY_COST;
            shard
                .streams
                .insert(user.clone(), Stream::new(Epoch::mint(), 0));
        }
        let Some(stream) = shard.streams.get(user) else {
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
            epoch: stream.epoch.clone(),
            offset: stream.head,
        };
        let (head, first) = (stream.head, stream.first);
        let history = since
            .filter(|since| since.epoch == position.epoch && since.offset <= head)
            .filter(|_| self.config.keeps())
            .and_then(|since| {
                let after = since.offset;
                if after == head {
                    return Some(Vec::new());
                }
                if first > after + 1 {
                    return None;
                }
                shard.history(user, after, head, Instant::now(), self.config.window)
            });
        Read { position, history }
    }

    /// The user's position, if the table has the user.
    pub(crate) fn position(&self, user: &UserId) -> Option<Position> {
        let shard = self.shard(user).lock();
        shard.streams.get(user).map(|s| Position {
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
        let mut shard = self.shard(user).lock();
        let shard = &mut *shard;
        if !shard.streams.contains_key(user) && !connected(user) {
            return Positioned::Next;
        }
        let Some(stream) = shard.streams.get_mut(user) else {
            shard.bytes += ENTRY_COST;
            shard.streams.insert(
                user.clone(),
                Stream::new(position.epoch.clone(), position.offset),
            );
            route(Positioned::Next);
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
        let mut shard = self.shard(user).lock();
        let shard = &mut *shard;
        match shard.streams.get_mut(user) {
            Some(s) if s.epoch == position.epoch => {}
            Some(s) => *s = Stream::new(position.epoch.clone(), position.offset),
            None => {
                shard.bytes += ENTRY_COST;
                shard.streams.insert(
                    user.clone(),
                    Stream::new(position.epoch.clone(), position.offset),
                );
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
        match shard.streams.get_mut(user) {
            Some(s) => {
                s.epoch = Epoch::mint();
                s.first = s.head + 1;
                true
            }
            None => false,
        }
    }

    /// Moves the cursor past a hole that could not be repaired: the last
    /// offset delivered becomes `position`'s.
    pub(crate) fn skip_to(&self, user: &UserId, position: &Position) {
        let mut shard = self.shard(user).lock();
        if let Some(s) = shard.streams.get_mut(user)
            && s.epoch == position.epoch
        {
            *s = Stream::new(position.epoch.clone(), s.head.max(position.offset));
        }
    }

    /// `user` may have lost their last connection here. Without history
    /// their entry goes at once (nothing could be resumed from it). With
    /// history, an entry with nothing retained stays for the window, so a
    /// client that saw nothing yet can still resume from its `ready`
    /// position: it is queued with the shard's arrivals (a marker, offset
    /// 0) and goes when they reach it, unless the user is back.
    pub(crate) fn release(&self, user: &UserId, connected: impl Fn(&UserId) -> bool) {
        let mut guard = self.shard(user).lock();
        let shard = &mut *guard;
        let Some(stream) = shard.streams.get(user) else {
            return;
        };
        if connected(user) {
            return;
        }
        if !self.config.keeps() {
            shard.streams.remove(user);
            shard.bytes = shard.bytes.saturating_sub(ENTRY_COST);
            return;
        }
        if stream.first <= stream.head {
            // Retained history: the entry goes with its last event.
            return;
        }
        // Counted like any arrival, so connection churn alone stays within
        // the budget too.
        let now = Instant::now();
        self.evict(shard, now, MARKER_COST, &connected);
        shard.arrivals.push_back(Arrival {
            user: user.clone(),
            off: 0,
            at: now,
            cost: MARKER_COST,
            item: None,
        });
        shard.oldest.get_or_insert(now);
        shard.bytes += MARKER_COST;
    }

    /// Bytes counted against the budget, over all shards.
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }

    /// Users with an entry.
    pub(crate) fn users(&self) -> usize {
        self.shards.iter().map(|s| s.lock().streams.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_remote_stream_has_a_cursor_only_while_its_user_is_connected_here() {
        let table: Table<()> = Table::new(4, HistoryConfig::off());
        let user = alice();
        let epoch = Epoch::mint();
        let at = |offset| Position {
            epoch: epoch.clone(),
            offset,
        };
        // Nobody here: no cursor is kept (nothing to deliver to).
        let mut routed = 0;
        table.deliver_at(&user, &at(4), |_| routed += 1, |_| false);
        assert_eq!((routed, table.position(&user)), (0, None));
        // A connection joins at 9: the cursor starts there, not at a stale 4,
        // so a later event is the next one, not a hole to repair behind it.
        table.join_at(&user, &at(9));
        let placed = table.deliver_at(&user, &at(10), |_| routed += 1, |_| true);
        assert_eq!((placed, routed), (Positioned::Next, 1));
        assert_eq!(
            table.deliver_at(&user, &at(10), |_| {}, |_| true),
            Positioned::Repeat
        );
        assert_eq!(
            table.deliver_at(&user, &at(13), |_| {}, |_| true),
            Positioned::Hole { after: 10 }
        );
        // The last connection left: the cursor goes with it.
        table.release(&user, |_| false);
        assert_eq!(table.position(&user), None);
    }

    #[test]
    fn the_byte_budget_holds_and_idle_entries_age_out() {
        let history = HistoryConfig {
            max_bytes: 64 * 1024,
            ..HistoryConfig::default()
        };
        let table: Table<()> = Table::new(1, history);
        for u in 0..2_000 {
            let user = UserId::new(format!("u{u}")).unwrap_or_else(|e| panic!("{e}"));
            let _ = table.append(&user, (), 200, |_, ()| ((), false), |_| false);
            table.release(&user, |_| false);
        }
        assert!(table.bytes() <= 64 * 1024, "{}", table.bytes());
        assert!(table.users() < 2_000);
    }
}
