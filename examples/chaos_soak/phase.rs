//! One phase of the soak: publishers, the receivers over their users, the
//! plan's chaos during the churn, a drain, then every client leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;

use crate::chaos::{self, Action, BadAttempt, Flood, Plan};
use crate::client::{self, Clock, Cmd, Dialer, Error, Identity, Progress, Record};
use crate::cluster::{Freeze, Frozen, Placement};
use crate::publisher::{self, Feed, Job, PublisherLog};
use crate::stream::{Ask, Handoff, Position, Resume};

/// Handshakes in flight at once: well under the server's 256 upgrades in
/// flight, past which it answers 503.
const HANDSHAKES: usize = 64;
/// Longest the drain waits for the last messages to arrive.
const DRAIN: Duration = Duration::from_secs(15);
/// Each slow reader's user gets this many messages a second, each this
/// large (1.6 MB/s): the kernel lets about 3 MB wait on loopback (the
/// server's send buffer grows to 4 MiB) before a write blocks and the
/// server's 1 s write timeout fires, so a stalled reader is closed about
/// 3 s into its stall, which lasts 7 s at least.
const SLOW_RATE: f64 = 50.0;
const SLOW_PAD: usize = 32 * 1024;
/// How long each slow reader's user is published to, from its start: 6.4
/// MB, twice what fills the kernel's buffers (after which the server's
/// 1 s write timeout closes the connection). Not longer, because every
/// event is kept in the server's history: megabytes for one user evict
/// the history of the users sharing its shard, and a resume over such a
/// stretch cannot be asked to recover (`resume.rs` counts it outside the
/// window).
const SLOW_FEED: Duration = Duration::from_secs(4);
/// How long a reconnect waits for its predecessor's hand-off.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);
/// A forged `since` offset this far past the session's: never a stream's.
const AHEAD: u64 = 1_000_000_000;

/// What a phase runs.
#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) dialer: Arc<Dialer>,
    pub(crate) clock: Clock,
    pub(crate) connections: usize,
    pub(crate) users: usize,
    pub(crate) publishers: usize,
    /// Publishes per second, over all receivers' users.
    pub(crate) rate: f64,
    pub(crate) seconds: f64,
    /// Which node each client dials.
    pub(crate) placement: Placement,
    /// Redis frozen during the churn (`--sigstop-redis`).
    pub(crate) freeze: Option<Freeze>,
}

/// Chaos actions taken on receiver slots.
#[derive(Debug, Default)]
pub(crate) struct SlotActions {
    pub(crate) close: u64,
    pub(crate) reset: u64,
    pub(crate) reset_mid_frame: u64,
    /// Planned when every slot was reconnecting.
    pub(crate) skipped: u64,
}

/// Everything a phase observed.
pub(crate) struct Outcome {
    /// Every receiver connection, chaos-stricken or not.
    pub(crate) receivers: Vec<Record>,
    /// Slow readers (or why one could not be set up).
    pub(crate) slow: Vec<Result<Record, String>>,
    pub(crate) floods: Vec<Flood>,
    pub(crate) bad: Vec<BadAttempt>,
    pub(crate) logs: Vec<PublisherLog>,
    /// Valid connections that could not be made.
    pub(crate) connect_failures: Vec<String>,
    pub(crate) actions: SlotActions,
    /// How long the drain took, and whether every receiver caught up.
    pub(crate) drain: (Duration, bool),
    /// Tasks that outlived the phase's deadline.
    pub(crate) lost_tasks: u64,
    /// When Redis was frozen and thawed, if it was.
    pub(crate) frozen: Option<Frozen>,
}

struct Live {
    cmd: oneshot::Sender<Cmd>,
    task: JoinHandle<Record>,
    progress: Arc<Progress>,
    user: String,
    /// Where the session stands once the connection is dropped.
    handoff: oneshot::Receiver<Handoff>,
    node: usize,
}

/// A slot's next connection: after which one, and whether it resumes.
struct Reopen {
    handoff: oneshot::Receiver<Handoff>,
    resume: Option<Ask>,
    /// The previous connection's node.
    node: usize,
}

/// What the tasks opening receivers share.
#[derive(Clone)]
struct Ctx {
    setup: Setup,
    slots: Arc<Mutex<Vec<Option<Live>>>>,
    failures: Arc<Mutex<Vec<String>>>,
    gate: Arc<Semaphore>,
    deadline: Instant,
    /// Numbers the receivers, in the order their slots open them.
    serial: Arc<AtomicU64>,
    /// The latest epoch seen per user, for positions forged with another
    /// user's epoch.
    epochs: Arc<Mutex<HashMap<String, String>>>,
    /// Until when each slow reader's user is published to.
    feed: Feed,
}

fn soak_user(u: usize) -> String {
    format!("soak-{u}")
}

/// The `since` of a reconnect that resumes as `ask`, once the previous
/// connection of the slot handed off its session's position (`None`: the
/// session has none, or the hand-off did not come).
async fn resume_from(
    ctx: &Ctx,
    user: &str,
    ask: Ask,
    handoff: oneshot::Receiver<Handoff>,
) -> Option<Resume> {
    let handoff = tokio::time::timeout(HANDOFF_WAIT, handoff)
        .await
        .ok()?
        .ok()?;
    let session = handoff.position?;
    let since = match ask {
        Ask::Genuine => session.clone(),
        Ask::ForeignEpoch => {
            let epochs = ctx.epochs.lock();
            let other = epochs
                .iter()
                .find(|(u, e)| u.as_str() != user && **e != session.epoch)
                .map(|(_, e)| e.clone());
            Position {
                epoch: other.unwrap_or_else(|| "forged-epoch".to_owned()),
                off: session.off,
            }
        }
        Ask::Ahead => Position {
            epoch: session.epoch.clone(),
            off: session.off.saturating_add(AHEAD),
        },
    };
    ctx.epochs
        .lock()
        .insert(user.to_owned(), session.epoch.clone());
    Some(Resume {
        ask,
        since,
        session,
        dropped_us: handoff.dropped_us,
    })
}

/// Opens the receiver of `slot` after `delay`: slots go to users
/// round-robin, so no user exceeds the server's 16 connections. After a
/// chaos action (`reopen`), a resuming reconnect waits for the previous
/// connection's position and dials with `since`; on two nodes it dials the
/// other node than the previous connection's (a resume anywhere).
async fn open_slot(ctx: Ctx, slot: usize, delay: Duration, reopen: Option<Reopen>) {
    tokio::time::sleep(delay).await;
    let (users, publishers) = (ctx.setup.users.max(1), ctx.setup.publishers.max(1));
    let u = slot % users;
    let id = Identity {
        user: soak_user(u),
        publisher: format!("publisher-{}", u % publishers),
    };
    let placement = ctx.setup.placement;
    let mut node = placement.receiver(slot, users, publishers);
    let mut resume = None;
    if let Some(Reopen {
        handoff,
        resume: Some(ask),
        node: before,
    }) = reopen
    {
        resume = resume_from(&ctx, &id.user, ask, handoff).await;
        if resume.is_some() {
            node = (before + 1) % placement.nodes.max(1);
        }
    }
    let query = resume.as_ref().map_or(String::new(), |r| r.since.query());
    let connected = {
        let _permit = ctx.gate.acquire().await.ok();
        ctx.setup
            .dialer
            .connect_with(node, &id.user, &query, None)
            .await
    };
    match connected {
        Ok(ws) => {
            let mut record = Record::new(id.clone());
            record.cross_node = node != placement.publisher(u % publishers);
            record.stream.resume = resume;
            record.slot = Some((slot, ctx.serial.fetch_add(1, Ordering::Relaxed)));
            let progress = Arc::clone(&record.progress);
            let (cmd, commands) = oneshot::channel();
            let (handing, handoff) = oneshot::channel();
            let task = tokio::spawn(client::receive(
                ws,
                record,
                commands,
                handing,
                ctx.setup.clock,
                ctx.deadline,
            ));
            let live = Live {
                cmd,
                task,
                progress,
                user: id.user,
                handoff,
                node,
            };
            if let Some(place) = ctx.slots.lock().get_mut(slot) {
                *place = Some(live);
            }
        }
        Err(e) => ctx.failures.lock().push(e.to_string()),
    }
}

/// Takes the connection of `slot`, or of the next slot that has one.
fn take_occupied(slots: &Mutex<Vec<Option<Live>>>, slot: usize) -> Option<(usize, Live)> {
    let mut slots = slots.lock();
    let n = slots.len();
    (0..n)
        .map(|i| (slot + i) % n)
        .find_map(|i| Some((i, slots.get_mut(i)?.take()?)))
}

/// Awaits `tasks`, each by `deadline` at the latest; counts the ones that
/// had to be abandoned.
async fn join_all<T>(tasks: Vec<JoinHandle<T>>, deadline: Instant, lost: &mut u64) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline.into(), task).await {
            Ok(Ok(value)) => out.push(value),
            Ok(Err(_)) => *lost += 1,
            Err(_) => {
                abort.abort();
                *lost += 1;
            }
        }
    }
    out
}

/// Starts the publishers: `setup.publishers` for the receivers' users,
/// and one for the slow readers' users when the plan has any.
async fn start_publishers(
    setup: &Setup,
    plan: &Plan,
    feed: &Feed,
    stop: &watch::Receiver<bool>,
    deadline: Instant,
) -> Result<Vec<JoinHandle<PublisherLog>>, Error> {
    let placement = setup.placement;
    let mut jobs: Vec<(usize, Job)> = (0..setup.publishers)
        .map(|p| {
            let job = Job {
                name: format!("publisher-{p}"),
                users: (0..setup.users)
                    .filter(|u| u % setup.publishers == p)
                    .map(soak_user)
                    .collect(),
                rate: setup.rate / setup.publishers as f64,
                pad: 0,
                gaps: placement.nodes > 1,
                feed: None,
            };
            (placement.publisher(p), job)
        })
        .collect();
    if plan.slow_readers > 0 {
        let job = Job {
            name: "publisher-slow".to_owned(),
            users: (0..plan.slow_readers)
                .map(|n| format!("slow-{n}"))
                .collect(),
            rate: SLOW_RATE * plan.slow_readers as f64,
            pad: SLOW_PAD,
            gaps: placement.nodes > 1,
            feed: Some(Arc::clone(feed)),
        };
        jobs.push((placement.slow().0, job));
    }
    let mut publishers = Vec::new();
    for (node, job) in jobs {
        let ws = setup.dialer.connect(node, &job.name, None).await?;
        let run = publisher::run(ws, job, setup.clock, stop.clone(), deadline);
        publishers.push(tokio::spawn(run));
    }
    Ok(publishers)
}

/// The tasks the churn started.
#[derive(Default)]
struct Churn {
    actions: SlotActions,
    /// Receivers hit by a chaos action.
    stricken: Vec<JoinHandle<Record>>,
    reconnects: Vec<JoinHandle<()>>,
    slow: Vec<JoinHandle<Result<Record, String>>>,
    resumes: Vec<oneshot::Sender<()>>,
    floods: Vec<JoinHandle<Flood>>,
    bad: Vec<JoinHandle<BadAttempt>>,
}

/// Takes each step of `plan` at its time from `start`.
async fn churn(ctx: &Ctx, plan: &Plan, start: Instant) -> Churn {
    let (clock, deadline) = (ctx.setup.clock, ctx.deadline);
    let placement = ctx.setup.placement;
    let (mut floods, mut bad) = (0, 0);
    let mut c = Churn::default();
    for (at, action) in &plan.steps {
        tokio::time::sleep_until((start + *at).into()).await;
        let dialer = Arc::clone(&ctx.setup.dialer);
        match *action {
            Action::Slot {
                slot,
                cmd,
                reconnect,
                resume,
            } => {
                let Some((slot, live)) = take_occupied(&ctx.slots, slot) else {
                    c.actions.skipped += 1;
                    continue;
                };
                match cmd {
                    Cmd::Close => c.actions.close += 1,
                    Cmd::Reset => c.actions.reset += 1,
                    Cmd::ResetMidFrame => c.actions.reset_mid_frame += 1,
                    // Not a chaos action; plans never hold it.
                    Cmd::Finish => {}
                }
                let _ = live.cmd.send(cmd);
                c.stricken.push(live.task);
                let reopen = Reopen {
                    handoff: live.handoff,
                    resume,
                    node: live.node,
                };
                let open = open_slot(ctx.clone(), slot, reconnect, Some(reopen));
                c.reconnects.push(tokio::spawn(open));
            }
            Action::Slow(n) => {
                ctx.feed
                    .lock()
                    .insert(format!("slow-{n}"), Instant::now() + SLOW_FEED);
                let (resume, resumed) = oneshot::channel();
                c.resumes.push(resume);
                let id = Identity {
                    user: format!("slow-{n}"),
                    publisher: "publisher-slow".to_owned(),
                };
                let (publisher, node) = placement.slow();
                c.slow.push(tokio::spawn(async move {
                    let mut record = chaos::slow_reader(dialer, node, id, resumed, clock, deadline)
                        .await
                        .map_err(|e| e.to_string())?;
                    record.cross_node = node != publisher;
                    Ok(record)
                }));
            }
            Action::Flood(n) => {
                floods += 1;
                let node = placement.other(floods);
                let flood = chaos::flood(dialer, node, format!("flood-{n}"), clock);
                c.floods.push(tokio::spawn(flood));
            }
            Action::Bad(kind, u) => {
                bad += 1;
                let node = placement.other(bad);
                let attempt = chaos::bad_token(dialer, node, kind, soak_user(u), clock);
                c.bad.push(tokio::spawn(attempt));
            }
        }
    }
    c
}

/// Runs one phase: `plan` over `setup.seconds` of publishing.
pub(crate) async fn run(setup: &Setup, plan: &Plan) -> Result<Outcome, Error> {
    let deadline =
        Instant::now() + Duration::from_secs_f64(setup.seconds) + Duration::from_secs(180);
    let (stop, stopped) = watch::channel(false);
    let feed = Feed::default();
    let publishers = start_publishers(setup, plan, &feed, &stopped, deadline).await?;
    let ctx = Ctx {
        setup: setup.clone(),
        slots: Arc::new(Mutex::new((0..setup.connections).map(|_| None).collect())),
        failures: Arc::new(Mutex::new(Vec::new())),
        gate: Arc::new(Semaphore::new(HANDSHAKES)),
        deadline,
        serial: Arc::new(AtomicU64::new(0)),
        epochs: Arc::new(Mutex::new(HashMap::new())),
        feed,
    };
    let mut lost_tasks = 0;
    let opening = (0..setup.connections)
        .map(|slot| tokio::spawn(open_slot(ctx.clone(), slot, Duration::ZERO, None)))
        .collect();
    join_all(opening, deadline, &mut lost_tasks).await;

    let start = Instant::now();
    let freeze = setup
        .freeze
        .map(|freeze| tokio::spawn(freeze.run(start, setup.clock)));
    let c = churn(&ctx, plan, start).await;
    tokio::time::sleep_until((start + Duration::from_secs_f64(setup.seconds)).into()).await;
    let frozen = match freeze {
        Some(freeze) => Some(freeze.await??),
        None => None,
    };
    let _ = stop.send(true);
    let logs = join_all(publishers, deadline, &mut lost_tasks).await;
    join_all(c.reconnects, deadline, &mut lost_tasks).await;
    let drain = drain(&ctx, &logs).await;

    // Every client leaves.
    let finishing: Vec<Live> = ctx.slots.lock().drain(..).flatten().collect();
    let mut tasks = c.stricken;
    for live in finishing {
        let _ = live.cmd.send(Cmd::Finish);
        tasks.push(live.task);
    }
    let receivers = join_all(tasks, deadline, &mut lost_tasks).await;
    for resume in c.resumes {
        let _ = resume.send(());
    }
    let slow = join_all(c.slow, deadline, &mut lost_tasks).await;
    let floods = join_all(c.floods, deadline, &mut lost_tasks).await;
    let bad = join_all(c.bad, deadline, &mut lost_tasks).await;
    let connect_failures = std::mem::take(&mut *ctx.failures.lock());
    Ok(Outcome {
        receivers,
        slow,
        floods,
        bad,
        logs,
        connect_failures,
        actions: c.actions,
        drain,
        lost_tasks,
        frozen,
    })
}

/// Waits (bounded) until every open receiver has its user's last message,
/// or became ready after it was sent.
async fn drain(ctx: &Ctx, logs: &[PublisherLog]) -> (Duration, bool) {
    let last: HashMap<&str, (u64, u64)> = logs
        .iter()
        .flat_map(|log| log.sent.iter())
        .map(|(user, times)| {
            let sent = times.last().copied().unwrap_or(0);
            (user.as_str(), (times.len() as u64, sent))
        })
        .collect();
    let started = Instant::now();
    let polls = DRAIN.as_millis() / 100;
    for _ in 0..polls {
        let behind = ctx
            .slots
            .lock()
            .iter()
            .flatten()
            .filter(|live| !live.task.is_finished())
            .filter(|live| {
                let ready = live.progress.ready_us.load(Ordering::Relaxed);
                let (k, sent) = last.get(live.user.as_str()).copied().unwrap_or((0, 0));
                ready == 0 || (live.progress.last_k.load(Ordering::Relaxed) < k && ready <= sent)
            })
            .count();
        if behind == 0 {
            return (started.elapsed(), true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (started.elapsed(), false)
}
