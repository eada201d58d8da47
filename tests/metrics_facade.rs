//! The `metrics` facade: one scripted life over the in-memory transport (a
//! connection that reads and closes, a slow consumer closed with 4409, a
//! refused authentication), then every value the hub emitted, exactly.
//!
//! Each test sets a `DebuggingRecorder` as its thread's default before the
//! hub is built and runs on a current-thread runtime, so every handle (the
//! hub's and the ones registered at a label set's first use) reaches this
//! test's recorder and no other test's.

#![cfg(feature = "metrics")]
// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use support::*;
use ws_lifecycle::auth::AuthError;
use ws_lifecycle::close::{CloseCause, CloseCode};
use ws_lifecycle::config::{BufferLimit, SlowConsumerPolicy};
use ws_lifecycle::metrics::names;

/// One reading of everything recorded, by `name{label=value,…}` (labels in
/// the order they were given).
#[derive(Debug, Default)]
struct Reading {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
    histograms: BTreeMap<String, Vec<f64>>,
}

fn read(snapshotter: &Snapshotter) -> Reading {
    let mut reading = Reading::default();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = if labels.is_empty() {
            key.name().to_owned()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        match value {
            DebugValue::Counter(n) => {
                reading.counters.insert(name, n);
            }
            DebugValue::Gauge(g) => {
                reading.gauges.insert(name, g.0);
            }
            DebugValue::Histogram(samples) => {
                reading
                    .histograms
                    .insert(name, samples.into_iter().map(|s| s.0).collect());
            }
        }
    }
    reading
}

fn with_prefix<T: Clone>(map: &BTreeMap<String, T>, prefix: &str) -> BTreeMap<String, T> {
    map.iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, v)| (name.clone(), v.clone()))
        .collect()
}

fn expected<T: Clone>(entries: &[(&str, T)]) -> BTreeMap<String, T> {
    entries
        .iter()
        .map(|(name, v)| ((*name).to_owned(), v.clone()))
        .collect()
}

#[tokio::test]
async fn a_scripted_life_emits_exact_values() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let hub = hub_with(|c| {
        c.outbound_queue = BufferLimit::new(4, 1 << 20);
        c.slow_consumer = SlowConsumerPolicy::Close;
        c.write_histograms = true;
    });
    let (alice, bob) = (user("alice"), user("bob"));

    // Alice: two events buffered before Ready (one batch of two at Ready),
    // read, then she closes.
    let (conn, mut client) = bind(&hub, &alice, 16).await;
    for i in 1..=2 {
        let d = hub.send_to_user(&alice, &event("e", json!(i))).unwrap();
        assert_eq!((d.buffered, d.queued, d.refused), (1, 0, 0));
    }
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &Scripted::default()).await }
    });
    assert_eq!(next_json(&mut client).await["seq"], 1);
    assert_eq!(next_json(&mut client).await["seq"], 2);
    client.close(None).await;
    let report = server.await.unwrap();
    assert_eq!(report.cause, CloseCause::PeerClosed(None));

    // Bob: room for one frame in flight and four queued; he reads one and
    // then nothing. On this single-threaded runtime the writer does not run
    // during the sends: four queue, the fifth overflows (close 4409), the
    // other fifteen find the connection closing.
    let (conn, mut client) = bind(&hub, &bob, 1).await;
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &Scripted::default()).await }
    });
    let _ = hub.send_to_user(&bob, &event("e", json!(0))).unwrap();
    assert_eq!(next_json(&mut client).await["seq"], 1);
    let mut refused = 0;
    for i in 1..=20 {
        refused += hub
            .send_to_user(&bob, &event("e", json!(i)))
            .unwrap()
            .refused;
    }
    assert_eq!(refused, 16);
    let (frames, close) = read_to_close(&mut client).await;
    assert_eq!(frames, Vec::<serde_json::Value>::new());
    assert_eq!(close.map(|f| f.code), Some(CloseCode::SLOW_CONSUMER));
    assert_eq!(server.await.unwrap().cause, CloseCause::SlowConsumer);

    // A third connection refused before its upgrade.
    let report = hub.connect().refuse(&AuthError::SignatureInvalid);
    assert_eq!(report.state, ws_lifecycle::state::ConnectionState::Failed);

    let reading = read(&snapshotter);
    assert_eq!(
        reading.gauges,
        expected(&[
            ("ws_lifecycle_connections{state=accepted}", 0.0),
            ("ws_lifecycle_connections{state=authenticated}", 0.0),
            ("ws_lifecycle_connections{state=closing}", 0.0),
            ("ws_lifecycle_connections{state=connecting}", 0.0),
            ("ws_lifecycle_connections{state=ready}", 0.0),
            ("ws_lifecycle_connections{state=services_ready}", 0.0),
        ])
    );
    assert_eq!(
        reading.counters,
        expected(&[
            (
                "ws_lifecycle_auth_failures_total{reason=signature_invalid}",
                1
            ),
            ("ws_lifecycle_closes_total{code=1000,cause=peer_closed}", 1),
            ("ws_lifecycle_closes_total{code=4401,cause=auth_failed}", 1),
            (
                "ws_lifecycle_closes_total{code=4409,cause=slow_consumer}",
                1
            ),
            ("ws_lifecycle_connections_opened_total", 3),
            (
                "ws_lifecycle_deliveries_total{outcome=dropped,reason=on_close}",
                4
            ),
            (
                "ws_lifecycle_deliveries_total{outcome=dropped,reason=overflow}",
                0
            ),
            (
                "ws_lifecycle_deliveries_total{outcome=refused,reason=before_ready}",
                0
            ),
            (
                "ws_lifecycle_deliveries_total{outcome=refused,reason=closed}",
                15
            ),
            (
                "ws_lifecycle_deliveries_total{outcome=refused,reason=misaddressed}",
                0
            ),
            (
                "ws_lifecycle_deliveries_total{outcome=refused,reason=queue_full}",
                1
            ),
            (
                "ws_lifecycle_deliveries_total{outcome=refused,reason=too_large}",
                0
            ),
            ("ws_lifecycle_deliveries_total{outcome=written}", 3),
            ("ws_lifecycle_gaps_signalled_total", 0),
            ("ws_lifecycle_events_replayed_total", 0),
            ("ws_lifecycle_resumes_total{outcome=not_recovered}", 0),
            ("ws_lifecycle_resumes_total{outcome=recovered}", 0),
        ])
    );
    // Sizes exactly; durations by their number of samples.
    assert_eq!(
        with_prefix(&reading.histograms, names::OUTBOX_DEPTH),
        expected(&[(names::OUTBOX_DEPTH, vec![2.0, 1.0])])
    );
    assert_eq!(
        with_prefix(&reading.histograms, names::WRITE_BATCH),
        expected(&[(names::WRITE_BATCH, vec![2.0, 1.0])])
    );
    let samples = |name: &str| reading.histograms.get(name).map(Vec::len);
    assert_eq!(samples(names::TIME_TO_READY), Some(2));
    assert_eq!(samples(names::CONNECTION_DURATION), Some(3));
    assert_eq!(reading.histograms.len(), 4, "{:?}", reading.histograms);

    // The facade and the snapshot count from the same calls.
    let m = hub.metrics();
    assert_eq!(
        (
            m.events_written,
            m.refused_closed,
            m.refused_queue_full,
            m.dropped_on_close
        ),
        (3, 15, 1, 4)
    );
    assert_eq!(m.closes.values().sum::<u64>(), 3);
    assert_eq!(m.auth_failures.get("signature_invalid"), Some(&1));
    assert_accounted(&m);
}

/// The two per-batch histograms are opt-in (`HubConfig::write_histograms`,
/// off by default): without it, writes record neither, while everything
/// else is emitted as usual.
#[tokio::test]
async fn the_per_batch_histograms_are_off_by_default() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let hub = hub_with(|_| {});
    let alice = user("alice");
    let (conn, mut client) = bind(&hub, &alice, 16).await;
    let handle = conn.handle();
    let server = tokio::spawn({
        let hub = hub.clone();
        async move { hub.run(conn, &Scripted::default()).await }
    });
    handle
        .wait_ready(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let _ = hub.send_to_user(&alice, &event("e", json!(1))).unwrap();
    let _ = next_json(&mut client).await;
    client.close(None).await;
    let _ = server.await.unwrap();

    let reading = read(&snapshotter);
    let samples = |name: &str| reading.histograms.get(name).map_or(0, Vec::len);
    assert_eq!(
        (samples(names::OUTBOX_DEPTH), samples(names::WRITE_BATCH)),
        (0, 0)
    );
    assert_eq!(
        reading
            .counters
            .get("ws_lifecycle_deliveries_total{outcome=written}"),
        Some(&1)
    );
}
