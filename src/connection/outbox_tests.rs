//! The outbox's unit tests.
use std::task::Poll;

use super::*;
use crate::event::{Event, EventName};

fn routed(to: UserId) -> Arc<Routed> {
    let name = EventName::new("e").unwrap_or_else(|e| panic!("{e}"));
    let event = Event::custom(name, serde_json::json!(1)).encode();
    Arc::new(Routed {
        to: Addressee::User(to),
        off: None,
        event: event.unwrap_or_else(|e| panic!("{e}")),
    })
}

#[test]
fn sequence_numbers_follow_queue_order_and_a_closing_outbox_refuses() {
    let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    let (config, metrics) = (HubConfig::default(), Metrics::default());
    let outbox = Outbox::new();
    let event = routed(alice);
    assert_eq!(
        outbox.push(&event, &config, &metrics),
        Ok((1, Accepted::Buffered))
    );
    outbox.open(Vec::new(), 0);
    assert_eq!(
        outbox.push(&event, &config, &metrics),
        Ok((2, Accepted::Queued))
    );
    assert!(outbox.request_close(CloseCause::Dropped));
    assert_eq!(outbox.push(&event, &config, &metrics), Err(Refused::Closed));
    let m = metrics.snapshot();
    assert_eq!(
        (m.events_buffered, m.events_queued, m.refused_closed),
        (1, 1, 1)
    );
}

/// The writer waits without looking after a batch that emptied the
/// queue: a push racing that wait must still wake it. Two threads push
/// while a writer on a third drains; every event arrives, in sequence
/// order, and the writer never sleeps on a non-empty queue (the
/// deadline would fire).
#[test]
fn a_push_racing_the_writers_wait_always_wakes_it() {
    const PER_PUSHER: u64 = 20_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    let config = HubConfig {
        outbound_queue: BufferLimit::new(usize::MAX, usize::MAX),
        ..HubConfig::default()
    };
    let (config, metrics) = (Arc::new(config), Arc::new(Metrics::default()));
    let outbox = Arc::new(Outbox::new());
    outbox.open(Vec::new(), 0);
    let pushers: Vec<_> = (0..2)
        .map(|_| {
            let (outbox, config, metrics) = (
                Arc::clone(&outbox),
                Arc::clone(&config),
                Arc::clone(&metrics),
            );
            let event = routed(alice.clone());
            std::thread::spawn(move || {
                for i in 0..PER_PUSHER {
                    let pushed = outbox.push(&event, &config, &metrics);
                    assert!(pushed.is_ok(), "{pushed:?}");
                    if i % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let writer = {
        let outbox = Arc::clone(&outbox);
        runtime.spawn(async move {
            let (mut batch, mut next_seq, mut emptied) = (VecDeque::new(), 1, false);
            while next_seq <= 2 * PER_PUSHER {
                let step = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    outbox.next(&mut batch, 64, 8, emptied),
                )
                .await
                .unwrap_or_else(|_| {
                    panic!("writer asleep with {} left", 2 * PER_PUSHER - next_seq + 1)
                });
                emptied = matches!(step, Drain::Items { emptied: true, .. });
                for q in batch.drain(..) {
                    assert_eq!(q.seq, next_seq);
                    next_seq += 1;
                }
            }
        })
    };
    for pusher in pushers {
        pusher.join().unwrap_or_else(|_| panic!("pusher panicked"));
    }
    runtime
        .block_on(writer)
        .unwrap_or_else(|e| panic!("writer failed: {e}"));
}

/// A close asked for while events are queued arrives with the same
/// wake-up as the events: after writing them the writer must look
/// again, not wait for a wake-up that was already spent (the emitter
/// property test found this).
#[tokio::test(start_paused = true)]
async fn a_close_queued_behind_events_is_not_slept_through() {
    let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    let (config, metrics) = (HubConfig::default(), Metrics::default());
    let outbox = Outbox::new();
    outbox.open(Vec::new(), 0);
    let mut batch = VecDeque::new();
    let emptied = {
        // The writer waits on an empty queue.
        let mut waiting = std::pin::pin!(outbox.next(&mut batch, 64, 8, false));
        let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        // An event and a close arrive before it runs again.
        let pushed = outbox.push(&routed(alice), &config, &metrics);
        assert!(pushed.is_ok());
        assert!(outbox.request_close(CloseCause::Requested(CloseFrame::new(
            crate::close::CloseCode::NORMAL,
            crate::close::CloseReason::from_static("done"),
        ))));
        let step = waiting.await;
        let Drain::Items { emptied, .. } = step else {
            panic!("expected the event first, got {step:?}")
        };
        emptied
    };
    batch.clear();
    let next = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        outbox.next(&mut batch, 64, 8, emptied),
    )
    .await;
    assert!(
        matches!(next, Ok(Drain::Close(Some(_)))),
        "the close was slept through: {next:?}"
    );
}

#[test]
fn after_ready_an_offset_the_connection_has_already_is_a_repeat() {
    let alice = UserId::new("alice").unwrap_or_else(|e| panic!("{e}"));
    let (config, metrics) = (HubConfig::default(), Metrics::default());
    let outbox = Outbox::new();
    let at = |off| Routed::for_user(alice.clone(), off, routed(alice.clone()).event.clone());
    // Replayed 1..=3 at Ready, then a node repairing a hole behind it
    // hands over 2 and 3 again: dropped, and 4 goes on.
    outbox.open(vec![at(1), at(2), at(3)], 3);
    for off in [2, 3] {
        assert_eq!(
            outbox.push(&at(off), &config, &metrics),
            Ok((0, Accepted::Repeat))
        );
    }
    assert_eq!(
        outbox.push(&at(4), &config, &metrics),
        Ok((4, Accepted::Queued))
    );
    // A restarted stream starts its offsets again.
    outbox.restart_stream();
    assert_eq!(
        outbox.push(&at(1), &config, &metrics),
        Ok((5, Accepted::Queued))
    );
}
