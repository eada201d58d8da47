//! Two users, three connections, the five agent events, printed in order.
//!
//! Run with: `cargo run --example in_memory`
//!
//! No network: the in-memory transport stands where an axum, warp or
//! tokio-tungstenite socket would. Everything else (ids, the readiness gate,
//! buffering, sequence numbers, per-user routing) is the real thing.

use serde_json::json;
use ws_lifecycle::close::{CloseCode, CloseFrame, CloseReason};
use ws_lifecycle::event::{AgentEventKind, Event, EventName};
use ws_lifecycle::id::UserId;
use ws_lifecycle::transport::{Message, memory};
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

/// The application: greets each connection when it becomes ready.
struct App;

impl Handler for App {
    async fn on_ready(&self, conn: &ConnectionHandle) -> Result<(), CloseFrame> {
        // Emitted before Ready: buffered with anything else sent to this
        // connection before Ready, and written in emission order once Ready.
        let hello = EventName::new("hello").map_err(|_| internal())?;
        conn.emit(Event::custom(hello, json!({ "connection_id": conn.id() })))
            .map_err(|_| internal())?;
        Ok(())
    }

    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

fn internal() -> CloseFrame {
    CloseFrame::new(
        CloseCode::INTERNAL_ERROR,
        CloseReason::new("internal_error").unwrap_or_else(|| unreachable!("valid reason")),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = Hub::new();
    let alice = UserId::new("alice")?;
    let bob = UserId::new("bob")?;

    // Alice on a laptop and a phone, Bob on one device.
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for (user, device) in [(&alice, "laptop"), (&alice, "phone"), (&bob, "laptop")] {
        let (transport, client) = memory::pair(64);
        let conn = hub
            .connect()
            .accept(transport)
            .authenticate(user.clone().into())
            .await?;
        println!("{user} on {device}: {}", conn.id());
        let hub = hub.clone();
        servers.push(tokio::spawn(async move { hub.run(conn, &App).await }));
        clients.push((format!("{user}/{device}"), client));
    }

    // One agent run for Alice: every id minted by the hub's one generator.
    let ctx = hub.ids().mint_context(&alice);
    for (step, kind) in AgentEventKind::ALL.into_iter().enumerate() {
        let event = Event::agent(kind, &ctx.run, json!({ "step": step + 1 }));
        let delivery = hub.send_to_user(&alice, &event)?;
        assert_eq!(delivery.accepted(), 2);
    }
    let note = Event::custom(EventName::new("note")?, json!("just for bob"));
    let _ = hub.send_to_user(&bob, &note)?;

    for (name, client) in &mut clients {
        let expected = if name.starts_with("alice") { 6 } else { 2 };
        println!("\n{name} received:");
        for _ in 0..expected {
            match client.recv().await {
                Some(Message::Text(frame)) => println!("  {frame}"),
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
        client.close(None).await;
    }
    for server in servers {
        let report = server.await?;
        println!(
            "{} ended: {} ({})",
            report.connection_id, report.cause, report.state
        );
    }
    println!("\nrouting table empty: {}", hub.connection_count() == 0);
    println!("\n{:#?}", hub.metrics());
    Ok(())
}
