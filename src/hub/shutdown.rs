//! Ending a hub's connections: [`Hub::close_all`], [`Hub::shutdown`] and
//! [`Hub::idle`].

use std::time::Duration;

use tokio::time::Instant;

use crate::close::{CloseCause, CloseCode, CloseFrame, CloseReason};
use crate::hub::Hub;

/// What a shutdown tells clients, in its close frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ShutdownKind {
    /// A drain before a restart or deploy: 1012 `restart`. Clients should
    /// reconnect soon (to another node, or to this one once it is back).
    #[default]
    Restart,
    /// The server is going away for good (scaled down, decommissioned):
    /// 1001 `going_away`. Clients reconnect too, but nothing says this
    /// node comes back.
    GoingAway,
}

impl ShutdownKind {
    /// The close frame sent to every connection.
    pub fn frame(self) -> CloseFrame {
        match self {
            ShutdownKind::Restart => {
                CloseFrame::new(CloseCode::RESTART, CloseReason::from_static("restart"))
            }
            ShutdownKind::GoingAway => CloseFrame::new(
                CloseCode::GOING_AWAY,
                CloseReason::from_static("going_away"),
            ),
        }
    }
}

/// How [`Hub::shutdown`] went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections asked to close.
    pub connections: usize,
    /// Of those, the ones that closed within the deadline.
    pub closed_cleanly: usize,
    /// The ones force-closed after it.
    pub forced: usize,
    /// Events queued but never written (dropped as connections closed).
    pub undelivered: u64,
}

impl Hub {
    /// Asks every routable connection to close with `frame` after writing
    /// what it has queued (as [`ConnectionHandle::close`](crate::ConnectionHandle::close)); returns how many
    /// were asked. For example `1001 going_away` on Ctrl-C, then
    /// [`idle`](Hub::idle).
    ///
    /// From then on the hub is closing: a connection authenticated later
    /// (say, mid-handshake when this was called) is closed with `frame` as
    /// soon as it is bound, so [`idle`](Hub::idle) is reached.
    pub fn close_all(&self, frame: CloseFrame) -> usize {
        // The latch first, the scan second (see `Owner::enter` in hub/node.rs).
        self.inner.admission.start_closing(frame.clone());
        let conns = self.inner.router.all();
        let asked = conns
            .iter()
            .filter(|c| c.outbox.request_close(CloseCause::Requested(frame.clone())))
            .count();
        tracing::info!(asked, code = %frame.code, "closing every connection");
        asked
    }

    /// Shuts the hub down gracefully for a restart, within `deadline`: as
    /// [`shutdown_as`](Hub::shutdown_as) with [`ShutdownKind::Restart`]
    /// (close 1012).
    ///
    /// # Cancel safety
    ///
    /// As [`shutdown_as`](Hub::shutdown_as).
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.shutdown_as(ShutdownKind::Restart, deadline).await
    }

    /// Shuts the hub down gracefully, within `deadline`, telling clients
    /// `kind` (1012 restart or 1001 going away):
    ///
    /// 1. stops accepting: upgrades get 503, and a connection bound from now
    ///    on is closed at once;
    /// 2. asks every connection to close with `kind`'s frame after writing
    ///    what it has queued, in batches of
    ///    [`shutdown_batch`](crate::config::HubConfig::shutdown_batch) spread
    ///    over at most half the deadline, so a fleet of clients does not
    ///    reconnect in one spike;
    /// 3. waits for them, up to the deadline;
    /// 4. force-closes the rest (the same frame, without waiting for their
    ///    queues) and
    ///    waits for their writers, at most
    ///    [`write_timeout`](crate::config::HubConfig::write_timeout) more.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the pacing and the waiting; connections
    /// already asked to close still close.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ws_lifecycle::{Hub, ShutdownKind};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let hub = Hub::new();
    /// // Scaling this node away: clients are told 1001 going away.
    /// let report = hub.shutdown_as(ShutdownKind::GoingAway, Duration::from_secs(10)).await;
    /// assert_eq!(report.connections, 0);
    /// # }
    /// ```
    pub async fn shutdown_as(&self, kind: ShutdownKind, deadline: Duration) -> ShutdownReport {
        let (config, metrics) = (&self.inner.ctx.config, &self.inner.ctx.metrics);
        let started = Instant::now();
        let restart = kind.frame();
        self.inner.admission.start_closing(restart.clone());
        let dropped_before = metrics.snapshot().dropped_on_close;
        let conns = self.inner.router.all();
        let batch = config.shutdown_batch.max(1);
        let batches = conns.len().div_ceil(batch);
        let pause = if batches > 1 {
            (deadline / 2 / u32::try_from(batches - 1).unwrap_or(u32::MAX))
                .min(config.shutdown_batch_interval)
        } else {
            Duration::ZERO
        };
        tracing::info!(connections = conns.len(), batches, "shutting down");
        for (i, chunk) in conns.chunks(batch).enumerate() {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            for conn in chunk {
                conn.outbox
                    .request_close(CloseCause::Requested(restart.clone()));
            }
        }
        let clean = tokio::time::timeout_at(started + deadline, self.idle())
            .await
            .is_ok();
        let mut forced = 0;
        if !clean {
            for conn in &conns {
                if !conn.state.state().is_terminal() {
                    conn.outbox.force_close(restart.clone());
                    forced += 1;
                }
            }
            let grace = config.write_timeout + config.write_timeout;
            let _ = tokio::time::timeout(grace, self.idle()).await;
        }
        let report = ShutdownReport {
            connections: conns.len(),
            closed_cleanly: conns.len() - forced,
            forced,
            undelivered: metrics.snapshot().dropped_on_close - dropped_before,
        };
        tracing::info!(?report, "shut down");
        report
    }

    /// Resolves once no connection of this hub is alive (every one minted
    /// has reached `Closed` or `Failed`), so their close frames have been
    /// written or given up on. A connection's
    /// [`Handler::on_close`](crate::Handler::on_close) runs just after it
    /// ends, so the last ones may still be running when this resolves.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn idle(&self) {
        self.inner.admission.idle().await;
    }
}
