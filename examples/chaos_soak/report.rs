//! The assertions: a summary table, the figures behind it, one JSON line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{End, Record};

use crate::frames::{
    Rules, Sent, duplicates, excused_holes, frame_findings, gap_after, missed, order_breaks,
    sent_times, unexpected,
};
use crate::phase::Outcome;
use crate::resume::{self, Limits};
use crate::server::Gauges;

/// One assertion.
pub(crate) struct Check {
    name: &'static str,
    measured: String,
    expected: String,
    pass: bool,
}

pub(crate) fn check(
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
    /// Per node.
    pub(crate) baseline: &'a [Gauges],
    /// Per node.
    pub(crate) after: &'a [Gauges],
    pub(crate) settle: Duration,
    /// What the history may hold of the phase's events, per node (KiB).
    pub(crate) history_kib: u64,
    /// ERROR lines over every node, and the last one.
    pub(crate) server_errors: (u64, Option<String>),
    pub(crate) rules: Rules,
    /// Per node, when (µs) its backplane went up (true) or down.
    pub(crate) backplane: &'a [Vec<(u64, bool)>],
    pub(crate) busy_retries: u64,
    /// Publisher connections started, the slow readers' one included.
    pub(crate) publishers: usize,
    /// The run's parameters, for the JSON line.
    pub(crate) params: Value,
    /// The warm-up's own run, checked for the per-frame invariants too.
    pub(crate) warm_up: &'a Outcome,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(index).copied().unwrap_or(0) as f64 / 1000.0
}

/// Evaluates every assertion; prints the figures, the table and the JSON
/// line; returns how many assertions failed.
pub(crate) fn print(i: &Inputs<'_>) -> usize {
    let (o, rules) = (i.outcome, i.rules);
    let sent = sent_times(o);
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

    let (mut expected, mut missing, mut covered, mut never_ready) = (0, 0, 0, 0);
    let mut latencies = Vec::new();
    for record in &stayed {
        latencies.extend_from_slice(&record.latencies_us);
        match record.ready_us {
            Some(ready) => {
                let (e, m, c) = missed(record, ready, sent.get(record.id.user.as_str()));
                expected += e;
                missing += m;
                covered += c;
            }
            None => never_ready += 1,
        }
    }
    latencies.sort_unstable();
    // What counts as missed: under `--sigstop-redis`, only what no later
    // `gap` frame covers.
    let missed_count = if rules.gaps_excuse_losses {
        missing - covered
    } else {
        missing
    };

    let wrong_user: u64 = all().map(|r| r.wrong_user).sum();
    let seq_broken = all().filter(|r| r.seq_errors > 0).count();
    let order_breaks: u64 = all().map(|r| order_breaks(r, &sent, rules)).sum();
    let excused: u64 = all().map(|r| excused_holes(r, &sent, rules)).sum();
    let duplicates: u64 = all().map(duplicates).sum();
    let unexpected: u64 = all().map(|r| unexpected(r, rules)).sum();
    let gap_frames: usize = all().map(|r| r.gaps_us.len()).sum();
    let gapped = all().filter(|r| !r.gaps_us.is_empty()).count();
    // The warm-up has no freeze: nothing excuses a hole there.
    let warm_up_rules = Rules {
        gaps_excuse_losses: false,
        ..rules
    };
    let limits = Limits {
        // With Redis keeping the streams, the history's bytes are Redis's.
        byte_budget: !rules.cluster,
        frozen: o.frozen.map(|f| (f.stopped_us, f.continued_us)),
    };
    let resume = resume::evaluate(o, limits);
    let warm_up_resume = resume::evaluate(
        i.warm_up,
        Limits {
            frozen: None,
            ..limits
        },
    );
    let warm_up_findings = frame_findings(i.warm_up, warm_up_rules) + warm_up_resume.failures();
    let refused = o.bad.iter().filter(|b| b.refused).count();
    let floods_4429 = o.floods.iter().filter(|f| f.code == Some(4429)).count();
    let slow_closed = slow
        .iter()
        .filter(|r| matches!(r.end, End::ServerClose(4409) | End::Gone(_)))
        .count();
    let publishers_up = o.logs.iter().filter(|l| l.failure.is_none()).count();
    let publishers = i.publishers;
    let (b, a) = (i.baseline, i.after);
    let per_node = |f: &dyn Fn(&Gauges) -> String, gauges: &[Gauges]| {
        gauges.iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let sum = |f: fn(&Gauges) -> u64| a.iter().map(f).sum::<u64>();
    let (connections_after, users_after) = (sum(|g| g.connections), sum(|g| g.users));
    let isolation_refusals = sum(|g| g.isolation_refusals);
    let tasks_back = a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.tasks == b.tasks);
    let rss_limit = |b: &Gauges| b.rss_kib + b.rss_kib / 10 + i.history_kib;
    let rss_back = a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.rss_kib <= rss_limit(b));
    let rss_after = a
        .iter()
        .zip(b)
        .map(|(a, b)| {
            let change = (a.rss_kib as f64 / b.rss_kib.max(1) as f64 - 1.0) * 100.0;
            format!("{} ({change:+.1}%)", a.rss_kib)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let rss_expected = per_node(
        &|b| format!("<= {} ({} + {})", rss_limit(b), b.rss_kib, i.history_kib),
        b,
    );

    let mut checks = vec![
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
            if rules.cluster {
                "frames of an unexpected type (gap allowed)"
            } else {
                "frames of an unexpected type"
            },
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
            if rules.gaps_excuse_losses {
                "per-user order breaks (repeat; hole w/o gap)"
            } else {
                "per-user order breaks (gap, repeat)"
            },
            if rules.gaps_excuse_losses {
                format!("{order_breaks} ({excused} holes with a gap frame)")
            } else {
                order_breaks.to_string()
            },
            0,
            order_breaks == 0,
        ),
        check(
            "messages delivered more than once",
            duplicates,
            0,
            duplicates == 0,
        ),
        check(
            if rules.gaps_excuse_losses {
                "messages missed, no gap frame after, stayed up"
            } else {
                "messages missed by connections that stayed up"
            },
            if rules.gaps_excuse_losses {
                format!(
                    "{missed_count} of {expected} ({covered} more w/ gap), {never_ready} never ready"
                )
            } else {
                format!("{missing} of {expected}, {never_ready} never ready")
            },
            0,
            // Not vacuous: some connections stayed up and were owed messages.
            missed_count == 0 && never_ready == 0 && expected > 0 && !stayed.is_empty(),
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
            isolation_refusals,
            0,
            isolation_refusals == 0,
        ),
        check(
            "server ERROR log lines",
            i.server_errors.0,
            0,
            i.server_errors.0 == 0,
        ),
        check(
            "router connections after",
            per_node(&|g| g.connections.to_string(), a),
            0,
            connections_after == 0,
        ),
        check(
            "router users after",
            per_node(&|g| g.users.to_string(), a),
            0,
            users_after == 0,
        ),
        check(
            "alive tasks after (baseline)",
            per_node(&|g| g.tasks.to_string(), a),
            per_node(&|g| g.tasks.to_string(), b),
            tasks_back,
        ),
        check(
            "server RSS after, KiB (baseline + history)",
            rss_after,
            rss_expected,
            rss_back,
        ),
    ];
    // The resume rows go after the other delivery rows.
    let at = checks
        .iter()
        .position(|c| c.name == "healthy connections dropped")
        .unwrap_or(checks.len());
    checks.splice(at..at, resume.checks());

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
    println!("{}", resume.line());
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
    if rules.cluster {
        let cross: u64 = all()
            .filter(|r| r.cross_node)
            .map(|r| r.ks.len() as u64)
            .sum();
        println!(
            "cluster: {cross} of {delivered} deliveries crossed nodes ({:.0}%); {gap_frames} gap frames on {gapped} connections; backplane {}",
            cross as f64 * 100.0 / delivered.max(1) as f64,
            backplane_changes(
                i.backplane,
                o.frozen.map(|f| (f.stopped_us, f.continued_us))
            )
        );
    }
    print_failures(o, &dropped, i);
    print_unexcused(o, &sent, rules);
    resume::print_breaks(o);
    resume::print_breaks(i.warm_up);
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
        "duplicates": duplicates, "gap_frames": gap_frames, "gapped_connections": gapped,
        "missed_covered_by_gap": covered, "holes_excused": excused,
        "healthy_dropped": dropped.len(), "connect_failures": o.connect_failures.len(),
        "latency_ms": { "p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0) },
        "drain_s": o.drain.0.as_secs_f64(), "settle_s": i.settle.as_secs_f64(), "history_kib": i.history_kib,
        "baseline": b.iter().map(|b| json!({ "tasks": b.tasks, "rss_kib": b.rss_kib })).collect::<Vec<_>>(),
        "after": a.iter().map(|a| json!({ "connections": a.connections, "users": a.users, "tasks": a.tasks, "rss_kib": a.rss_kib, "isolation_refusals": a.isolation_refusals })).collect::<Vec<_>>(),
        "resume": resume.json(),
        "server_error_lines": i.server_errors.0, "busy_retries": i.busy_retries,
        "failed": failed, "passed": failed == 0,
    });
    println!("{line}");
    failed
}

/// `us` (of the soak's clock) from the SIGSTOP, or from the SIGCONT once
/// past it, when Redis was frozen; else from the start.
fn when(us: u64, frozen: Option<(u64, u64)>) -> String {
    match frozen {
        Some((_, continued)) if us >= continued => {
            format!("SIGCONT{:+.3}s", (us - continued) as f64 / 1e6)
        }
        Some((stopped, _)) => format!("SIGSTOP{:+.3}s", (us as f64 - stopped as f64) / 1e6),
        None => format!("{:.3}s", us as f64 / 1e6),
    }
}

/// Each node's backplane changes after its first `up`, in seconds from the
/// SIGSTOP (and the SIGCONT) when Redis was frozen, else from the start.
fn backplane_changes(nodes: &[Vec<(u64, bool)>], frozen: Option<(u64, u64)>) -> String {
    let at = |us: u64| when(us, frozen);
    let text: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(n, changes)| {
            let after_start: Vec<String> = changes
                .iter()
                .skip(1)
                .map(|&(us, up)| format!("{} {}", if up { "up" } else { "down" }, at(us)))
                .collect();
            if after_start.is_empty() {
                format!("node {n}: up throughout")
            } else {
                format!("node {n}: {}", after_start.join(", "))
            }
        })
        .collect();
    text.join("; ")
}

/// A few holes in users' counters that no `gap` frame owned up to, with
/// when their messages were sent and the connection's gap frames arrived
/// (from the SIGSTOP or SIGCONT when Redis was frozen, else from the start).
fn print_unexcused(o: &Outcome, sent: &Sent<'_>, rules: Rules) {
    let frozen = o.frozen.map(|f| (f.stopped_us, f.continued_us));
    let holes = o.receivers.iter().flat_map(|r| {
        r.holes
            .iter()
            .filter(move |&&(_, last)| !(rules.gaps_excuse_losses && gap_after(r, sent, last)))
            .map(move |&(first, last)| (r, first, last))
    });
    let send_time = |r: &Record, k: u64| {
        sent.get(r.id.user.as_str())
            .and_then(|t| t.get(usize::try_from(k).ok()?.checked_sub(1)?))
            .map_or_else(|| "?".to_owned(), |&us| when(us, frozen))
    };
    for (r, first, last) in holes.take(5) {
        let gaps: Vec<String> = r.gaps_us.iter().map(|&g| when(g, frozen)).collect();
        println!(
            "hole: {} ({}) missed {first}..={last}, sent {} .. {}; gap frames at [{}]",
            r.id.user,
            if r.cross_node {
                "cross-node"
            } else {
                "same node"
            },
            send_time(r, first),
            send_time(r, last),
            gaps.join(", ")
        );
    }
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
