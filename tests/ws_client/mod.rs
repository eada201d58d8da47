//! A tokio-tungstenite test client for the adapter tests: real TCP on
//! loopback, the handshake's outcome made easy to assert.

#![allow(dead_code, unreachable_pub, clippy::large_enum_variant)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error, Message};

/// How a handshake ended.
#[derive(Debug)]
pub enum Outcome {
    Upgraded(Connected),
    Refused {
        status: u16,
        www_authenticate: Option<String>,
        body: String,
    },
    Failed(String),
}

#[derive(Debug)]
pub struct Connected {
    pub client: Client,
    /// The subprotocol the server echoed.
    pub protocol: Option<String>,
}

#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<TcpStream>,
}

/// Opens `ws://addr/ws` with extra request headers.
pub async fn connect(addr: SocketAddr, headers: &[(&str, &str)]) -> Outcome {
    let mut request = match format!("ws://{addr}/ws").into_client_request() {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            // From bytes: a value may carry UTF-8 (obs-text to HTTP).
            HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            return Outcome::Failed(format!("bad header {name}"));
        };
        request.headers_mut().append(name, value);
    }
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Outcome::Upgraded(Connected {
                client: Client { ws },
                protocol,
            })
        }
        Err(Error::Http(response)) => Outcome::Refused {
            status: response.status().as_u16(),
            www_authenticate: response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        },
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Sends `request` verbatim and returns the response's status code.
pub async fn raw_status(addr: SocketAddr, request: impl AsRef<[u8]>) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_ref()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    status_of(&head)
}

fn status_of(head: &[u8]) -> u16 {
    String::from_utf8_lossy(head)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sends `request` verbatim and returns the response's status code and
/// body (read to its `content-length`; empty without one).
pub async fn raw_response(addr: SocketAddr, request: impl AsRef<[u8]>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_ref()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let framing = |answer: &Vec<u8>| {
        let end = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        Some((end, length))
    };
    let (end, length) = loop {
        if let Some((end, length)) = framing(&answer)
            && answer.len() >= end + length
        {
            break (end, length);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break framing(&answer).map_or((answer.len(), 0), |(end, _)| (end, answer.len() - end));
        }
        answer.extend_from_slice(&buf[..n]);
    };
    let status = status_of(&answer[..end]);
    let body = String::from_utf8_lossy(&answer[end..end + length]).into_owned();
    (status, body)
}

impl Client {
    async fn next(&mut self) -> Option<Message> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no frame within 10 s")?;
            match message {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(message) => return Some(message),
                Err(_) => return None,
            }
        }
    }

    /// The next text frame, parsed.
    pub async fn next_json(&mut self) -> Value {
        match self.next().await {
            Some(Message::Text(text)) => serde_json::from_str(text.as_str()).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads to the close frame: its code and reason.
    pub async fn next_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.next().await? {
                Message::Close(frame) => {
                    return frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                }
                Message::Text(_) | Message::Binary(_) => continue,
                _ => continue,
            }
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.ws.send(Message::text(text)).await
    }

    /// Sends one final text frame with `payload` as it is, UTF-8 or not.
    pub async fn send_raw_text(&mut self, payload: &'static [u8]) {
        let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
        self.ws.send(Message::Frame(frame)).await.unwrap();
    }

    /// A clean close: our close frame, then the server's reply.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
        while let Some(Ok(_)) = self.ws.next().await {}
    }
}
