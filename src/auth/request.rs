//! [`HandshakeRequest`]: a framework-free view of a WebSocket upgrade request.

use std::fmt;
use std::net::SocketAddr;

use super::AuthError;

/// The parts of an upgrade request that authentication and routing need:
/// headers (every value of a repeated header, in order), the offered
/// subprotocols, the query string and the peer address. No framework types,
/// so one [`Authenticator`](super::Authenticator) serves every adapter.
///
/// Header names are matched case-insensitively. The offered subprotocols are
/// every `Sec-WebSocket-Protocol` line joined, split on commas and trimmed;
/// [`HandshakeRequestBuilder::build`] refuses a request whose entries break
/// the RFC 6455 token grammar.
///
/// `Debug` prints header names only: values may hold a token.
///
/// # Examples
///
/// ```
/// use ws_lifecycle::auth::HandshakeRequest;
///
/// let request = HandshakeRequest::builder()
///     .header("Sec-WebSocket-Protocol", "jwt-auth, jwt.abc")
///     .header("Origin", "https://app.example")
///     .build()?;
/// assert_eq!(request.subprotocols(), ["jwt-auth", "jwt.abc"]);
/// assert_eq!(request.origin(), Some("https://app.example"));
/// # Ok::<(), ws_lifecycle::auth::AuthError>(())
/// ```
#[derive(Clone, Default)]
pub struct HandshakeRequest {
    headers: Vec<(String, String)>,
    subprotocols: Vec<String>,
    query: Option<String>,
    peer_addr: Option<SocketAddr>,
}

impl fmt::Debug for HandshakeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeRequest")
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("subprotocols", &self.subprotocols.len())
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

impl HandshakeRequest {
    /// A builder; adapters fill it from their framework's request.
    pub fn builder() -> HandshakeRequestBuilder {
        HandshakeRequestBuilder::default()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in request order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Most subprotocols an upgrade may offer; more is refused with 400.
    /// A browser client offers two (`jwt-auth` and its `jwt.<token>`);
    /// 16 leaves room for versioned application protocols.
    pub const MAX_SUBPROTOCOLS: usize = 16;

    /// Most bytes all `Sec-WebSocket-Protocol` values of an upgrade may
    /// hold together; more is refused with 400. 12 KiB: the largest token
    /// accepted (8 KiB, checked on its own) plus room for the other entries.
    pub const MAX_SUBPROTOCOL_BYTES: usize = 12 * 1024;

    /// The offered subprotocols, in order.
    pub fn subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    /// The `Origin` header.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The raw query string (without `?`).
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The peer's address, when the adapter knows it.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// This request without its credentials and the WebSocket handshake's
    /// own headers: what a connection keeps for re-authentication (see
    /// [`Authenticator::reauthenticate`](super::Authenticator::reauthenticate)).
    /// No token stays in memory for the connection's life, and no
    /// subprotocol: nothing is echoed any more.
    pub(crate) fn without_credentials(&self) -> HandshakeRequest {
        let headers = self
            .headers
            .iter()
            .filter(|(name, _)| {
                !DROPPED_FOR_REAUTHENTICATION
                    .iter()
                    .any(|dropped| name.eq_ignore_ascii_case(dropped))
            })
            .cloned()
            .collect();
        HandshakeRequest {
            headers,
            subprotocols: Vec::new(),
            query: None,
            peer_addr: self.peer_addr,
        }
    }

    /// [`without_credentials`](Self::without_credentials), carrying `token`
    /// as `Authorization: Bearer <token>`: the request the default
    /// re-authentication decides on.
    pub(crate) fn for_reauthentication(&self, token: &str) -> HandshakeRequest {
        let mut request = self.without_credentials();
        request
            .headers
            .push(("authorization".to_owned(), format!("Bearer {token}")));
        request
    }
}

/// Headers a connection does not keep for re-authentication: the
/// credentials it was admitted with and the upgrade's mechanics.
const DROPPED_FOR_REAUTHENTICATION: [&str; 7] = [
    "authorization",
    "sec-websocket-protocol",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "connection",
    "upgrade",
];

/// Builds a [`HandshakeRequest`].
#[derive(Debug, Default)]
#[must_use]
pub struct HandshakeRequestBuilder {
    request: HandshakeRequest,
}

impl HandshakeRequestBuilder {
    /// Adds one header line. Repeated names keep every value.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the query string (without `?`).
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.request.query = Some(query.into());
        self
    }

    /// Sets the peer address.
    pub fn peer_addr(mut self, addr: SocketAddr) -> Self {
        self.request.peer_addr = Some(addr);
        self
    }

    /// Parses the offered subprotocols and returns the request.
    ///
    /// # Errors
    ///
    /// [`AuthError::ProtocolInvalid`] (400 before the upgrade) when a
    /// `Sec-WebSocket-Protocol` entry is empty or is not an RFC 6455 token
    /// (RFC 7230 `tchar`s only), or when the offer holds more than
    /// [`MAX_SUBPROTOCOLS`](HandshakeRequest::MAX_SUBPROTOCOLS) entries or
    /// [`MAX_SUBPROTOCOL_BYTES`](HandshakeRequest::MAX_SUBPROTOCOL_BYTES)
    /// bytes: checked while reading, before any entry is kept or any token
    /// parsed.
    pub fn build(mut self) -> Result<HandshakeRequest, AuthError> {
        let mut offered = Vec::new();
        let mut bytes = 0usize;
        for line in self.request.header_values("sec-websocket-protocol") {
            bytes = bytes.saturating_add(line.len());
            if bytes > HandshakeRequest::MAX_SUBPROTOCOL_BYTES {
                return Err(AuthError::ProtocolInvalid(
                    "the subprotocol offer is larger than the server accepts",
                ));
            }
            for entry in line.split(',') {
                let entry = entry.trim_matches([' ', '\t']);
                if entry.is_empty() || !entry.bytes().all(is_tchar) {
                    return Err(AuthError::ProtocolInvalid(
                        "an offered subprotocol is not an RFC 6455 token",
                    ));
                }
                if offered.len() == HandshakeRequest::MAX_SUBPROTOCOLS {
                    return Err(AuthError::ProtocolInvalid(
                        "more subprotocols offered than the server accepts",
                    ));
                }
                offered.push(entry.to_owned());
            }
        }
        self.request.subprotocols = offered;
        Ok(self.request)
    }
}

/// RFC 7230 `tchar`: the characters a subprotocol token may use.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocol_lines_are_joined_split_and_trimmed() {
        let request = HandshakeRequest::builder()
            .header("Sec-WebSocket-Protocol", " jwt-auth ,jwt.a.b")
            .header("sec-websocket-protocol", "chat")
            .build();
        assert_eq!(
            request.as_ref().map(HandshakeRequest::subprotocols),
            Ok(&[
                "jwt-auth".to_owned(),
                "jwt.a.b".to_owned(),
                "chat".to_owned()
            ][..])
        );
    }

    #[test]
    fn bad_subprotocol_grammar_is_malformed() {
        for bad in ["a,,b", "a b", "jwt.{x}", ""] {
            let request = HandshakeRequest::builder()
                .header("Sec-WebSocket-Protocol", bad)
                .build();
            assert!(
                matches!(request, Err(AuthError::ProtocolInvalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reauthentication_requests_carry_only_the_fresh_token() {
        let request = HandshakeRequest::builder()
            .header("Authorization", "Bearer old")
            .header("Sec-WebSocket-Protocol", "jwt-auth, jwt.old")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Origin", "https://app.example")
            .header("Cookie", "session=1")
            .query("access_token=old&room=1")
            .build()
            .unwrap_or_default();
        let reauth = request.for_reauthentication("fresh");
        assert_eq!(
            reauth.header_values("authorization").collect::<Vec<_>>(),
            ["Bearer fresh"]
        );
        assert!(reauth.subprotocols().is_empty());
        assert_eq!(reauth.header("sec-websocket-protocol"), None);
        assert_eq!(reauth.header("sec-websocket-key"), None);
        assert_eq!(reauth.query(), None);
        assert_eq!(reauth.origin(), Some("https://app.example"));
        assert_eq!(reauth.header("cookie"), Some("session=1"));
    }

    #[test]
    fn debug_hides_header_values() {
        let request = HandshakeRequest::builder()
            .header("Authorization", "Bearer secret-token")
            .build();
        let shown = format!("{request:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
    }
}
