//! Adapters for WebSocket stacks, each behind its own feature. Each is a page
//! of glue over [`upgrade`](crate::upgrade): build a
//! [`HandshakeRequest`](crate::auth::HandshakeRequest), apply the
//! [`Decision`](crate::upgrade::Decision), wrap the socket as a
//! [`Transport`](crate::transport::Transport).

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(feature = "tungstenite")]
#[cfg_attr(docsrs, doc(cfg(feature = "tungstenite")))]
pub mod tungstenite;
#[cfg(feature = "warp")]
#[cfg_attr(docsrs, doc(cfg(feature = "warp")))]
pub mod warp;

use crate::close::{CloseCode, CloseFrame, CloseReason};

/// A peer's close frame as the core sees it: `None` when the code is not
/// one a peer may send or the reason is not printable ASCII (it is the
/// peer's text, so it is not trusted into logs either way).
fn peer_close(code: u16, reason: &str) -> Option<CloseFrame> {
    let code = CloseCode::new(code)?;
    let reason = CloseReason::new(reason.to_owned()).or_else(|| CloseReason::new(""))?;
    Some(CloseFrame::new(code, reason))
}
