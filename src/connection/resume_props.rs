//! Property test of a resume's seam, on the real parts: the hub's stream
//! table (offsets and history), the merge, and a connection's outbox
//! (held live events, then the replay spliced in at Ready).
//!
//! Whatever the interleaving of publishes with the connection's steps
//! (enter the routing table, read the history, open at Ready), the
//! connection writes exactly the offsets `since + 1 ..= latest`, in order,
//! once each, when the history covers `since`; and when it does not, only
//! live offsets past the position it joined at, none before: never a
//! partial replay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use crate::config::HubConfig;
use crate::connection::outbox::{Drain, Outbox, Routed};
use crate::event::{EncodedEvent, Event, EventName};
use crate::id::UserId;
use crate::metrics::Metrics;
use crate::stream::table::Table;
use crate::stream::{self, Epoch, HistoryConfig, Position};

#[derive(Debug, Clone, Copy)]
enum Step {
    Publish,
    /// The connection's steps, in this order whatever the publishes around
    /// them: enter the routing table, read the history, open at Ready.
    Next,
}

fn event() -> EncodedEvent {
    let name = EventName::new("e").unwrap_or_else(|e| panic!("{e}"));
    Event::custom(name, serde_json::json!(1))
        .encode()
        .unwrap_or_else(|e| panic!("{e}"))
}

struct Run {
    delivered: Vec<u64>,
    recovered: bool,
    joined_at: u64,
    latest: u64,
}

/// Publishes `seen` events, then runs `steps` for a connection resuming at
/// `since_offset` (in the stream's epoch when `same_epoch`).
fn run(seen: u64, since_offset: u64, same_epoch: bool, steps: &[Step], per_user: usize) -> Run {
    let history = HistoryConfig {
        max_events_per_user: per_user,
        window: Duration::from_secs(600),
        ..HistoryConfig::default()
    };
    let table: Table<EncodedEvent> = Table::new(4, history);
    let (config, metrics) = (HubConfig::default(), Metrics::default());
    let user = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    let outbox = Outbox::new();
    let entered = AtomicBool::new(false);
    let publish = || {
        let (_, ()) = table.append(
            &user,
            event(),
            64,
            |off, event| {
                if entered.load(Ordering::Relaxed) {
                    let routed = Routed::for_user(user.clone(), off, event);
                    let _ = outbox.push(&routed, &config, &metrics);
                }
                ((), true)
            },
            |_| true,
        );
    };
    for _ in 0..seen {
        publish();
    }
    let epoch = match table.position(&user) {
        Some(p) if same_epoch => p.epoch,
        _ => Epoch::mint(),
    };
    let since = Position {
        epoch,
        offset: since_offset,
    };
    let mut stage = 0;
    let mut replay = None;
    let mut outcome = (false, 0);
    let mut next = |stage: &mut u32| {
        match *stage {
            0 => entered.store(true, Ordering::Relaxed),
            1 => {
                let read = table.read(&user, Some(&since));
                let asked = (since.epoch == read.position.epoch).then_some(since.offset);
                let history = read.history.map(|events| {
                    events
                        .into_iter()
                        .map(|(off, e)| (off, Routed::for_user(user.clone(), off, e)))
                        .collect()
                });
                let r = stream::replay(asked, read.position.offset, history);
                outcome = (r.recovered, read.position.offset);
                replay = Some(r);
            }
            2 => {
                if let Some(r) = replay.take() {
                    let events = r.events.into_iter().map(|(_, e)| e).collect();
                    outbox.open(events, r.after);
                }
            }
            _ => {}
        }
        *stage += 1;
    };
    for step in steps {
        match step {
            Step::Publish => publish(),
            Step::Next => next(&mut stage),
        }
    }
    while stage < 3 {
        next(&mut stage);
    }
    publish();
    let mut batch = std::collections::VecDeque::new();
    let mut delivered = Vec::new();
    while let Drain::Items { .. } = outbox.drain(&mut batch, usize::MAX) {
        delivered.extend(batch.drain(..).filter_map(|q| q.event.off.map(|o| o.get())));
    }
    Run {
        delivered,
        recovered: outcome.0,
        joined_at: outcome.1,
        latest: table.position(&user).map_or(0, |p| p.offset),
    }
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(prop_oneof![Just(Step::Publish), Just(Step::Next)], 0..40)
}

proptest! {
    #[test]
    fn a_covered_resume_delivers_every_offset_after_since_once_in_order(
        seen in 1u64..30,
        back in 0u64..30,
        steps in steps(),
    ) {
        let since = seen.saturating_sub(back);
        let run = run(seen, since, true, &steps, 1_000);
        prop_assert!(run.recovered);
        let expected: Vec<u64> = (since + 1..=run.latest).collect();
        prop_assert_eq!(run.delivered, expected);
    }

    #[test]
    fn an_uncovered_resume_replays_nothing(
        seen in 1u64..30,
        since in 0u64..40,
        same_epoch in any::<bool>(),
        per_user in 1usize..8,
        steps in steps(),
    ) {
        let run = run(seen, since, same_epoch, &steps, per_user);
        if run.recovered {
            // Covered after all (the position was within what is kept):
            // then it must be complete.
            let expected: Vec<u64> = (since + 1..=run.latest).collect();
            prop_assert_eq!(run.delivered, expected);
        } else {
            let expected: Vec<u64> = (run.joined_at + 1..=run.latest).collect();
            prop_assert_eq!(run.delivered, expected);
        }
    }
}
