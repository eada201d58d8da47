//! Unit tests of the stream table.

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

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_fan_out_gives_each_user_its_next_offset_and_is_retained_once_per_shard() {
    let table: Table<u64> = Table::new(1, HistoryConfig::default());
    let (a, b) = (user("a"), user("b"));
    let _ = table.append(&a, 7, 100, |_, _| ((), true), |_| true);
    let before = table.bytes();
    let mut got = Vec::new();
    table.append_many(
        &[&a, &b, &a],
        &8,
        100,
        |user, off, item| ((user.clone(), off, item), true),
        |_| true,
        |off, routed| got.push((off, routed)),
    );
    got.sort_by_key(|(off, (user, _, _))| (user.clone(), *off));
    let offsets: Vec<(String, u64)> = got
        .iter()
        .map(|(off, (user, routed_off, _))| {
            assert_eq!(off, routed_off);
            (user.as_str().to_owned(), *off)
        })
        .collect();
    let want = [("a", 2), ("a", 3), ("b", 1)].map(|(u, o)| (u.to_owned(), o));
    assert_eq!(offsets, want);
    // One event record for the three arrivals, and b's new entry.
    assert_eq!(
        table.bytes() - before,
        100 + EVENT_COST + 3 * ARRIVAL_COST + crate::stream::shard::ENTRY_COST
    );
    let epoch = |u: &UserId| table.position(u).map(|p| p.epoch);
    let since = |u: &UserId, offset| Position {
        epoch: epoch(u).unwrap_or_else(Epoch::mint),
        offset,
    };
    let read = table.read(&a, Some(&since(&a, 0)));
    assert_eq!(read.history, Some(vec![(1, 7), (2, 8), (3, 8)]));
    let read = table.read(&b, Some(&since(&b, 0)));
    assert_eq!(read.history, Some(vec![(1, 8)]));
}

#[test]
fn an_entry_lives_while_an_arrival_points_at_it_and_goes_with_the_last() {
    let history = HistoryConfig {
        window: std::time::Duration::from_millis(30),
        ..HistoryConfig::default()
    };
    let table: Table<u64> = Table::new(1, history);
    let (a, other) = (user("a"), user("other"));
    for n in 1..=3 {
        let _ = table.append(&a, n, 10, |_, _| ((), true), |_| true);
    }
    // The stream restarts in place (a hole upstream), and the user
    // leaves: the entry stays, with its epoch, while its events are
    // queued, so a resume from the new epoch still finds it.
    assert!(table.restart(&a));
    let restarted = table.position(&a);
    table.release(&a, |_| false);
    assert_eq!((table.users(), table.position(&a)), (1, restarted));
    // Once the window has passed, the next append (anyone's, in the
    // shard) forgets the events, and the entry with its last one.
    std::thread::sleep(std::time::Duration::from_millis(40));
    let _ = table.append(&other, 9, 10, |_, _| ((), true), |u| *u == other);
    assert_eq!(table.position(&a), None);
    assert_eq!(table.users(), 1);
    // A new life of the stream starts from 1 in a new epoch, and owes
    // nothing to the old life's arrivals.
    let read = table.read(&a, None);
    assert_eq!(read.position.offset, 0);
    let (off, ()) = table.append(&a, 10, 10, |_, _| ((), true), |_| true);
    let since = Position {
        epoch: read.position.epoch,
        offset: 0,
    };
    assert_eq!(off, 1);
    assert_eq!(table.read(&a, Some(&since)).history, Some(vec![(1, 10)]));
}

#[test]
fn the_stream_table_has_four_shards_per_core_within_the_routing_tables() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert_eq!(shards_for(64), 64.min((4 * cores).max(8)));
    assert_eq!(shards_for(4), 4, "never more than the routing table's");
    assert!(shards_for(4096) >= 8);
}
