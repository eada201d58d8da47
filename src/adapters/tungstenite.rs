//! The tokio-tungstenite adapter, for servers without a framework: hand
//! [`serve`] any accepted stream (`TcpStream`, a TLS stream, …).
//!
//! tungstenite's handshake callback is synchronous while an
//! [`Authenticator`] is async, so the adapter reads the request head itself
//! (at most [`MAX_HEAD`] bytes, within
//! [`HubConfig::upgrade_timeout`](crate::config::HubConfig::upgrade_timeout)),
//! decides with [`upgrade::decide`], and then either writes the refusal or
//! replays the head into tungstenite's handshake.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ws_lifecycle::adapters::tungstenite;
//! use ws_lifecycle::auth::JwtAuthenticator;
//! use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound, close::CloseFrame};
//!
//! struct App;
//! impl Handler for App {
//!     async fn on_message(&self, _: &ConnectionHandle, _: Inbound) -> Result<(), CloseFrame> {
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new();
//! let auth = JwtAuthenticator::builder()
//!     .hs256(std::env::var("JWT_SECRET")?) // 32 bytes or more
//!     .issuer("https://auth.example")
//!     .audience("chat")
//!     .build()?;
//! let auth = Arc::new(auth);
//! let app = Arc::new(App);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (stream, peer) = listener.accept().await?;
//!     let (hub, auth, app) = (hub.clone(), auth.clone(), app.clone());
//!     tokio::spawn(async move { tungstenite::serve(stream, Some(peer), &hub, &*auth, &*app).await });
//! }
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

use super::{StackTransport, sealed};
use crate::auth::{Authenticator, HandshakeRequest};
use crate::connection::Adapter;
use crate::transport::{Message, Text, TransportError};
use crate::upgrade::{self, Decision, Refusal};
use crate::{CloseReport, Handler, Hub};

/// The largest request head read before the upgrade, in bytes: room for an
/// 8 KiB token plus ordinary headers.
pub const MAX_HEAD: usize = 16 * 1024;

/// An upgrade that did not become a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request was refused with this HTTP response (already written).
    #[error("upgrade refused with {}: {}", .0.status, .0.code)]
    Refused(Refusal),
    /// The request head did not arrive within the upgrade deadline.
    #[error("the upgrade request did not arrive in time")]
    Timeout,
    /// The socket failed.
    #[error("socket error during the upgrade: {0}")]
    Io(#[from] io::Error),
    /// tungstenite refused the handshake after the policy accepted it.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
}

/// Upgrades `stream` (checking the handshake and authenticating with
/// `authenticator`) and serves the connection with `handler` until it ends.
///
/// # Errors
///
/// [`UpgradeError`] when no connection was served: a refusal (the HTTP
/// response has been written), a timeout, or a socket failure.
pub async fn serve<S, A, H>(
    mut stream: S,
    peer_addr: Option<SocketAddr>,
    hub: &Hub,
    authenticator: &A,
    handler: &H,
) -> Result<CloseReport, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Authenticator,
    H: Handler,
{
    let deadline = hub.config().upgrade_timeout;
    let head = match tokio::time::timeout(deadline, read_head(&mut stream)).await {
        Err(_) => return Err(UpgradeError::Timeout),
        Ok(Err(UpgradeError::Refused(refusal))) => {
            write_refusal(&mut stream, &refusal).await?;
            return Err(UpgradeError::Refused(refusal));
        }
        Ok(head) => head?,
    };
    let (method, request) = match parse_head(&head, peer_addr) {
        Ok(parsed) => parsed,
        Err(refusal) => {
            write_refusal(&mut stream, &refusal).await?;
            return Err(UpgradeError::Refused(refusal));
        }
    };
    let decision =
        upgrade::decide_via(hub, &method, &request, authenticator, Adapter::Tungstenite).await;
    let admitted = match decision {
        Decision::Refuse(refusal) => {
            write_refusal(&mut stream, &refusal).await?;
            return Err(UpgradeError::Refused(refusal));
        }
        Decision::Upgrade(admitted) => admitted,
    };
    let subprotocol = admitted.subprotocol().map(str::to_owned);
    let max = hub.config().max_message_size;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(hub.config().read_buffer_size)
        .write_buffer_size(hub.config().write_buffer_size);
    // tungstenite's callback signature fixes the (large) error type.
    #[allow(clippy::result_large_err)]
    let echo = |_: &Request, mut response: Response| {
        if let Some(value) = subprotocol.as_deref().and_then(|p| p.parse().ok()) {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", value);
        }
        Ok(response)
    };
    let replay = Replay {
        head,
        read: 0,
        inner: stream,
    };
    let socket = tokio_tungstenite::accept_hdr_async_with_config(replay, echo, Some(config))
        .await
        .map_err(|e| UpgradeError::Handshake(e.to_string()))?;
    let transport = StackTransport::new(socket, max);
    Ok(admitted
        .serve(hub, transport, &request, authenticator, handler)
        .await)
}

/// Reads until the request head is complete (`\r\n\r\n`), at most
/// [`MAX_HEAD`] bytes. Anything read past the head stays in the buffer and
/// is replayed to tungstenite with it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, UpgradeError> {
    let mut head = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let mut scanned: usize = 0;
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(UpgradeError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        // Resume the search a little before the new bytes, so a terminator
        // split across reads is found.
        let from = scanned.saturating_sub(3);
        if head
            .get(from..)
            .is_some_and(|tail| tail.windows(4).any(|w| w == b"\r\n\r\n"))
        {
            return Ok(head);
        }
        scanned = head.len();
        if head.len() >= MAX_HEAD {
            return Err(UpgradeError::Refused(Refusal::too_large()));
        }
    }
}

fn parse_head(
    head: &[u8],
    peer_addr: Option<SocketAddr>,
) -> Result<(String, HandshakeRequest), Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Refusal::upgrade_invalid()),
    }
    let method = parsed.method.unwrap_or_default().to_owned();
    let mut builder = HandshakeRequest::builder();
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, super::header_value(header.value)?);
    }
    if let Some((_, query)) = parsed.path.unwrap_or_default().split_once('?') {
        builder = builder.query(query);
    }
    if let Some(addr) = peer_addr {
        builder = builder.peer_addr(addr);
    }
    let request = builder.build().map_err(|e| Refusal::from(&e))?;
    Ok((method, request))
}

async fn write_refusal<S: AsyncWrite + Unpin>(stream: &mut S, refusal: &Refusal) -> io::Result<()> {
    let body = refusal.body();
    let mut response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        refusal.status,
        reason_phrase(refusal.status),
        body.len()
    );
    for (name, value) in &refusal.headers {
        response.push_str(name);
        response.push_str(": ");
        response.push_str(value);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    response.push_str(&body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// The stream with the already-read request head put back in front.
struct Replay<S> {
    head: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.head.get(this.read..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> sealed::Codec for WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Message = tungstenite::Message;
    type StackError = tungstenite::Error;

    fn encode(message: Message) -> tungstenite::Message {
        use tungstenite::Message as Ws;
        match message {
            Message::Text(text) => Ws::Text(text.into_tungstenite()),
            Message::Binary(bytes) => Ws::Binary(bytes),
            Message::Ping(bytes) => Ws::Ping(bytes),
            Message::Pong(bytes) => Ws::Pong(bytes),
            Message::Close(frame) => {
                Ws::Close(frame.map(|frame| tungstenite::protocol::CloseFrame {
                    code: WsCloseCode::from(frame.code.as_u16()),
                    reason: frame.reason.as_str().into(),
                }))
            }
        }
    }

    fn decode(message: tungstenite::Message) -> Result<Option<Message>, TransportError> {
        use tungstenite::Message as Ws;
        Ok(Some(match message {
            Ws::Text(text) => Message::Text(Text::from_tungstenite(text)),
            Ws::Binary(bytes) => Message::Binary(bytes),
            Ws::Ping(bytes) => Message::Ping(bytes),
            Ws::Pong(bytes) => Message::Pong(bytes),
            Ws::Close(frame) => Message::Close(
                frame.and_then(|f| super::peer_close(u16::from(f.code), f.reason.as_str())),
            ),
            // Raw frames are never yielded when reading.
            Ws::Frame(_) => return Ok(None),
        }))
    }

    fn error(error: tungstenite::Error) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(error)
    }
}
