//! The per-connection outbox: pre-ready buffer and outbound queue in one
//! ordered, bounded `VecDeque`.
//!
//! Sequence numbers are assigned under the same lock that appends, so queue
//! order is sequence order. Before Ready the queue is the pre-ready buffer
//! (nobody drains it); [`Outbox::open`] makes it the outbound queue and wakes
//! the writer, which therefore flushes the buffered events first, exactly
//! once, before anything emitted later. One structure means there is no
//! hand-off between a buffer and a queue that an emit could race.

use crate::connection::signal::Signal;
use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::sync::Mutex;
use tokio::sync::Notify;

use crate::close::{CloseCause, CloseFrame};
use crate::config::{BufferLimit, HubConfig, PreReadyOverflow, SlowConsumerPolicy};
use crate::event::EncodedEvent;
use crate::id::{ConnectionId, UserId};
use crate::metrics::Metrics;

/// Who an event is for: checked against the connection it reaches, on the
/// write path, before it gets a sequence number.
#[derive(Debug, Clone)]
pub(crate) enum Addressee {
    User(UserId),
    Connection(ConnectionId),
}

/// An encoded event with its addressee, shared by every connection it goes
/// to.
#[derive(Debug)]
pub(crate) struct Routed {
    pub(crate) to: Addressee,
    /// Its offset in the user's stream (none for an event addressed to one
    /// connection).
    pub(crate) off: Option<NonZeroU64>,
    pub(crate) event: EncodedEvent,
}

impl Routed {
    /// An event for `user` at offset `off` of their stream.
    pub(crate) fn for_user(user: UserId, off: u64, event: EncodedEvent) -> Arc<Routed> {
        Arc::new(Routed {
            to: Addressee::User(user),
            off: NonZeroU64::new(off),
            event,
        })
    }

    /// An event for one connection: no offset.
    pub(crate) fn for_connection(id: ConnectionId, event: EncodedEvent) -> Arc<Routed> {
        Arc::new(Routed {
            to: Addressee::Connection(id),
            off: None,
            event,
        })
    }

    pub(crate) fn is_for(&self, id: &ConnectionId, user: &UserId) -> bool {
        match &self.to {
            Addressee::User(to) => to.ptr_eq(user) || to == user,
            Addressee::Connection(to) => to == id,
        }
    }
}

/// One event in a connection's queue.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) seq: u64,
    pub(crate) event: Arc<Routed>,
    weight: usize,
}

impl Queued {
    pub(crate) fn new(seq: u64, event: Arc<Routed>) -> Self {
        let weight = event.event.weight();
        Queued { seq, event, weight }
    }
}

/// Where an accepted event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    Buffered,
    Queued,
    /// An event of the user's stream at or below the last offset this
    /// connection has: it has it already (a replay, or a node repairing a
    /// hole behind it), so it is dropped, not written twice.
    Repeat,
}

/// Why an event was refused. The outbox has already counted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Closed,
    Full,
    /// Full, and the overflow policy is closing the connection (logged by
    /// the connection, in its span).
    Overflowed,
    Misaddressed,
    /// Larger than the whole buffer or queue on its own: no policy could
    /// ever make room, so it is the caller's problem, not the peer's.
    TooLarge,
}

/// What the writer should do next.
#[derive(Debug)]
pub(crate) enum Drain {
    /// Write these (moved into the caller's batch). `emptied`: nothing else
    /// is pending (no event, close or ping), so the next step can wait for
    /// a wake-up without looking: anything that changes later sets the
    /// writer's flag, which it keeps until the writer waits. `depth`: the
    /// events queued when the batch was taken, the batch included.
    Items { emptied: bool, depth: usize },
    /// Nothing to write yet.
    Wait,
    /// Send this close frame (if any) and stop.
    Close(Option<CloseFrame>),
    /// Stop without a close handshake: the transport is dropped as it is
    /// (`CloseCause::Terminated`).
    Abort,
    /// Send a ping (the heartbeat asked for one).
    Ping,
}

#[derive(Debug)]
struct State {
    open: bool,
    closing: Option<CloseCause>,
    next_seq: u64,
    queue: VecDeque<Queued>,
    /// Before Ready: the events of the user's stream that arrived, in
    /// arrival order, waiting for their place after the replay of a resume
    /// (they get their `seq` when the outbox opens).
    held: VecDeque<Queued>,
    /// The last offset of the user's stream queued, once open: a later
    /// event at or below it is a repeat.
    last_off: u64,
    /// Replayed events still queued. A resume's replay is bounded by the
    /// history's own limits, not the queue's: it neither counts against the
    /// outbound queue (weight 0) nor makes live events behind it overflow.
    replay_left: usize,
    bytes: usize,
    /// Events the writer took from the queue but never wrote (it failed or
    /// was stopped mid-batch); reported with the queue's leftovers.
    lost_by_writer: u64,
    /// The heartbeat wants a ping written.
    ping: bool,
    /// The frame a forced close sends (the shutdown's own).
    forced_frame: Option<CloseFrame>,
}

impl State {
    fn fits(&self, limit: BufferLimit, weight: usize) -> bool {
        self.queue.len() - self.replay_left + self.held.len() < limit.max_events
            && self.bytes + weight <= limit.max_bytes
    }

    fn pop_front(&mut self) -> Option<Queued> {
        let q = match self.queue.pop_front() {
            Some(q) => q,
            None => self.held.pop_front()?,
        };
        if q.weight == 0 {
            self.replay_left = self.replay_left.saturating_sub(1);
        }
        self.bytes -= q.weight;
        Some(q)
    }
}

/// A connection's outbox.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer task: something was queued or a close was asked for.
    writer: Signal,
    /// Wakes the task driving the connection: a close was asked for.
    driver: Notify,
    /// Wakes a driver waiting for its writer: the close was forced.
    forced: Notify,
    /// Wakes every task waiting in [`Outbox::watch_closed`] (handles'
    /// `closed()`): a close was asked for, by anyone.
    watchers: Notify,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            state: Mutex::new(State {
                open: false,
                closing: None,
                next_seq: 1,
                queue: VecDeque::new(),
                held: VecDeque::new(),
                last_off: 0,
                replay_left: 0,
                bytes: 0,
                lost_by_writer: 0,
                ping: false,
                forced_frame: None,
            }),
            writer: Signal::default(),
            driver: Notify::new(),
            forced: Notify::new(),
            watchers: Notify::new(),
        }
    }

    /// Appends `event`, assigning the next sequence number, or refuses it
    /// under the configured overflow policy.
    /// The caller (the connection, which knows its owner) has already
    /// checked the addressee.
    pub(crate) fn push(
        &self,
        event: &Arc<Routed>,
        config: &HubConfig,
        metrics: &Metrics,
    ) -> Result<(u64, Accepted), Refused> {
        let c = &metrics.c;
        let mut s = self.state.lock();
        if s.closing.is_some() {
            Metrics::inc(&c.refused_closed);
            return Err(Refused::Closed);
        }
        if s.open && event.off.is_some_and(|off| off.get() <= s.last_off) {
            return Ok((0, Accepted::Repeat));
        }
        let weight = event.event.weight();
        let (limit, refused_counter) = if s.open {
            (config.outbound_queue, &c.refused_queue_full)
        } else {
            (config.pre_ready_buffer, &c.refused_before_ready)
        };
        if weight > limit.max_bytes {
            // Never the peer's fault: an idle connection must not be
            // closed as a slow consumer for an event it could never hold.
            Metrics::inc(&c.refused_too_large);
            return Err(Refused::TooLarge);
        }
        if !s.fits(limit, weight) {
            enum Action {
                Refuse,
                DropOldest,
                Close(CloseCause),
            }
            let action = if s.open {
                match config.slow_consumer {
                    SlowConsumerPolicy::Close => Action::Close(CloseCause::SlowConsumer),
                    SlowConsumerPolicy::DropOldest => Action::DropOldest,
                    SlowConsumerPolicy::DropNewest => Action::Refuse,
                }
            } else {
                match config.pre_ready_overflow {
                    PreReadyOverflow::Close => Action::Close(CloseCause::PreReadyOverflow),
                    PreReadyOverflow::DropOldest => Action::DropOldest,
                    PreReadyOverflow::Reject => Action::Refuse,
                }
            };
            match action {
                Action::Refuse => {
                    Metrics::inc(refused_counter);
                    return Err(Refused::Full);
                }
                Action::Close(cause) => {
                    Metrics::inc(refused_counter);
                    s.closing = Some(cause);
                    drop(s);
                    self.wake_all();
                    return Err(Refused::Overflowed);
                }
                Action::DropOldest => {
                    while !s.fits(limit, weight) && s.pop_front().is_some() {
                        Metrics::inc(&c.dropped_overflow);
                    }
                    if !s.fits(limit, weight) {
                        // Larger than the whole buffer on its own.
                        Metrics::inc(refused_counter);
                        return Err(Refused::Full);
                    }
                }
            }
        }
        if let Some(off) = event.off.map(NonZeroU64::get) {
            if !s.open {
                s.held.push_back(Queued::new(0, Arc::clone(event)));
                s.bytes += weight;
                drop(s);
                Metrics::inc(&c.events_buffered);
                return Ok((0, Accepted::Buffered));
            }
            s.last_off = off;
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        let was_empty = s.queue.is_empty();
        s.queue.push_back(Queued::new(seq, Arc::clone(event)));
        s.bytes += weight;
        let open = s.open;
        drop(s);
        if open {
            Metrics::inc(&c.events_queued);
            // A non-empty queue is drained before the writer waits again, so
            // only the empty-to-non-empty edge needs a wake-up.
            if was_empty {
                self.writer.notify();
            }
            Ok((seq, Accepted::Queued))
        } else {
            Metrics::inc(&c.events_buffered);
            Ok((seq, Accepted::Buffered))
        }
    }

    /// Turns the pre-ready buffer into the outbound queue and wakes the
    /// writer, which flushes what was buffered before anything later: the
    /// connection's own events first (its `ready` frame), then `replay`
    /// (a resume's missed events, in offset order, each once: the merge
    /// chose them), then the held events of the user's stream past offset
    /// `after` and past the replay (the seam's overlap is dropped here), in
    /// arrival order.
    pub(crate) fn open(&self, replay: Vec<Arc<Routed>>, after: u64) {
        let mut s = self.state.lock();
        let s = &mut *s;
        let mut last = after;
        for event in replay {
            last = last.max(event.off.map_or(0, NonZeroU64::get));
            s.queue.push_back(Queued {
                seq: s.next_seq,
                event,
                weight: 0,
            });
            s.next_seq += 1;
            s.replay_left += 1;
        }
        for mut q in std::mem::take(&mut s.held) {
            let off = q.event.off.map_or(0, NonZeroU64::get);
            if off <= last {
                // Replayed already: a repeat, not a loss.
                s.bytes -= q.weight;
                continue;
            }
            last = off;
            q.seq = s.next_seq;
            s.next_seq += 1;
            s.queue.push_back(q);
        }
        s.last_off = last;
        s.open = true;
        self.writer.notify();
    }

    /// The user's stream restarted under a new epoch (its offsets start
    /// again): what comes next is not a repeat of what came before.
    pub(crate) fn restart_stream(&self) {
        self.state.lock().last_off = 0;
    }

    /// The offset of the first event of the user's stream held for Ready:
    /// everything from it on reached this connection.
    pub(crate) fn first_held(&self) -> Option<u64> {
        let s = self.state.lock();
        s.held
            .front()
            .and_then(|q| q.event.off)
            .map(NonZeroU64::get)
    }

    /// Asks the writer to send a ping, ahead of queued events.
    pub(crate) fn request_ping(&self) {
        self.state.lock().ping = true;
        self.writer.notify();
    }

    /// Replaces a pending orderly close (or none) with `Forced`: the
    /// writer stops draining and sends `frame` at once.
    pub(crate) fn force_close(&self, frame: CloseFrame) {
        {
            let mut s = self.state.lock();
            s.closing = Some(CloseCause::Forced);
            s.forced_frame = Some(frame);
        }
        self.wake_all();
        self.forced.notify_one();
    }

    /// Resolves once the close has been forced.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `Notify` keeps the permit for the next call.
    pub(crate) async fn forced(&self) {
        loop {
            if self.close_cause() == Some(CloseCause::Forced) {
                return;
            }
            self.forced.notified().await;
        }
    }

    /// Asks for the connection to close. The first request wins; later ones
    /// return `false`. From now on every push is refused.
    pub(crate) fn request_close(&self, cause: CloseCause) -> bool {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return false;
        }
        s.closing = Some(cause);
        drop(s);
        self.wake_all();
        true
    }

    fn wake_all(&self) {
        self.writer.notify();
        self.driver.notify_one();
        self.watchers.notify_waiters();
    }

    /// Resolves once a close has been asked for (or the connection ended),
    /// for any number of waiters.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn watch_closed(&self) -> CloseCause {
        loop {
            let notified = self.watchers.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a close between the two is
            // not missed (`notify_waiters` keeps no permit).
            notified.as_mut().enable();
            if let Some(cause) = self.close_cause() {
                return cause;
            }
            notified.await;
        }
    }

    /// The close asked for, if any.
    pub(crate) fn close_cause(&self) -> Option<CloseCause> {
        self.state.lock().closing.clone()
    }

    /// Resolves once a close has been asked for.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: `Notify` keeps the permit for the next call.
    pub(crate) async fn closed(&self) -> CloseCause {
        loop {
            if let Some(cause) = self.close_cause() {
                return cause;
            }
            self.driver.notified().await;
        }
    }

    /// Waits until the writer has something to do: moves up to `max`
    /// events into `batch`, or says to ping or close. While it waits, the
    /// batch keeps at most `idle_capacity` slots: an idle connection (most
    /// of them, at scale) should not hold a burst's worth.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is moved until it returns. `emptied`: what
    /// the previous step said (`false` at first).
    pub(crate) async fn next(
        &self,
        batch: &mut VecDeque<Queued>,
        max: usize,
        idle_capacity: usize,
        emptied: bool,
    ) -> Drain {
        if emptied {
            // Saves a lock (and its cache miss) per wake-up: what was
            // queued meanwhile left a permit.
            batch.shrink_to(idle_capacity);
            self.writer.wait().await;
        }
        loop {
            match self.drain(batch, max) {
                Drain::Wait => {
                    batch.shrink_to(idle_capacity);
                    self.writer.wait().await;
                }
                step => return step,
            }
        }
    }

    /// Moves up to `max` events into `batch`, or says to wait or close.
    pub(crate) fn drain(&self, batch: &mut VecDeque<Queued>, max: usize) -> Drain {
        let mut s = self.state.lock();
        if let Some(cause) = &s.closing
            && (!cause.drains() || s.queue.is_empty())
        {
            if *cause == CloseCause::Terminated {
                return Drain::Abort;
            }
            let frame = match cause {
                CloseCause::Forced => s.forced_frame.clone().or_else(|| cause.frame()),
                _ => cause.frame(),
            };
            return Drain::Close(frame);
        }
        if s.open && std::mem::take(&mut s.ping) {
            return Drain::Ping;
        }
        if !s.open || s.queue.is_empty() {
            return Drain::Wait;
        }
        let depth = s.queue.len();
        for _ in 0..max {
            match s.pop_front() {
                Some(q) => batch.push_back(q),
                None => break,
            }
        }
        // Nothing left for the writer to look at: no event, no close, no
        // ping. Whatever changes after this lock sets the writer's flag; a
        // change before it was seen here (its flag may have been consumed
        // by the wake-up that led here).
        Drain::Items {
            emptied: s.queue.is_empty() && s.closing.is_none() && !s.ping,
            depth,
        }
    }

    /// Records `n` events the writer had taken but could not write (it has
    /// already counted them in the metrics).
    pub(crate) fn writer_lost(&self, n: u64) {
        self.state.lock().lost_by_writer += n;
    }

    /// Drops whatever is still queued, counting it; returns how many events
    /// were never written, including those the writer lost. Called once the
    /// connection can no longer write.
    pub(crate) fn discard(&self, metrics: &Metrics) -> u64 {
        let mut s = self.state.lock();
        let was_open = s.closing.is_none();
        if was_open {
            s.closing = Some(CloseCause::Dropped);
        }
        let n = (s.queue.len() + s.held.len()) as u64;
        s.queue.clear();
        s.held.clear();
        s.replay_left = 0;
        s.bytes = 0;
        let lost = s.lost_by_writer;
        drop(s);
        if was_open {
            self.watchers.notify_waiters();
        }
        Metrics::add(&metrics.c.dropped_on_close, n);
        n + lost
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
