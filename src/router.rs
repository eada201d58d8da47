//! The per-user routing table, sharded so that sends to different users on
//! different cores do not meet on one lock.
//!
//! Two indexes, each sharded: user -> connections (for `send_to_user`) and
//! connection -> entry (for `send_to_connection`). Lock order is always user
//! shard, then connection shard, then a connection's outbox; no lock is held
//! across `.await` (the router has no async code at all).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;

use crate::sync::RwLock;

use crate::config::ConnectionLimitPolicy;
use crate::connection::ConnShared;
use crate::id::{ConnectionId, UserId};

/// What [`Router::insert`] did.
#[derive(Debug)]
pub(crate) struct Inserted {
    /// The connection evicted to make room, if any; the caller closes it
    /// outside the router's locks.
    pub(crate) evicted: Option<Arc<ConnShared>>,
}

/// Why [`Router::insert`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertError {
    /// The user already has the maximum number of connections here.
    LimitReached,
    /// Another connection already has this id (a broken id generator):
    /// routing by it could reach the wrong user.
    DuplicateId,
}

type UserShard = HashMap<UserId, Vec<Arc<ConnShared>>>;
type ConnShard = HashMap<ConnectionId, Arc<ConnShared>>;

#[derive(Debug)]
pub(crate) struct Router {
    users: Box<[RwLock<UserShard>]>,
    conns: Box<[RwLock<ConnShard>]>,
    hasher: RandomState,
}

impl Router {
    pub(crate) fn new(shards: usize) -> Self {
        let shards = shards.clamp(1, 4096).next_power_of_two();
        Router {
            users: (0..shards).map(|_| RwLock::new(HashMap::new())).collect(),
            conns: (0..shards).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard<'a, K: Hash, T>(&self, shards: &'a [T], key: &K) -> Option<&'a T> {
        let hash = self.hasher.hash_one(key) as usize;
        shards.get(hash & (shards.len() - 1))
    }

    /// Adds `conn` under its user, applying the per-user limit. Returns the
    /// connection evicted to make room, if any; the caller closes it outside
    /// the router's locks.
    ///
    /// `first_of_user_hook` runs when this is the user's first connection, while
    /// the user's shard is still locked: membership hooks (a backplane's
    /// subscription set) then see every join and leave of a user in the
    /// table's own order, and can never disagree with it. It must be quick
    /// and must not call back into the router.
    pub(crate) fn insert(
        &self,
        conn: &Arc<ConnShared>,
        limit: usize,
        policy: ConnectionLimitPolicy,
        first_of_user_hook: impl FnOnce(&UserId),
    ) -> Result<Inserted, InsertError> {
        let (Some(users), Some(conns)) = (
            self.shard(&self.users, &conn.user),
            self.shard(&self.conns, &conn.id),
        ) else {
            return Err(InsertError::LimitReached);
        };
        let mut users = users.write();
        let (len, first_of_user) = users
            .get(&conn.user)
            .map_or((0, true), |list| (list.len(), list.is_empty()));
        let evict = len >= limit.max(1);
        if evict && policy == ConnectionLimitPolicy::RefuseNewest {
            return Err(InsertError::LimitReached);
        }
        {
            // Each lock once, users then connections, never re-entered.
            let mut conns = conns.write();
            if conns.contains_key(&conn.id) {
                return Err(InsertError::DuplicateId);
            }
            conns.insert(conn.id.clone(), Arc::clone(conn));
        }
        let list = users.entry(conn.user.clone()).or_default();
        let evicted = if evict && !list.is_empty() {
            Some(list.remove(0))
        } else {
            None
        };
        list.push(Arc::clone(conn));
        if first_of_user {
            first_of_user_hook(&conn.user);
        }
        if let Some(old) = &evicted
            && let Some(shard) = self.shard(&self.conns, &old.id)
        {
            let mut shard = shard.write();
            if shard.get(&old.id).is_some_and(|c| Arc::ptr_eq(c, old)) {
                shard.remove(&old.id);
            }
        }
        Ok(Inserted { evicted })
    }

    /// Removes `conn` if present: that very connection (compared by
    /// identity, so an entry that merely shares its id is left alone).
    /// Idempotent. Returns whether this removed its user's last connection;
    /// `last_of_user_hook` then runs under the user's shard lock, like
    /// [`insert`](Router::insert)'s hook.
    pub(crate) fn remove(
        &self,
        conn: &Arc<ConnShared>,
        last_of_user_hook: impl FnOnce(&UserId),
    ) -> bool {
        let mut last_of_user = false;
        if let Some(users) = self.shard(&self.users, &conn.user) {
            let mut users = users.write();
            if let Some(list) = users.get_mut(&conn.user) {
                let before = list.len();
                list.retain(|c| !Arc::ptr_eq(c, conn));
                if list.is_empty() {
                    users.remove(&conn.user);
                    last_of_user = before > 0;
                    if last_of_user {
                        last_of_user_hook(&conn.user);
                    }
                }
            }
        }
        if let Some(conns) = self.shard(&self.conns, &conn.id) {
            let mut conns = conns.write();
            if conns.get(&conn.id).is_some_and(|c| Arc::ptr_eq(c, conn)) {
                conns.remove(&conn.id);
            }
        }
        last_of_user
    }

    /// The users in the table (a snapshot, taken shard by shard).
    pub(crate) fn users(&self) -> Vec<UserId> {
        self.users
            .iter()
            .flat_map(|shard| shard.read().keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Runs `f` over `user`'s connections under the shard's read lock.
    /// `f` must not block or await.
    pub(crate) fn with_user<R>(&self, user: &UserId, f: impl FnOnce(&[Arc<ConnShared>]) -> R) -> R {
        match self.shard(&self.users, user) {
            Some(shard) => {
                let shard = shard.read();
                f(shard.get(user).map(Vec::as_slice).unwrap_or_default())
            }
            None => f(&[]),
        }
    }

    /// Whether `user` has a connection in the table.
    pub(crate) fn has_user(&self, user: &UserId) -> bool {
        self.with_user(user, |conns| !conns.is_empty())
    }

    pub(crate) fn connection(&self, id: &ConnectionId) -> Option<Arc<ConnShared>> {
        self.shard(&self.conns, id)?.read().get(id).cloned()
    }

    /// Every connection in the table (a snapshot, taken shard by shard).
    pub(crate) fn all(&self) -> Vec<Arc<ConnShared>> {
        self.conns
            .iter()
            .flat_map(|shard| shard.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Connections in the table.
    pub(crate) fn len(&self) -> usize {
        self.conns.iter().map(|s| s.read().len()).sum()
    }

    /// Users with at least one connection in the table.
    pub(crate) fn user_count(&self) -> usize {
        self.users.iter().map(|s| s.read().len()).sum()
    }
}
