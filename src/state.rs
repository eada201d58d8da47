//! The connection state machine: one transition table, bounded history, and
//! a shared cell other tasks read and wait on for readiness, without
//! polling.
//!
//! ```text
//! Connecting -> Accepted -> Authenticated -> ServicesReady -> Ready
//!     |            |              |                |            |
//!     +------------+--------------+----------------+------------+--> Closing -> Closed
//!     +------------------------- error / timeout -----------------------------> Failed
//! ```
//!
//! An illegal transition returns [`TransitionError`] and changes nothing.
//! `Closed` and `Failed` absorb: every transition out of them is illegal.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Id minted; the transport is not open yet.
    Connecting,
    /// The transport is open (the WebSocket upgrade completed).
    Accepted,
    /// Authentication bound a user; the connection is in the routing table.
    Authenticated,
    /// The application's on-ready hook finished.
    ServicesReady,
    /// Events flow to the transport.
    Ready,
    /// Closing: no new events are accepted; queued ones may still be written.
    Closing,
    /// Closed cleanly. Terminal.
    Closed,
    /// Ended by an error or timeout. Terminal.
    Failed,
}

impl ConnectionState {
    /// Every state, in lifecycle order.
    pub const ALL: [ConnectionState; 8] = [
        ConnectionState::Connecting,
        ConnectionState::Accepted,
        ConnectionState::Authenticated,
        ConnectionState::ServicesReady,
        ConnectionState::Ready,
        ConnectionState::Closing,
        ConnectionState::Closed,
        ConnectionState::Failed,
    ];

    /// Whether the state is `Closed` or `Failed`.
    pub fn is_terminal(self) -> bool {
        matches!(self, ConnectionState::Closed | ConnectionState::Failed)
    }

    /// The transition table: whether `self -> to` is legal.
    pub fn can_transition_to(self, to: ConnectionState) -> bool {
        use ConnectionState::*;
        matches!(
            (self, to),
            (Connecting, Accepted)
                | (Accepted, Authenticated)
                | (Authenticated, ServicesReady)
                | (ServicesReady, Ready)
                | (
                    Connecting | Accepted | Authenticated | ServicesReady | Ready,
                    Closing
                )
                | (Closing, Closed)
                | (
                    Connecting | Accepted | Authenticated | ServicesReady | Ready | Closing,
                    Failed
                )
        )
    }

    /// A stable lower-case name, used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connecting => "connecting",
            ConnectionState::Accepted => "accepted",
            ConnectionState::Authenticated => "authenticated",
            ConnectionState::ServicesReady => "services_ready",
            ConnectionState::Ready => "ready",
            ConnectionState::Closing => "closing",
            ConnectionState::Closed => "closed",
            ConnectionState::Failed => "failed",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether a [`StateWatch::wait_ready`] waiting in any earlier state
    /// is done once the machine enters this one.
    fn ends_wait(self) -> bool {
        matches!(
            self,
            ConnectionState::Ready
                | ConnectionState::Closing
                | ConnectionState::Closed
                | ConnectionState::Failed
        )
    }

    fn from_index(index: u8) -> ConnectionState {
        // Only `index()` values are ever stored.
        ConnectionState::ALL
            .get(usize::from(index))
            .copied()
            .unwrap_or(ConnectionState::Failed)
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the table does not allow; the state was left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal connection state transition {from} -> {to}")]
pub struct TransitionError {
    /// The state the machine was (and still is) in.
    pub from: ConnectionState,
    /// The state that was asked for.
    pub to: ConnectionState,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: ConnectionState,
    /// The state entered.
    pub to: ConnectionState,
    /// Why, as a short machine-readable code (for example `auth_ok`).
    pub reason: &'static str,
    /// When.
    pub at: SystemTime,
}

/// How many transitions [`StateMachine::history`] keeps. A connection's
/// longest legal path has 6 transitions, so 16 always holds the whole
/// story; the bound is there so no future path can grow it.
pub const HISTORY_LEN: usize = 16;

/// Transitions on the longest legal path (Connecting … Ready, Closing,
/// Closed or Failed): the history's room from the start, so recording
/// never reallocates, without reserving all of [`HISTORY_LEN`] per
/// connection.
const LONGEST_PATH: usize = 6;

/// The state of one connection, its history, and the channel observers wait
/// on.
///
/// Only the code that owns the connection mutates it (`&mut self`); other
/// tasks hold a [`StateWatch`].
#[derive(Debug)]
pub struct StateMachine {
    shared: Arc<Shared>,
    history: VecDeque<Transition>,
    /// When the machine was made (the connection's id minted), for the
    /// time-to-Ready and duration histograms.
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

/// What a machine shares with its watches. Not a `tokio::sync::watch`: that
/// wakes (and locks) on every send, several times over, where readiness
/// waiters only care about a few transitions, and a transition is on every
/// connection's path.
#[derive(Debug)]
struct Shared {
    state: AtomicU8,
    /// The machine was dropped: the state will never change again.
    ended: AtomicBool,
    /// Woken on the transitions that can end a [`StateWatch::wait_ready`]
    /// and when the machine drops.
    changed: Notify,
}

impl Default for StateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl StateMachine {
    /// A machine in `Connecting`.
    pub fn new() -> Self {
        StateMachine {
            shared: Arc::new(Shared {
                state: AtomicU8::new(ConnectionState::Connecting as u8),
                ended: AtomicBool::new(false),
                changed: Notify::new(),
            }),
            history: VecDeque::with_capacity(LONGEST_PATH),
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// How long ago the machine was made.
    #[cfg(feature = "metrics")]
    pub(crate) fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state()
    }

    /// Moves to `to`, recording `reason`.
    ///
    /// # Errors
    ///
    /// [`TransitionError`] when the table does not allow it; the state and
    /// history are unchanged.
    pub fn transition(
        &mut self,
        to: ConnectionState,
        reason: &'static str,
    ) -> Result<ConnectionState, TransitionError> {
        let from = self.state();
        if !from.can_transition_to(to) {
            return Err(TransitionError { from, to });
        }
        self.shared.state.store(to as u8, Ordering::Release);
        if to.ends_wait() {
            self.shared.changed.notify_waiters();
        }
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            from,
            to,
            reason,
            at: SystemTime::now(),
        });
        Ok(from)
    }

    /// The last [`HISTORY_LEN`] transitions, oldest first.
    pub fn history(&self) -> impl ExactSizeIterator<Item = &Transition> {
        self.history.iter()
    }

    /// A handle other tasks use to observe the state.
    pub fn watch(&self) -> StateWatch {
        StateWatch {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Why [`StateWatch::wait_ready`] returned without the connection being
/// ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed first.
    #[error("connection not ready within {0:?}")]
    Timeout(Duration),
    /// The connection reached this state (closing, closed or failed) and will
    /// never become ready.
    #[error("connection will never be ready: it is {0}")]
    Ended(ConnectionState),
}

/// A read-only view of a connection's state for other tasks.
#[derive(Debug, Clone)]
pub struct StateWatch {
    shared: Arc<Shared>,
}

impl Shared {
    fn state(&self) -> ConnectionState {
        ConnectionState::from_index(self.state.load(Ordering::Acquire))
    }
}

impl Drop for StateMachine {
    fn drop(&mut self) {
        self.shared.ended.store(true, Ordering::Release);
        self.shared.changed.notify_waiters();
    }
}

impl StateWatch {
    /// The current state.
    pub fn state(&self) -> ConnectionState {
        self.shared.state()
    }

    /// Waits until the connection is `Ready`, at most `timeout`.
    ///
    /// It wakes on the transitions that can end the wait, never polls.
    ///
    /// # Errors
    ///
    /// [`WaitError::Ended`] once the connection is closing, closed or failed
    /// (it can no longer become ready), or its machine was dropped;
    /// [`WaitError::Timeout`] when the deadline passes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), WaitError> {
        let wait = async {
            loop {
                // Registered before the state is read, so a transition in
                // between still wakes it (`notify_waiters` wakes every
                // `Notified` created before the call).
                let changed = self.shared.changed.notified();
                let state = self.state();
                if state == ConnectionState::Ready {
                    return Ok(());
                }
                if state.ends_wait() || self.shared.ended.load(Ordering::Acquire) {
                    return Err(WaitError::Ended(state));
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(WaitError::Timeout(timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionState::*;

    #[test]
    fn happy_path_is_legal() {
        let mut sm = StateMachine::new();
        for to in [
            Accepted,
            Authenticated,
            ServicesReady,
            Ready,
            Closing,
            Closed,
        ] {
            assert!(sm.transition(to, "test").is_ok(), "-> {to}");
        }
        assert_eq!(sm.history().len(), 6);
    }

    #[test]
    fn illegal_leaves_state() {
        let mut sm = StateMachine::new();
        let err = sm.transition(Ready, "skip");
        assert_eq!(
            err,
            Err(TransitionError {
                from: Connecting,
                to: Ready
            })
        );
        assert_eq!(sm.state(), Connecting);
        assert_eq!(sm.history().len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_ready_wakes_and_times_out() {
        let mut sm = StateMachine::new();
        let watch = sm.watch();
        assert_eq!(
            watch.wait_ready(Duration::from_secs(1)).await,
            Err(WaitError::Timeout(Duration::from_secs(1)))
        );
        let waiter = tokio::spawn({
            let watch = watch.clone();
            async move { watch.wait_ready(Duration::from_secs(10)).await }
        });
        for to in [Accepted, Authenticated, ServicesReady, Ready] {
            sm.transition(to, "t").unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(waiter.await.ok(), Some(Ok(())));
        sm.transition(Failed, "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            watch.wait_ready(Duration::from_secs(1)).await,
            Err(WaitError::Ended(Failed))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_waiter_wakes_at_ready_and_at_drop() {
        let mut sm = StateMachine::new();
        let watch = sm.watch();
        let waiter = |watch: &StateWatch| {
            let watch = watch.clone();
            tokio::spawn(async move { watch.wait_ready(Duration::from_secs(10)).await })
        };
        let first = waiter(&watch);
        // Let it park on the notification before anything changes.
        tokio::task::yield_now().await;
        assert!(!first.is_finished());
        for to in [Accepted, Authenticated, ServicesReady] {
            sm.transition(to, "t").unwrap_or_else(|e| panic!("{e}"));
        }
        tokio::task::yield_now().await;
        assert!(!first.is_finished(), "woke before Ready");
        sm.transition(Ready, "t").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first.await.ok(), Some(Ok(())));

        // A machine dropped before Ready ends the wait at once, not at the
        // timeout.
        let mut sm = StateMachine::new();
        sm.transition(Accepted, "t")
            .unwrap_or_else(|e| panic!("{e}"));
        let second = waiter(&sm.watch());
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        drop(sm);
        assert_eq!(second.await.ok(), Some(Err(WaitError::Ended(Accepted))));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn the_history_is_reserved_for_the_longest_legal_path() {
        fn longest(from: ConnectionState) -> usize {
            ConnectionState::ALL
                .into_iter()
                .filter(|to| from.can_transition_to(*to))
                .map(|to| 1 + longest(to))
                .max()
                .unwrap_or(0)
        }
        assert_eq!(longest(Connecting), LONGEST_PATH);
    }
}
