//! One shard of the users' streams: its users' entries, and what it
//! retains for them, oldest first.
//!
//! An event is retained once per shard, however many of the shard's users
//! it went to (a fan-out), followed in a second queue by one *arrival* per
//! user it went to: the 4-byte slot of the user's entry, nothing more.
//! The offset need not be written: a user's offsets are consecutive and
//! so are its arrivals, in queue order, so its newest arrival is at its
//! head, the one before at `head - 1`, and so on; and counting its
//! arrivals (`kept`) says where its retained offsets begin.
//! Forgetting is popping the fronts: an event with its arrivals, which
//! follow one another.
//!
//! Why so small: with a history of tens of MiB, what a send writes into
//! these queues goes to memory that left the CPU's caches long ago, and
//! that write, per user of a fan-out, was most of what history cost a send
//! (docs/benchmarks.md, "The users' streams").
//!
//! An entry lives while its user has a connection here or an arrival in
//! the queue (`refs`), so an arrival's slot always names the entry it was
//! made for: a slot is reused only once no arrival points at it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::id::UserId;
use crate::stream::Epoch;

/// Bytes counted for a user's entry (the entry, its index slot, slack).
pub(crate) const ENTRY_COST: usize = 160;
/// Bytes counted for each retained event beyond its weight (its record,
/// with slack for the queue's growth).
pub(crate) const EVENT_COST: usize = 96;
/// Bytes counted for each user an event is retained for (a 4-byte
/// arrival, with slack for the queue's growth), so that a flood of tiny
/// events to many users stays within the budget too.
pub(crate) const ARRIVAL_COST: usize = 8;
/// Bytes counted for an idle entry's marker (see `Table::release`),
/// arrival included.
pub(crate) const MARKER_COST: usize = 64 + ARRIVAL_COST;

/// A user's stream, as this node knows it.
pub(crate) struct Stream {
    pub(crate) epoch: Epoch,
    /// The latest offset assigned (or, for a backplane's stream, delivered).
    pub(crate) head: u64,
    /// No offset below this one is readable: set past a restart's head,
    /// and past what the per-user cap forgets.
    pub(crate) floor: u64,
}

impl Stream {
    /// A stream at `head` with nothing readable.
    pub(crate) fn new(epoch: Epoch, head: u64) -> Self {
        Stream {
            epoch,
            head,
            floor: head + 1,
        }
    }
}

pub(crate) struct Entry {
    pub(crate) user: UserId,
    pub(crate) stream: Stream,
    /// Arrivals in the queue that point at this entry (markers included).
    refs: u32,
    /// Of those, the retained events': the user's latest `kept` offsets.
    kept: u32,
}

impl Entry {
    /// Counts the arrival of a retained event about to point at this entry
    /// (see [`Shard::keep`]).
    pub(crate) fn refer(&mut self) {
        self.refs = self.refs.saturating_add(1);
        self.kept = self.kept.saturating_add(1);
    }

    /// The oldest offset retained (`head + 1`: none).
    pub(crate) fn first(&self) -> u64 {
        let s = &self.stream;
        s.floor
            .max((s.head + 1).saturating_sub(u64::from(self.kept)))
    }
}

/// One retained event (or, with no item, an idle entry's marker).
struct Kept<T> {
    item: Option<T>,
    at: Instant,
    cost: u32,
    /// Its arrivals: the next ones in the arrivals' queue.
    arrivals: u32,
}

pub(crate) struct Shard<T> {
    index: HashMap<UserId, u32>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    events: VecDeque<Kept<T>>,
    /// Each retained event's users, by slot, event after event.
    arrivals: VecDeque<u32>,
    /// Arrivals of retained events (markers' not counted).
    retained: usize,
    bytes: usize,
    /// When the front event arrived (kept here so a send need not read the
    /// front to know nothing has expired).
    oldest: Option<Instant>,
}

impl<T: Clone> Shard<T> {
    pub(crate) fn new() -> Self {
        Shard {
            index: HashMap::new(),
            entries: Vec::new(),
            free: Vec::new(),
            events: VecDeque::new(),
            arrivals: VecDeque::new(),
            retained: 0,
            bytes: 0,
            oldest: None,
        }
    }

    pub(crate) fn slot(&self, user: &UserId) -> Option<u32> {
        self.index.get(user).copied()
    }

    pub(crate) fn entry(&self, slot: u32) -> Option<&Entry> {
        self.entries.get(slot as usize).and_then(Option::as_ref)
    }

    pub(crate) fn entry_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        self.entries.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// `user`'s stream, if the shard has an entry for them.
    pub(crate) fn stream_mut(&mut self, user: &UserId) -> Option<&mut Stream> {
        let slot = self.slot(user)?;
        self.entry_mut(slot).map(|e| &mut e.stream)
    }

    /// Adds an entry for `user` (who has none); its slot, or `None` in the
    /// unreachable case of a shard with 2^32 entries (the user then simply
    /// has none, as a user with no connection).
    pub(crate) fn insert(&mut self, user: &UserId, stream: Stream) -> Option<u32> {
        let entry = Entry {
            user: user.clone(),
            stream,
            refs: 0,
            kept: 0,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                let place = self.entries.get_mut(slot as usize)?;
                *place = Some(entry);
                slot
            }
            None => {
                let slot = u32::try_from(self.entries.len()).ok()?;
                self.entries.push(Some(entry));
                slot
            }
        };
        self.index.insert(user.clone(), slot);
        self.bytes += ENTRY_COST;
        Some(slot)
    }

    pub(crate) fn remove(&mut self, slot: u32) {
        let Some(entry) = self.entries.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.index.remove(&entry.user);
        self.free.push(slot);
        self.bytes = self.bytes.saturating_sub(ENTRY_COST);
    }

    /// Whether the entry in `slot` has arrivals in the queue.
    pub(crate) fn is_referenced(&self, slot: u32) -> bool {
        self.entry(slot).is_some_and(|e| e.refs > 0)
    }

    /// Retains `item` as of `now` for the entries in `slots`, each already
    /// counted by [`Entry::refer`], in the order their offsets were given.
    pub(crate) fn keep(&mut self, item: T, cost: usize, now: Instant, slots: &[u32]) {
        self.push(Some(item), cost, now, slots);
    }

    /// Queues a marker for the entry in `slot`, which keeps it until the
    /// queue reaches it (see `Table::release`).
    pub(crate) fn mark(&mut self, slot: u32, now: Instant) {
        let Some(entry) = self.entry_mut(slot) else {
            return;
        };
        entry.refs = entry.refs.saturating_add(1);
        self.push(None, MARKER_COST - ARRIVAL_COST, now, &[slot]);
    }

    fn push(&mut self, item: Option<T>, cost: usize, now: Instant, slots: &[u32]) {
        let marker = item.is_none();
        self.events.push_back(Kept {
            item,
            at: now,
            cost: u32::try_from(cost).unwrap_or(u32::MAX),
            arrivals: u32::try_from(slots.len()).unwrap_or(u32::MAX),
        });
        self.arrivals.extend(slots);
        if !marker {
            self.retained += slots.len();
        }
        self.oldest.get_or_insert(now);
        self.bytes += cost + slots.len() * ARRIVAL_COST;
    }

    /// Forgets, oldest first, what is past `window`, and what keeps `room`
    /// more bytes from fitting `budget`. An entry whose last arrival goes
    /// and whose user (`connected` says) has no connection here goes too.
    pub(crate) fn evict(
        &mut self,
        now: Instant,
        room: usize,
        window: Duration,
        budget: usize,
        connected: &impl Fn(&UserId) -> bool,
    ) {
        // Decided from the shard's own fields, which the send has in cache:
        // the queues' fronts are touched only to evict. Over the budget, it
        // makes room for an eighth of it at once, so evictions come in runs
        // through memory laid out in order (which the CPU prefetches), not
        // one cold read per send.
        let expired = |at: Instant| now.saturating_duration_since(at) > window;
        if !self.oldest.is_some_and(expired) && self.bytes + room <= budget {
            return;
        }
        let low = budget - budget / 8;
        while let Some(front) = self.events.front() {
            if !expired(front.at) && self.bytes + room <= low {
                break;
            }
            let Some(kept) = self.events.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(kept.cost as usize);
            let marker = kept.item.is_none();
            if !marker {
                self.retained = self.retained.saturating_sub(kept.arrivals as usize);
            }
            for _ in 0..kept.arrivals {
                let Some(slot) = self.arrivals.pop_front() else {
                    break;
                };
                self.bytes = self.bytes.saturating_sub(ARRIVAL_COST);
                self.forget(slot, marker, connected);
            }
        }
        self.oldest = self.events.front().map(|k| k.at);
    }

    /// The entry in `slot` loses its oldest arrival: its oldest retained
    /// event, or a marker.
    fn forget(&mut self, slot: u32, marker: bool, connected: &impl Fn(&UserId) -> bool) {
        let Some(entry) = self.entry_mut(slot) else {
            return;
        };
        entry.refs = entry.refs.saturating_sub(1);
        if !marker {
            entry.kept = entry.kept.saturating_sub(1);
        }
        if entry.refs == 0 && !connected(&entry.user) {
            self.remove(slot);
        }
    }

    /// The events of the entry in `slot` after `after` up to its head,
    /// oldest first, when they are all retained and none is older than
    /// `window`. Read from the back: the entry's newest arrival is at its
    /// head, each one before it one offset lower.
    pub(crate) fn history(
        &self,
        slot: u32,
        after: u64,
        now: Instant,
        window: Duration,
    ) -> Option<Vec<(u64, T)>> {
        let entry = self.entry(slot)?;
        let head = entry.stream.head;
        if head <= after || entry.first() > after + 1 {
            return None;
        }
        let mut found = Vec::new();
        let mut want = head;
        let mut end = self.arrivals.len();
        for kept in self.events.iter().rev() {
            let count = kept.arrivals as usize;
            let start = end.checked_sub(count)?;
            let users = self.arrivals.iter().skip(start).take(count);
            end = start;
            let Some(item) = &kept.item else {
                continue;
            };
            for _ in users.rev().filter(|s| **s == slot) {
                if now.saturating_duration_since(kept.at) > window {
                    return None;
                }
                found.push((want, item.clone()));
                if want == after + 1 {
                    found.reverse();
                    return Some(found);
                }
                want -= 1;
            }
        }
        None
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn users(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn retained(&self) -> usize {
        self.retained
    }
}
