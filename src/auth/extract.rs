//! Token extraction: one path for every client, in a documented order.
//!
//! 1. `Authorization: Bearer <token>` (scheme case-insensitive; one header).
//! 2. A subprotocol starting with a token-bearing prefix (`jwt.` or
//!    `jwt-auth.` by default) carrying the raw compact JWT or its
//!    base64url-no-pad encoding; raw is tried first, and a decoded value that
//!    is not a compact JWS is refused, not guessed. The marker (`jwt-auth`)
//!    must be offered too, because the server echoes the marker, never the
//!    token.
//! 3. The query parameter, only when enabled; otherwise a token there is
//!    refused (`token_in_query`), because query strings end up in logs.
//!    Names match percent-decoded and ASCII case-insensitively, however the
//!    client spelled them.
//! 4. The first message, only when enabled (handled by the hub after the
//!    upgrade, see [`Hub::serve_with_auth`](crate::Hub::serve_with_auth)).
//!
//! Ambiguity is an error, not a pick: two token-bearing subprotocols, two
//! `Authorization` headers, or a query token beside another token are
//! `credentials_ambiguous`. A header and a subprotocol token are both
//! verified and must name the same user.
//!
//! Every length is checked before any decoding.

use std::fmt;

use super::{AuthError, AuthFailure, HandshakeRequest};

/// Where a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    Header,
    /// A token-bearing subprotocol.
    Subprotocol,
    /// The query string.
    Query,
    /// The first message after the upgrade.
    FirstMessage,
}

/// A bearer token. `Debug` and `Display` print its length only, so it never
/// reaches a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token text. Handle with care: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// Which sources are read, and how.
///
/// ```
/// use ws_lifecycle::auth::TokenSources;
///
/// let mut sources = TokenSources::default();
/// // Phoenix-style clients: `base64url.bearer.myapp.<base64url token>`.
/// sources.subprotocol_prefixes.push("base64url.bearer.myapp.".into());
/// sources.query_param = Some("access_token".into());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenSources {
    /// Subprotocol prefixes that carry a token. Default: `jwt.`,
    /// `jwt-auth.`.
    pub subprotocol_prefixes: Vec<String>,
    /// The marker subprotocol a client offers beside its token, and the
    /// one the server echoes. Default: `jwt-auth`.
    pub marker: String,
    /// Read the token from this query parameter. Default: `None` (off), and
    /// a query parameter named `token`, `access_token` or `jwt` is refused
    /// with `token_in_query`. Parameter names are compared as a browser, a
    /// proxy or a log reader sees them: percent-decoded and ASCII
    /// case-insensitively (`Token`, `access%5Ftoken` and `%4AWT` match).
    pub query_param: Option<String>,
    /// Accept the token in the first message after the upgrade
    /// (`{"type":"auth","token":"…"}`), under the auth deadline. Default:
    /// off.
    pub first_message: bool,
    /// Longest token accepted, in bytes, checked before any decoding.
    /// Default: 8 KiB (a typical proxy's header line limit).
    pub max_token_len: usize,
}

impl Default for TokenSources {
    fn default() -> Self {
        TokenSources {
            subprotocol_prefixes: vec!["jwt.".into(), "jwt-auth.".into()],
            marker: "jwt-auth".into(),
            query_param: None,
            first_message: false,
            max_token_len: 8 * 1024,
        }
    }
}

/// Query parameters refused when the query source is off.
const QUERY_TOKEN_NAMES: [&str; 3] = ["token", "access_token", "jwt"];

/// What a handshake offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// The `Authorization: Bearer` token.
    pub header: Option<Token>,
    /// The subprotocol token (decoded when it was base64url).
    pub subprotocol: Option<Token>,
    /// The query token (when that source is on).
    pub query: Option<Token>,
    /// The marker, when the client offered it: the subprotocol to echo.
    pub marker: Option<String>,
}

impl Credentials {
    /// Whether no token was found.
    pub fn is_empty(&self) -> bool {
        self.header.is_none() && self.subprotocol.is_none() && self.query.is_none()
    }
}

impl TokenSources {
    /// Extracts every offered token from `request`.
    ///
    /// # Errors
    ///
    /// `token_too_large`, `token_malformed`, `credentials_ambiguous`,
    /// `protocol_invalid` or `token_in_query`; see [`AuthError`]. Each is
    /// refused before the upgrade, except a malformed *subprotocol* token,
    /// which surfaces after it (echoing the marker) like any other
    /// subprotocol token that fails: a browser cannot read an HTTP status.
    /// An empty result is not an error here: the caller decides between
    /// `token_missing` and first-message auth.
    pub fn extract(&self, request: &HandshakeRequest) -> Result<Credentials, AuthFailure> {
        let marker = request
            .subprotocols()
            .contains(&self.marker)
            .then(|| self.marker.clone());
        let subprotocol = self
            .subprotocol_token(request, marker.is_some())
            .map_err(|error| match error {
                AuthError::TokenMalformed(_) => AuthFailure::after_upgrade(error, marker.clone()),
                other => AuthFailure::before_upgrade(other),
            })?;
        let credentials = Credentials {
            header: self.header_token(request)?,
            subprotocol,
            query: self.query_token(request)?,
            marker,
        };
        if credentials.query.is_some()
            && (credentials.header.is_some() || credentials.subprotocol.is_some())
        {
            return Err(
                AuthError::CredentialsAmbiguous("a query token beside another token").into(),
            );
        }
        Ok(credentials)
    }

    fn check_len(&self, token: &str) -> Result<(), AuthError> {
        if token.len() > self.max_token_len {
            return Err(AuthError::TokenTooLarge {
                limit: self.max_token_len,
            });
        }
        Ok(())
    }

    fn header_token(&self, request: &HandshakeRequest) -> Result<Option<Token>, AuthError> {
        let mut values = request.header_values("authorization");
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AuthError::CredentialsAmbiguous("two Authorization headers"));
        }
        // Scheme, one or more spaces, token (RFC 9110 credentials).
        let value = value.trim_matches([' ', '\t']);
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::TokenMalformed(
                "the Authorization scheme is not Bearer",
            ));
        }
        let token = rest.trim_start_matches(' ');
        self.check_len(token)?;
        if token.is_empty() {
            return Err(AuthError::TokenMalformed("empty bearer token"));
        }
        if !is_compact_jws(token) {
            return Err(AuthError::TokenMalformed("not a compact JWS"));
        }
        Ok(Some(Token(token.to_owned())))
    }

    fn subprotocol_token(
        &self,
        request: &HandshakeRequest,
        marker_offered: bool,
    ) -> Result<Option<Token>, AuthError> {
        let mut found = None;
        for offered in request.subprotocols() {
            let Some(value) = self
                .subprotocol_prefixes
                .iter()
                .filter_map(|prefix| offered.strip_prefix(prefix.as_str()))
                // The longest prefix wins: `jwt-auth.` over a `jwt-` prefix.
                .min_by_key(|rest| rest.len())
            else {
                continue;
            };
            if found.is_some() {
                return Err(AuthError::CredentialsAmbiguous("two token subprotocols"));
            }
            found = Some(value);
        }
        let Some(value) = found else {
            return Ok(None);
        };
        self.check_len(value)?;
        if !marker_offered {
            return Err(AuthError::ProtocolInvalid(
                "a token subprotocol was offered without the marker subprotocol",
            ));
        }
        if value.is_empty() {
            return Err(AuthError::TokenMalformed("empty subprotocol token"));
        }
        if is_compact_jws(value) {
            return Ok(Some(Token(value.to_owned())));
        }
        let decoded = decode_base64url(value).ok_or(AuthError::TokenMalformed(
            "subprotocol token is neither a JWS nor base64url",
        ))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| AuthError::TokenMalformed("decoded subprotocol token is not UTF-8"))?;
        if !is_compact_jws(&decoded) {
            return Err(AuthError::TokenMalformed(
                "decoded subprotocol token is not a JWS",
            ));
        }
        Ok(Some(Token(decoded)))
    }

    fn query_token(&self, request: &HandshakeRequest) -> Result<Option<Token>, AuthError> {
        let Some(query) = request.query() else {
            return Ok(None);
        };
        let mut found = None;
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            // As a browser, a proxy or a log reader sees the name: `Token`,
            // `access%5Ftoken` and `%4AWT` are the names they look like.
            let name = percent_decode(name);
            let is = |wanted: &str| name.eq_ignore_ascii_case(wanted.as_bytes());
            match &self.query_param {
                None if QUERY_TOKEN_NAMES.into_iter().any(is) => {
                    return Err(AuthError::TokenInQuery);
                }
                Some(param) if is(param) => {
                    if found.is_some() {
                        return Err(AuthError::CredentialsAmbiguous("two query tokens"));
                    }
                    found = Some(value);
                }
                _ => {}
            }
        }
        let Some(value) = found else {
            return Ok(None);
        };
        // A compact JWS is URL-safe: no percent-decoding is needed, and a
        // percent-encoded one is refused rather than decoded.
        self.check_len(value)?;
        if !is_compact_jws(value) {
            return Err(AuthError::TokenMalformed(
                "query token is not a compact JWS",
            ));
        }
        Ok(Some(Token(value.to_owned())))
    }

    /// Checks a token received in the first message.
    ///
    /// # Errors
    ///
    /// `token_too_large` or `token_malformed`.
    pub fn check_first_message_token(&self, token: &str) -> Result<Token, AuthError> {
        self.check_len(token)?;
        if !is_compact_jws(token) {
            return Err(AuthError::TokenMalformed(
                "first-message token is not a compact JWS",
            ));
        }
        Ok(Token(token.to_owned()))
    }
}

/// `text` with every `%XX` (two hex digits, either case) decoded; anything
/// else, a malformed escape included, is kept as it is. Bytes, not a
/// string: a decoded name need not be UTF-8. Shared with
/// [`HandshakeRequest::since`], which checks the escapes first.
pub(crate) fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex(hi).zip(hex(lo)).map(|(hi, lo)| (hi << 4) | lo),
            _ => None,
        };
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Three non-empty base64url segments (header, payload, signature).
pub(crate) fn is_compact_jws(token: &str) -> bool {
    let mut segments = 0;
    for segment in token.split('.') {
        segments += 1;
        if segments > 3 || segment.is_empty() || !segment.bytes().all(is_base64url) {
            return false;
        }
    }
    segments == 3
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Decodes unpadded base64url; `None` on any other character or an
/// impossible length.
pub(crate) fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_known_vectors() {
        for (text, bytes) in [
            ("", &b""[..]),
            ("Zg", b"f"),
            ("Zm8", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("-_8", &[0xfb, 0xff][..]),
        ] {
            assert_eq!(decode_base64url(text).as_deref(), Some(bytes), "{text}");
        }
        for bad in ["Z", "Zm9v=", "Zm+v", "Zm/v", "Zm v"] {
            assert_eq!(decode_base64url(bad), None, "{bad}");
        }
    }

    #[test]
    fn compact_jws_shape() {
        assert!(is_compact_jws("a.b.c"));
        for bad in [
            "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.", "a.b.c=", "a.b.c d", "",
        ] {
            assert!(!is_compact_jws(bad), "{bad}");
        }
    }

    #[test]
    fn percent_decoding_decodes_escapes_and_keeps_the_rest() {
        for (text, decoded) in [
            ("access%5Ftoken", &b"access_token"[..]),
            ("%4a%57%54", b"JWT"),
            ("%", b"%"),
            ("%4", b"%4"),
            ("%zz%41", b"%zzA"),
            ("%ff", &[0xff][..]),
            ("%2541", b"%41"),
            ("", b""),
        ] {
            assert_eq!(percent_decode(text), decoded, "{text}");
        }
    }

    #[test]
    fn token_debug_hides_the_token() {
        let token = Token("secret.token.value".into());
        assert_eq!(format!("{token:?}"), "Token(<18 bytes>)");
    }
}
