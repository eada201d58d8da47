//! [`HandshakeRequest`]: a framework-free view of a WebSocket upgrade request.

use std::fmt;
use std::net::SocketAddr;

use super::AuthError;
use super::extract::percent_decode;
use crate::stream::{EPOCH_MAX_LEN, Position, SinceError};

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

    /// Where the client asks to resume its user's stream: the query
    /// parameter `since=<epoch>:<offset>`, parsed with
    /// [`Position::parse_since`]. `Ok(None)` when the query has no `since`.
    ///
    /// The parameter is the one whose name is exactly `since` once
    /// percent-decoded (`%73ince` is it, `Since` is not). Its value is
    /// percent-decoded before it is parsed; a `+` stays a `+` (and, like
    /// any sign, is refused in the offset).
    ///
    /// Every adapter reads it before admission and authentication: a
    /// malformed `since` refuses the upgrade with 400 `since_invalid`
    /// ([`upgrade::decide`](crate::upgrade::decide)), or closes an
    /// upgraded connection with 4400 `since_invalid`
    /// ([`Hub::serve_with_auth`](crate::Hub::serve_with_auth)).
    ///
    /// # Errors
    ///
    /// [`SinceError::Repeated`] when the query has `since` more than once,
    /// [`SinceError::TooLong`] when the encoded value is longer than any
    /// valid one could be (checked before decoding),
    /// [`SinceError::BadEncoding`] when the value has a `%` not followed by
    /// two hex digits or decodes to bytes that are not UTF-8, and the
    /// errors of [`Position::parse_since`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::auth::HandshakeRequest;
    /// use ws_lifecycle::stream::SinceError;
    ///
    /// let request = HandshakeRequest::builder()
    ///     .query("room=1&since=01JDZ4Q7%3A42")
    ///     .build()?;
    /// let since = request.since()?.expect("the query has a since");
    /// assert_eq!((since.epoch.as_str(), since.offset), ("01JDZ4Q7", 42));
    ///
    /// let repeated = HandshakeRequest::builder().query("since=e:1&since=e:2").build()?;
    /// assert_eq!(repeated.since(), Err(SinceError::Repeated));
    ///
    /// assert_eq!(HandshakeRequest::builder().build()?.since(), Ok(None));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn since(&self) -> Result<Option<Position>, SinceError> {
        let Some(query) = self.query() else {
            return Ok(None);
        };
        let mut found = None;
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(name) != b"since" {
                continue;
            }
            if found.is_some() {
                return Err(SinceError::Repeated);
            }
            found = Some(value);
        }
        let Some(value) = found else {
            return Ok(None);
        };
        if value.len() > MAX_SINCE_ENCODED {
            return Err(SinceError::TooLong);
        }
        if !escapes_are_well_formed(value) {
            return Err(SinceError::BadEncoding);
        }
        let decoded =
            String::from_utf8(percent_decode(value)).map_err(|_| SinceError::BadEncoding)?;
        Position::parse_since(&decoded).map(Some)
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

/// Longest encoded `since` value worth decoding: the longest valid value
/// (a 64-character epoch, `:`, the 20 digits of `u64::MAX`) with every
/// byte percent-encoded.
const MAX_SINCE_ENCODED: usize = 3 * (EPOCH_MAX_LEN + 1 + 20);

/// Whether every `%` in `text` starts an escape: `%` and two hex digits.
fn escapes_are_well_formed(text: &str) -> bool {
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_hexdigit());
            if !(hex(bytes.next()) && hex(bytes.next())) {
                return false;
            }
        }
    }
    true
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

    fn since_of(query: &str) -> Result<Option<Position>, SinceError> {
        HandshakeRequest::builder()
            .query(query)
            .build()
            .unwrap_or_default()
            .since()
    }

    #[test]
    fn since_is_read_from_the_query_and_percent_decoded() {
        let at = |epoch: &str, offset| {
            Ok(Some(Position {
                epoch: crate::stream::Epoch::new(epoch).unwrap(),
                offset,
            }))
        };
        assert_eq!(HandshakeRequest::default().since(), Ok(None));
        for query in [
            "",
            "room=1",
            "sinc=e:1",
            "since_=e:1",
            "Since=e:1",
            "xsince=e:1",
            "&&",
        ] {
            assert_eq!(since_of(query), Ok(None), "{query:?}");
        }
        assert_eq!(since_of("since=e:0"), at("e", 0));
        assert_eq!(since_of("room=1&since=01JDZ4Q7:42&x"), at("01JDZ4Q7", 42));
        // The name and the value are percent-decoded, either case.
        assert_eq!(since_of("%73ince=e%3a7"), at("e", 7));
        assert_eq!(since_of("since=%65%2D_:%31"), at("e-_", 1));
        let max = format!("since={}:{}", "a".repeat(64), u64::MAX);
        assert_eq!(
            since_of(&max).map(|p| p.map(|p| p.offset)),
            Ok(Some(u64::MAX))
        );
    }

    #[test]
    fn a_malformed_since_says_why() {
        let long_epoch = format!("since={}:1", "a".repeat(65));
        let huge = format!("since={}", "%41".repeat(200));
        for (query, error) in [
            ("since", SinceError::NoSeparator),
            ("since=", SinceError::NoSeparator),
            ("since=abc", SinceError::NoSeparator),
            ("since=:1", SinceError::BadEpoch),
            ("since=e:-1", SinceError::BadOffset),
            ("since=e:%2B1", SinceError::BadOffset),
            ("since=e:+1", SinceError::BadOffset),
            ("since=e:%201", SinceError::BadOffset),
            ("since=e:1:2", SinceError::BadOffset),
            ("since=e:18446744073709551616", SinceError::OffsetOverflow),
            (&long_epoch, SinceError::BadEpoch),
            ("since=e:1&since=e:2", SinceError::Repeated),
            ("since=e:1&%73ince=e:1", SinceError::Repeated),
            ("since=e:1&since", SinceError::Repeated),
            ("since=%ZZ", SinceError::BadEncoding),
            ("since=e:1%", SinceError::BadEncoding),
            ("since=e:1%4", SinceError::BadEncoding),
            ("since=%FF:1", SinceError::BadEncoding),
            ("since=%C3:1", SinceError::BadEncoding),
            (&huge, SinceError::TooLong),
        ] {
            assert_eq!(since_of(query), Err(error), "{query:?}");
        }
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
