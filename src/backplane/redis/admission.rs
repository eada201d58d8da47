//! The cluster-wide per-user connection count, kept self-healing.
//!
//! Redis holds, per user, a hash `<prefix>:count:<hex user>` of node id ->
//! that node's count of the user's connections. Each node is the only
//! writer of its own field, and the truth of that field is this node's
//! [`Admission`] table, kept in process: every write is an *absolute*
//! value from the table, never an increment. So whatever happens to a
//! write — a reply lost after Redis ran it, an admission cancelled halfway,
//! a failed release, a field deleted while the node's heartbeat lapsed —
//! the next flush of the presence task writes the truth again, at once
//! after any change and at every presence refresh. Dead nodes' fields are
//! ignored (and deleted) by the admission script, since a node's
//! heartbeat key is the lease of its counts.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::id::UserId;

/// This node's connection counts per user, and which users' fields in
/// Redis may disagree with them.
#[derive(Debug, Default)]
pub(super) struct Admission {
    inner: Mutex<Table>,
    /// Notified whenever a user turns dirty: the presence task flushes.
    pub(super) changed: Notify,
}

#[derive(Debug, Default)]
struct Table {
    /// Admitted connections plus admissions in flight, per user.
    counts: HashMap<UserId, u64>,
    /// Users whose field must be written again.
    dirty: HashSet<UserId>,
}

/// A count reserved for an admission in flight: released on drop unless
/// the admission succeeded, so an admission that fails, times out or is
/// cancelled leaves no phantom behind in the table.
pub(super) struct Reservation<'a> {
    admission: &'a Admission,
    user: &'a UserId,
    /// This node's count for the user if the admission succeeds.
    pub(super) count: u64,
    kept: bool,
}

impl Reservation<'_> {
    /// The admission succeeded: the count stays until
    /// [`Admission::release`].
    pub(super) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.admission.release(self.user);
        }
    }
}

impl Admission {
    /// Reserves one connection of `user` on this node. The user is marked
    /// dirty at once: if the admission's own write lands half-way (or the
    /// admission is abandoned after Redis ran it), the next flush corrects
    /// it.
    pub(super) fn reserve<'a>(&'a self, user: &'a UserId) -> Reservation<'a> {
        let mut table = self.inner.lock();
        let count = {
            let count = table.counts.entry(user.clone()).or_default();
            *count += 1;
            *count
        };
        table.dirty.insert(user.clone());
        drop(table);
        self.changed.notify_one();
        Reservation {
            admission: self,
            user,
            count,
            kept: false,
        }
    }

    /// One admitted connection of `user` has ended. Synchronous and
    /// allocation-light: safe in `Drop`, outside a runtime.
    pub(super) fn release(&self, user: &UserId) {
        let mut table = self.inner.lock();
        if let Some(count) = table.counts.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                table.counts.remove(user);
            }
            table.dirty.insert(user.clone());
            drop(table);
            self.changed.notify_one();
        }
    }

    /// The writes that bring Redis to this node's truth: the dirty users
    /// (`None` = delete this node's field) and, when `everyone`, every
    /// counted user too. The dirty set is emptied: call
    /// [`Admission::failed`] with the result if the writes do not land.
    pub(super) fn take_writes(&self, everyone: bool) -> Vec<(UserId, Option<u64>)> {
        let mut table = self.inner.lock();
        let mut users = std::mem::take(&mut table.dirty);
        if everyone {
            users.extend(table.counts.keys().cloned());
        }
        users
            .into_iter()
            .map(|user| {
                let count = table.counts.get(&user).copied();
                (user, count)
            })
            .collect()
    }

    /// The writes of [`Admission::take_writes`] did not land: try again.
    pub(super) fn failed(&self, writes: Vec<(UserId, Option<u64>)>) {
        self.inner
            .lock()
            .dirty
            .extend(writes.into_iter().map(|(user, _)| user));
    }

    /// Whether some field is waiting to be written.
    pub(super) fn has_dirty(&self) -> bool {
        !self.inner.lock().dirty.is_empty()
    }
}

/// Admits one more connection of a user if the cluster total stays within
/// the limit, atomically. `KEYS[1]` the user's count hash; `ARGV[1]` this
/// node, `ARGV[2]` the limit, `ARGV[3]` the prefix, `ARGV[4]` this node's
/// count including the new connection. Other nodes' fields count only while
/// their heartbeat key exists (dead ones are deleted); this node's own
/// field is replaced by `ARGV[4]`, its truth. Returns 1 admitted, 0 refused.
pub(super) const ADMIT: &str = r"
local total = tonumber(ARGV[4])
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  if counts[i] ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[3] .. ':node:' .. counts[i]) == 1 then
      total = total + tonumber(counts[i + 1])
    else
      redis.call('HDEL', KEYS[1], counts[i])
    end
  end
end
if total > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
";

/// The cluster-wide count of a user's connections: the fields of live
/// nodes. `KEYS[1]` the count hash, `ARGV[1]` the prefix.
pub(super) const COUNT: &str = r"
local total = 0
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  if redis.call('EXISTS', ARGV[1] .. ':node:' .. counts[i]) == 1 then
    total = total + tonumber(counts[i + 1])
  end
end
return total
";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    #[test]
    fn an_abandoned_reservation_leaves_no_count_but_a_write() {
        let admission = Admission::default();
        let alice = user("alice");
        let kept = admission.reserve(&alice);
        assert_eq!(kept.count, 1);
        kept.keep();
        let abandoned = admission.reserve(&alice);
        assert_eq!(abandoned.count, 2);
        drop(abandoned);
        assert_eq!(admission.take_writes(false), vec![(alice.clone(), Some(1))]);
        assert!(!admission.has_dirty());
        admission.release(&alice);
        assert_eq!(admission.take_writes(false), vec![(alice.clone(), None)]);
        // Releasing more than was admitted never goes below zero.
        admission.release(&alice);
        assert!(admission.take_writes(true).is_empty());
    }

    #[test]
    fn failed_writes_are_retried_and_a_full_flush_covers_everyone() {
        let admission = Admission::default();
        let (alice, bob) = (user("alice"), user("bob"));
        admission.reserve(&alice).keep();
        admission.reserve(&bob).keep();
        let writes = admission.take_writes(false);
        assert_eq!(writes.len(), 2);
        admission.failed(writes);
        assert!(admission.has_dirty());
        let _ = admission.take_writes(false);
        let mut all = admission.take_writes(true);
        all.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(all, vec![(alice, Some(1)), (bob, Some(1))]);
    }
}
