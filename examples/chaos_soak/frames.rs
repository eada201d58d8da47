//! What each connection's record of frames shows: per-user order breaks,
//! holes a `gap` frame excuses, repeats, frames of an unexpected type, and
//! messages missed by a connection that stayed up.

use std::collections::HashMap;

use crate::client::Record;
use crate::phase::Outcome;

/// What the frames may show besides `ready` and `message`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Two nodes: `gap` frames are part of the protocol, not unexpected.
    pub(crate) cluster: bool,
    /// `--sigstop-redis`: a message may be missing (a hole in its user's
    /// counters, or missed by a connection that stayed up) only if its
    /// connection received a `gap` frame after it was sent. Never a repeat.
    pub(crate) gaps_excuse_losses: bool,
}

/// Per user, the send time (µs) of each message: entry `k - 1` is `k`.
pub(crate) type Sent<'a> = HashMap<&'a str, &'a Vec<u64>>;

pub(crate) fn sent_times(outcome: &Outcome) -> Sent<'_> {
    outcome
        .logs
        .iter()
        .flat_map(|log| log.sent.iter())
        .map(|(user, times)| (user.as_str(), times))
        .collect()
}

/// Whether `record` received a `gap` frame after message `k` to its user
/// was sent: the backplane owned up to a hole that may hold `k`.
pub(crate) fn gap_after(record: &Record, sent: &Sent<'_>, k: u64) -> bool {
    let at = sent
        .get(record.id.user.as_str())
        .and_then(|times| times.get(usize::try_from(k).ok()?.checked_sub(1)?));
    at.is_some_and(|&at| record.gaps_us.iter().any(|&gap| gap >= at))
}

/// Per-user order breaks: repeats and reorders always; holes unless
/// `rules` excuse them and a `gap` frame came after the hole's last
/// message (send times grow with `k`, so it came after every one).
pub(crate) fn order_breaks(record: &Record, sent: &Sent<'_>, rules: Rules) -> u64 {
    let holes = record
        .holes
        .iter()
        .filter(|&&(_, last)| !(rules.gaps_excuse_losses && gap_after(record, sent, last)))
        .count() as u64;
    record.order_errors + holes
}

/// Holes a `gap` frame excused.
pub(crate) fn excused_holes(record: &Record, sent: &Sent<'_>, rules: Rules) -> u64 {
    record.holes.len() as u64 + record.order_errors - order_breaks(record, sent, rules)
}

/// Frames of a type the soak never asks for; `gap` among them on a single
/// node, where no backplane sends one.
pub(crate) fn unexpected(record: &Record, rules: Rules) -> u64 {
    let gaps = if rules.cluster {
        0
    } else {
        record.gaps_us.len() as u64
    };
    record.unexpected + gaps
}

/// Messages `record` received more than once.
pub(crate) fn duplicates(record: &Record) -> u64 {
    let mut ks = record.ks.clone();
    ks.sort_unstable();
    ks.windows(2).filter(|w| w.first() == w.last()).count() as u64
}

/// Frames that broke a per-frame invariant in `outcome`: wrong-user
/// deliveries, seq gaps, per-user order breaks, frames of an unexpected
/// type, over every connection that received anything.
pub(crate) fn frame_findings(outcome: &Outcome, rules: Rules) -> u64 {
    let sent = sent_times(outcome);
    let records = outcome
        .receivers
        .iter()
        .chain(outcome.slow.iter().filter_map(|r| r.as_ref().ok()))
        .chain(outcome.floods.iter().filter_map(|f| f.record.as_ref()));
    records
        .map(|r| r.wrong_user + r.seq_errors + order_breaks(r, &sent, rules) + unexpected(r, rules))
        .sum()
}

/// Messages a connection that stayed up should have had and did not: every
/// one sent after it saw `ready` (the server was Ready before it sent
/// `ready`, and handled the publish after it was sent; on two nodes, the
/// node of the connection listened for its user before it was Ready).
/// Returns (expected, missing, of which a later `gap` frame covers).
pub(crate) fn missed(record: &Record, ready: u64, sent: Option<&&Vec<u64>>) -> (u64, u64, u64) {
    let mut got = record.ks.clone();
    got.sort_unstable();
    got.dedup();
    let (mut expected, mut missing, mut covered) = (0, 0, 0);
    for (k, &at) in (1u64..).zip(sent.map_or(&[][..], |v| v.as_slice())) {
        if at > ready {
            expected += 1;
            if got.binary_search(&k).is_err() {
                missing += 1;
                if record.gaps_us.iter().any(|&gap| gap >= at) {
                    covered += 1;
                }
            }
        }
    }
    (expected, missing, covered)
}
