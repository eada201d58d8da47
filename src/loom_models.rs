//! Loom models: every interleaving of the races the design worries about,
//! on the real outbox and router (their locks are loom's under `--cfg loom`,
//! see `sync.rs`). Not part of `cargo test`; run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --lib loom_models
//! ```

use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

use crate::config::{ConnectionLimitPolicy, HubConfig};
use crate::connection::outbox::{Addressee, Drain, Outbox, Routed};
use crate::connection::{ConnShared, Context};
use crate::event::{Event, EventName, WireMode};
use crate::id::{IdGenerator, UlidGenerator, UserId};
use crate::router::Router;

fn routed(to: Addressee, n: i64) -> Arc<Routed> {
    let name = EventName::new("e").unwrap();
    Arc::new(Routed {
        to,
        event: Event::custom(name, serde_json::json!(n)).encode().unwrap(),
    })
}

/// Emits racing the Ready hand-off: nothing is drained before Ready, and
/// every accepted event is drained exactly once, in emission order, with
/// gap-free sequence numbers.
#[test]
fn emits_racing_ready_are_flushed_once_in_order() {
    loom::model(|| {
        let user = UserId::new("alice").unwrap();
        let outbox = Arc::new(Outbox::new());
        let env = Arc::new(Context::new(HubConfig::default()));
        let emitter = {
            let (outbox, env, user) = (Arc::clone(&outbox), Arc::clone(&env), user.clone());
            thread::spawn(move || {
                (0..2)
                    .map(|n| {
                        let event = routed(Addressee::User(user.clone()), n);
                        outbox
                            .push(&event, &env.config, &env.metrics)
                            .map(|(seq, _)| seq)
                    })
                    .collect::<Vec<_>>()
            })
        };
        // The driver becomes Ready while the emitter runs; the writer drains.
        let mut batch = std::collections::VecDeque::new();
        assert!(
            matches!(outbox.drain(&mut batch, 64), Drain::Wait),
            "drained before Ready"
        );
        outbox.open(Vec::new(), 0);
        let _ = outbox.drain(&mut batch, 64);
        let seqs = emitter.join().unwrap();
        let _ = outbox.drain(&mut batch, 64);
        assert_eq!(seqs, [Ok(1), Ok(2)]);
        let frames: Vec<String> = batch
            .iter()
            .map(|q| q.event.event.frame(q.seq, WireMode::Named))
            .collect();
        assert_eq!(
            frames,
            [
                r#"{"v":1,"seq":1,"type":"e","payload":0}"#,
                r#"{"v":1,"seq":2,"type":"e","payload":1}"#,
            ]
        );
    });
}

/// A connection inserted and removed while another thread sends to its
/// user: a send that starts after the removal never reaches it, and every
/// event it accepted is still accounted for (queued, so counted when the
/// connection ends), none lost or duplicated; the table ends empty.
#[test]
fn a_removed_connection_is_never_sent_to_and_nothing_accepted_is_lost() {
    loom::model(|| {
        let router = Arc::new(Router::new(1));
        let env = Arc::new(Context::new(HubConfig::default()));
        let user = UserId::new("alice").unwrap();
        let shared = Arc::new(ConnShared::detached(
            UlidGenerator::new().mint_connection_id(),
            user.clone(),
            Arc::clone(&env),
        ));
        let removed = Arc::new(AtomicBool::new(false));
        let lifecycle = {
            let (router, shared, removed) = (
                Arc::clone(&router),
                Arc::clone(&shared),
                Arc::clone(&removed),
            );
            thread::spawn(move || {
                router
                    .insert(&shared, 16, ConnectionLimitPolicy::RefuseNewest, |_| {})
                    .unwrap();
                router.remove(&shared, |_| {});
                removed.store(true, Ordering::SeqCst);
            })
        };
        let sender = {
            let (router, removed) = (Arc::clone(&router), Arc::clone(&removed));
            thread::spawn(move || {
                let after_removal = removed.load(Ordering::SeqCst);
                let event = routed(Addressee::User(user.clone()), 1);
                let pushed = router.with_user(&user, |conns| {
                    conns.iter().map(|c| c.push(&event)).collect::<Vec<_>>()
                });
                assert!(
                    !(after_removal && !pushed.is_empty()),
                    "sent to a removed connection"
                );
                pushed.iter().filter(|r| r.is_ok()).count()
            })
        };
        lifecycle.join().unwrap();
        let accepted = sender.join().unwrap();
        assert_eq!((router.len(), router.user_count()), (0, 0));
        assert_eq!(
            shared.outbox.discard(&env.metrics),
            accepted as u64,
            "accepted events lost or duplicated"
        );
    });
}
