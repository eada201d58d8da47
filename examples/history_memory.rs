//! What the users' streams cost in memory: bytes per retained event, and the
//! history's byte budget holding under a flood of events to many users.
//!
//! ```text
//! cargo run --release --example history_memory -- [users] [events_per_user] [budget_mib] [shared|distinct|fanout]
//! ```
//!
//! Defaults: 100,000 users, 10 events each, the default 64 MiB budget, one
//! event serialised once and sent to everyone (`shared`, a fan-out: every
//! user's history holds the same bytes); `distinct` serialises each send
//! apart, as events for one user each are; `fanout` sends each round as
//! one `send_to_users` to everyone (the table keeps the event once per
//! shard and a 4-byte arrival per user). The
//! flood goes to users with no connection (their events are kept for a
//! resume, as the protocol says), one event per user per round, so every
//! user's stream grows together. Prints the table's own count
//! (`Hub::history_usage`) and the process's resident memory before and
//! after (`/proc/self/status`, Linux).

use std::time::Instant;

use serde_json::json;
use ws_lifecycle::Hub;
use ws_lifecycle::config::HubConfig;
use ws_lifecycle::event::{Event, EventName};
use ws_lifecycle::id::UserId;

#[path = "common/proc.rs"]
mod proc;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg(n: usize, default: usize) -> Result<usize, Error> {
    match std::env::args().nth(n) {
        Some(text) => Ok(text.parse()?),
        None => Ok(default),
    }
}

fn main() -> Result<(), Error> {
    let users = arg(1, 100_000)?;
    let per_user = arg(2, 10)?;
    let budget_mib = arg(3, 64)?;
    let mode = std::env::args().nth(4);
    let distinct = mode.as_deref() == Some("distinct");
    let fanout = mode.as_deref() == Some("fanout");
    let mut config = HubConfig::default();
    config.history.max_bytes = budget_mib << 20;
    let hub = Hub::builder().config(config).build()?;
    let ids: Vec<UserId> = (0..users)
        .map(|u| UserId::new(format!("user-{u:06}")))
        .collect::<Result<_, _>>()?;
    // A typical agent event's size: about 200 bytes of frame.
    let event = Event::custom(
        EventName::new("agent_note")?,
        json!({ "text": "x".repeat(120), "step": 3 }),
    )
    .encode()?;
    let pid = std::process::id();
    let before = proc::rss_kib(pid)?;
    let started = Instant::now();
    let payload = json!({ "text": "x".repeat(120), "step": 3 });
    let name = EventName::new("agent_note")?;
    for _ in 0..per_user {
        if fanout {
            let _ = hub.send_encoded_to_users(&ids, &event);
            continue;
        }
        for user in &ids {
            let event = if distinct {
                Event::custom(name.clone(), payload.clone()).encode()?
            } else {
                event.clone()
            };
            let _ = hub.send_encoded_to_user(user, event);
        }
    }
    let elapsed = started.elapsed();
    let after = proc::rss_kib(pid)?;
    let usage = hub.history_usage();
    let sent = users * per_user;
    let kind = match (distinct, fanout) {
        (true, _) => "distinct",
        (_, true) => "fanout",
        _ => "shared",
    };
    println!("users {users}, events sent {sent} ({kind}), budget {budget_mib} MiB");
    println!(
        "sent in {:.2} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64()
    );
    println!(
        "history: {} streams, {} bytes counted ({:.1} MiB; within budget: {})",
        usage.streams,
        usage.bytes,
        usage.bytes as f64 / f64::from(1u32 << 20),
        usage.bytes <= budget_mib << 20
    );
    println!(
        "RSS {before} KiB -> {after} KiB (+{:.1} MiB)",
        (after.saturating_sub(before)) as f64 / 1024.0
    );
    // Events retained, once per user they are kept for.
    let retained = usage.retained as u64;
    println!(
        "one event weighs {} bytes (+ bookkeeping); {retained} events retained over all users; {:.1} bytes of RSS growth per retained event",
        event.weight(),
        (after.saturating_sub(before) * 1024) as f64 / retained.max(1) as f64
    );
    Ok(())
}
