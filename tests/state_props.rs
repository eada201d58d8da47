//! Property tests for the connection state machine (design invariant 6:
//! legal transitions only; an illegal transition returns an error and leaves
//! the state unchanged; `Closed` and `Failed` absorb).
//!
//! The expected transition table is written out here, independently of
//! `ConnectionState::can_transition_to`, so a change to the table in
//! `src/state.rs` fails these tests.

use std::collections::BTreeSet;

use proptest::prelude::*;
use ws_lifecycle::state::{ConnectionState, HISTORY_LEN, StateMachine, TransitionError};

use ConnectionState::{
    Accepted, Authenticated, Closed, Closing, Connecting, Failed, Ready, ServicesReady,
};

/// Legal.
const Y: bool = true;
/// Illegal.
const N: bool = false;

/// Column order of [`EXPECTED_TABLE`].
const COLUMNS: [ConnectionState; 8] = [
    Connecting,
    Accepted,
    Authenticated,
    ServicesReady,
    Ready,
    Closing,
    Closed,
    Failed,
];

/// The design's lifecycle, all 64 pairs, written out by hand:
///
/// ```text
/// Connecting -> Accepted -> Authenticated -> ServicesReady -> Ready
/// any non-terminal (Connecting..=Ready) -> Closing -> Closed
/// any non-terminal (Connecting..=Closing) -> Failed
/// ```
#[rustfmt::skip]
const EXPECTED_TABLE: [(ConnectionState, [bool; 8]); 8] = [
    //                  Conn Acc Auth SvcR Ready Closing Closed Failed
    (Connecting,    [N,   Y,  N,   N,   N,    Y,      N,     Y]),
    (Accepted,      [N,   N,  Y,   N,   N,    Y,      N,     Y]),
    (Authenticated, [N,   N,  N,   Y,   N,    Y,      N,     Y]),
    (ServicesReady, [N,   N,  N,   N,   Y,    Y,      N,     Y]),
    (Ready,         [N,   N,  N,   N,   N,    Y,      N,     Y]),
    (Closing,       [N,   N,  N,   N,   N,    N,      Y,     Y]),
    (Closed,        [N,   N,  N,   N,   N,    N,      N,     N]),
    (Failed,        [N,   N,  N,   N,   N,    N,      N,     N]),
];

/// Whether `from -> to` is legal according to [`EXPECTED_TABLE`].
fn expected_legal(from: ConnectionState, to: ConnectionState) -> bool {
    let row = EXPECTED_TABLE.iter().find(|(f, _)| *f == from);
    let col = COLUMNS.iter().position(|c| *c == to);
    match (row, col) {
        (Some((_, cells)), Some(col)) => cells.get(col).copied().unwrap_or(false),
        _ => false,
    }
}

/// The legal edges of [`EXPECTED_TABLE`].
fn expected_edges() -> BTreeSet<(usize, usize)> {
    let mut edges = BTreeSet::new();
    for from in COLUMNS {
        for to in COLUMNS {
            if expected_legal(from, to) {
                edges.insert((pos(from), pos(to)));
            }
        }
    }
    edges
}

/// A stable index for a state (its column in [`COLUMNS`]), so states can go
/// in ordered sets without relying on crate internals.
fn pos(state: ConnectionState) -> usize {
    COLUMNS
        .iter()
        .position(|c| *c == state)
        .unwrap_or(usize::MAX)
}

/// A legal path from `Connecting` to `target`, per the design.
fn path_to(target: ConnectionState) -> Vec<ConnectionState> {
    match target {
        Connecting => vec![],
        Accepted => vec![Accepted],
        Authenticated => vec![Accepted, Authenticated],
        ServicesReady => vec![Accepted, Authenticated, ServicesReady],
        Ready => vec![Accepted, Authenticated, ServicesReady, Ready],
        Closing => vec![Closing],
        Closed => vec![Closing, Closed],
        Failed => vec![Failed],
    }
}

fn any_state() -> impl Strategy<Value = ConnectionState> {
    proptest::sample::select(ConnectionState::ALL.to_vec())
}

/// `ConnectionState::ALL` and the test's column list hold the same eight
/// distinct states, so the 64-pair enumeration below really is all pairs.
#[test]
fn all_lists_eight_distinct_states_matching_the_test_columns() {
    let all: BTreeSet<usize> = ConnectionState::ALL.iter().map(|s| pos(*s)).collect();
    assert_eq!(ConnectionState::ALL.len(), 8);
    assert_eq!(all, (0..8).collect::<BTreeSet<_>>());
    assert_eq!(ConnectionState::ALL, COLUMNS);
}

/// All 64 `(from, to)` pairs: `can_transition_to` matches the table written
/// out above, and so does `StateMachine::transition` from a machine driven to
/// `from` along a legal path.
#[test]
fn all_64_pairs_match_the_explicit_table() -> Result<(), Box<dyn std::error::Error>> {
    let mut checked = 0;
    for (from, cells) in EXPECTED_TABLE {
        for (to, legal) in COLUMNS.into_iter().zip(cells) {
            assert_eq!(
                from.can_transition_to(to),
                legal,
                "can_transition_to({from} -> {to})"
            );

            let mut sm = StateMachine::new();
            for step in path_to(from) {
                sm.transition(step, "setup")?;
            }
            assert_eq!(sm.state(), from);
            let before = sm.history().len();
            let result = sm.transition(to, "pair");
            if legal {
                assert_eq!(result, Ok(from), "transition({from} -> {to})");
                assert_eq!(sm.state(), to);
                assert_eq!(sm.history().len(), before + 1);
            } else {
                assert_eq!(
                    result,
                    Err(TransitionError { from, to }),
                    "transition({from} -> {to})"
                );
                assert_eq!(sm.state(), from);
                assert_eq!(sm.history().len(), before);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 64);
    assert_eq!(expected_edges().len(), 16);
    Ok(())
}

/// Walking every path out of `Connecting` through real `StateMachine`s
/// reaches all eight states and takes exactly the design's 16 edges.
#[test]
fn reachable_edges_from_connecting_match_the_design() -> Result<(), Box<dyn std::error::Error>> {
    let mut edges = BTreeSet::new();
    let mut states = BTreeSet::new();
    // Depth-first over paths; the table is acyclic, so this terminates.
    let mut stack: Vec<Vec<ConnectionState>> = vec![vec![]];
    while let Some(path) = stack.pop() {
        let mut sm = StateMachine::new();
        for step in &path {
            sm.transition(*step, "walk")?;
        }
        let here = sm.state();
        states.insert(pos(here));
        for to in ConnectionState::ALL {
            let mut probe = StateMachine::new();
            for step in &path {
                probe.transition(*step, "walk")?;
            }
            if probe.transition(to, "walk").is_ok() {
                edges.insert((pos(here), pos(to)));
                let mut next = path.clone();
                next.push(to);
                assert!(
                    next.len() <= 6,
                    "path longer than the design allows: {next:?}"
                );
                stack.push(next);
            }
        }
    }
    assert_eq!(states, (0..8).collect::<BTreeSet<_>>());
    assert_eq!(edges, expected_edges());
    Ok(())
}

proptest! {
    /// Arbitrary sequences of target states: every successful transition is
    /// one the table allows; a refused one changes nothing and names the
    /// current state as `from`; terminal states absorb; history is bounded
    /// and its last entry is the last successful transition.
    #[test]
    fn arbitrary_transition_sequences_respect_the_table(
        targets in proptest::collection::vec(any_state(), 0..64)
    ) {
        let mut sm = StateMachine::new();
        let watch = sm.watch();
        let mut successes = 0usize;
        let mut last_ok: Option<(ConnectionState, ConnectionState)> = None;

        for to in targets {
            let from = sm.state();
            let history_before = sm.history().len();
            let was_terminal = matches!(from, Closed | Failed);
            prop_assert_eq!(from.is_terminal(), was_terminal);

            match sm.transition(to, "prop") {
                Ok(returned_from) => {
                    prop_assert!(from.can_transition_to(to), "{} -> {} succeeded", from, to);
                    prop_assert!(expected_legal(from, to), "{} -> {} not in design table", from, to);
                    prop_assert!(!was_terminal, "left terminal state {}", from);
                    prop_assert_eq!(returned_from, from);
                    prop_assert_eq!(sm.state(), to);
                    prop_assert_eq!(watch.state(), to);
                    successes += 1;
                    last_ok = Some((from, to));
                }
                Err(err) => {
                    prop_assert_eq!(err, TransitionError { from, to });
                    prop_assert!(!from.can_transition_to(to));
                    prop_assert!(!expected_legal(from, to));
                    prop_assert_eq!(sm.state(), from);
                    prop_assert_eq!(watch.state(), from);
                    prop_assert_eq!(sm.history().len(), history_before);
                }
            }

            let history: Vec<_> = sm.history().collect();
            prop_assert!(history.len() <= HISTORY_LEN);
            prop_assert_eq!(history.len(), successes.min(HISTORY_LEN));
            match (history.last(), last_ok) {
                (None, None) => {}
                (Some(entry), Some((from, to))) => {
                    prop_assert_eq!(entry.from, from);
                    prop_assert_eq!(entry.to, to);
                    prop_assert_eq!(entry.reason, "prop");
                }
                (entry, last) => {
                    prop_assert!(false, "history {:?} vs last success {:?}", entry, last);
                }
            }
            // History entries chain: each one starts where the previous ended.
            for pair in history.windows(2) {
                if let [a, b] = pair {
                    prop_assert_eq!(a.to, b.from);
                }
            }
        }
    }

    /// Once `Closed` or `Failed`, every further transition fails and changes
    /// nothing.
    #[test]
    fn terminal_states_absorb_every_transition(
        terminal in proptest::sample::select(vec![Closed, Failed]),
        targets in proptest::collection::vec(any_state(), 1..32),
    ) {
        let mut sm = StateMachine::new();
        for step in path_to(terminal) {
            sm.transition(step, "setup")?;
        }
        prop_assert_eq!(sm.state(), terminal);
        let len = sm.history().len();
        for to in targets {
            prop_assert_eq!(sm.transition(to, "prop"), Err(TransitionError { from: terminal, to }));
            prop_assert_eq!(sm.state(), terminal);
            prop_assert_eq!(sm.history().len(), len);
        }
    }

    /// Random walks that only take legal steps stay within the design's
    /// edge set, and their history records exactly the steps taken.
    #[test]
    fn random_legal_walks_record_exact_history(choices in proptest::collection::vec(any::<usize>(), 0..16)) {
        let mut sm = StateMachine::new();
        let mut taken = Vec::new();
        for choice in choices {
            let from = sm.state();
            let options: Vec<ConnectionState> = COLUMNS
                .into_iter()
                .filter(|to| expected_legal(from, *to))
                .collect();
            if options.is_empty() {
                prop_assert!(from.is_terminal());
                break;
            }
            let to = options.get(choice % options.len()).copied().unwrap_or(Failed);
            prop_assert_eq!(sm.transition(to, "walk"), Ok(from));
            taken.push((from, to));
        }
        let recorded: Vec<_> = sm.history().map(|t| (t.from, t.to)).collect();
        prop_assert_eq!(recorded, taken);
    }
}
