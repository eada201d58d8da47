//! The seam of a resume: which retained events a resuming connection
//! replays, and after which offset its live events follow.
//!
//! The connection listens before the history is read, so the two overlap:
//! an event published between the two steps is both in the history and
//! held for the connection. The connection's outbox drops every held event
//! at or below the [`Replay::after`] offset, which removes the overlap;
//! nothing can fall between them, because listening started first.

/// What a connection's stream begins with.
#[derive(Debug)]
pub(crate) struct Replay<T> {
    /// The retained events to deliver first, in offset order, each once.
    pub(crate) events: Vec<(u64, T)>,
    /// Whether the history covered the requested position.
    pub(crate) recovered: bool,
    /// How many events are replayed.
    pub(crate) replayed: u64,
    /// Live events follow from the offset after this one.
    pub(crate) after: u64,
}

/// Chooses the replay of a connection that joined its stream at `head`.
///
/// * `since`: the offset asked for, when its epoch is the stream's.
/// * `head`: the stream's latest offset when the history was read.
/// * `history`: the retained events after `since` (any order, possibly
///   with repeats), or `None` when they do not cover it.
///
/// Recovered only when the history holds exactly `since + 1 ..= head`
/// (more is fine: those are live events read early); then they are the
/// replay. Otherwise nothing is replayed and live events follow `head`:
/// never a partial replay.
pub(crate) fn replay<T>(
    since: Option<u64>,
    head: u64,
    history: Option<Vec<(u64, T)>>,
) -> Replay<T> {
    let not_recovered = |after| Replay {
        events: Vec::new(),
        recovered: false,
        replayed: 0,
        after,
    };
    let (Some(since), Some(mut history)) = (since, history) else {
        return not_recovered(head);
    };
    if since > head {
        return not_recovered(head);
    }
    history.sort_by_key(|(off, _)| *off);
    history.dedup_by_key(|(off, _)| *off);
    history.retain(|(off, _)| *off > since);
    // Contiguous from `since + 1` through `head` at least.
    let contiguous = history
        .iter()
        .zip(since + 1..)
        .take_while(|((off, _), expected)| off == expected)
        .count() as u64;
    if contiguous < head - since {
        return not_recovered(head);
    }
    history.truncate(usize::try_from(contiguous).unwrap_or(usize::MAX));
    let after = since + contiguous;
    Replay {
        events: history,
        recovered: true,
        replayed: contiguous,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offs(r: &Replay<()>) -> Vec<u64> {
        r.events.iter().map(|(o, ())| *o).collect()
    }

    #[test]
    fn the_history_after_since_is_replayed_in_order_once() {
        let history = Some(vec![(6, ()), (4, ()), (5, ()), (7, ()), (5, ())]);
        let r = replay(Some(3), 7, history);
        assert!(r.recovered);
        assert_eq!((r.replayed, r.after, offs(&r)), (4, 7, vec![4, 5, 6, 7]));
    }

    #[test]
    fn a_hole_in_the_history_replays_nothing() {
        let r = replay(Some(3), 7, Some(vec![(4, ()), (6, ()), (7, ())]));
        assert!(!r.recovered);
        assert_eq!((r.after, offs(&r)), (7, vec![]));
    }

    #[test]
    fn a_position_ahead_of_the_stream_is_not_recovered() {
        let r = replay::<()>(Some(9), 7, Some(Vec::new()));
        assert!(!r.recovered);
        assert_eq!(r.after, 7);
    }

    #[test]
    fn resuming_at_the_head_recovers_with_nothing_to_replay() {
        let r = replay::<()>(Some(7), 7, Some(Vec::new()));
        assert!(r.recovered);
        assert_eq!((r.replayed, r.after), (0, 7));
    }
}
