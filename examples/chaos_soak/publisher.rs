//! Publishers: each user is published to by exactly one publisher
//! connection, so the messages to one user are totally ordered (the server
//! handles one connection's inbound messages in order).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::client::{self, Clock, Identity, Record, Ws};

const TICK: Duration = Duration::from_millis(20);
/// The most `gap` frames and pings a publisher reads: a bound for its
/// loop, far above one per backplane outage or 25 s of silence.
const MAX_GAPS: usize = 10_000;

/// Whether `text` is a `gap` frame.
fn is_gap(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|frame| frame.get("type").and_then(|t| t.as_str()) == Some("gap"))
}

/// What one publisher sent, and whether its connection held.
pub(crate) struct PublisherLog {
    pub(crate) name: String,
    /// Per user, the send time (µs) of each message: entry `k - 1` is `k`.
    pub(crate) sent: HashMap<String, Vec<u64>>,
    /// Why the connection failed before we closed it, if it did.
    pub(crate) failure: Option<String>,
    /// Bytes of padding in each payload.
    pub(crate) pad: usize,
}

impl PublisherLog {
    pub(crate) fn published(&self) -> u64 {
        self.sent.values().map(|v| v.len() as u64).sum()
    }
}

/// A publisher's job.
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) users: Vec<String>,
    /// Messages per second, over all its users.
    pub(crate) rate: f64,
    /// Bytes of padding in each payload.
    pub(crate) pad: usize,
    /// A node of a cluster: its backplane may send `gap` frames.
    pub(crate) gaps: bool,
    /// When set, a user is published to only until the instant it names
    /// (its turns in the round-robin pass by unused otherwise).
    pub(crate) feed: Option<Feed>,
}

/// Per user, until when a publisher with a feed publishes to them.
pub(crate) type Feed = Arc<Mutex<HashMap<String, Instant>>>;

/// Publishes `job` round-robin over its users until `stop` (or
/// `deadline`), then closes.
pub(crate) async fn run(
    mut ws: Ws,
    job: Job,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
) -> PublisherLog {
    let mut log = PublisherLog {
        name: job.name.clone(),
        sent: job.users.iter().map(|u| (u.clone(), Vec::new())).collect(),
        failure: None,
        pad: job.pad,
    };
    let mut own = Record::new(Identity {
        user: job.name.clone(),
        publisher: String::new(),
    });
    if let Err(e) = client::until_ready(&mut ws, &mut own, clock).await {
        log.failure = Some(e.to_string());
        return log;
    }
    let (mut sink, mut stream) = ws.split();
    // The server sends a publisher nothing after `ready` (but pings, and
    // on a node of a cluster the backplane's `gap` frames): anything else
    // it reads here before we close (a close frame, an error) is a
    // failure.
    let gaps = job.gaps;
    let reader = tokio::spawn(async move {
        for _ in 0..MAX_GAPS {
            match tokio::time::timeout_at(deadline.into(), stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) if gaps && is_gap(&text) => continue,
                // A publisher with a feed falls silent between its users'
                // turns, and the server pings a silent connection.
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Some(format!(
                        "server closed: {:?}",
                        frame.map(|f| u16::from(f.code))
                    ));
                }
                Ok(Some(Ok(other))) => return Some(format!("unexpected frame {other:?}")),
                Ok(Some(Err(e))) => return Some(e.to_string()),
                Ok(None) => return Some("end of stream".to_owned()),
                Err(_) => return None,
            }
        }
        Some("too many gap frames or pings".to_owned())
    });
    let started = Instant::now();
    // Never more than a tenth of a second's worth at once, so a stalled
    // client never bursts past the server's inbound rate limit.
    let max_batch = ((job.rate * 0.1).ceil() as u64).max(1);
    let (mut published, mut next_user, mut id) = (0u64, 0usize, 0u64);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !*stop.borrow() && Instant::now() < deadline && !reader.is_finished() {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        let due = (started.elapsed().as_secs_f64() * job.rate) as u64;
        let batch = due.saturating_sub(published).min(max_batch);
        let mut ok = true;
        for _ in 0..batch {
            let Some(user) = job.users.get(next_user % job.users.len().max(1)) else {
                break;
            };
            next_user = next_user.wrapping_add(1);
            if let Some(feed) = &job.feed {
                let fed = feed
                    .lock()
                    .get(user)
                    .is_some_and(|&until| Instant::now() < until);
                if !fed {
                    published += 1;
                    continue;
                }
            }
            let Some(times) = log.sent.get_mut(user) else {
                break;
            };
            id += 1;
            let k = times.len() as u64 + 1;
            // Recorded before the frame leaves: the server handles it later
            // still, so "sent after ready" stays a safe claim.
            let sent_us = clock.now_us();
            let text = client::payload(user, k, &format!("{}-{id}", job.name), sent_us, job.pad);
            times.push(sent_us);
            let frame = json!({ "type": "publish", "to": user, "payload": text }).to_string();
            if !client::feed(&mut sink, frame).await {
                ok = false;
                break;
            }
            published += 1;
        }
        let flushed = tokio::time::timeout(Duration::from_secs(5), sink.flush()).await;
        if !ok || !matches!(flushed, Ok(Ok(()))) {
            log.failure = Some("send failed".to_owned());
            break;
        }
    }
    if reader.is_finished() {
        log.failure = reader.await.ok().flatten().or(log.failure);
    } else {
        reader.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), sink.close()).await;
    log
}
