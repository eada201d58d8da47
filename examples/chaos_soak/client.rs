//! Client connections: the dialer, valid tokens, and the record every frame a
//! connection receives is checked into as it arrives.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::demo_jwt::{self, DEMO_SECRET};
use crate::stream::{Handoff, StreamView};

pub(crate) type Ws = WebSocketStream<TcpStream>;
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for the server's side of a close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most frames one wait reads (ready, or the rest before a close): a
/// bound for the loop, far above what can be in flight.
const MAX_FRAMES: usize = 100_000;

/// Microseconds since the soak started: one clock for send and receive
/// times, which live in one process.
#[derive(Clone, Copy)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock(Instant::now())
    }

    pub(crate) fn now_us(self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Why a handshake did not produce a socket.
pub(crate) enum Refused {
    Http(u16),
    Other(String),
}

/// Opens client sockets to the nodes (one, or each node of a cluster), from
/// loopback source addresses of this run's own (as `examples/loadgen.rs`):
/// 127.<run>.<k>.2, `run` from the process id, 20,000 connections per
/// address, so a run never meets the TIME_WAIT sockets of an earlier one.
pub(crate) struct Dialer {
    /// Each node's address and WebSocket URL.
    nodes: Vec<(SocketAddr, String)>,
    run: u8,
    dialed: AtomicU64,
    /// 503 `server_busy` answers retried (admission control at work).
    pub(crate) busy_retries: AtomicU64,
}

impl Dialer {
    /// A dialer to the nodes at `addrs` (at least one).
    pub(crate) fn new(addrs: &[SocketAddr]) -> Dialer {
        Dialer {
            nodes: addrs
                .iter()
                .map(|&addr| (addr, format!("ws://{addr}/ws")))
                .collect(),
            run: u8::try_from(std::process::id() % 250 + 1).unwrap_or(1),
            dialed: AtomicU64::new(0),
            busy_retries: AtomicU64::new(0),
        }
    }

    /// Node `node`'s address and URL (node numbers wrap around).
    fn node(&self, node: usize) -> std::io::Result<&(SocketAddr, String)> {
        self.nodes
            .get(node % self.nodes.len().max(1))
            .ok_or_else(|| std::io::Error::other("no node to dial"))
    }

    async fn tcp(&self, node: usize, recv_buffer: Option<u32>) -> std::io::Result<TcpStream> {
        let addr = self.node(node)?.0;
        let n = self.dialed.fetch_add(1, Ordering::Relaxed);
        let block = u8::try_from(n / 20_000).unwrap_or(u8::MAX);
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, self.run, block, 2)),
            0,
        ))?;
        socket.set_nodelay(true)?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        socket.connect(addr).await
    }

    /// One handshake with node `node` offering `offer` as
    /// `Sec-WebSocket-Protocol`, with `query` (empty, or `?…`) after the
    /// path.
    async fn handshake_once(
        &self,
        node: usize,
        offer: &str,
        query: &str,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, Refused> {
        let attempt = async {
            let other = |e: &dyn std::fmt::Display| Refused::Other(e.to_string());
            let url = format!("{}{query}", self.node(node).map_err(|e| other(&e))?.1);
            let stream = self.tcp(node, recv_buffer).await.map_err(|e| other(&e))?;
            let mut request = url.as_str().into_client_request().map_err(|e| other(&e))?;
            let offer = HeaderValue::from_str(offer).map_err(|e| other(&e))?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", offer);
            match tokio_tungstenite::client_async(request, stream).await {
                Ok((ws, _)) => Ok(ws),
                Err(tungstenite::Error::Http(response)) => {
                    Err(Refused::Http(response.status().as_u16()))
                }
                Err(e) => Err(other(&e)),
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(Refused::Other("handshake timed out".into())))
    }

    /// A handshake with node `node`, retrying the server's 503
    /// `server_busy` (its admission control tells clients to come back) for
    /// up to 30 s.
    pub(crate) async fn handshake(
        &self,
        node: usize,
        offer: &str,
        query: &str,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, Refused> {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            match self.handshake_once(node, offer, query, recv_buffer).await {
                Err(Refused::Http(503)) if Instant::now() < give_up => {
                    self.busy_retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Connects to node `node` as `user` with a valid token.
    pub(crate) async fn connect(
        &self,
        node: usize,
        user: &str,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, Error> {
        self.connect_with(node, user, "", recv_buffer).await
    }

    /// Connects to node `node` as `user` with a valid token, with `query`
    /// (empty, or `?since=…`) on the URL.
    pub(crate) async fn connect_with(
        &self,
        node: usize,
        user: &str,
        query: &str,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, Error> {
        let offer = format!("jwt-auth, jwt.{}", demo_jwt::token(DEMO_SECRET, user)?);
        match self.handshake(node, &offer, query, recv_buffer).await {
            Ok(ws) => Ok(ws),
            Err(Refused::Http(status)) => Err(format!("{user}: HTTP {status}").into()),
            Err(Refused::Other(e)) => Err(format!("{user}: {e}").into()),
        }
    }
}

/// A publish payload: `to|k|id|sent_us`, then padding. `k` counts the
/// messages to `to` (1, 2, 3, … per user), `id` is unique in the run.
pub(crate) fn payload(to: &str, k: u64, id: &str, sent_us: u64, pad: usize) -> String {
    let mut text = format!("{to}|{k}|{id}|{sent_us}|");
    text.extend(std::iter::repeat_n('x', pad));
    text
}

/// Who a connection is and who alone may publish to it.
#[derive(Clone)]
pub(crate) struct Identity {
    pub(crate) user: String,
    pub(crate) publisher: String,
}

/// What the harness polls while a connection runs.
#[derive(Default)]
pub(crate) struct Progress {
    /// The last per-user counter received.
    pub(crate) last_k: AtomicU64,
    /// When `ready` arrived (0: not yet).
    pub(crate) ready_us: AtomicU64,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Still open (a slow reader not drained yet).
    Open,
    /// We closed it with a close frame.
    ClosedByUs,
    /// We reset it (RST, no close frame).
    ResetByUs,
    /// The server sent a close frame with this code.
    ServerClose(u16),
    /// The server closed the socket, or it failed, with no close frame.
    Gone(String),
    /// The harness's own deadline ran out.
    Deadline,
}

/// Everything one connection received, checked as it arrived.
pub(crate) struct Record {
    pub(crate) id: Identity,
    pub(crate) progress: Arc<Progress>,
    pub(crate) ready_us: Option<u64>,
    pub(crate) frames: u64,
    last_seq: u64,
    /// Frames whose `seq` was not the previous one plus 1 (the first: 1),
    /// or which had none, or were not JSON text.
    pub(crate) seq_errors: u64,
    /// `ready` naming another user, or a `message` from the wrong
    /// publisher or addressed to another user.
    pub(crate) wrong_user: u64,
    /// Per-user counters not above the previous one (a repeat or a
    /// reorder).
    pub(crate) order_errors: u64,
    /// Per-user counters past the previous one plus 1: the first and last
    /// counter skipped (a hole; excused only by a `gap` frame, and only
    /// under `--sigstop-redis`).
    pub(crate) holes: Vec<(u64, u64)>,
    /// Frames of a type the soak never asks for (`gap` frames aside).
    pub(crate) unexpected: u64,
    /// When each `gap` frame arrived (µs): the backplane telling the
    /// connection it may have missed remote events. Expected only of a
    /// cluster; `report` counts them as unexpected on a single node.
    pub(crate) gaps_us: Vec<u64>,
    /// Its user's publisher publishes through another node.
    pub(crate) cross_node: bool,
    /// The per-user counters received, in arrival order.
    pub(crate) ks: Vec<u64>,
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) end: End,
    /// Chosen for a chaos action (so not "stayed up").
    pub(crate) chaos: bool,
    /// Its user's stream as it saw it: offsets, the resume it asked for.
    pub(crate) stream: StreamView,
    /// A receiver's slot, and the connection's serial number in the phase:
    /// a slot's successive connections are one session.
    pub(crate) slot: Option<(usize, u64)>,
}

impl Record {
    pub(crate) fn new(id: Identity) -> Record {
        Record {
            id,
            progress: Arc::new(Progress::default()),
            ready_us: None,
            frames: 0,
            last_seq: 0,
            seq_errors: 0,
            wrong_user: 0,
            order_errors: 0,
            holes: Vec::new(),
            unexpected: 0,
            gaps_us: Vec::new(),
            cross_node: false,
            ks: Vec::new(),
            latencies_us: Vec::new(),
            end: End::Open,
            chaos: false,
            stream: StreamView::default(),
            slot: None,
        }
    }

    /// Checks one message; returns how the connection ended if it did.
    pub(crate) fn observe(&mut self, message: &Message, clock: Clock) -> Option<End> {
        match message {
            Message::Text(text) => self.frame(text.as_str(), clock),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Binary(_) => self.seq_errors += 1,
            Message::Close(frame) => {
                let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                return Some(End::ServerClose(code));
            }
        }
        None
    }

    fn frame(&mut self, text: &str, clock: Clock) {
        let now = clock.now_us();
        self.frames += 1;
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            self.seq_errors += 1;
            return;
        };
        match frame.get("seq").and_then(Value::as_u64) {
            Some(seq) if seq == self.last_seq + 1 => self.last_seq = seq,
            Some(seq) => {
                self.seq_errors += 1;
                self.last_seq = seq;
            }
            None => self.seq_errors += 1,
        }
        match frame.get("type").and_then(Value::as_str) {
            Some("ready") => {
                if frame.get("user").and_then(Value::as_str) != Some(self.id.user.as_str()) {
                    self.wrong_user += 1;
                }
                if self.ready_us.is_none() {
                    self.ready_us = Some(now);
                    self.progress.ready_us.store(now.max(1), Ordering::Relaxed);
                }
                self.stream.on_ready(&frame);
                return;
            }
            Some("message") => self.message(&frame, now),
            Some("gap") => {
                self.gaps_us.push(now);
                self.stream.on_gap();
            }
            _ => self.unexpected += 1,
        }
        self.stream.on_frame(&frame);
    }

    fn message(&mut self, frame: &Value, now: u64) {
        let from = frame.get("from").and_then(Value::as_str);
        let payload = frame.get("payload").and_then(Value::as_str).unwrap_or("");
        let mut parts = payload.split('|');
        let to = parts.next();
        if from != Some(self.id.publisher.as_str()) || to != Some(self.id.user.as_str()) {
            self.wrong_user += 1;
            return;
        }
        let k = parts.next().and_then(|k| k.parse::<u64>().ok());
        let sent = parts.nth(1).and_then(|t| t.parse::<u64>().ok());
        let Some(k) = k else {
            self.order_errors += 1;
            return;
        };
        match self.ks.last() {
            Some(&last) if k <= last => self.order_errors += 1,
            Some(&last) if k > last + 1 => self.holes.push((last + 1, k - 1)),
            _ => {}
        }
        self.ks.push(k);
        self.progress.last_k.store(k, Ordering::Relaxed);
        if let Some(sent) = sent {
            self.latencies_us.push(now.saturating_sub(sent));
        }
    }

    /// Reads what the server still sends, checking it, until the stream
    /// ends or `deadline`.
    pub(crate) async fn read_to_end(&mut self, ws: &mut Ws, clock: Clock, deadline: Instant) {
        for _ in 0..MAX_FRAMES {
            let next = tokio::time::timeout_at(deadline.into(), ws.next()).await;
            match next {
                Err(_) => {
                    self.end = End::Deadline;
                    return;
                }
                Ok(Some(Ok(message))) => {
                    if let Some(end) = self.observe(&message, clock) {
                        self.end = end;
                        return;
                    }
                }
                Ok(Some(Err(e))) => {
                    self.end = End::Gone(e.to_string());
                    return;
                }
                Ok(None) => {
                    self.end = End::Gone("end of stream".into());
                    return;
                }
            }
        }
        self.end = End::Deadline;
    }
}

/// What the harness tells a receiving connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmd {
    /// The soak is over: close normally, not a chaos action.
    Finish,
    /// Chaos: a normal close (the slot reconnects).
    Close,
    /// Chaos: RST with no close frame.
    Reset,
    /// Chaos: half a frame header, then RST.
    ResetMidFrame,
}

/// Reads and checks frames until told otherwise, the server ends the
/// connection, or `deadline`; then hands the session's position to the
/// next connection of the slot (`handoff`) before acting on the command.
pub(crate) async fn receive(
    ws: Ws,
    mut record: Record,
    cmd: oneshot::Receiver<Cmd>,
    handoff: oneshot::Sender<Handoff>,
    clock: Clock,
    deadline: Instant,
) -> Record {
    let told = read_until_told(ws, &mut record, cmd, deadline, clock).await;
    // What the client processed ends here, also when the connection ended
    // on its own: it is what it would resume from.
    let _ = handoff.send(record.stream.hand_off(clock.now_us()));
    if let Some((ws, cmd)) = told {
        act(ws, &mut record, cmd, clock).await;
    }
    record
}

/// Reads and checks frames until a command (returned with the socket), the
/// end of the connection, or `deadline` (`None`, `record.end` set).
async fn read_until_told(
    mut ws: Ws,
    record: &mut Record,
    mut cmd: oneshot::Receiver<Cmd>,
    deadline: Instant,
    clock: Clock,
) -> Option<(Ws, Cmd)> {
    enum Step {
        Cmd(Cmd),
        Next(Option<Result<Message, tungstenite::Error>>),
        Deadline,
    }
    loop {
        let step = tokio::select! {
            // A dropped sender means the harness is gone: finish normally.
            cmd = &mut cmd => Step::Cmd(cmd.unwrap_or(Cmd::Finish)),
            next = ws.next() => Step::Next(next),
            () = tokio::time::sleep_until(deadline.into()) => Step::Deadline,
        };
        match step {
            Step::Cmd(cmd) => return Some((ws, cmd)),
            Step::Next(Some(Ok(message))) => {
                if let Some(end) = record.observe(&message, clock) {
                    record.end = end;
                    return None;
                }
            }
            Step::Next(Some(Err(e))) => {
                record.end = End::Gone(e.to_string());
                return None;
            }
            Step::Next(None) => {
                record.end = End::Gone("end of stream".into());
                return None;
            }
            Step::Deadline => {
                record.end = End::Deadline;
                return None;
            }
        }
    }
}

async fn act(mut ws: Ws, record: &mut Record, cmd: Cmd, clock: Clock) {
    record.chaos = cmd != Cmd::Finish;
    match cmd {
        Cmd::Finish | Cmd::Close => {
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
            // Frames the server wrote before it saw our close are checked
            // like any other.
            record.read_to_end(&mut ws, clock, deadline).await;
            // The server's answer to our close (no code, or 1000), or the
            // socket closing after it; any other code is the server's own.
            if matches!(record.end, End::ServerClose(1000 | 1005) | End::Gone(_)) {
                record.end = End::ClosedByUs;
            }
        }
        Cmd::Reset | Cmd::ResetMidFrame => {
            if cmd == Cmd::ResetMidFrame {
                // FIN + text opcode, masked, 16-bit length announced, only
                // one of its two bytes sent: the server holds a partial
                // frame header when the RST arrives.
                let partial = ws.get_mut().write_all(&[0x81, 0xFE, 0x01]);
                let _ = tokio::time::timeout(Duration::from_secs(1), partial).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = ws.get_ref().set_zero_linger();
            drop(ws);
            record.end = End::ResetByUs;
        }
    }
}

/// Reads frames (checking them) until `ready`, within 10 s.
pub(crate) async fn until_ready(
    ws: &mut Ws,
    record: &mut Record,
    clock: Clock,
) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..MAX_FRAMES {
        if record.ready_us.is_some() {
            return Ok(());
        }
        let next = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .map_err(|_| format!("{}: no ready frame within 10 s", record.id.user))?;
        match next {
            Some(Ok(message)) => {
                if let Some(end) = record.observe(&message, clock) {
                    record.end = end.clone();
                    return Err(format!("{}: closed before ready: {end:?}", record.id.user).into());
                }
            }
            Some(Err(e)) => return Err(format!("{}: {e}", record.id.user).into()),
            None => return Err(format!("{}: closed before ready", record.id.user).into()),
        }
    }
    Err("too many frames before ready".into())
}

/// Sends `text` frames through any sink, for callers holding a split half.
pub(crate) async fn feed<S>(sink: &mut S, text: String) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    sink.feed(Message::text(text)).await.is_ok()
}
