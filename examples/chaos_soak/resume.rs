//! The resume assertions: every receiver slot is a session, its successive
//! connections each asking to resume from the last offset the previous one
//! processed (when the plan says so). A resume whose absence the server's
//! history covers must recover, and the session must then have every
//! offset after `since` exactly once, in order; any other must say
//! `recovered: false` and replay nothing. Every connection must see its
//! user's offsets in order, and an offset must name the same message on
//! every connection of the user.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Record;
use crate::phase::Outcome;
use crate::report::{Check, check};
use crate::stream::{Ask, Resume, StreamEvent};

/// The demo server's history (`HistoryConfig::default()`): how long an
/// event stays resumable, and how many a user keeps.
const WINDOW: Duration = Duration::from_secs(120);
const MAX_EVENTS: u64 = 1_000;
/// A history shard's share of the byte budget on one node: 64 MiB over
/// the 64 router shards. A user's events go when the shard's events since
/// then weigh more.
const SHARD_BUDGET: u64 = 64 * 1024 * 1024 / 64;
/// Margins: time, and events, short of the window.
const TIME_MARGIN: Duration = Duration::from_secs(5);
const EVENTS_MARGIN: u64 = 50;
/// Events sent this long before the first missed one may be handled after
/// it (another publisher's connection).
const SEND_SKEW_US: u64 = 100_000;

/// What one retained event of a publish with `pad` bytes of padding may
/// cost the server's history, at most: the encoded event's tail (at most
/// 96 bytes besides the padding, `,"from":…,"payload":"…"}`; its buffer's
/// capacity counted as twice that) plus 48 and 160 bytes of bookkeeping
/// (`EncodedEvent::weight`, `stream::table`).
fn retained_cost(pad: usize) -> u64 {
    2 * (pad as u64 + 96) + 48 + 160
}

/// What one retained event may add to the server's RSS: its cost in the
/// history's accounting, plus the allocator's share of its three
/// allocations (the shared event, its buffer, its place in the shard's
/// queue).
fn rss_cost(pad: usize) -> u64 {
    retained_cost(pad) + 64
}

/// The most publishes a flood can have had handled within `within_us`:
/// its inbound burst (2.5 times the rate) and the rate over that time.
fn flood_bound(within_us: u64) -> u64 {
    let rate = f64::from(crate::INBOUND_RATE);
    (2.5 * rate + rate * within_us as f64 / 1e6).ceil() as u64
}

/// The most a node's history may hold of `o`'s events (KiB): every
/// user's last 1,000 (a slow reader's user and `flood-sink` at most a
/// shard's budget), 64 MiB at most. The server keeps them for the window
/// (2 minutes), past the soak's end: its RSS may exceed the baseline by
/// this much for no fault of its own.
pub(crate) fn history_kib(o: &Outcome) -> u64 {
    let published: u64 = o
        .logs
        .iter()
        .flat_map(|l| l.sent.values().map(move |t| (t.len() as u64, l.pad)))
        .map(|(n, pad)| (n.min(MAX_EVENTS) * rss_cost(pad)).min(SHARD_BUDGET))
        .sum();
    let flooded: u64 = o
        .floods
        .iter()
        .map(|fl| {
            fl.sent
                .min(flood_bound(fl.span_us.1.saturating_sub(fl.span_us.0)))
        })
        .sum::<u64>()
        .min(MAX_EVENTS)
        * rss_cost(0);
    (published + flooded).min(64 * 1024 * 1024) / 1024
}

/// What the soak knows of the servers' history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// One node's history keeps the streams, within a byte budget per
    /// shard; with Redis the budget does not apply.
    pub(crate) byte_budget: bool,
    /// When Redis was frozen (µs): a resume meanwhile cannot read it.
    pub(crate) frozen: Option<(u64, u64)>,
}

/// The resume figures of one phase.
#[derive(Debug, Default, Clone)]
pub(crate) struct Figures {
    /// Connections dialed with `since` that got `ready`.
    pub(crate) resumed: u64,
    pub(crate) recovered: u64,
    pub(crate) not_recovered: u64,
    /// Genuine resumes whose absence the history covers …
    pub(crate) in_window: u64,
    /// … and of those, the ones not recovered.
    pub(crate) in_window_lost: u64,
    /// Genuine resumes outside a bound, and how many of them recovered
    /// anyway.
    pub(crate) outside: u64,
    pub(crate) outside_recovered: u64,
    /// Which bound each was outside first: the window's time, the
    /// per-user events, a shard's bytes, a frozen Redis.
    pub(crate) outside_by: [u64; 4],
    /// Resumes with a forged position (another user's epoch, an offset
    /// ahead).
    pub(crate) forged: u64,
    /// Connections that said `recovered: true` though they must not: a
    /// forged position, no `since`, or another epoch than asked.
    pub(crate) wrongly_recovered: u64,
    /// Events a recovered resume replayed (at or below `ready.off`).
    pub(crate) replayed: u64,
    /// Offsets of a recovered session, after `since`, never received.
    pub(crate) missed: u64,
    /// Events of a recovered session it had processed already (by offset
    /// or by message id), or received twice.
    pub(crate) duplicated: u64,
    /// Events at or below `ready.off` after `recovered: false`.
    pub(crate) unrecovered_replay: u64,
    /// Resuming connections that never got `ready`.
    pub(crate) never_ready: u64,
    /// Per connection: repeats, jumps without a `gap` frame, jumps with
    /// one, malformed `ready` frames or events before `ready`.
    pub(crate) repeats: u64,
    pub(crate) jumps: u64,
    pub(crate) excused_jumps: u64,
    pub(crate) malformed: u64,
    /// Offsets naming another message than on another connection of the
    /// user (same epoch), or a message at another offset.
    pub(crate) mismatches: u64,
}

impl Figures {
    /// Findings that fail the run.
    pub(crate) fn failures(&self) -> u64 {
        self.in_window_lost
            + self.wrongly_recovered
            + self.missed
            + self.duplicated
            + self.unrecovered_replay
            + self.repeats
            + self.jumps
            + self.malformed
            + self.mismatches
    }

    /// The assertions, for the report's table.
    pub(crate) fn checks(&self) -> Vec<Check> {
        let order = self.repeats + self.jumps + self.malformed;
        vec![
            check(
                "per-user offsets out of order on a connection",
                format!(
                    "{} repeats, {} jumps w/o gap, {} malformed ({} jumps w/ gap)",
                    self.repeats, self.jumps, self.malformed, self.excused_jumps
                ),
                0,
                order == 0,
            ),
            check(
                "offsets naming another message elsewhere",
                self.mismatches,
                0,
                self.mismatches == 0,
            ),
            check(
                "resumes within the window not recovered",
                format!(
                    "{} of {} ({} outside, {} of them recovered)",
                    self.in_window_lost, self.in_window, self.outside, self.outside_recovered
                ),
                0,
                // Not vacuous: some resumes were within the window.
                self.in_window_lost == 0 && self.in_window > 0,
            ),
            check(
                "resumed sessions: offsets missed, duplicated",
                format!(
                    "{} missed, {} duplicated ({} replayed)",
                    self.missed, self.duplicated, self.replayed
                ),
                "0, 0",
                self.missed == 0 && self.duplicated == 0,
            ),
            check(
                "recovered though it must not (forged, no since)",
                format!("{} ({} forged)", self.wrongly_recovered, self.forged),
                0,
                self.wrongly_recovered == 0,
            ),
            check(
                "events replayed after recovered: false",
                self.unrecovered_replay,
                0,
                self.unrecovered_replay == 0,
            ),
        ]
    }

    /// One line of figures.
    pub(crate) fn line(&self) -> String {
        format!(
            "resume: {} resumed ({} forged), {} recovered, {} not recovered; {} within the window, {} outside \
             (time {}, events {}, bytes {}, Redis frozen {}); {} events replayed, {} missed, {} duplicated; \
             {} resumes never ready",
            self.resumed,
            self.forged,
            self.recovered,
            self.not_recovered,
            self.in_window,
            self.outside,
            self.outside_by[0],
            self.outside_by[1],
            self.outside_by[2],
            self.outside_by[3],
            self.replayed,
            self.missed,
            self.duplicated,
            self.never_ready
        )
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "resumed": self.resumed, "recovered": self.recovered, "not_recovered": self.not_recovered,
            "in_window": self.in_window, "in_window_not_recovered": self.in_window_lost,
            "outside_window": self.outside, "outside_recovered": self.outside_recovered,
            "outside_by": {
                "time": self.outside_by[0], "events": self.outside_by[1],
                "bytes": self.outside_by[2], "redis_frozen": self.outside_by[3],
            },
            "forged": self.forged, "wrongly_recovered": self.wrongly_recovered,
            "replayed": self.replayed, "missed": self.missed, "duplicated": self.duplicated,
            "replay_after_not_recovered": self.unrecovered_replay, "never_ready": self.never_ready,
            "offset_repeats": self.repeats, "offset_jumps": self.jumps,
            "offset_jumps_with_gap": self.excused_jumps, "malformed": self.malformed,
            "offset_mismatches": self.mismatches,
        })
    }
}

/// A few connections whose offsets broke order, described.
pub(crate) fn print_breaks(o: &Outcome) {
    let records = o
        .receivers
        .iter()
        .chain(o.slow.iter().filter_map(|r| r.as_ref().ok()))
        .chain(o.floods.iter().filter_map(|f| f.record.as_ref()));
    let breaks = records.filter_map(|r| Some((r, r.stream.first_break()?)));
    for (r, text) in breaks.take(5) {
        let node = if r.cross_node {
            "cross-node"
        } else {
            "same node"
        };
        println!("offsets: {} ({node}, ended {:?}): {text}", r.id.user, r.end);
    }
}

/// Per user and epoch, the event each offset carried.
type ByOffset<'a> = HashMap<(&'a str, &'a str), HashMap<u64, &'a StreamEvent>>;

/// Evaluates every connection of `o` and every session of its receivers.
pub(crate) fn evaluate(o: &Outcome, limits: Limits) -> Figures {
    let mut f = Figures::default();
    let records: Vec<&Record> = o
        .receivers
        .iter()
        .chain(o.slow.iter().filter_map(|r| r.as_ref().ok()))
        .chain(o.floods.iter().filter_map(|f| f.record.as_ref()))
        .collect();
    let mut by_off: ByOffset<'_> = HashMap::new();
    let mut by_id: HashMap<(&str, &str), HashMap<&str, u64>> = HashMap::new();
    for r in &records {
        let b = r.stream.breaks();
        f.repeats += b.repeats;
        f.jumps += b.jumps;
        f.excused_jumps += b.excused;
        f.malformed += r.stream.malformed;
        let Some(joined) = &r.stream.joined else {
            continue;
        };
        let key = (r.id.user.as_str(), joined.epoch.as_str());
        let offs = by_off.entry(key).or_default();
        let ids = by_id.entry(key).or_default();
        for e in &r.stream.events {
            let known = *offs.entry(e.off).or_insert(e);
            let id = e.id.as_deref();
            let other_off = id.map(|id| *ids.entry(id).or_insert(e.off));
            if known.id.as_deref() != id || other_off.is_some_and(|off| off != e.off) {
                f.mismatches += 1;
            }
        }
    }
    let mut slots: BTreeMap<usize, Vec<&Record>> = BTreeMap::new();
    for r in &o.receivers {
        if let Some((slot, _)) = r.slot {
            slots.entry(slot).or_default().push(r);
        }
    }
    for chain in slots.values_mut() {
        chain.sort_by_key(|r| r.slot.map_or(0, |(_, serial)| serial));
        session(chain, o, &by_off, limits, &mut f);
    }
    f
}

/// What a session processed since it last started afresh.
#[derive(Default)]
struct Session<'a> {
    offs: HashSet<u64>,
    ids: HashSet<&'a str>,
}

impl<'a> Session<'a> {
    fn add(&mut self, events: &'a [StreamEvent]) {
        for e in events {
            self.offs.insert(e.off);
            if let Some(id) = &e.id {
                self.ids.insert(id);
            }
        }
    }
}

/// One slot's successive connections.
fn session(chain: &[&Record], o: &Outcome, by_off: &ByOffset<'_>, limits: Limits, f: &mut Figures) {
    let mut s = Session::default();
    for r in chain {
        let view = &r.stream;
        let Some(joined) = &view.joined else {
            // Processed nothing: the session stands where it stood.
            f.never_ready += u64::from(view.resume.is_some());
            continue;
        };
        let Some(resume) = &view.resume else {
            f.wrongly_recovered += u64::from(joined.recovered);
            s = Session::default();
            s.add(view.processed_events());
            continue;
        };
        f.resumed += 1;
        let genuine = resume.ask == Ask::Genuine;
        f.forged += u64::from(!genuine);
        let outside = genuine.then(|| outside_window(r, resume, o, by_off, limits));
        let in_window = matches!(outside, Some(None));
        if let Some(Some(bound)) = outside {
            f.outside += 1;
            if let Some(n) = f.outside_by.get_mut(bound as usize) {
                *n += 1;
            }
        }
        f.in_window += u64::from(in_window);
        if joined.recovered {
            f.recovered += 1;
            f.outside_recovered += u64::from(genuine && !in_window);
            if !genuine || joined.epoch != resume.since.epoch {
                f.wrongly_recovered += 1;
                s = Session::default();
            } else {
                seam(
                    &s,
                    resume.since.off,
                    joined.off,
                    view.events_until_drop(),
                    f,
                );
            }
        } else {
            f.not_recovered += 1;
            f.in_window_lost += u64::from(in_window);
            f.unrecovered_replay += view.unrecovered_replay();
            s = Session::default();
        }
        s.add(view.processed_events());
    }
}

/// A recovered resume after `since`, joined at `ready_off`, which received
/// `events` (up to its own drop): every offset from `since + 1` once, none
/// the session had.
fn seam(s: &Session<'_>, since: u64, ready_off: u64, events: &[StreamEvent], f: &mut Figures) {
    let (mut offs, mut ids) = (HashSet::new(), HashSet::new());
    for e in events {
        let id = e.id.as_deref();
        let repeat_off = e.off <= since || s.offs.contains(&e.off) || !offs.insert(e.off);
        let repeat_id = id.is_some_and(|id| s.ids.contains(id) || !ids.insert(id));
        f.duplicated += u64::from(repeat_off || repeat_id);
        f.replayed += u64::from(e.off > since && e.off <= ready_off);
    }
    let last = events
        .iter()
        .map(|e| e.off)
        .max()
        .unwrap_or(0)
        .max(ready_off);
    let expected = last.saturating_sub(since);
    let got = offs
        .iter()
        .filter(|&&off| off > since && off <= last)
        .count() as u64;
    f.missed += expected.saturating_sub(got);
}

/// A bound of the server's history a resume can be outside of.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Time = 0,
    Events = 1,
    Bytes = 2,
    Frozen = 3,
}

/// Which bound, if any, lets the server's history lose what `r`'s session
/// missed. Within them all, its first missed event was sent less than the
/// window before the new `ready` (less a margin), fewer events than the
/// per-user bound reached the user meanwhile, on one node fewer bytes than
/// a shard's budget reached the server overall (any of it may share the
/// user's shard), and Redis was not frozen meanwhile.
fn outside_window(
    r: &Record,
    resume: &Resume,
    o: &Outcome,
    by_off: &ByOffset<'_>,
    limits: Limits,
) -> Option<Bound> {
    let Some(ready_us) = r.ready_us else {
        return Some(Bound::Time);
    };
    let user = r.id.user.as_str();
    let sent = o.logs.iter().find_map(|l| l.sent.get(user));
    // The first missed event: the message after the one at `since`.
    let first_missed_us = by_off
        .get(&(user, resume.since.epoch.as_str()))
        .and_then(|offs| offs.get(&resume.since.off))
        .and_then(|e| e.k)
        .and_then(|k| sent?.get(usize::try_from(k).ok()?).copied());
    let from = first_missed_us
        .unwrap_or_else(|| resume.dropped_us.saturating_sub(1_000_000))
        .min(resume.dropped_us)
        .saturating_sub(SEND_SKEW_US);
    let window = u64::try_from((WINDOW - TIME_MARGIN).as_micros()).unwrap_or(u64::MAX);
    if ready_us.saturating_sub(from) >= window {
        return Some(Bound::Time);
    }
    let between = |times: &[u64]| {
        let start = times.partition_point(|&t| t < from);
        let end = times.partition_point(|&t| t <= ready_us);
        end.saturating_sub(start) as u64
    };
    if sent.is_some_and(|times| between(times) >= MAX_EVENTS - EVENTS_MARGIN) {
        return Some(Bound::Events);
    }
    if limits.byte_budget {
        let published: u64 = o
            .logs
            .iter()
            .map(|l| l.sent.values().map(|t| between(t)).sum::<u64>() * retained_cost(l.pad))
            .sum();
        // A flood's publishes the server handled meanwhile: at most its
        // inbound burst and rate over the overlap.
        let flooded: u64 = o
            .floods
            .iter()
            .filter(|fl| fl.span_us.0 <= ready_us && fl.span_us.1 >= from)
            .map(|fl| {
                let overlap = fl
                    .span_us
                    .1
                    .min(ready_us)
                    .saturating_sub(fl.span_us.0.max(from));
                fl.sent.min(flood_bound(overlap)) * retained_cost(0)
            })
            .sum();
        if published + flooded > SHARD_BUDGET {
            return Some(Bound::Bytes);
        }
    }
    if let Some((stopped, continued)) = limits.frozen {
        // The nodes notice a frozen Redis within seconds, and recover
        // within seconds of its thaw.
        if from <= continued.saturating_add(5_000_000)
            && ready_us.saturating_add(1_000_000) >= stopped
        {
            return Some(Bound::Frozen);
        }
    }
    None
}
