//! The core's hot paths, as ops/s: ids, transitions, emit before and after
//! Ready, `send_to_user` to 1/4/16 connections, fan-out to 1,000 users and
//! to 1,000 connections,
//! router insert/remove from both cores, wire encoding; the users' streams
//! (fan-out with history on and off, resuming 1,000 missed events).
//!
//! Run with: `cargo bench --bench core` (results: docs/benchmarks.md).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use ws_lifecycle::auth::AuthOutcome;
use ws_lifecycle::close::CloseFrame;
use ws_lifecycle::config::{BufferLimit, HubConfig};
use ws_lifecycle::event::{AgentEventKind, Event, EventName, WireMode};
use ws_lifecycle::id::{ConnectionId, IdGenerator, RunId, UlidGenerator, UserId};
use ws_lifecycle::state::{ConnectionState, StateMachine};
use ws_lifecycle::stream::{HistoryConfig, Position};
use ws_lifecycle::transport::memory;
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound};

struct Quiet;

impl Handler for Quiet {
    async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
        Ok(())
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A hub whose buffers never fill during a bench run.
fn roomy_hub() -> Hub {
    roomy_hub_with(|_| {})
}

fn roomy_hub_with(edit: impl FnOnce(&mut HubConfig)) -> Hub {
    let mut config = HubConfig::default();
    config.pre_ready_buffer = BufferLimit::new(usize::MAX, usize::MAX);
    config.outbound_queue = BufferLimit::new(usize::MAX, usize::MAX);
    config.max_connections_per_user = 1024;
    // The benches' clients read and never answer: with the default 25 s
    // heartbeat, a run longer than that would have every connection pinged
    // (a burst of frames in whichever bench runs then) and closed.
    config.ping_interval = Duration::from_secs(24 * 60 * 60);
    edit(&mut config);
    Hub::builder().config(config).build().unwrap()
}

/// Ready connections of `user`, each with a task reading its client side.
fn ready_connections(rt: &Runtime, hub: &Hub, user: &UserId, n: usize) {
    connections_counted_by(rt, hub, user, n, None);
}

/// Ready connections of `user` whose client side gives back a permit of
/// `frames` per frame received (when given), so a bench can wait for
/// delivery without polling.
fn connections_counted_by(
    rt: &Runtime,
    hub: &Hub,
    user: &UserId,
    n: usize,
    frames: Option<&Arc<Semaphore>>,
) {
    for _ in 0..n {
        let (transport, mut client) = memory::pair(4096);
        let conn = rt
            .block_on(
                hub.connect()
                    .accept(transport)
                    .authenticate(user.clone().into()),
            )
            .unwrap();
        let handle = conn.handle();
        let hub = hub.clone();
        rt.spawn(async move { hub.run(conn, &Quiet).await });
        let frames = frames.map(Arc::clone);
        rt.spawn(async move {
            while client.recv().await.is_some() {
                if let Some(frames) = &frames {
                    frames.add_permits(1);
                }
            }
        });
        rt.block_on(handle.wait_ready(Duration::from_secs(5)))
            .unwrap();
    }
}

/// Fan-out on one core: a current-thread runtime runs the sender, the
/// writers and the clients, as one worker of a server would. `send` is the
/// sending side alone (route, queue, wake the writer), with the writers
/// draining outside the timing; `end_to_end` adds the writers' framing and
/// transport writes and the clients' reads.
fn one_core(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ev = event();
    // With the `metrics` feature, a real recorder (the one the examples
    // serve at `/metrics`) before the hub is built, so the facade's handles
    // do their work; its histogram samples are drained outside the timing.
    // `WS_LIFECYCLE_BENCH_RECORDER=none` leaves the facade without one
    // (every handle a no-op): the crate's own cost.
    #[cfg(feature = "metrics")]
    let prometheus =
        (std::env::var("WS_LIFECYCLE_BENCH_RECORDER").as_deref() != Ok("none")).then(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap()
        });
    let mut g = c.benchmark_group("one_core");
    g.throughput(Throughput::Elements(1000));
    let frames = Arc::new(Semaphore::new(0));
    let hub = roomy_hub();
    let crowd = UserId::new("crowd").unwrap();
    connections_counted_by(&rt, &hub, &crowd, 1000, Some(&frames));
    let users: Vec<UserId> = (0..1000)
        .map(|u| UserId::new(format!("fan-{u}")).unwrap())
        .collect();
    for user in &users {
        connections_counted_by(&rt, &hub, user, 1, Some(&frames));
    }
    let send = |name: &str,
                g: &mut criterion::BenchmarkGroup<'_, _>,
                reps: u32,
                timed_drain: bool,
                to: &dyn Fn() -> u32| {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                #[cfg(feature = "metrics")]
                if let Some(prometheus) = &prometheus {
                    prometheus.run_upkeep();
                }
                rt.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let accepted = (0..reps).map(|_| black_box(to())).sum();
                        if !timed_drain {
                            spent += started.elapsed();
                        }
                        frames.acquire_many(accepted).await.unwrap().forget();
                        if timed_drain {
                            spent += started.elapsed();
                        }
                    }
                    spent
                })
            })
        });
    };
    let to_connections = || hub.send_to_user(&crowd, &ev).unwrap().accepted();
    let to_users = || hub.send_to_users(&users, &ev).unwrap().accepted();
    send("send_1000_connections", &mut g, 1, false, &to_connections);
    send("send_1000_users", &mut g, 1, false, &to_users);
    send(
        "end_to_end_1000_connections",
        &mut g,
        1,
        true,
        &to_connections,
    );
    send("end_to_end_1000_users", &mut g, 1, true, &to_users);
    let one = &users[0];
    let to_one = || hub.send_to_user(one, &ev).unwrap().accepted();
    // 32 sends per timed block, so the clock reads do not weigh on it.
    g.throughput(Throughput::Elements(32));
    send("send_1_connection", &mut g, 32, false, &to_one);
    send("end_to_end_1_connection", &mut g, 32, true, &to_one);
    g.finish();
}

/// The cost of the users' streams: the same fan-out with history on (the
/// default) and off, in one run on one core, end to end as in `one_core`;
/// and the time to resume and replay 1,000 missed events.
fn history(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ev = event();
    let mut g = c.benchmark_group("history");
    g.throughput(Throughput::Elements(1000));
    let frames = Arc::new(Semaphore::new(0));
    let mut hubs = Vec::new();
    // The hub built first runs measurably slower in some cases (where its
    // memory landed): `WS_LIFECYCLE_BENCH_HISTORY_FIRST=on` builds the
    // history-on hub first, to see both orders.
    //
    // Two hubs of one process differ by up to 25 % with the same
    // configuration (both with history off: whichever was built second, or
    // where its memory landed), more than the difference measured here; so
    // `WS_LIFECYCLE_BENCH_HISTORY_ONLY=on` (or `off`) builds that hub alone,
    // for a comparison of processes run alternately (docs/benchmarks.md).
    let mut order = vec![("off", false), ("on", true)];
    if std::env::var("WS_LIFECYCLE_BENCH_HISTORY_FIRST").as_deref() == Ok("on") {
        order.reverse();
    }
    if let Ok(only) = std::env::var("WS_LIFECYCLE_BENCH_HISTORY_ONLY") {
        order.retain(|(name, _)| *name == only);
    }
    for (name, keep) in order {
        let hub = roomy_hub_with(|config| {
            if !keep {
                config.history = HistoryConfig::off();
            }
            if let Ok(mib) = std::env::var("WS_LIFECYCLE_BENCH_HISTORY_MIB") {
                config.history.max_bytes = mib.parse::<usize>().unwrap() << 20;
            }
        });
        let users: Vec<UserId> = (0..1000)
            .map(|u| UserId::new(format!("fan-{u}")).unwrap())
            .collect();
        for user in &users {
            connections_counted_by(&rt, &hub, user, 1, Some(&frames));
        }
        let crowd = UserId::new("crowd").unwrap();
        connections_counted_by(&rt, &hub, &crowd, 1000, Some(&frames));
        hubs.push((name, hub, users, crowd));
    }
    // The steady state is measured: a server's history fills once, then
    // stays at its budget, each send evicting as much as it adds. Each hub
    // first sends 4,000 fan-outs (`WS_LIFECYCLE_BENCH_HISTORY_FILL`), past
    // the ~2,800 that fill the default 64 MiB here; the off hub as many, so
    // both start from the same state of the allocator.
    let fill: usize =
        std::env::var("WS_LIFECYCLE_BENCH_HISTORY_FILL").map_or(4_000, |n| n.parse().unwrap());
    for (name, hub, users, _) in &hubs {
        rt.block_on(async {
            for _ in 0..fill {
                let accepted = hub.send_to_users(users, &ev).unwrap().accepted();
                frames.acquire_many(accepted).await.unwrap().forget();
            }
        });
        let usage = hub.history_usage();
        eprintln!(
            "history/{name}: {fill} fan-outs sent before measuring; {} bytes of history, {} events retained",
            usage.bytes, usage.retained
        );
    }
    // Interleaved on/off, so both see the same machine state.
    for (case, to_users) in [("1000_users", true), ("1000_connections", false)] {
        for (name, hub, users, crowd) in &hubs {
            g.bench_function(format!("end_to_end_{case}_history_{name}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            let accepted = if to_users {
                                hub.send_to_users(users, &ev).unwrap().accepted()
                            } else {
                                hub.send_to_user(crowd, &ev).unwrap().accepted()
                            };
                            frames
                                .acquire_many(black_box(accepted))
                                .await
                                .unwrap()
                                .forget();
                        }
                        started.elapsed()
                    })
                })
            });
        }
    }
    // Resume: 1,000 events missed, then a connection with `since` until
    // its last replayed frame arrives (connect, read the history, replay).
    let hub = roomy_hub();
    let away = UserId::new("away").unwrap();
    for n in 0..1000 {
        let _ = hub.send_to_user(&away, &event_n(n));
    }
    let Some(latest) = rt.block_on(hub.stream_position(&away)).unwrap() else {
        panic!("the stream is kept")
    };
    let since = Position {
        offset: 0,
        ..latest
    };
    g.bench_function("resume_1000_missed_events", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let (transport, mut client) = memory::pair(2048);
                    let started = Instant::now();
                    let conn = hub
                        .connect()
                        .accept(transport)
                        .authenticate(AuthOutcome::new(away.clone()).with_since(since.clone()))
                        .await
                        .unwrap();
                    let runner = hub.clone();
                    let served = tokio::spawn(async move { runner.run(conn, &Quiet).await });
                    for _ in 0..1000 {
                        client.recv().await.unwrap();
                    }
                    spent += started.elapsed();
                    client.close(None).await;
                    served.await.unwrap();
                }
                spent
            })
        })
    });
    g.finish();
}

fn event_n(n: u64) -> Event {
    Event::custom(EventName::new("note").unwrap(), json!({ "n": n }))
}

fn event() -> Event {
    Event::custom(
        EventName::new("bench").unwrap(),
        json!({ "n": 1, "text": "hello" }),
    )
}

fn ids(c: &mut Criterion) {
    let ids = UlidGenerator::new();
    let user = UserId::new("alice").unwrap();
    let mut g = c.benchmark_group("ids");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mint_connection_id", |b| {
        b.iter(|| black_box(ids.mint_connection_id()))
    });
    g.bench_function("mint_context", |b| {
        b.iter(|| black_box(ids.mint_context(&user)))
    });
    let conn = ids.mint_connection_id().to_string();
    g.bench_function("parse_connection_id", |b| {
        b.iter(|| black_box(conn.parse::<ConnectionId>().unwrap()))
    });
    let run = ids.mint_context(&user).run.to_string();
    g.bench_function("parse_run_id", |b| {
        b.iter(|| black_box(run.parse::<RunId>().unwrap()))
    });
    g.finish();
}

fn transitions(c: &mut Criterion) {
    use ConnectionState::*;
    let mut g = c.benchmark_group("state");
    g.throughput(Throughput::Elements(6));
    // The machine is built outside the measurement: this is the cost of
    // the transitions (table check, state store, readiness wake-up, history
    // entry with its timestamp).
    g.bench_function("happy_path_6_transitions", |b| {
        b.iter_batched(
            StateMachine::new,
            |mut sm| {
                for to in [
                    Accepted,
                    Authenticated,
                    ServicesReady,
                    Ready,
                    Closing,
                    Closed,
                ] {
                    sm.transition(to, "bench").unwrap();
                }
                sm
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn emit(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("emit");
    g.throughput(Throughput::Elements(1));
    // Before Ready: into the pre-ready buffer of a bound connection.
    let hub = roomy_hub();
    let (transport, _client) = memory::pair(1);
    let conn = rt
        .block_on(
            hub.connect()
                .accept(transport)
                .authenticate(UserId::new("a").unwrap().into()),
        )
        .unwrap();
    let handle = conn.handle();
    let ev = event();
    g.bench_function("before_ready", |b| {
        b.iter(|| black_box(handle.emit(ev.clone()).unwrap()))
    });
    drop(conn);
    // After Ready: into the outbound queue, written by the writer task.
    let hub = roomy_hub();
    let user = UserId::new("b").unwrap();
    ready_connections(&rt, &hub, &user, 1);
    let handle = hub.connections_of(&user).pop().unwrap();
    g.bench_function("after_ready", |b| {
        b.iter(|| black_box(handle.emit(ev.clone()).unwrap()))
    });
    g.finish();
}

fn send_to_user(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("send_to_user");
    let ev = event();
    for n in [1usize, 4, 16] {
        let hub = roomy_hub();
        let user = UserId::new(format!("user-{n}")).unwrap();
        ready_connections(&rt, &hub, &user, n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_connections"), |b| {
            b.iter(|| black_box(hub.send_to_user(&user, &ev).unwrap()))
        });
    }
    // One event to each of 1,000 users (one connection each): encoded once.
    let hub = roomy_hub();
    let users: Vec<UserId> = (0..1000)
        .map(|u| UserId::new(format!("fan-{u}")).unwrap())
        .collect();
    for user in &users {
        ready_connections(&rt, &hub, user, 1);
    }
    g.throughput(Throughput::Elements(1000));
    g.bench_function("fan_out_1000_users", |b| {
        b.iter(|| black_box(hub.send_to_users(&users, &ev).unwrap()))
    });
    // The same with one `send_to_user` per user: an encode each.
    g.bench_function("fan_out_1000_users_one_send_each", |b| {
        b.iter(|| {
            for user in &users {
                let _ = black_box(hub.send_to_user(user, &ev).unwrap());
            }
        })
    });
    // One event to one user's 1,000 connections.
    let hub = roomy_hub();
    let crowd = UserId::new("crowd").unwrap();
    ready_connections(&rt, &hub, &crowd, 1000);
    g.bench_function("fan_out_1000_connections", |b| {
        b.iter(|| black_box(hub.send_to_user(&crowd, &ev).unwrap()))
    });
    g.finish();
}

fn router_contention(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(2));
    // Bind (insert) and drop (remove) a connection on both cores at once.
    g.bench_function("insert_remove_both_cores", |b| {
        b.iter_custom(|iters| {
            let hub = roomy_hub();
            let started = Instant::now();
            rt.block_on(async {
                let tasks: Vec<_> = (0..2)
                    .map(|t| {
                        let hub = hub.clone();
                        tokio::spawn(async move {
                            let user = UserId::new(format!("core-{t}")).unwrap();
                            for _ in 0..iters {
                                let (transport, _client) = memory::pair(1);
                                let conn = hub
                                    .connect()
                                    .accept(transport)
                                    .authenticate(user.clone().into())
                                    .await
                                    .unwrap();
                                drop(conn);
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
            started.elapsed()
        })
    });
    g.finish();
}

fn wire(c: &mut Criterion) {
    let ids = UlidGenerator::new();
    let ctx = ids.mint_context(&UserId::new("alice").unwrap());
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    for kind in AgentEventKind::ALL {
        let ev = Event::agent(
            kind,
            &ctx.run,
            json!({ "step": 1, "text": "thinking about the weather" }),
        );
        g.bench_function(format!("encode_{}", kind.name()), |b| {
            b.iter(|| black_box(ev.encode().unwrap()))
        });
    }
    let encoded = event().encode().unwrap();
    g.bench_function("frame_per_connection", |b| {
        b.iter_batched(
            String::new,
            |mut out| {
                encoded.write_frame(7, WireMode::Named, &mut out);
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! { name = benches; config = config(); targets = ids, transitions, emit, send_to_user, one_core, history, router_contention, wire }
criterion_main!(benches);
