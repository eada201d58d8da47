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

/// Bytes counted for a user's entry and for each retained event beyond
/// its own shared bytes (its place in two queues), so that a flood of
/// tiny events to many users stays within the budget too.
pub(crate) const ENTRY_COST: usize = 160;
pub(crate) const RETAINED_COST: usize = 160;
const MARKER_COST: usize = 64;

struct Retained<T> {
    off: u64,
    at: Instant,
    item: T,
}

struct Stream<T> {
    epoch: Epoch,
    /// The latest offset assigned (or, for a backplane's stream, delivered).
    head: u64,
    retained: VecDeque<Retained<T>>,
}

impl<T> Stream<T> {
    fn new(epoch: Epoch, head: u64) -> Self {
        Stream {
            epoch,
            head,
            retained: VecDeque::new(),
        }
    }
}

/// One retained event in its shard's order of arrival (offset 0: an idle
/// entry's marker, see [`Table::release`]).
struct Arrival {
    user: UserId,
    off: u64,
    at: Instant,
    cost: usize,
}

struct Shard<T> {
    streams: HashMap<UserId, Stream<T>>,
    arrivals: VecDeque<Arrival>,
    bytes: usize,
}

impl<T> Shard<T> {
    fn empty() -> Mutex<Self> {
        Mutex::new(Shard {
            streams: HashMap::new(),
            arrivals: VecDeque::new(),
            bytes: 0,
        })
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

    /// Assigns `user`'s next offset to an event and hands it on, under the
    /// user's lock: `make` builds the item for the offset (and says what it
    /// weighs), `route` offers it to the user's connections and says
    /// whether any is here. Returns the offset and what `route` returned.
    ///
    /// Without history, a user nobody is connected for keeps no entry: the
    /// offset is then 1 of a fresh epoch that nobody will ever see.
    pub(crate) fn append<R>(
        &self,
        user: &UserId,
        make: impl FnOnce(u64) -> (T, usize),
        route: impl FnOnce(&T) -> (R, bool),
        connected: impl Fn(&UserId) -> bool,
    ) -> (u64, R) {
        let keep = self.config.keeps();
        let mut shard = self.shard(user).lock();
        let now = keep.then(Instant::now);
        let shard = &mut *shard;
        let (off, item, weight, result, here, fresh) = {
            let fresh = !shard.streams.contains_key(user);
            let stream = shard
                .streams
                .entry(user.clone())
                .or_insert_with(|| Stream::new(Epoch::mint(), 0));
            stream.head += 1;
            let off = stream.head;
            let (item, weight) = make(off);
            let (result, here) = route(&item);
            (off, item, weight, result, here, fresh)
        };
        if fresh {
            if keep || here {
                shard.bytes += ENTRY_COST;
            } else {
                shard.streams.remove(user);
                return (off, result);
            }
        }
        if let Some(now) = now {
            let cost = weight + RETAINED_COST;
            if let Some(stream) = shard.streams.get_mut(user) {
                stream.retained.push_back(Retained { off, at: now, item });
                if stream.retained.len() > self.config.max_events_per_user {
                    // Its arrival stays counted until the shard's queue
                    // reaches it: the budget bounds both.
                    stream.retained.pop_front();
                }
            }
            shard.arrivals.push_back(Arrival {
                user: user.clone(),
                off,
                at: now,
                cost,
            });
            shard.bytes += cost;
            self.evict(shard, now, &connected);
        }
        (off, result)
    }

    /// Forgets, oldest first, what is past the window or over the budget.
    fn evict(&self, shard: &mut Shard<T>, now: Instant, connected: &impl Fn(&UserId) -> bool) {
        while let Some(front) = shard.arrivals.front() {
            let expired = now.saturating_duration_since(front.at) > self.config.window;
            if !expired && shard.bytes <= self.budget {
                break;
            }
            let Some(arrival) = shard.arrivals.pop_front() else {
                break;
            };
            shard.bytes = shard.bytes.saturating_sub(arrival.cost);
            let Some(stream) = shard.streams.get_mut(&arrival.user) else {
                continue;
            };
            if stream
                .retained
                .front()
                .is_some_and(|r| r.off == arrival.off)
            {
                stream.retained.pop_front();
            }
            if stream.retained.is_empty() && !connected(&arrival.user) {
                shard.streams.remove(&arrival.user);
                shard.bytes = shard.bytes.saturating_sub(ENTRY_COST);
            }
        }
    }

    /// The user's position, and with `since` the retained events after it
    /// when they cover everything up to the latest. Creates the user's
    /// entry (a fresh epoch at 0) when there is none: the caller is a
    /// connection of the user, which keeps it alive.
    pub(crate) fn read(&self, user: &UserId, since: Option<&Position>) -> Read<T> {
        let mut shard = self.shard(user).lock();
        let shard = &mut *shard;
        if !shard.streams.contains_key(user) {
            shard.bytes += ENTRY_COST;
        }
        let stream = shard
            .streams
            .entry(user.clone())
            .or_insert_with(|| Stream::new(Epoch::mint(), 0));
        let position = Position {
            epoch: stream.epoch.clone(),
            offset: stream.head,
        };
        let history = since
            .filter(|since| since.epoch == stream.epoch && since.offset <= stream.head)
            .filter(|_| self.config.keeps())
            .and_then(|since| {
                let after = since.offset;
                if after == stream.head {
                    return Some(Vec::new());
                }
                let now = Instant::now();
                let first = stream.retained.iter().find(|r| r.off > after)?;
                let fresh = now.saturating_duration_since(first.at) <= self.config.window;
                (first.off == after + 1 && fresh).then(|| {
                    stream
                        .retained
                        .iter()
                        .filter(|r| r.off > after)
                        .map(|r| (r.off, r.item.clone()))
                        .collect()
                })
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
            stream.epoch = position.epoch.clone();
            stream.head = position.offset;
            route(Positioned::Restarted);
            return Positioned::Restarted;
        }
        match position.offset {
            off if off <= stream.head => Positioned::Repeat,
            off if off == stream.head + 1 => {
                stream.head = off;
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
            Some(s) => {
                s.epoch = position.epoch.clone();
                s.head = position.offset;
            }
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
                s.retained.clear();
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
            s.head = s.head.max(position.offset);
        }
    }

    /// `user` may have lost their last connection here. Without history
    /// their entry goes at once (nothing could be resumed from it). With
    /// history, an entry with nothing retained stays for the window, so a
    /// client that saw nothing yet can still resume from its `ready`
    /// position: it is queued with the shard's arrivals (a marker, offset
    /// 0) and goes when they reach it, unless the user is back.
    pub(crate) fn release(&self, user: &UserId, connected: impl Fn(&UserId) -> bool) {
        let mut shard = self.shard(user).lock();
        let idle = shard
            .streams
            .get(user)
            .is_some_and(|s| s.retained.is_empty() && !connected(user));
        if !idle {
            return;
        }
        if self.config.keeps() {
            // Counted like any arrival, so connection churn alone stays
            // within the budget too.
            let now = Instant::now();
            shard.arrivals.push_back(Arrival {
                user: user.clone(),
                off: 0,
                at: now,
                cost: MARKER_COST,
            });
            shard.bytes += MARKER_COST;
            self.evict(&mut shard, now, &connected);
        } else {
            shard.streams.remove(user);
            shard.bytes = shard.bytes.saturating_sub(ENTRY_COST);
        }
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
        let at = |offset| Position { epoch: epoch.clone(), offset };
        // Nobody here: no cursor is kept (nothing to deliver to).
        let mut routed = 0;
        table.deliver_at(&user, &at(4), |_| routed += 1, |_| false);
        assert_eq!((routed, table.position(&user)), (0, None));
        // A connection joins at 9: the cursor starts there, not at a stale 4,
        // so a later event is the next one, not a hole to repair behind it.
        table.join_at(&user, &at(9));
        let placed = table.deliver_at(&user, &at(10), |_| routed += 1, |_| true);
        assert_eq!((placed, routed), (Positioned::Next, 1));
        assert_eq!(table.deliver_at(&user, &at(10), |_| {}, |_| true), Positioned::Repeat);
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
            let _ = table.append(&user, |_| ((), 200), |_| ((), false), |_| false);
            table.release(&user, |_| false);
        }
        assert!(table.bytes() <= 64 * 1024, "{}", table.bytes());
        assert!(table.users() < 2_000);
    }
}
