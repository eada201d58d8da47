//! A connection's view of its user's stream (docs/protocol.md, "The
//! user's stream"): where the `ready` frame says it joined (`epoch`, `off`,
//! `recovered`), every event's offset in arrival order, and what a client
//! following the protocol processed: the in-order prefix, up to the first
//! jump, `gap` frame or the drop. The last processed position is the next
//! connection's `since`.

use serde_json::Value;

/// A position in a user's stream, as `since=<epoch>:<off>` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) epoch: String,
    pub(crate) off: u64,
}

impl Position {
    /// The query string of a connection that resumes after this position
    /// (an epoch is `[A-Za-z0-9_-]`: nothing to escape).
    pub(crate) fn query(&self) -> String {
        format!("?since={}:{}", self.epoch, self.off)
    }
}

/// Where a resuming reconnect says it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// The session's own position: recovered whenever the absence was
    /// within the server's history.
    Genuine,
    /// Another user's epoch with the session's offset: never recovered
    /// (and never another user's events).
    ForeignEpoch,
    /// The session's epoch, an offset far past the stream's latest: never
    /// recovered.
    Ahead,
}

/// What a resuming connection asked for.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub(crate) ask: Ask,
    /// The position sent as `since`.
    pub(crate) since: Position,
    /// Where the session stood (the previous connection's hand-off).
    pub(crate) session: Position,
    /// When the previous connection was dropped (µs of the soak's clock).
    pub(crate) dropped_us: u64,
}

/// What a connection hands the next one of its session when it is dropped
/// (or ended on its own).
#[derive(Debug, Clone)]
pub(crate) struct Handoff {
    /// The session's position: after the last event processed, or where
    /// it was before this connection when it never got `ready`.
    pub(crate) position: Option<Position>,
    pub(crate) dropped_us: u64,
}

/// Where the `ready` frame says the connection joined the stream.
#[derive(Debug, Clone)]
pub(crate) struct Joined {
    pub(crate) epoch: String,
    pub(crate) off: u64,
    pub(crate) recovered: bool,
}

/// One event of the user's stream, as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct StreamEvent {
    pub(crate) off: u64,
    /// The publisher's per-user counter (`message` frames).
    pub(crate) k: Option<u64>,
    /// The message's id, unique in the phase (`message` frames).
    pub(crate) id: Option<String>,
}

/// The order of the user's offsets on one connection.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Breaks {
    /// An offset at or below one the connection already had (or at or
    /// below where its stream begins): a repeat or a reorder.
    pub(crate) repeats: u64,
    /// An offset past the next one with no `gap` frame after the previous
    /// event.
    pub(crate) jumps: u64,
    /// Jumps a `gap` frame owned up to.
    pub(crate) excused: u64,
}

/// A connection's view of its user's stream.
#[derive(Debug, Default)]
pub(crate) struct StreamView {
    /// Set when the connection was dialed with `since`.
    pub(crate) resume: Option<Resume>,
    /// From the `ready` frame.
    pub(crate) joined: Option<Joined>,
    /// Every frame with an `off`, in arrival order.
    pub(crate) events: Vec<StreamEvent>,
    /// `events.len()` when each `gap` frame arrived.
    gap_marks: Vec<usize>,
    /// A `ready` without a valid `epoch`, `off` or `recovered`, a second
    /// `ready`, or a stream event before `ready`.
    pub(crate) malformed: u64,
    /// How many of `events` (a prefix) the client processed.
    pub(crate) processed: usize,
    /// Processing stopped: a jump, a repeat, a `gap` frame, the drop.
    stopped: bool,
    /// The position after the processed prefix.
    position: Option<Position>,
    /// When the connection was dropped, and `events.len()` then.
    pub(crate) dropped: Option<(u64, usize)>,
}

impl StreamView {
    /// The `ready` frame: where the connection joined the stream.
    pub(crate) fn on_ready(&mut self, frame: &Value) {
        let epoch = frame.get("epoch").and_then(Value::as_str);
        let off = frame.get("off").and_then(Value::as_u64);
        let recovered = frame.get("recovered").and_then(Value::as_bool);
        let (Some(epoch), Some(off), Some(recovered), None) = (epoch, off, recovered, &self.joined)
        else {
            self.malformed += 1;
            self.stopped = true;
            return;
        };
        self.position = Some(Position {
            epoch: epoch.to_owned(),
            off: self.start(recovered, off),
        });
        self.joined = Some(Joined {
            epoch: epoch.to_owned(),
            off,
            recovered,
        });
    }

    /// Where the stream of a connection that joined at `off` begins:
    /// recovered, the replay follows from the offset after `since`.
    fn start(&self, recovered: bool, off: u64) -> u64 {
        match (&self.resume, recovered) {
            (Some(resume), true) => resume.since.off,
            _ => off,
        }
    }

    /// Any frame but `ready`: an event of the stream when it has `off`.
    pub(crate) fn on_frame(&mut self, frame: &Value) {
        let Some(off) = frame.get("off").and_then(Value::as_u64) else {
            return;
        };
        // A soak message's payload: `to|k|id|sent_us|padding`.
        let payload = frame.get("payload").and_then(Value::as_str).unwrap_or("");
        let mut parts = payload.split('|').skip(1);
        let k = parts.next().and_then(|k| k.parse::<u64>().ok());
        let id = parts.next().filter(|id| !id.is_empty()).map(str::to_owned);
        self.events.push(StreamEvent { off, k, id });
        if self.joined.is_none() {
            self.malformed += 1;
            self.stopped = true;
            return;
        }
        match &mut self.position {
            Some(position) if !self.stopped && Some(off) == position.off.checked_add(1) => {
                position.off = off;
                self.processed = self.events.len();
            }
            // On a jump a client closes and resumes; a repeat it drops:
            // either way it processes nothing more on this connection.
            _ => self.stopped = true,
        }
    }

    /// A `gap` frame: the offsets that follow are not to be trusted.
    pub(crate) fn on_gap(&mut self) {
        self.gap_marks.push(self.events.len());
        self.stopped = true;
    }

    /// The harness drops the connection (or it ended) at `now_us`: what it
    /// hands the next connection of its session.
    pub(crate) fn hand_off(&mut self, now_us: u64) -> Handoff {
        if self.dropped.is_none() {
            self.dropped = Some((now_us, self.events.len()));
        }
        self.stopped = true;
        let position = self
            .position
            .clone()
            .or_else(|| self.resume.as_ref().map(|r| r.session.clone()));
        Handoff {
            position,
            dropped_us: now_us,
        }
    }

    /// The events the client processed.
    pub(crate) fn processed_events(&self) -> &[StreamEvent] {
        self.events.get(..self.processed).unwrap_or(&[])
    }

    /// The events that arrived before the drop (all, if never dropped).
    pub(crate) fn events_until_drop(&self) -> &[StreamEvent] {
        let end = self.dropped.map_or(self.events.len(), |(_, n)| n);
        self.events.get(..end).unwrap_or(&self.events)
    }

    /// The order of the offsets over the whole connection: each above the
    /// previous one (the first above where `ready` says the stream
    /// begins), and the next one unless a `gap` frame came after the
    /// previous event.
    pub(crate) fn breaks(&self) -> Breaks {
        let mut b = Breaks::default();
        let Some(joined) = &self.joined else {
            return b;
        };
        let mut last = self.start(joined.recovered, joined.off);
        for (i, e) in self.events.iter().enumerate() {
            if e.off <= last {
                b.repeats += 1;
                continue;
            }
            if e.off > last.saturating_add(1) {
                if self.gap_marks.iter().any(|&mark| mark >= i) {
                    b.excused += 1;
                } else {
                    b.jumps += 1;
                }
            }
            last = e.off;
        }
        b
    }

    /// The first break in the order of the offsets, described: the
    /// offsets around it and where the connection joined.
    pub(crate) fn first_break(&self) -> Option<String> {
        let joined = self.joined.as_ref()?;
        let mut last = self.start(joined.recovered, joined.off);
        for (i, e) in self.events.iter().enumerate() {
            let excused = self.gap_marks.iter().any(|&mark| mark >= i);
            if e.off <= last || (e.off > last.saturating_add(1) && !excused) {
                let around: Vec<String> = self
                    .events
                    .iter()
                    .skip(i.saturating_sub(3))
                    .take(6)
                    .map(|e| format!("{}(k {:?})", e.off, e.k))
                    .collect();
                return Some(format!(
                    "off {} after {last} at event {i} of {}: [{}]; ready off {} recovered {}, since {:?}, gaps at {:?}",
                    e.off,
                    self.events.len(),
                    around.join(" "),
                    joined.off,
                    joined.recovered,
                    self.resume.as_ref().map(|r| (r.ask, r.since.off)),
                    self.gap_marks
                ));
            }
            last = last.max(e.off);
        }
        None
    }

    /// After `recovered: false`, events at or below the `ready` frame's
    /// `off`: a replay there must not be.
    pub(crate) fn unrecovered_replay(&self) -> u64 {
        match &self.joined {
            Some(j) if !j.recovered => self.events.iter().filter(|e| e.off <= j.off).count() as u64,
            _ => 0,
        }
    }
}
