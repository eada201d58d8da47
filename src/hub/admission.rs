//! Admission: how many connections a hub lets in and when it stops. The
//! upgrade semaphore, the live count (with its idle signal), and the
//! closing latch a shutdown sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::close::CloseFrame;
use crate::config::HubConfig;

/// A hub's admission state.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Connections minted (or places taken) and not yet terminal.
    live: AtomicUsize,
    /// Notified when `live` drops to zero.
    idle: Notify,
    /// Set by [`Hub::close_all`](crate::Hub::close_all) and shutdown:
    /// connections bound from then on are asked to close with this frame.
    closing: parking_lot::Mutex<Option<CloseFrame>>,
    /// Upgrades in progress.
    upgrades: Arc<Semaphore>,
}

impl Admission {
    pub(crate) fn new(config: &HubConfig) -> Self {
        Admission {
            live: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: parking_lot::Mutex::new(None),
            upgrades: Arc::new(Semaphore::new(config.max_upgrades_in_flight.max(1))),
        }
    }

    /// A place for one more upgrade, unless
    /// [`max_upgrades_in_flight`](HubConfig::max_upgrades_in_flight) are
    /// in progress.
    pub(crate) fn upgrade_permit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.upgrades).try_acquire_owned().ok()
    }

    /// One more live connection, uncapped (a connection the application
    /// makes itself with [`Hub::connect`](crate::Hub::connect)).
    pub(crate) fn add_live(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    /// One live connection (or place) fewer; wakes [`idle`](Admission::idle)
    /// at zero.
    pub(crate) fn release_live(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Sets the closing latch.
    pub(crate) fn start_closing(&self, frame: CloseFrame) {
        *self.closing.lock() = Some(frame);
    }

    /// The closing latch's frame, once set.
    pub(crate) fn closing(&self) -> Option<CloseFrame> {
        self.closing.lock().clone()
    }

    /// Resolves once no connection is live.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One place among the hub's live connections, taken at the decision:
/// counted as live from then on, given back on drop unless a connection
/// took it over.
pub(crate) struct Slot {
    admission: Option<Arc<Admission>>,
}

impl Slot {
    /// Takes a place, unless `max` live connections (or places) exist.
    pub(crate) fn take(admission: &Arc<Admission>, max: Option<usize>) -> Option<Slot> {
        admission
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| match max {
                Some(max) if live >= max => None,
                _ => Some(live + 1),
            })
            .ok()?;
        Some(Slot {
            admission: Some(Arc::clone(admission)),
        })
    }

    /// A connection takes the place over (its end gives it back).
    pub(crate) fn transfer(mut self) {
        self.admission = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.release_live();
        }
    }
}
