//! [`OriginPolicy`]: the defence against cross-site WebSocket hijacking.
//!
//! Browsers send cookies with a WebSocket upgrade from any site, and the
//! same-origin policy does not apply to WebSockets. An application that
//! authenticates by cookie must therefore check `Origin` itself, or any page
//! the user visits can open a socket as them. Token authentication (header
//! or subprotocol) is not exposed this way, which is why the check is off by
//! default.

use super::AuthError;

/// Which `Origin` values may open a connection.
///
/// Matching is exact on scheme, host and port (scheme and host compared
/// case-insensitively, default ports made explicit): `https://app.example`
/// does not admit `https://app.example.evil.com`, `http://app.example` or
/// `https://app.example:8443`. Once a list is configured, the literal `null`
/// origin (sandboxed frames, `file:` pages) is refused. A request with no
/// `Origin` header is
/// admitted: only browsers send one, and a non-browser client can forge it
/// anyway.
///
/// # Examples
///
/// ```
/// use ws_lifecycle::auth::OriginPolicy;
///
/// let policy = OriginPolicy::allow(["https://app.example", "http://localhost:3000"]);
/// assert!(policy.check(Some("https://APP.example:443")).is_ok());
/// assert!(policy.check(Some("https://app.example.evil.com")).is_err());
/// assert!(policy.check(Some("null")).is_err());
/// assert!(policy.check(None).is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Normalised allowed origins; `None`: any origin (the default).
    allowed: Option<Vec<String>>,
}

impl OriginPolicy {
    /// Admits every origin (the default).
    pub fn any() -> Self {
        OriginPolicy { allowed: None }
    }

    /// Admits only these origins (`scheme://host[:port]`). Entries that do
    /// not parse as an origin admit nothing.
    pub fn allow<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let allowed = origins
            .into_iter()
            .filter_map(|o| normalise(o.as_ref()))
            .collect();
        OriginPolicy {
            allowed: Some(allowed),
        }
    }

    /// Checks a request's `Origin` header value.
    ///
    /// # Errors
    ///
    /// [`AuthError::OriginNotAllowed`] when a list is configured and the
    /// origin is not on it, is `null`, or does not parse.
    pub fn check(&self, origin: Option<&str>) -> Result<(), AuthError> {
        let (Some(allowed), Some(origin)) = (&self.allowed, origin) else {
            return Ok(());
        };
        match normalise(origin) {
            Some(origin) if allowed.contains(&origin) => Ok(()),
            _ => Err(AuthError::OriginNotAllowed),
        }
    }
}

/// `scheme://host:port`, lower-cased, with the default port made explicit;
/// `None` for `null`, paths, user info, or anything else that is not a
/// plain origin.
fn normalise(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" | "ws" => "80",
        "https" | "wss" => "443",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    // An IPv6 host is bracketed: split the port after the closing bracket.
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest.get(i..).is_some_and(|p| p.contains(']')) => {
            let (host, port) = rest.split_at(i);
            (host, port.get(1..)?)
        }
        _ => (rest, default_port),
    };
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{scheme}://{}:{port}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_only() {
        let policy = OriginPolicy::allow(["https://app.example"]);
        for ok in [
            "https://app.example",
            "HTTPS://App.Example",
            "https://app.example:443",
        ] {
            assert_eq!(policy.check(Some(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "null",
            "https://app.example.evil.com",
            "https://evil-app.example",
            "http://app.example",
            "https://app.example:8443",
            "https://app.example/",
            "https://user@app.example",
            "app.example",
            "",
        ] {
            assert_eq!(
                policy.check(Some(bad)),
                Err(AuthError::OriginNotAllowed),
                "{bad}"
            );
        }
        assert_eq!(policy.check(None), Ok(()));
        assert_eq!(OriginPolicy::default().check(Some("null")), Ok(()));
    }
}
