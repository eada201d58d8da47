//! The assertions: a summary table, the figures behind it, one JSON line.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{End, Record};
use crate::phase::Outcome;
use crate::server::Gauges;

/// One assertion.
pub(crate) struct Check {
    name: &'static str,
    measured: String,
    expected: String,
    pass: bool,
}

fn check(
    name: &'static str,
    measured: impl ToString,
    expected: impl ToString,
    pass: bool,
) -> Check {
    Check {
        name,
        measured: measured.to_string(),
        expected: expected.to_string(),
        pass,
    }
}

/// What the report is made from.
pub(crate) struct Inputs<'a> {
    pub(crate) outcome: &'a Outcome,
    pub(crate) baseline: Gauges,
    pub(crate) after: Gauges,
    pub(crate) settle: Duration,
    pub(crate) server_errors: (u64, Option<String>),
    pub(crate) busy_retries: u64,
    /// Publisher connections started, the slow readers' one included.
    pub(crate) publishers: usize,
    /// The run's parameters, for the JSON line.
    pub(crate) params: Value,
    /// The warm-up's own run, checked for the per-frame invariants too.
    pub(crate) warm_up: &'a Outcome,
}

/// Frames that broke a per-frame invariant in `outcome`: wrong-user
/// deliveries, seq gaps, per-user order breaks, frames of an unexpected
/// type, over every connection that received anything.
pub(crate) fn frame_findings(outcome: &Outcome) -> u64 {
    let records = outcome
        .receivers
        .iter()
        .chain(outcome.slow.iter().filter_map(|r| r.as_ref().ok()))
        .chain(outcome.floods.iter().filter_map(|f| f.record.as_ref()));
    records
        .map(|r| r.wrong_user + r.seq_errors + r.order_errors + r.unexpected)
        .sum()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(index).copied().unwrap_or(0) as f64 / 1000.0
}

/// Messages a connection that stayed up should have had and did not: every
/// one sent after it saw `ready` (the server was Ready before it sent
/// `ready`, and handled the publish after it was sent). Returns (expected,
/// missing).
fn missed(record: &Record, ready: u64, sent: Option<&&Vec<u64>>) -> (u64, u64) {
    let mut got = record.ks.clone();
    got.sort_unstable();
    got.dedup();
    let (mut expected, mut missing) = (0, 0);
    for (k, &at) in (1u64..).zip(sent.map_or(&[][..], |v| v.as_slice())) {
        if at > ready {
            expected += 1;
            if got.binary_search(&k).is_err() {
                missing += 1;
            }
        }
    }
    (expected, missing)
}

/// Evaluates every assertion; prints the figures, the table and the JSON
/// line; returns how many assertions failed.
pub(crate) fn print(i: &Inputs<'_>) -> usize {
    let o = i.outcome;
    let sent: HashMap<&str, &Vec<u64>> = o
        .logs
        .iter()
        .flat_map(|log| log.sent.iter())
        .map(|(user, times)| (user.as_str(), times))
        .collect();
    let slow: Vec<&Record> = o.slow.iter().filter_map(|r| r.as_ref().ok()).collect();
    let flooded = o.floods.iter().filter_map(|f| f.record.as_ref());
    let all = || {
        o.receivers
            .iter()
            .chain(slow.iter().copied())
            .chain(flooded.clone())
    };
    let stayed: Vec<&Record> = o
        .receivers
        .iter()
        .filter(|r| !r.chaos && r.end == End::ClosedByUs)
        .collect();
    let dropped: Vec<&Record> = o
        .receivers
        .iter()
        .filter(|r| !r.chaos && r.end != End::ClosedByUs)
        .collect();

    let (mut expected, mut missing, mut never_ready) = (0, 0, 0);
    let mut latencies = Vec::new();
    for record in &stayed {
        latencies.extend_from_slice(&record.latencies_us);
        match record.ready_us {
            Some(ready) => {
                let (e, m) = missed(record, ready, sent.get(record.id.user.as_str()));
                expected += e;
                missing += m;
            }
            None => never_ready += 1,
        }
    }
    latencies.sort_unstable();

    let wrong_user: u64 = all().map(|r| r.wrong_user).sum();
    let seq_broken = all().filter(|r| r.seq_errors > 0).count();
    let order_breaks: u64 = all().map(|r| r.order_errors).sum();
    let unexpected: u64 = all().map(|r| r.unexpected).sum();
    let warm_up_findings = frame_findings(i.warm_up);
    let refused = o.bad.iter().filter(|b| b.refused).count();
    let floods_4429 = o.floods.iter().filter(|f| f.code == Some(4429)).count();
    let slow_closed = slow
        .iter()
        .filter(|r| matches!(r.end, End::ServerClose(4409) | End::Gone(_)))
        .count();
    let publishers_up = o.logs.iter().filter(|l| l.failure.is_none()).count();
    let publishers = i.publishers;
    let (b, a) = (i.baseline, i.after);
    let rss_limit = b.rss_kib + b.rss_kib / 10;
    let rss_change = (a.rss_kib as f64 / b.rss_kib.max(1) as f64 - 1.0) * 100.0;

    let checks = [
        check(
            "messages delivered to the wrong user",
            wrong_user,
            0,
            wrong_user == 0,
        ),
        check(
            "connections with a seq gap or reorder",
            format!("{seq_broken} of {}", all().count()),
            0,
            seq_broken == 0,
        ),
        check(
            "frames of an unexpected type",
            unexpected,
            0,
            unexpected == 0,
        ),
        check(
            "warm-up: frames breaking the rows above",
            warm_up_findings,
            0,
            warm_up_findings == 0,
        ),
        check(
            "per-user order breaks (gap, repeat)",
            order_breaks,
            0,
            order_breaks == 0,
        ),
        check(
            "messages missed by connections that stayed up",
            format!("{missing} of {expected}, {never_ready} never ready"),
            0,
            // Not vacuous: some connections stayed up and were owed messages.
            missing == 0 && never_ready == 0 && expected > 0 && !stayed.is_empty(),
        ),
        check(
            "healthy connections dropped",
            dropped.len(),
            0,
            dropped.is_empty(),
        ),
        check(
            "invalid tokens refused",
            format!("{refused} of {}", o.bad.len()),
            "all",
            refused == o.bad.len() && !o.bad.is_empty(),
        ),
        check(
            "floods closed with 4429",
            format!("{floods_4429} of {}", o.floods.len()),
            "all",
            floods_4429 == o.floods.len() && !o.floods.is_empty(),
        ),
        check(
            "slow readers closed by the server",
            format!("{slow_closed} of {}", o.slow.len()),
            "all",
            slow_closed == o.slow.len() && !o.slow.is_empty(),
        ),
        check(
            "publishers up until the end",
            format!("{publishers_up} of {publishers}"),
            "all",
            publishers_up == publishers && publishers > 0,
        ),
        check(
            "valid connections that failed",
            o.connect_failures.len(),
            0,
            o.connect_failures.is_empty(),
        ),
        check("harness tasks lost", o.lost_tasks, 0, o.lost_tasks == 0),
        check(
            "server isolation refusals",
            a.isolation_refusals,
            0,
            a.isolation_refusals == 0,
        ),
        check(
            "server ERROR log lines",
            i.server_errors.0,
            0,
            i.server_errors.0 == 0,
        ),
        check(
            "router connections after",
            a.connections,
            0,
            a.connections == 0,
        ),
        check("router users after", a.users, 0, a.users == 0),
        check(
            "alive tasks after (baseline)",
            a.tasks,
            b.tasks,
            a.tasks == b.tasks,
        ),
        check(
            "server RSS after, KiB (baseline)",
            format!("{} ({rss_change:+.1}%)", a.rss_kib),
            format!("<= {rss_limit} ({})", b.rss_kib),
            a.rss_kib <= rss_limit,
        ),
    ];

    let published: u64 = o.logs.iter().map(|l| l.published()).sum();
    let delivered: u64 = all().map(|r| r.ks.len() as u64).sum();
    let mut bad_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for b in &o.bad {
        *bad_kinds
            .entry(format!("{:?}: {}", b.kind, b.how))
            .or_default() += 1;
    }
    let x = &o.actions;
    println!(
        "figures: published {published}, delivered {delivered}; {} receiver connections, {} stayed up; \
         chaos: {} closes, {} resets, {} mid-frame resets ({} skipped), {} bad tokens, {} floods, {} slow readers; \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; drain {:.1} s; settle {:.1} s; 503 retries {}",
        o.receivers.len(),
        stayed.len(),
        x.close,
        x.reset,
        x.reset_mid_frame,
        x.skipped,
        o.bad.len(),
        o.floods.len(),
        o.slow.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        o.drain.0.as_secs_f64(),
        i.settle.as_secs_f64(),
        i.busy_retries,
    );
    println!(
        "bad tokens: {}",
        bad_kinds
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let slow_ends: Vec<String> = o
        .slow
        .iter()
        .map(|s| match s {
            Ok(r) => match &r.end {
                End::ServerClose(code) => format!("close {code} after {} frames", r.frames),
                End::Gone(_) => format!("closed, no close frame, after {} frames", r.frames),
                other => format!("{other:?}"),
            },
            Err(e) => e.clone(),
        })
        .collect();
    println!("slow readers: {}", slow_ends.join("; "));
    print_failures(o, &dropped, i);
    print_table(&checks);

    let failed = checks.iter().filter(|c| !c.pass).count();
    let line = json!({
        "params": i.params,
        "published": published, "delivered": delivered,
        "receiver_connections": o.receivers.len(), "stayed_up": stayed.len(),
        "expected_after_ready": expected, "missed": missing,
        "slot_actions": { "close": x.close, "reset": x.reset, "reset_mid_frame": x.reset_mid_frame, "skipped": x.skipped },
        "bad_tokens": o.bad.len(), "bad_refused": refused, "floods": o.floods.len(), "floods_4429": floods_4429,
        "slow_readers": o.slow.len(), "slow_closed": slow_closed,
        "wrong_user": wrong_user, "seq_broken": seq_broken, "order_breaks": order_breaks,
        "healthy_dropped": dropped.len(), "connect_failures": o.connect_failures.len(),
        "latency_ms": { "p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0) },
        "drain_s": o.drain.0.as_secs_f64(), "settle_s": i.settle.as_secs_f64(),
        "baseline": { "tasks": b.tasks, "rss_kib": b.rss_kib },
        "after": { "connections": a.connections, "users": a.users, "tasks": a.tasks, "rss_kib": a.rss_kib, "isolation_refusals": a.isolation_refusals },
        "server_error_lines": i.server_errors.0, "busy_retries": i.busy_retries,
        "failed": failed, "passed": failed == 0,
    });
    println!("{line}");
    failed
}

/// Details of what went wrong, a few of each.
fn print_failures(o: &Outcome, dropped: &[&Record], i: &Inputs<'_>) {
    for r in dropped.iter().take(5) {
        println!(
            "dropped: {} ended {:?} after {} frames",
            r.id.user, r.end, r.frames
        );
    }
    for b in o.bad.iter().filter(|b| !b.refused).take(5) {
        println!("not refused: {:?}: {}", b.kind, b.how);
    }
    for f in o.floods.iter().filter(|f| f.code != Some(4429)).take(5) {
        println!(
            "flood: close {:?} after {} sent: {}",
            f.code, f.sent, f.detail
        );
    }
    for s in &o.slow {
        match s {
            Ok(r) if matches!(r.end, End::ServerClose(4409) | End::Gone(_)) => {}
            Ok(r) => println!("slow reader {} ended {:?}", r.id.user, r.end),
            Err(e) => println!("slow reader not set up: {e}"),
        }
    }
    for l in o.logs.iter().filter(|l| l.failure.is_some()) {
        println!("publisher {}: {:?}", l.name, l.failure);
    }
    for e in o.connect_failures.iter().take(5) {
        println!("connect failed: {e}");
    }
    if let Some(line) = &i.server_errors.1 {
        println!("last server ERROR: {line}");
    }
}

fn print_table(checks: &[Check]) {
    let width = |f: fn(&Check) -> usize, title: &str| {
        checks.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let (w0, w1, w2) = (
        width(|c| c.name.len(), "assertion"),
        width(|c| c.measured.len(), "measured"),
        width(|c| c.expected.len(), "expected"),
    );
    println!();
    println!(
        "{:w0$}  {:w1$}  {:w2$}  result",
        "assertion", "measured", "expected"
    );
    println!(
        "{}  {}  {}  ------",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(w2)
    );
    for c in checks {
        let result = if c.pass { "PASS" } else { "FAIL" };
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {result}",
            c.name, c.measured, c.expected
        );
    }
    println!();
}
