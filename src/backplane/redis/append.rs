//! Appending to the users' streams (stream mode): the script that places
//! events in Redis and publishes them, atomically, and building its calls.
//!
//! The keys are described in `stream.rs`. What Redis spends per event is
//! what bounds cross-node throughput with streams on (docs/benchmarks.md),
//! and in Redis 7 each command a script issues costs about a microsecond
//! above its own work: the script is shaped to issue as few as it can.
//! Per event, an `XADD` and a `PUBLISH`; per user of a call, one `HMGET`
//! and one `HSET` of its meta (however many of the call's events are the
//! user's); the keys' expiries only when due.

use super::stream::{Script, keeps_history, lease, renewal_slack};
use super::wire::Outgoing;
use super::{Shared, duration_ms};
use crate::stream::Epoch;

/// Appends a batch of events to their users' streams and publishes them,
/// atomically: one call per run of consecutive stream events of a
/// publisher batch, up to [`APPEND_BATCH`] events.
///
/// The events come in groups, one per user (the caller puts a user's
/// events of the call together, in their order; a user in two groups is
/// still numbered correctly, only at the cost of a second read and write
/// of its meta). KEYS: per group, the user's meta and history. ARGV: 1 the
/// history's length (`0`: keep none), 2 how often it is trimmed (every
/// that many offsets, [`trim_every`]), 3 the history's expiry (ms), 4 the
/// meta's lease (ms), 5 the renewal slack (ms, [`renewal_slack`]), 6 a
/// fresh epoch (taken by every user of the call whose meta is missing: an
/// epoch tells lives of one user's stream apart, and each call mints its
/// own), 7 `1` to publish (the library always publishes; tests leave a
/// message out on purpose with `0`); then per group, in the order of KEYS:
/// the user's channel, its number of events, and per event the sealed
/// message up to its body and the body.
///
/// The time is Redis's own (`TIME`): it stamps the entries (`t`) and
/// decides renewals, so the nodes' clocks play no part in what is written.
///
/// Per group: the meta is read (`HMGET epoch off renew`) and its `off`
/// advanced by the group's number of events in one write (`HSET`), or
/// created with the fresh epoch (the history deleted: a new epoch never
/// inherits an old life's entries); a user whose meta cannot be read or
/// written (a key of another type, an `off` that is not a whole number
/// below 10^15, Redis out of memory or read-only) has all its events of
/// the group refused, and nothing of them is published. Then per event, in
/// order: the offset is the next one reserved, the position line is put
/// between the sealed head and the body (so what is published and kept is
/// `v2\n<node>\nS\n<mac>\n<epoch>:<off>\n<body>`), the message is added to
/// the history (`XADD`, stamped `t` with the time in ms; with
/// `MAXLEN ~ <length>` when the offset is a multiple of the trim period, so
/// the trimming Redis does at every `XADD` it does once per period) and
/// published.
///
/// **Expiries are renewed when due, not at every event.** The meta's
/// `renew` field is the time (ms) until which the keys' expiries need no
/// renewal. When it is missing, past, or further ahead than the slack (a
/// clock that went back), the group renews them: the meta's to the lease
/// plus the slack, the history's to the window plus the slack (`PEXPIRE`),
/// and `renew` becomes now plus the slack. So a key outlives the last event
/// by its lease or window at least and by the slack at most: the history
/// may hold entries up to the slack past the window, which the readers
/// refuse by their `t` (see `stream::read`). Between renewals the events
/// are added with `XADD … NOMKSTREAM`: a history that vanished meanwhile
/// (deleted, evicted) is made again by a plain `XADD` and given its
/// expiry, so no history key is ever left without one. Redis before 6.2
/// knows no `NOMKSTREAM`: there every event takes that second path, still
/// correct.
///
/// Every command runs under `redis.pcall`, so one user's refusal never
/// fails the others' events (an event whose `PUBLISH` fails is reported
/// refused too, though placed). A failed `XADD` (an id Redis refuses
/// because someone rewrote the keys) does not stop the publish: delivery
/// matters more than the history.
///
/// Returns a table with one entry per event, in the order of the
/// arguments: its offset, or the error text that refused it; an error
/// reply, with nothing written, when the arguments are not of this form.
pub(super) const APPEND: &str = r"
local length, fresh, publish = ARGV[1], ARGV[6], ARGV[7] == '1'
local every, expiry, lease, slack = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local groups = #KEYS / 2
local bad = redis.error_reply('ERR append: expected 2 keys per user, 7 arguments, then per user a channel, a count and 2 arguments per event')
if groups < 1 or groups % 1 ~= 0 or not (every and every >= 1 and expiry and lease and slack) then
  return bad
end
local a = 7
for _ = 1, groups do
  local count = tonumber(ARGV[a + 2])
  if not count or count < 1 or count % 1 ~= 0 then
    return bad
  end
  a = a + 2 + 2 * count
end
if a ~= #ARGV then
  return bad
end
local keep = length ~= '0'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local stamp = string.format('%d', now)
local renewed = string.format('%d', now + slack)
local results = {}
a = 7
for g = 1, groups do
  local meta, history = KEYS[2 * g - 1], KEYS[2 * g]
  local channel, count = ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 2
  local err, epoch, off, renew, written
  local got = redis.pcall('HMGET', meta, 'epoch', 'off', 'renew')
  if got.err then
    err = got.err
  elseif not got[1] then
    epoch, off, renew = fresh, 0, true
    redis.pcall('DEL', history)
    written = redis.pcall('HSET', meta, 'epoch', epoch, 'off', count, 'renew', renewed)
  else
    local text = got[2] or '0'
    local due = tonumber(got[3])
    renew = not due or due <= now or due > now + slack
    if #text > 15 or not string.find(text, '^%d+$') then
      err = 'ERR hash value is not an integer'
    else
      epoch, off = got[1], tonumber(text)
      local upto = string.format('%d', off + count)
      if renew then
        written = redis.pcall('HSET', meta, 'off', upto, 'renew', renewed)
      else
        written = redis.pcall('HSET', meta, 'off', upto)
      end
    end
  end
  if type(written) == 'table' and written.err then
    err = written.err
  end
  local expire = renew
  for _ = 1, count do
    if err then
      results[#results + 1] = err
    else
      off = off + 1
      local position = string.format('%d', off)
      local message = ARGV[a + 1] .. epoch .. ':' .. position .. '\n' .. ARGV[a + 2]
      if keep then
        local id = position .. '-0'
        local added = false
        if not renew and off % every == 0 then
          added = redis.pcall('XADD', history, 'NOMKSTREAM', 'MAXLEN', '~', length, id, 'm', message, 't', stamp)
        elseif not renew then
          added = redis.pcall('XADD', history, 'NOMKSTREAM', id, 'm', message, 't', stamp)
        end
        if not added or type(added) == 'table' then
          redis.pcall('XADD', history, 'MAXLEN', '~', length, id, 'm', message, 't', stamp)
          expire = true
        end
      end
      local published = 0
      if publish then
        published = redis.pcall('PUBLISH', channel, message)
      end
      if type(published) == 'table' and published.err then
        results[#results + 1] = published.err
      else
        results[#results + 1] = off
      end
    end
    a = a + 2
  end
  if not err then
    if renew then
      redis.pcall('PEXPIRE', meta, lease + slack)
    end
    if keep and expire then
      redis.pcall('PEXPIRE', history, expiry + slack)
    end
  end
end
return results
";

/// The append script, loaded on each server once.
pub(super) static APPEND_SCRIPT: Script = Script::new(APPEND);

/// Most events in one call of the append script: a whole publisher batch.
/// The larger the call, the more of a user's events share one read and
/// write of its meta, and the less each event pays of the call. The price:
/// Redis runs a script atomically, every other client waiting meanwhile,
/// and at the ~5 µs an event costs inside the script (docs/benchmarks.md)
/// a full call holds Redis for about 2.5 ms. Calls are only that large
/// when events queue up: at low rates a batch is what arrived since the
/// last round trip.
pub(super) const APPEND_BATCH: usize = 512;

/// How often (in offsets) an event's `XADD` trims the history: a
/// sixteenth of its length, between 1 and 64. Trimming at every event cost
/// Redis about half a microsecond per event (docs/benchmarks.md); this way
/// a history holds at most a sixteenth (or 63 entries) more than its
/// length, on top of what `MAXLEN ~` leaves.
pub(super) fn trim_every(length: usize) -> usize {
    (length / 16).clamp(1, 64)
}

/// Puts each user's events of `items` together, keeping their order (and
/// the order of users by their first event): one group per user in the
/// call of the append script. Events of different users may change places;
/// no order between users is promised, while a user's order is kept.
pub(super) fn group_by_user(items: &mut [Outgoing]) {
    if items.len() <= 1 {
        return;
    }
    let mut first = std::collections::HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        first.entry(item.user.clone()).or_insert(i);
    }
    if first.len() == items.len() {
        return;
    }
    // Stable: a user's events keep their order.
    items.sort_by_cached_key(|item| first.get(&item.user).copied().unwrap_or(usize::MAX));
}

/// Adds one call of the append script for `items` (stream events, at most
/// [`APPEND_BATCH`]: the caller splits, and groups them with
/// [`group_by_user`]) to `pipe`.
pub(super) fn append(
    pipe: &mut redis::Pipeline,
    shared: &Shared,
    items: &[Outgoing],
    by_sha: bool,
) {
    let history = shared.history();
    let length = if keeps_history(&history) {
        history.max_events_per_user
    } else {
        0
    };
    let groups: Vec<&[Outgoing]> = items.chunk_by(|a, b| a.user == b.user).collect();
    let mut cmd = APPEND_SCRIPT.invocation(by_sha);
    cmd.arg(groups.len().saturating_mul(2));
    for group in &groups {
        if let Some(first) = group.first() {
            cmd.arg(shared.key("s", &first.user))
                .arg(shared.key("h", &first.user));
        }
    }
    cmd.arg(length)
        .arg(trim_every(length))
        .arg(duration_ms(history.window).max(1))
        .arg(duration_ms(lease(&history)))
        .arg(duration_ms(renewal_slack(&history)))
        .arg(Epoch::mint().as_str())
        .arg(1);
    for group in &groups {
        if let Some(first) = group.first() {
            cmd.arg(&first.channel).arg(group.len());
        }
        for item in *group {
            let (head, body) = item
                .payload
                .split_at_checked(item.body_at)
                .unwrap_or((item.payload.as_str(), ""));
            cmd.arg(head).arg(body);
        }
    }
    pipe.add_command(cmd);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::backplane::redis::wire::Kind;
    use crate::id::UserId;

    fn event(user: &str, n: usize) -> Outgoing {
        Outgoing {
            user: UserId::new(user).unwrap(),
            kind: Kind::Stream,
            channel: String::new(),
            payload: n.to_string(),
            body_at: 0,
        }
    }

    #[test]
    fn a_users_events_go_together_in_their_order() {
        let mut items: Vec<Outgoing> = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5), ("a", 6)]
            .into_iter()
            .map(|(u, n)| event(u, n))
            .collect();
        group_by_user(&mut items);
        let order: Vec<(&str, &str)> = items
            .iter()
            .map(|i| (i.user.as_str(), i.payload.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("a", "1"),
                ("a", "3"),
                ("a", "6"),
                ("b", "2"),
                ("b", "5"),
                ("c", "4")
            ]
        );
        let mut distinct = vec![event("x", 1), event("y", 2)];
        group_by_user(&mut distinct);
        assert_eq!(distinct[0].payload, "1");
        group_by_user(&mut []);
    }

    #[test]
    fn the_history_is_trimmed_every_sixteenth_of_its_length_at_most_64() {
        assert_eq!(trim_every(0), 1);
        assert_eq!(trim_every(10), 1);
        assert_eq!(trim_every(160), 10);
        assert_eq!(trim_every(1_000), 62);
        assert_eq!(trim_every(100_000), 64);
    }
}
