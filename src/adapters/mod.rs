//! Adapters for WebSocket stacks, each behind its own feature. Each is a page
//! of glue over [`upgrade`](crate::upgrade): build a
//! [`HandshakeRequest`](crate::auth::HandshakeRequest), apply the
//! [`Decision`](crate::upgrade::Decision), wrap the socket as a
//! [`Transport`](crate::transport::Transport). The socket side is shared by
//! all three ([`StackTransport`]), the HTTP side by axum and warp.
//!
//! # The deadline on the upgrade request
//!
//! [`HubConfig::upgrade_timeout`](crate::config::HubConfig::upgrade_timeout)
//! (10 s) bounds how long a client may take to send its upgrade request (the
//! HTTP head), so that clients sending a byte at a time, or nothing
//! (slowloris), cannot hold sockets indefinitely. One way per stack:
//!
//! | stack | how |
//! |---|---|
//! | tokio-tungstenite | [`tungstenite::serve`] enforces it itself |
//! | axum | serve the router with [`adapters::axum::serve`](fn@axum::serve) and [`ServeConfig::from(hub.config())`](ServeConfig), not with axum's own `axum::serve` |
//! | warp | serve the filter with [`adapters::warp::serve`](fn@warp::serve) and [`ServeConfig::from(hub.config())`](ServeConfig), not with warp's own `warp::serve` |
//!
//! `axum::serve` and `warp::serve` run hyper without a timer, and hyper
//! enforces no header read timeout without one. Serving hyper yourself (for
//! TLS, say)? Use `hyper::server::conn::http1::Builder` with
//! `.timer(hyper_util::rt::TokioTimer::new())` and
//! `.header_read_timeout(deadline)`, not hyper-util's `auto::Builder`: with
//! upgrades enabled it first reads the connection to tell HTTP/1 from
//! HTTP/2, with no deadline, so a silent client is never timed out.
//!
//! # Header values
//!
//! Every adapter reads request header values the same way: as UTF-8. A
//! value that is not UTF-8 refuses the upgrade with 400 `upgrade_invalid`,
//! before authentication.
//!
//! Why UTF-8 and not visible ASCII only: HTTP allows bytes above 0x7F in a
//! value (obs-text, RFC 9110 section 5.5), and browsers do send them, for
//! example a cookie set by the page's script with non-ASCII text goes out
//! as raw UTF-8. Refusing every non-ASCII value would refuse those browsers'
//! upgrades over a header the crate never reads. The values the crate
//! interprets itself (`Connection` and `Upgrade` tokens, the
//! `Sec-WebSocket-*` headers, a JWT) are matched against ASCII grammars, so
//! non-ASCII text there never passes: the upgrade is refused or fails
//! authentication, as before.
//!
//! Why not skip or repair values that are not UTF-8: an
//! [`Authenticator`](crate::auth::Authenticator) sees every header, and one
//! that checks, say, `Origin` must never see a header dropped or altered.
//! Refusing is the only answer that cannot change what a policy decides.

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(any(feature = "axum", feature = "warp"))]
mod http;
#[cfg(any(feature = "axum", feature = "warp"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "axum", feature = "warp"))))]
pub use http::ServeConfig;
#[cfg(feature = "tungstenite")]
#[cfg_attr(docsrs, doc(cfg(feature = "tungstenite")))]
pub mod tungstenite;
#[cfg(feature = "warp")]
#[cfg_attr(docsrs, doc(cfg(feature = "warp")))]
pub mod warp;

#[cfg(any(feature = "axum", feature = "warp", feature = "tungstenite"))]
mod stack;
#[cfg(any(feature = "axum", feature = "warp", feature = "tungstenite"))]
use stack::sealed;
#[cfg(any(feature = "axum", feature = "warp", feature = "tungstenite"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "axum", feature = "warp", feature = "tungstenite")))
)]
pub use stack::{Stack, StackSink, StackStream, StackTransport};

use crate::close::{CloseCode, CloseFrame, CloseReason};
use crate::upgrade::Refusal;

/// A request header value as every adapter reads it: UTF-8, or the upgrade
/// is refused with 400 `upgrade_invalid` (see the module docs for why).
fn header_value(value: &[u8]) -> Result<&str, Refusal> {
    std::str::from_utf8(value).map_err(|_| Refusal::upgrade_invalid())
}

/// A peer's close frame as the core sees it: `None` when the code is not
/// one a peer may send or the reason is not printable ASCII (it is the
/// peer's text, so it is not trusted into logs either way).
fn peer_close(code: u16, reason: &str) -> Option<CloseFrame> {
    let code = CloseCode::new(code)?;
    let reason = CloseReason::new(reason.to_owned()).or_else(|| CloseReason::new(""))?;
    Some(CloseFrame::new(code, reason))
}
