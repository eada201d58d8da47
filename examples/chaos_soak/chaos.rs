//! The chaos: a seeded plan of actions over the churn period, and the
//! actions that are not a receiver's own (floods, slow readers, invalid
//! tokens).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::client::{self, Clock, Dialer, End, Error, Identity, Record, Refused};
use crate::demo_jwt::{self, DEMO_SECRET};
use crate::stream::Ask;

/// splitmix64: a seeded, reproducible plan without a `rand` dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        match u64::try_from(n) {
            Ok(n) if n > 0 => usize::try_from(self.next() % n).unwrap_or(0),
            _ => 0,
        }
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ways to present a token that must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadToken {
    WrongSignature,
    Expired,
    NotYetValid,
    NoExpiry,
    AlgNone,
    AlgHs512,
    ControlCharUser,
    EmptyUser,
    TruncatedSignature,
    Garbage,
    EmptyValue,
    NoToken,
    TooLarge,
}

/// `{"alg":"none","typ":"JWT"}` in base64url: an unsigned token's header.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

impl BadToken {
    pub(crate) const ALL: [BadToken; 13] = [
        BadToken::WrongSignature,
        BadToken::Expired,
        BadToken::NotYetValid,
        BadToken::NoExpiry,
        BadToken::AlgNone,
        BadToken::AlgHs512,
        BadToken::ControlCharUser,
        BadToken::EmptyUser,
        BadToken::TruncatedSignature,
        BadToken::Garbage,
        BadToken::EmptyValue,
        BadToken::NoToken,
        BadToken::TooLarge,
    ];

    /// The `Sec-WebSocket-Protocol` offer. Tokens name a real soak user
    /// where they name anyone, so one accepted by mistake would also
    /// receive that user's messages.
    fn offer(self, user: &str) -> Result<String, Error> {
        let now = demo_jwt::unix_now();
        let hs256 =
            |claims: serde_json::Value| demo_jwt::sign(DEMO_SECRET, Algorithm::HS256, &claims);
        let token = match self {
            BadToken::WrongSignature => demo_jwt::token("not-the-demo-secret", user)?,
            // An hour past: far beyond the 60 s leeway.
            BadToken::Expired => hs256(json!({ "sub": user, "exp": now - 3600 }))?,
            BadToken::NotYetValid => {
                hs256(json!({ "sub": user, "exp": now + 7200, "nbf": now + 3600 }))?
            }
            BadToken::NoExpiry => hs256(json!({ "sub": user }))?,
            BadToken::AlgNone => {
                let valid = demo_jwt::token(DEMO_SECRET, user)?;
                let claims = valid.split('.').nth(1).ok_or("a token has three parts")?;
                format!("{ALG_NONE_HEADER}.{claims}.")
            }
            BadToken::AlgHs512 => demo_jwt::sign(
                DEMO_SECRET,
                Algorithm::HS512,
                &json!({ "sub": user, "exp": now + 3600 }),
            )?,
            BadToken::ControlCharUser => {
                hs256(json!({ "sub": format!("{user}\u{7}"), "exp": now + 3600 }))?
            }
            BadToken::EmptyUser => hs256(json!({ "sub": "", "exp": now + 3600 }))?,
            BadToken::TruncatedSignature => {
                let mut token = demo_jwt::token(DEMO_SECRET, user)?;
                token.truncate(token.len().saturating_sub(6));
                token
            }
            BadToken::Garbage => "this-is-not-a-jwt".to_owned(),
            BadToken::EmptyValue => String::new(),
            BadToken::NoToken => return Ok("jwt-auth".to_owned()),
            // Correctly signed, but past the 8 KiB limit.
            BadToken::TooLarge => hs256(json!({
                "sub": user, "exp": now + 3600, "pad": "x".repeat(9 * 1024),
            }))?,
        };
        Ok(format!("jwt-auth, jwt.{token}"))
    }
}

/// One attempt with a bad token.
pub(crate) struct BadAttempt {
    pub(crate) kind: BadToken,
    pub(crate) refused: bool,
    pub(crate) how: String,
}

/// Presents `kind` for `user` to node `node`: refused means HTTP 4xx before the upgrade,
/// or the upgrade then close 4400/4401/4403 with no `ready` and no
/// `message` frame.
pub(crate) async fn bad_token(
    dialer: Arc<Dialer>,
    node: usize,
    kind: BadToken,
    user: String,
    clock: Clock,
) -> BadAttempt {
    let attempt = |refused: bool, how: String| BadAttempt { kind, refused, how };
    let offer = match kind.offer(&user) {
        Ok(offer) => offer,
        Err(e) => return attempt(false, format!("harness: {e}")),
    };
    let mut ws = match dialer.handshake(node, &offer, "", None).await {
        Err(Refused::Http(status)) => {
            // 400/401/403 from the crate; 431 from hyper for a token too
            // large for its header limit. Anything else is not a refusal.
            let refused = matches!(status, 400 | 401 | 403 | 431);
            return attempt(refused, format!("HTTP {status}"));
        }
        Err(Refused::Other(e)) => return attempt(false, format!("handshake: {e}")),
        Ok(ws) => ws,
    };
    let mut record = Record::new(Identity {
        user: user.clone(),
        publisher: String::new(),
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    record.read_to_end(&mut ws, clock, deadline).await;
    let leaked = record.ready_us.is_some() || !record.ks.is_empty() || record.wrong_user > 0;
    match record.end {
        End::ServerClose(code @ (4400 | 4401 | 4403)) if !leaked => {
            attempt(true, format!("close {code}"))
        }
        end => attempt(
            false,
            format!("upgraded: {end:?}, {} frames", record.frames),
        ),
    }
}

/// One flood's outcome.
pub(crate) struct Flood {
    /// The close code, if the server sent one.
    pub(crate) code: Option<u16>,
    pub(crate) sent: u64,
    pub(crate) detail: String,
    /// Every frame it received, checked like a receiver's (nobody
    /// publishes to a flood's user: anything but `ready` is a finding).
    pub(crate) record: Option<Record>,
    /// When it started and stopped publishing (µs): its messages to
    /// `flood-sink` weigh on the server's history meanwhile.
    pub(crate) span_us: (u64, u64),
}

/// Most messages a flood sends: the server's burst allowance many times
/// over, yet bounded.
const FLOOD_MAX: u64 = 50_000;

/// Connects to node `node` as `user` and publishes to `flood-sink` as fast
/// as the socket takes it; the server must close with 4429.
pub(crate) async fn flood(dialer: Arc<Dialer>, node: usize, user: String, clock: Clock) -> Flood {
    let failed = |detail: String| Flood {
        code: None,
        sent: 0,
        detail,
        record: None,
        span_us: (clock.now_us(), clock.now_us()),
    };
    let mut ws = match dialer.connect(node, &user, None).await {
        Ok(ws) => ws,
        Err(e) => return failed(e.to_string()),
    };
    let mut record = Record::new(Identity {
        user: user.clone(),
        publisher: String::new(),
    });
    if let Err(e) = client::until_ready(&mut ws, &mut record, clock).await {
        return failed(e.to_string());
    }
    let (mut sink, mut stream) = ws.split();
    let started_us = clock.now_us();
    let sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let sent = Arc::clone(&sent);
        async move {
            let frame = json!({ "type": "publish", "to": "flood-sink", "payload": "flood" });
            let frame = frame.to_string();
            for n in 1..=FLOOD_MAX {
                if !client::feed(&mut sink, frame.clone()).await {
                    return;
                }
                sent.store(n, Ordering::Relaxed);
                if n % 64 == 0 && futures_util::SinkExt::flush(&mut sink).await.is_err() {
                    return;
                }
            }
            let _ = futures_util::SinkExt::flush(&mut sink).await;
        }
    });
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        for _ in 0..FLOOD_MAX {
            match stream.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return (frame.map(|f| u16::from(f.code)), String::new());
                }
                Some(Ok(message)) => {
                    let _ = record.observe(&message, clock);
                }
                Some(Err(e)) => return (None, e.to_string()),
                None => return (None, "end of stream".to_owned()),
            }
        }
        (None, "too many frames".to_owned())
    })
    .await;
    sender.abort();
    let (code, detail) = closed.unwrap_or((None, "no close within 15 s".to_owned()));
    Flood {
        code,
        sent: sent.load(Ordering::Relaxed),
        detail,
        record: Some(record),
        span_us: (started_us, clock.now_us()),
    }
}

/// Connects `user` to node `node` with a small receive buffer, reads up to `ready`, then
/// stops reading until `resume` while its user keeps receiving; then reads
/// what is left. The server must have closed it meanwhile (4409, or a
/// write timeout that leaves no room for a close frame).
pub(crate) async fn slow_reader(
    dialer: Arc<Dialer>,
    node: usize,
    id: Identity,
    resume: oneshot::Receiver<()>,
    clock: Clock,
    deadline: Instant,
) -> Result<Record, Error> {
    // A small kernel buffer, so the stall reaches the server in kilobytes
    // rather than megabytes, and client memory stays bounded.
    let mut ws = dialer.connect(node, &id.user, Some(4096)).await?;
    let mut record = Record::new(id);
    record.chaos = true;
    client::until_ready(&mut ws, &mut record, clock).await?;
    let _ = tokio::time::timeout_at(deadline.into(), resume).await;
    let drain = Instant::now() + Duration::from_secs(10);
    record
        .read_to_end(&mut ws, clock, drain.min(deadline))
        .await;
    Ok(record)
}

/// A step of the plan.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action {
    /// Chaos on a receiver slot; the slot reconnects after `reconnect`,
    /// resuming its session when `resume` says how.
    Slot {
        slot: usize,
        cmd: client::Cmd,
        reconnect: Duration,
        resume: Option<Ask>,
    },
    Slow(usize),
    Flood(usize),
    Bad(BadToken, usize),
}

/// Makes the resume choices' random sequence differ from the plan's.
const RESUME_SALT: u64 = 0x5245_5355_4D45;

/// What happens when, from the start of the churn.
pub(crate) struct Plan {
    pub(crate) steps: Vec<(Duration, Action)>,
    pub(crate) slow_readers: usize,
}

impl Plan {
    /// About half the slots get a chaos action (some twice), a tenth of
    /// the connection count in bad tokens (every kind at least twice), a
    /// few floods and slow readers. Slow readers start in the first 10%,
    /// so the server has most of the churn to close them, and the resumes
    /// after their few seconds of megabytes (see `phase::SLOW_FEED`) can be
    /// held to the history's window. A share
    /// `resume_share` of the slot actions reconnect with `since` (one in
    /// eight of those with a forged position); the choice has its own
    /// random sequence, so a seed's other steps do not depend on it.
    pub(crate) fn generate(
        seed: u64,
        connections: usize,
        users: usize,
        seconds: f64,
        resume_share: f64,
    ) -> Plan {
        let mut rng = Rng::new(seed);
        let mut resume_rng = Rng::new(seed ^ RESUME_SALT);
        let mut steps = Vec::new();
        let at = |rng: &mut Rng, from: f64, to: f64| {
            Duration::from_secs_f64(seconds * (from + (to - from) * rng.unit()))
        };
        for _ in 0..connections / 2 {
            let cmd = match rng.below(10) {
                0..4 => client::Cmd::Close,
                4..8 => client::Cmd::Reset,
                _ => client::Cmd::ResetMidFrame,
            };
            let slot = rng.below(connections);
            let reconnect = Duration::from_millis(rng.below(500) as u64);
            let resume = (resume_rng.unit() < resume_share).then(|| match resume_rng.below(16) {
                0 => Ask::ForeignEpoch,
                1 => Ask::Ahead,
                _ => Ask::Genuine,
            });
            steps.push((
                at(&mut rng, 0.05, 0.9),
                Action::Slot {
                    slot,
                    cmd,
                    reconnect,
                    resume,
                },
            ));
        }
        let bad = (2 * BadToken::ALL.len()).max(connections / 10);
        for kind in BadToken::ALL.iter().cycle().take(bad) {
            let user = rng.below(users);
            steps.push((at(&mut rng, 0.05, 0.95), Action::Bad(*kind, user)));
        }
        for n in 0..(connections / 400).max(2) {
            steps.push((at(&mut rng, 0.1, 0.8), Action::Flood(n)));
        }
        // One publisher serves every slow reader's user: 5 of them at 50
        // messages a second stay within its 250.
        let slow_readers = (connections / 400).clamp(2, 5);
        for n in 0..slow_readers {
            steps.push((at(&mut rng, 0.02, 0.1), Action::Slow(n)));
        }
        steps.sort_by_key(|(at, _)| *at);
        Plan {
            steps,
            slow_readers,
        }
    }
}
