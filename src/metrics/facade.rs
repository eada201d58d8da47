//! The `metrics` facade's handles, registered once per hub.

use std::collections::BTreeMap;

use metrics::{Counter, Gauge, Histogram, Unit};
use parking_lot::Mutex;

use super::names;
use crate::close::CloseCause;
use crate::state::{ConnectionState, StateMachine};

/// The facade handle for one of the snapshot's counters: the counts that
/// are deliveries or gaps have one, the others a no-op handle.
pub(super) fn counter_for(field: &str) -> Counter {
    let (outcome, reason) = match field {
        "gaps_notified" => return metrics::counter!(names::GAPS_SIGNALLED),
        "resumes_recovered" => return metrics::counter!(names::RESUMES, "outcome" => "recovered"),
        "resumes_not_recovered" => {
            return metrics::counter!(names::RESUMES, "outcome" => "not_recovered");
        }
        "events_replayed" => return metrics::counter!(names::EVENTS_REPLAYED),
        "events_written" => return metrics::counter!(names::DELIVERIES, "outcome" => "written"),
        "dropped_overflow" => ("dropped", "overflow"),
        "dropped_on_close" => ("dropped", "on_close"),
        "refused_closed" => ("refused", "closed"),
        "refused_before_ready" => ("refused", "before_ready"),
        "refused_queue_full" => ("refused", "queue_full"),
        "refused_too_large" => ("refused", "too_large"),
        "isolation_refusals" => ("refused", "misaddressed"),
        _ => return Counter::noop(),
    };
    metrics::counter!(names::DELIVERIES, "outcome" => outcome, "reason" => reason)
}

/// The handles a hub emits through, besides its counters'.
#[derive(Debug)]
pub(super) struct Facade {
    /// One gauge per state, by `ConnectionState::index`; no-op handles
    /// for the terminal states (their totals are in `closes`).
    states: [Gauge; ConnectionState::ALL.len()],
    opened: Counter,
    time_to_ready: Histogram,
    duration: Histogram,
    outbox_depth: Histogram,
    write_batch: Histogram,
    /// Registered at a label set's first occurrence: close codes include
    /// the application's own.
    closes: Mutex<BTreeMap<(Option<u16>, &'static str), Counter>>,
    auth_failures: Mutex<BTreeMap<&'static str, Counter>>,
}

impl Facade {
    /// Describes and registers every handle with the current recorder.
    pub(super) fn register() -> Self {
        describe();
        Facade {
            states: ConnectionState::ALL.map(|state| {
                if state.is_terminal() {
                    Gauge::noop()
                } else {
                    metrics::gauge!(names::CONNECTIONS, "state" => state.as_str())
                }
            }),
            opened: metrics::counter!(names::CONNECTIONS_OPENED),
            time_to_ready: metrics::histogram!(names::TIME_TO_READY),
            duration: metrics::histogram!(names::CONNECTION_DURATION),
            outbox_depth: metrics::histogram!(names::OUTBOX_DEPTH),
            write_batch: metrics::histogram!(names::WRITE_BATCH),
            closes: Mutex::default(),
            auth_failures: Mutex::default(),
        }
    }

    pub(super) fn opened(&self) {
        self.opened.increment(1);
        self.gauge(ConnectionState::Connecting, 1.0);
    }

    pub(super) fn transition(
        &self,
        from: ConnectionState,
        to: ConnectionState,
        machine: &StateMachine,
    ) {
        self.gauge(from, -1.0);
        self.gauge(to, 1.0);
        match to {
            ConnectionState::Ready => self.time_to_ready.record(machine.age()),
            ConnectionState::Closed | ConnectionState::Failed => {
                self.duration.record(machine.age());
            }
            _ => {}
        }
    }

    fn gauge(&self, state: ConnectionState, by: f64) {
        if let Some(gauge) = self.states.get(state.index()) {
            gauge.increment(by);
        }
    }

    pub(super) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .lock()
            .entry(reason)
            .or_insert_with(|| metrics::counter!(names::AUTH_FAILURES, "reason" => reason))
            .increment(1);
    }

    pub(super) fn closed(&self, cause: &CloseCause) {
        let code = cause.frame().map(|frame| frame.code.as_u16());
        let cause = cause.as_str();
        self.closes
            .lock()
            .entry((code, cause))
            .or_insert_with(|| {
                let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
                metrics::counter!(names::CLOSES, "code" => code, "cause" => cause)
            })
            .increment(1);
    }

    pub(super) fn write_batch(&self, depth: usize, batch: usize) {
        self.outbox_depth.record(depth as f64);
        self.write_batch.record(batch as f64);
    }
}

/// `# HELP` texts and units, for exporters that show them.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        names::CONNECTIONS,
        Unit::Count,
        "Live WebSocket connections by lifecycle state."
    );
    describe_counter!(
        names::CONNECTIONS_OPENED,
        Unit::Count,
        "WebSocket connections minted."
    );
    describe_counter!(
        names::CLOSES,
        Unit::Count,
        "WebSocket connections ended, by close code sent and cause."
    );
    describe_counter!(
        names::AUTH_FAILURES,
        Unit::Count,
        "Failed authentications, by reason."
    );
    describe_histogram!(
        names::TIME_TO_READY,
        Unit::Seconds,
        "Time from a connection's id being minted to Ready."
    );
    describe_histogram!(
        names::CONNECTION_DURATION,
        Unit::Seconds,
        "Time from a connection's id being minted to its end."
    );
    describe_counter!(
        names::DELIVERIES,
        Unit::Count,
        "Events handed to connections, by outcome (written, dropped, refused) and reason."
    );
    describe_histogram!(
        names::OUTBOX_DEPTH,
        Unit::Count,
        "Events in a connection's outbox when its writer takes a batch."
    );
    describe_histogram!(
        names::WRITE_BATCH,
        Unit::Count,
        "Events written per batch (one flush each)."
    );
    describe_histogram!(
        names::BACKPLANE_PUBLISH,
        Unit::Seconds,
        "Duration of one Redis backplane publish pipeline."
    );
    describe_counter!(
        names::GAPS_SIGNALLED,
        Unit::Count,
        "Gap events accepted by connections (they may have missed events)."
    );
    describe_counter!(
        names::RESUMES,
        Unit::Count,
        "Connections that asked to resume their user's stream, by outcome."
    );
    describe_counter!(
        names::EVENTS_REPLAYED,
        Unit::Count,
        "Events replayed to resuming connections."
    );
}
