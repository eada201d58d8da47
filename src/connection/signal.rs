//! [`Signal`]: how a connection's outbox wakes its one writer task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

/// Wakes the writer: a flag and the one waiter's waker. The writer task is
/// the only one that ever waits, so this needs neither `Notify`'s waiter
/// list nor its lock. A notification with nobody waiting is kept (the flag)
/// until the next wait, as `Notify::notify_one` keeps a permit.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    pub(crate) fn notify(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Resolves once notified since the last wait returned.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a notification is only consumed when this resolves.
    pub(crate) async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.set.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Checked again after registering: a notify between the first
            // check and the registration found no waker to wake.
            if self.set.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
