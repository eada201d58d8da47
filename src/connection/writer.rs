//! The one task per connection that writes to its transport.
//!
//! It drains the outbox in batches (one lock per batch, one deadline and
//! one flush per batch, so a burst of events costs one write), checks each
//! event's addressee once more, frames it with the sequence number, and
//! stops after sending the close frame. Nothing else ever touches the sink.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;

use crate::close::CloseCause;
use crate::connection::outbox::{Drain, Queued};
use crate::connection::shared::ConnShared;
use crate::metrics::Metrics;
use crate::transport::{Message, TransportSink};

/// Events taken from the outbox and not yet written. Whatever is left when
/// it drops (a failed write, or the task aborted after the close timeout) is
/// counted as dropped, so no event vanishes uncounted.
struct Batch {
    items: VecDeque<Queued>,
    shared: Arc<ConnShared>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        let n = self.items.len() as u64;
        if n > 0 {
            Metrics::add(&self.shared.ctx.metrics.c.dropped_on_close, n);
            self.shared.outbox.writer_lost(n);
        }
    }
}

/// At most this many events per write.
const BATCH: usize = 64;

/// The batch keeps at most this much room while the writer waits. The
/// buffer grows to [`BATCH`] under a burst; an idle connection should not
/// keep 1.5 KiB for the next one.
const IDLE_CAPACITY: usize = 8;

/// Writes until the connection closes. A panic in the transport's sink
/// (a bug in a custom transport, say) is caught here: the connection is
/// closed with 1011 and leaves the routing table at once, rather than stay
/// Ready with nobody writing.
pub(crate) async fn run<S: TransportSink>(shared: Arc<ConnShared>, mut sink: S) {
    let mut batch = Batch {
        items: VecDeque::new(),
        shared: Arc::clone(&shared),
    };
    let wrote = AssertUnwindSafe(write_all(&shared, &mut batch, &mut sink))
        .catch_unwind()
        .await;
    if wrote.is_err() {
        tracing::error!("the transport's sink panicked: closing the connection (1011)");
        shared.outbox.request_close(CloseCause::TransportPanicked);
        let frame = CloseCause::TransportPanicked.frame();
        let write_timeout = shared.ctx.config.write_timeout;
        let close = tokio::time::timeout(write_timeout, sink.close(frame));
        // The sink may panic again: nothing more to do then.
        let _ = AssertUnwindSafe(close).catch_unwind().await;
    }
}

async fn write_all<S: TransportSink>(shared: &Arc<ConnShared>, batch: &mut Batch, sink: &mut S) {
    let write_timeout = shared.ctx.config.write_timeout;
    let histograms = shared.ctx.config.write_histograms;
    let mut emptied = false;
    loop {
        let step = shared
            .outbox
            .next(&mut batch.items, BATCH, IDLE_CAPACITY, emptied)
            .await;
        emptied = matches!(step, Drain::Items { emptied: true, .. });
        if let Drain::Items { depth, .. } = step
            && histograms
        {
            shared.ctx.metrics.write_batch(depth, batch.items.len());
        }
        let written = match step {
            Drain::Close(frame) => {
                // Best effort: the peer may already be gone.
                let _ = tokio::time::timeout(write_timeout, sink.close(frame)).await;
                return;
            }
            // No handshake: the sink is dropped with the connection.
            Drain::Abort => return,
            Drain::Ping => {
                let ping = async {
                    sink.feed(Message::Ping(bytes::Bytes::new())).await?;
                    sink.flush().await
                };
                tokio::time::timeout(write_timeout, ping)
                    .await
                    .map_err(|_| Stalled)
            }
            Drain::Items { .. } | Drain::Wait => {
                let progress = Progress::default();
                let write = write_batch(shared, batch, sink, &progress);
                within(write_timeout, &progress, write).await
            }
        };
        let cause = match written {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => CloseCause::TransportError,
            // The peer does not read: it is a slow consumer, told so if the
            // close frame still gets through.
            Err(_) => CloseCause::SlowConsumer,
        };
        tracing::debug!(cause = cause.as_str(), "writer stopping");
        shared.outbox.request_close(cause.clone());
        if cause == CloseCause::SlowConsumer {
            let _ = tokio::time::timeout(write_timeout, sink.close(cause.frame())).await;
        }
        return;
    }
}

/// Messages a write has handed over so far. Only the writer task touches
/// it (an atomic only so the task stays `Send`: plain loads and stores).
#[derive(Debug, Default)]
struct Progress(AtomicU64);

impl Progress {
    fn bump(&self) {
        let n = self.0.load(Ordering::Relaxed);
        self.0.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The write made no progress for a whole `write_timeout`.
#[derive(Debug)]
struct Stalled;

/// `write` with no stretch of `deadline` without progress: `progress` is
/// bumped by the write after each message it hands over, and each bump
/// restarts the deadline. So a peer on a slow link that keeps reading is
/// not taken for a slow consumer because a burst is large, while one that
/// stops reading is caught within `deadline`. One timer per batch, armed
/// only if the write does not finish on its first poll (most writes to a
/// socket with room do, and then cost no clock read and no timer entry).
async fn within<F: Future>(
    deadline: Duration,
    progress: &Progress,
    write: F,
) -> Result<F::Output, Stalled> {
    let mut write = std::pin::pin!(write);
    let mut timer = std::pin::pin!(None::<tokio::time::Sleep>);
    let mut seen = progress.get();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = write.as_mut().poll(cx) {
            return Poll::Ready(Ok(done));
        }
        let now = progress.get();
        match timer.as_mut().as_pin_mut() {
            None => timer.set(Some(tokio::time::sleep(deadline))),
            Some(sleep) if now != seen => sleep.reset(tokio::time::Instant::now() + deadline),
            Some(_) => {}
        }
        seen = now;
        match timer.as_mut().as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| Err(Stalled)),
            None => Poll::Pending,
        }
    })
    .await
}

/// Frames and feeds the batch, then flushes it, bumping `progress` after
/// each message handed over (the caller's deadline restarts then).
async fn write_batch<S: TransportSink>(
    shared: &ConnShared,
    batch: &mut Batch,
    sink: &mut S,
    progress: &Progress,
) -> Result<(), crate::transport::TransportError> {
    let metrics = &shared.ctx.metrics;
    while let Some(q) = batch.items.front() {
        // Second isolation check, on the write path itself: the connection
        // already refused misaddressed events, so this only fires on a bug,
        // and then refuses rather than writes.
        if !q.event.is_for(&shared.id, &shared.user) {
            Metrics::inc(&metrics.c.isolation_refusals);
            tracing::error!("writer refused an event addressed to another user or connection");
            batch.items.pop_front();
            continue;
        }
        let off = q.event.off.map(std::num::NonZeroU64::get);
        let frame = q.event.event.frame_at(q.seq, off, shared.wire_mode);
        sink.feed(Message::Text(frame.into())).await?;
        batch.items.pop_front();
        progress.bump();
        Metrics::inc(&metrics.c.events_written);
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HubConfig;
    use crate::connection::outbox::{Addressee, Routed};
    use crate::connection::shared::Context;
    use crate::event::{Event, EventName};
    use crate::id::{IdGenerator, UlidGenerator, UserId};
    use crate::transport::{Transport, memory};

    #[tokio::test]
    async fn the_write_path_refuses_an_event_for_another_user() {
        let ctx = Arc::new(Context::new(HubConfig::default()));
        let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
        let bob = UserId::new("bob").unwrap_or_else(|e| panic!("{e}"));
        let shared = Arc::new(ConnShared::detached(
            UlidGenerator::new().mint_connection_id(),
            alice.clone(),
            Arc::clone(&ctx),
        ));
        let routed = |to: UserId, n: i32| {
            let name = EventName::new("e").unwrap_or_else(|e| panic!("{e}"));
            let event = Event::custom(name, serde_json::json!(n)).encode();
            Arc::new(Routed {
                to: Addressee::User(to),
                off: None,
                event: event.unwrap_or_else(|e| panic!("{e}")),
            })
        };
        // Simulates a router bug: bob's event already in alice's queue.
        let mut batch = Batch {
            items: VecDeque::from([
                Queued::new(1, routed(bob, 1)),
                Queued::new(2, routed(alice, 2)),
            ]),
            shared: Arc::clone(&shared),
        };
        let (transport, mut client) = memory::pair(4);
        let (mut sink, _stream) = transport.split();
        let written = write_batch(&shared, &mut batch, &mut sink, &Progress::default()).await;
        assert!(written.is_ok());
        let Some(Message::Text(frame)) = client.try_recv() else {
            panic!("nothing written")
        };
        assert_eq!(frame, r#"{"v":1,"seq":2,"type":"e","payload":2}"#);
        assert_eq!(client.try_recv(), None, "bob's event reached alice");
        let m = ctx.metrics.snapshot();
        assert_eq!((m.isolation_refusals, m.events_written), (1, 1));
    }

    /// A sink that takes `per_feed` to accept each message: a peer on a
    /// slow link that keeps reading.
    struct Slow {
        per_feed: std::time::Duration,
        fed: usize,
    }

    impl TransportSink for Slow {
        async fn feed(&mut self, _: Message) -> Result<(), crate::transport::TransportError> {
            tokio::time::sleep(self.per_feed).await;
            self.fed += 1;
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), crate::transport::TransportError> {
            Ok(())
        }

        async fn close(
            &mut self,
            _: Option<crate::close::CloseFrame>,
        ) -> Result<(), crate::transport::TransportError> {
            Ok(())
        }
    }

    /// The write deadline bounds each write without progress, not the
    /// whole batch: three frames at 0.6 s each (1.8 s in all) under a 1 s
    /// deadline are written, while one write stalled past it is not.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_each_write_not_the_whole_batch() {
        let ctx = Arc::new(Context::new(HubConfig::default()));
        let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
        let shared = Arc::new(ConnShared::detached(
            UlidGenerator::new().mint_connection_id(),
            alice.clone(),
            Arc::clone(&ctx),
        ));
        let event = {
            let name = EventName::new("e").unwrap_or_else(|e| panic!("{e}"));
            let event = Event::custom(name, serde_json::json!(1)).encode();
            Arc::new(Routed {
                to: Addressee::User(alice),
                off: None,
                event: event.unwrap_or_else(|e| panic!("{e}")),
            })
        };
        let deadline = std::time::Duration::from_secs(1);
        for (per_feed, in_time) in [(600, true), (1500, false)] {
            let mut batch = Batch {
                items: (1..=3)
                    .map(|seq| Queued::new(seq, Arc::clone(&event)))
                    .collect(),
                shared: Arc::clone(&shared),
            };
            let mut sink = Slow {
                per_feed: std::time::Duration::from_millis(per_feed),
                fed: 0,
            };
            let progress = Progress::default();
            let written = within(
                deadline,
                &progress,
                write_batch(&shared, &mut batch, &mut sink, &progress),
            )
            .await;
            assert_eq!(written.is_ok(), in_time, "{per_feed} ms per feed");
            assert_eq!(sink.fed, if in_time { 3 } else { 0 });
            batch.items.clear();
        }
    }
}
