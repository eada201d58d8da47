//! Property tests of the stream table against a model of every event ever
//! appended: a history the table returns is exactly what was appended
//! after the position, in order (the offsets it does not store are right),
//! and with room to keep everything, every position the per-user cap and
//! restarts allow is covered.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const USERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// One event to one user.
    Send(usize),
    /// One event to several users, a user possibly listed twice.
    FanOut(Vec<usize>),
    /// A user's connection arrives (reading the stream, as a join does).
    Connect(usize),
    /// A user's last connection leaves.
    Leave(usize),
    /// A hole upstream: the stream restarts in place.
    Restart(usize),
    /// A resume from `back` events behind the head.
    Read(usize, u64),
}

fn op(leave: bool) -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    prop_oneof![
        4 => user.clone().prop_map(Op::Send),
        3 => prop::collection::vec(0..USERS, 1..6).prop_map(Op::FanOut),
        1 => user.clone().prop_map(Op::Connect),
        (if leave { 1 } else { 0 }) => user.clone().prop_map(Op::Leave),
        1 => user.clone().prop_map(Op::Restart),
        3 => (user, 0u64..12).prop_map(|(u, back)| Op::Read(u, back)),
    ]
}

/// A read, and what the model says of it.
struct Check {
    since: u64,
    head: u64,
    history: Option<Vec<(u64, u64)>>,
    /// What was appended after `since` up to `head`, in this epoch.
    expected: Vec<(u64, u64)>,
    /// Nothing at or below this is readable in this epoch (a restart).
    floor: u64,
}

struct Model {
    table: Table<u64>,
    users: Vec<UserId>,
    connected: HashSet<usize>,
    /// Every event appended: (user, epoch, offset) → item.
    appended: HashMap<(usize, Epoch, u64), u64>,
    /// Per user and epoch, the head when it restarted into it (nothing at
    /// or below is readable in it).
    restarted: HashMap<(usize, Epoch), u64>,
    next: u64,
}

impl Model {
    fn new(config: HistoryConfig) -> Self {
        Model {
            table: Table::new(2, config),
            users: (0..USERS)
                .map(|u| UserId::new(format!("u{u}")).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            connected: HashSet::new(),
            appended: HashMap::new(),
            restarted: HashMap::new(),
            next: 0,
        }
    }

    fn epoch(&self, u: usize) -> Option<Epoch> {
        self.users
            .get(u)
            .and_then(|user| self.table.position(user))
            .map(|p| p.epoch)
    }

    fn record(&mut self, routed: Vec<(usize, u64, u64)>) {
        for (u, off, item) in routed {
            // An append never changes the epoch of an entry it found, and
            // one it made lives on (the user is connected or its event is
            // retained): the epoch now is the one the offset was given in.
            if let Some(epoch) = self.epoch(u) {
                self.appended.insert((u, epoch, off), item);
            }
        }
    }

    /// Applies `op`; for a read, returns what it found and what the model
    /// says of it.
    fn apply(&mut self, op: &Op) -> Option<Check> {
        let connected = self.connected.clone();
        let users = self.users.clone();
        let index = |user: &UserId| users.iter().position(|u| u == user).unwrap_or(USERS);
        let is_connected = |user: &UserId| connected.contains(&index(user));
        match op {
            Op::Send(u) => {
                let user = users.get(*u)?;
                self.next += 1;
                let item = self.next;
                let (off, ()) = self.table.append(
                    user,
                    item,
                    10,
                    |_, _| ((), connected.contains(u)),
                    is_connected,
                );
                self.record(vec![(*u, off, item)]);
            }
            Op::FanOut(list) => {
                let targets: Vec<&UserId> = list.iter().filter_map(|u| users.get(*u)).collect();
                self.next += 1;
                let item = self.next;
                let mut routed = Vec::new();
                self.table.append_many(
                    &targets,
                    &item,
                    10,
                    |user, off, item| {
                        let u = index(user);
                        ((u, off, item), connected.contains(&u))
                    },
                    is_connected,
                    |off, (u, routed_off, item)| {
                        assert_eq!(off, routed_off);
                        routed.push((u, off, item));
                    },
                );
                self.record(routed);
            }
            Op::Connect(u) => {
                let user = users.get(*u)?;
                self.connected.insert(*u);
                let _ = self.table.read(user, None);
            }
            Op::Leave(u) => {
                let user = users.get(*u)?;
                self.connected.remove(u);
                let connected = self.connected.clone();
                self.table.release(user, |x| connected.contains(&index(x)));
            }
            Op::Restart(u) => {
                let user = users.get(*u)?;
                if self.table.restart(user)
                    && let Some(p) = self.table.position(user)
                {
                    self.restarted.insert((*u, p.epoch), p.offset);
                }
            }
            Op::Read(u, back) => {
                let user = users.get(*u)?;
                let position = self.table.position(user)?;
                let since = Position {
                    epoch: position.epoch.clone(),
                    offset: position.offset.saturating_sub(*back),
                };
                let read = self.table.read(user, Some(&since));
                let expected: Vec<(u64, u64)> = (since.offset + 1..=position.offset)
                    .filter_map(|off| {
                        let key = (*u, position.epoch.clone(), off);
                        self.appended.get(&key).map(|item| (off, *item))
                    })
                    .collect();
                let floor = self
                    .restarted
                    .get(&(*u, position.epoch.clone()))
                    .copied()
                    .unwrap_or(0);
                return Some(Check {
                    since: since.offset,
                    head: position.offset,
                    history: read.history,
                    expected,
                    floor,
                });
            }
        }
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_history_the_table_returns_is_exactly_what_was_appended_after_the_position(
        budget in 300usize..4_000,
        cap in 1usize..6,
        ops in prop::collection::vec(op(true), 0..80),
    ) {
        let mut model = Model::new(HistoryConfig {
            max_bytes: budget * 2,
            max_events_per_user: cap,
            ..HistoryConfig::default()
        });
        for op in &ops {
            if let Some(Check { since, history: Some(history), expected, .. }) = model.apply(op) {
                prop_assert_eq!(history, expected, "resume after {}", since);
            }
        }
    }

    #[test]
    fn with_room_every_position_the_cap_and_restarts_allow_is_covered(
        cap in 1usize..8,
        ops in prop::collection::vec(op(false), 0..80),
    ) {
        let mut model = Model::new(HistoryConfig {
            max_events_per_user: cap,
            ..HistoryConfig::default()
        });
        for op in &ops {
            if let Some(Check { since, head, history, expected, floor }) = model.apply(op) {
                let coverable = since >= floor && head - since <= cap as u64;
                if coverable {
                    prop_assert_eq!(history, Some(expected), "resume after {}", since);
                } else {
                    prop_assert_eq!(history, None, "resume after {}", since);
                }
            }
        }
    }
}
