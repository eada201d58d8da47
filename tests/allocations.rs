//! A send costs the same heap allocations however many connections its user
//! has: the event is serialised once and shared, each connection only takes
//! a reference and a sequence number. (Each connection's writer later makes
//! its own frame, exactly sized; that is the writer's, not the send's.)
//!
//! Counted per thread (`allocation-counter`): on a current-thread runtime
//! the writers cannot run while `send_to_user` does, so the count is the
//! send's alone.

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::Duration;

use ws_lifecycle::event::{AgentEventKind, Event};
use ws_lifecycle::id::UserId;
use ws_lifecycle::transport::{Message, memory};
use ws_lifecycle::{Hub, config::HubConfig};

mod support;
use support::Scripted;

/// Heap allocations made by one `send_to_user` to a user with `k` Ready
/// connections, after one warm-up send (so each connection's queue already
/// has room, as it does on a live server).
async fn allocations_of_one_send(k: usize) -> u64 {
    let mut config = HubConfig::default();
    config.max_connections_per_user = k;
    let hub = Hub::builder().config(config).build().unwrap();
    let alice = UserId::new("alice").unwrap();
    let mut clients = Vec::new();
    for _ in 0..k {
        let (transport, client) = memory::pair(16);
        let conn = hub
            .connect()
            .accept(transport)
            .authenticate(alice.clone().into())
            .await
            .unwrap();
        let handle = conn.handle();
        let runner = hub.clone();
        tokio::spawn(async move { runner.run(conn, &Scripted::default()).await });
        handle.wait_ready(Duration::from_secs(5)).await.unwrap();
        clients.push(client);
    }
    let run = hub.ids().mint_context(&alice).run;
    let event = Event::agent(
        AgentEventKind::AgentThinking,
        &run,
        serde_json::json!({ "text": "weighing the options", "step": 3 }),
    );
    let receive_one_each = |clients: &mut Vec<memory::MemoryClient>| {
        let clients = std::mem::take(clients);
        async move {
            let mut back = Vec::new();
            for mut client in clients {
                let frame = client.recv().await;
                assert!(matches!(frame, Some(Message::Text(_))), "{frame:?}");
                back.push(client);
            }
            back
        }
    };
    assert_eq!(hub.send_to_user(&alice, &event).unwrap().queued as usize, k);
    clients = receive_one_each(&mut clients).await;

    let mut delivery = None;
    let counted = allocation_counter::measure(|| {
        delivery = Some(hub.send_to_user(&alice, &event));
    });
    let delivery = delivery.unwrap().unwrap();
    assert_eq!(delivery.queued as usize, k, "every connection took it");
    let _ = receive_one_each(&mut clients).await;
    counted.count_total
}

#[tokio::test(flavor = "current_thread")]
async fn send_to_user_allocates_the_same_for_1_16_and_256_connections() {
    let one = allocations_of_one_send(1).await;
    let sixteen = allocations_of_one_send(16).await;
    let many = allocations_of_one_send(256).await;
    assert_eq!(
        (one, sixteen, many),
        (one, one, one),
        "allocations per send for k = 1, 16, 256 connections"
    );
    // The event's bytes and the shared, addressed reference to them.
    assert!(one <= 3, "{one} allocations for one send");
}
