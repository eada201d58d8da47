//! The users' streams, kept in Redis (stream mode): reading them back (the
//! read script, the history's entries). Appending is in `append.rs`.
//!
//! Keys, per user (`<hex>` is the user id in hex, as for the channel):
//!
//! * `<prefix>:s:<hex>`, the stream's meta: a hash of `epoch`, `off` (the
//!   latest offset) and `renew` (the time, ms, until which the append
//!   script need not renew the keys' expiries; missing in a meta the read
//!   script made). Created with a fresh epoch (minted by the node that
//!   finds it missing) whenever it is missing, and the history key is
//!   deleted then: a new epoch never inherits an old life's entries.
//!   Expires [`lease`] after the last event or resume read at least, and at
//!   most the renewal slack ([`renewal_slack`]) later: far longer
//!   than the history window, because a client still connected must not
//!   see its stream restart (a new epoch, a `gap`) only because nobody sent
//!   it anything for a while.
//! * `<prefix>:h:<hex>`, the history: a Redis stream whose entry ids are
//!   `<off>-0`, each holding the message exactly as published (`m`) and
//!   the publish time in ms (`t`, Redis's clock). Trimmed to about
//!   [`max_events_per_user`](crate::stream::HistoryConfig::max_events_per_user)
//!   entries (`MAXLEN ~`), and expiring one window after the last append
//!   at least, at most the renewal slack later; a resume refuses entries
//!   older than the window by their `t`.

use std::sync::OnceLock;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::wire::{self, Kind};
use super::{Shared, duration_ms, now_ms};
use crate::backplane::{BackplaneError, StreamRead};
use crate::event::EncodedEvent;
use crate::id::UserId;
use crate::stream::{Epoch, HistoryConfig, Position};

/// Reads a user's stream, atomically: its meta (created with the fresh
/// epoch when missing, so an empty stream has an epoch a client can later
/// resume with; the lease renewed) and, when `since` is of that epoch and
/// behind the latest offset, the history entries after it.
///
/// KEYS: meta, history. ARGV: 1 a fresh epoch, 2 the meta's lease (ms,
/// the append script's renewal slack included), 3 `since`'s epoch (empty:
/// none), 4 `since`'s offset. Returns `{epoch, off}` or
/// `{epoch, off, entries}`. It leaves the meta's `renew` as it is.
pub(super) const READ: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'off')
local epoch, off = meta[1], tonumber(meta[2]) or 0
if not epoch then
  epoch = ARGV[1]
  off = 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'off', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local head = string.format('%d', off)
local since = tonumber(ARGV[4])
if ARGV[3] ~= epoch or not since or since >= off then
  return {epoch, head}
end
local first = string.format('%d', since + 1) .. '-0'
return {epoch, head, redis.call('XRANGE', KEYS[2], first, head .. '-0')}
";

/// A script and, once a `SCRIPT LOAD` told it, its SHA-1 (the same on
/// every server: it only depends on the text).
pub(super) struct Script {
    pub(super) text: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    pub(super) const fn new(text: &'static str) -> Script {
        Script {
            text,
            sha: OnceLock::new(),
        }
    }

    pub(super) fn sha(&self) -> Option<&str> {
        self.sha.get().map(String::as_str)
    }

    /// Loads the script on `conn`'s server (after a restart its script
    /// cache is empty), learning its SHA-1.
    pub(super) async fn load(&self, shared: &Shared, conn: &mut MultiplexedConnection) {
        let loaded: Result<String, _> = shared
            .within(
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(self.text)
                    .query_async(conn),
            )
            .await;
        if let Ok(sha) = loaded {
            let _ = self.sha.set(sha);
        }
    }

    /// `EVALSHA` (or `EVAL` while the SHA-1 is unknown) with `keys` and
    /// `args`, appended to `cmd`'s arguments.
    pub(super) fn invocation(&self, by_sha: bool) -> redis::Cmd {
        match self.sha().filter(|_| by_sha) {
            Some(sha) => {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(sha);
                cmd
            }
            None => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(self.text);
                cmd
            }
        }
    }
}

/// Whether a server error says the script is not in its cache.
pub(super) fn is_noscript(error: &redis::RedisError) -> bool {
    error.code() == Some("NOSCRIPT")
}

/// How long a user's stream meta outlives its last write or read: a day,
/// or the history window if longer.
pub(super) fn lease(history: &HistoryConfig) -> Duration {
    history.window.max(Duration::from_secs(24 * 60 * 60))
}

/// The longest renewal slack: a key outlives its lease or window by at
/// most this.
const MAX_SLACK: Duration = Duration::from_secs(60);

/// How long the keys' expiries may go unrenewed (see the append script): a quarter
/// of the history window (of the meta's lease when no history is kept),
/// at most [`MAX_SLACK`]. So a busy user's keys are renewed about every
/// 30 s with the default two-minute window, instead of at every event.
pub(super) fn renewal_slack(history: &HistoryConfig) -> Duration {
    let base = if keeps_history(history) {
        history.window
    } else {
        lease(history)
    };
    (base / 4).min(MAX_SLACK)
}

/// Whether the history is kept at all (the byte budget does not apply to
/// Redis, which bounds each user's history by count and expiry instead).
pub(super) fn keeps_history(history: &HistoryConfig) -> bool {
    history.enabled && !history.window.is_zero() && history.max_events_per_user > 0
}

pub(super) static READ_SCRIPT: Script = Script::new(READ);

/// One history entry as Redis returned it.
#[derive(Debug)]
struct Entry {
    off: u64,
    /// Publish time, ms since the Unix epoch.
    at: Option<u64>,
    message: Vec<u8>,
}

/// Runs `script` on a query connection within the command timeout, by
/// SHA-1 first and by text when the server does not have it.
async fn run(
    shared: &Shared,
    script: &Script,
    keys: [String; 2],
    args: &[&str],
) -> Result<Value, BackplaneError> {
    let mut conn = shared.query_connection().await?;
    let build = |by_sha: bool| {
        let mut cmd = script.invocation(by_sha);
        cmd.arg(2).arg(keys.as_slice()).arg(args);
        cmd
    };
    let first = tokio::time::timeout(
        shared.config.command_timeout,
        build(true).query_async::<Value>(&mut conn),
    )
    .await;
    match first {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) if is_noscript(&error) => {
            shared
                .within(build(false).query_async::<Value>(&mut conn))
                .await
        }
        _ => Err(BackplaneError::Down),
    }
}

/// [`Backplane::read_stream`](crate::backplane::Backplane::read_stream).
pub(super) async fn read(
    shared: &Shared,
    user: &UserId,
    since: Option<&Position>,
) -> Result<StreamRead, BackplaneError> {
    if !shared.config.streams {
        return Err(BackplaneError::NoStreams);
    }
    let history = shared.history();
    let fresh = Epoch::mint();
    // Plus the slack, as the append script renews it: a read between two
    // renewals must not shorten what the last event's renewal promised.
    let lease = duration_ms(lease(&history).saturating_add(renewal_slack(&history))).to_string();
    let (since_epoch, since_off) = since.map_or((String::new(), String::new()), |s| {
        (s.epoch.as_str().to_owned(), s.offset.to_string())
    });
    let reply = run(
        shared,
        &READ_SCRIPT,
        [shared.key("s", user), shared.key("h", user)],
        &[fresh.as_str(), &lease, &since_epoch, &since_off],
    )
    .await?;
    let Value::Array(parts) = reply else {
        return Err(BackplaneError::Down);
    };
    let mut parts = parts.into_iter();
    let epoch = parts
        .next()
        .and_then(text)
        .and_then(|e| Epoch::new(&e).ok());
    let head = parts.next().and_then(text).and_then(|o| o.parse().ok());
    let (Some(epoch), Some(head)) = (epoch, head) else {
        tracing::warn!("Redis backplane: a user's stream meta is malformed; not recovered");
        return Err(BackplaneError::Down);
    };
    let position = Position {
        epoch,
        offset: head,
    };
    let events = since
        .filter(|s| s.epoch == position.epoch && s.offset <= head)
        .and_then(|s| {
            if s.offset == head {
                return Some(Vec::new());
            }
            if !keeps_history(&history) {
                return None;
            }
            let entries = entries(parts.next()?)?;
            let fresh_enough = entries
                .first()
                .and_then(|e| e.at)
                .is_some_and(|at| now_ms().saturating_sub(at) <= duration_ms(history.window));
            if !fresh_enough {
                return None;
            }
            decode(shared, user, &position.epoch, s.offset, head, entries)
        });
    Ok(StreamRead::new(position, events))
}

/// Reads `user`'s history entries `after + 1 ..= upto` of `epoch`, to fill
/// a hole this node found in its deliveries. `None` when the history cannot
/// supply every one of them (not kept, trimmed, expired, another epoch, a
/// bad entry, Redis down or slow).
pub(super) async fn fill(
    shared: &Shared,
    user: &UserId,
    epoch: &Epoch,
    after: u64,
    upto: u64,
) -> Option<Vec<(u64, EncodedEvent)>> {
    if upto <= after || !keeps_history(&shared.history()) {
        return None;
    }
    let mut conn = shared.query_connection().await.ok()?;
    let first = after.checked_add(1)?;
    let reply: Value = shared
        .within(
            redis::cmd("XRANGE")
                .arg(shared.key("h", user))
                .arg(format!("{first}-0"))
                .arg(format!("{upto}-0"))
                .query_async(&mut conn),
        )
        .await
        .ok()?;
    let entries = entries(reply)?;
    decode(shared, user, epoch, after, upto, entries)
}

/// Checks that `entries` are exactly `after + 1 ..= upto` of `epoch`, each
/// signed with the cluster key, and decodes them.
fn decode(
    shared: &Shared,
    user: &UserId,
    epoch: &Epoch,
    after: u64,
    upto: u64,
    entries: Vec<Entry>,
) -> Option<Vec<(u64, EncodedEvent)>> {
    let contiguous = entries.len() as u64 == upto.saturating_sub(after)
        && entries
            .iter()
            .zip(after.saturating_add(1)..)
            .all(|(entry, expected)| entry.off == expected);
    if !contiguous {
        return None;
    }
    let channel = wire::user_channel(&shared.config.prefix, user);
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let opened = shared.signer.open(&channel, &entry.message);
        let event = opened.ok().and_then(|message| {
            let placed = message
                .position
                .as_ref()
                .is_some_and(|p| p.offset == entry.off && &p.epoch == epoch);
            (message.kind == Kind::Stream && placed)
                .then(|| EncodedEvent::from_wire(message.body).ok())
                .flatten()
        });
        let Some(event) = event else {
            shared
                .stats
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(link) = shared.link() {
                link.record_rejected();
            }
            tracing::warn!(
                "Redis backplane: dropped a history entry that is not a signed event of its \
                 place (a node with another cluster key, or someone writing to the Redis server)"
            );
            return None;
        };
        events.push((entry.off, event));
    }
    Some(events)
}

/// The entries of an `XRANGE` reply; `None` when it is malformed.
fn entries(reply: Value) -> Option<Vec<Entry>> {
    let Value::Array(items) = reply else {
        return None;
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let mut pair = pair.into_iter();
            let id = pair.next().and_then(text)?;
            let (off, seq) = id.split_once('-')?;
            if seq != "0" {
                return None;
            }
            let off = off.parse().ok()?;
            let fields = match pair.next()? {
                Value::Array(fields) => fields,
                Value::Map(map) => map.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => return None,
            };
            let mut message = None;
            let mut at = None;
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                match (bytes(name)?.as_slice(), value) {
                    (b"m", value) => message = bytes(value),
                    (b"t", value) => at = text(value).and_then(|t| t.parse().ok()),
                    _ => {}
                }
            }
            Some(Entry {
                off,
                at,
                message: message?,
            })
        })
        .collect()
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    String::from_utf8(bytes(value)?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, message: &str, at: &str) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![bulk("m"), bulk(message), bulk("t"), bulk(at)]),
        ])
    }

    #[test]
    fn xrange_replies_parse_and_malformed_ones_do_not() {
        let reply = Value::Array(vec![entry("3-0", "x", "17"), entry("4-0", "y", "18")]);
        let parsed = entries(reply).unwrap();
        assert_eq!(
            parsed
                .iter()
                .map(|e| (e.off, e.at, e.message.clone()))
                .collect::<Vec<_>>(),
            vec![(3, Some(17), b"x".to_vec()), (4, Some(18), b"y".to_vec())]
        );
        for bad in [
            Value::Array(vec![entry("3-1", "x", "1")]),
            Value::Array(vec![entry("x-0", "x", "1")]),
            Value::Array(vec![Value::Array(vec![bulk("3-0")])]),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("t"), bulk("1")]),
            ])]),
            Value::Int(3),
        ] {
            assert!(entries(bad.clone()).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_lease_outlives_the_window() {
        let mut history = HistoryConfig::default();
        assert_eq!(lease(&history), Duration::from_secs(86_400));
        history.window = Duration::from_secs(200_000);
        assert_eq!(lease(&history), Duration::from_secs(200_000));
        assert!(keeps_history(&history));
        assert!(!keeps_history(&HistoryConfig::off()));
    }

    #[test]
    fn the_slack_is_a_quarter_of_the_window_at_most_a_minute() {
        let mut history = HistoryConfig {
            window: Duration::from_secs(120),
            ..HistoryConfig::default()
        };
        assert_eq!(renewal_slack(&history), Duration::from_secs(30));
        history.window = Duration::from_secs(3600);
        assert_eq!(renewal_slack(&history), MAX_SLACK);
        assert_eq!(renewal_slack(&HistoryConfig::off()), MAX_SLACK);
    }
}
