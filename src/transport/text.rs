//! [`Text`]: the payload of a text message, UTF-8 by construction.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// The payload of a text message: UTF-8, checked once when it is built and
/// never again.
///
/// It moves between the crate and a WebSocket stack without a copy: the
/// writer builds each outbound frame as a [`String`] and hands it over
/// whole, and a text message read from the socket keeps the stack's own
/// buffer. [`as_str`](Text::as_str) is O(1) either way.
///
/// # Costs
///
/// | built from | cost | clone |
/// |---|---|---|
/// | [`String`] | free (moved) | copies the text |
/// | `&'static str` | free | free |
/// | [`Bytes`] ([`TryFrom`]) | one UTF-8 check | a reference count (copies the text without an adapter feature) |
/// | the axum or tokio-tungstenite socket | free | a reference count |
/// | the warp socket | one UTF-8 check (warp does not hand out its checked text) | a reference count |
///
/// A text built from a `String` reaches the axum and tokio-tungstenite
/// sockets as is, and warp's as the same `String`; [`String::from`] gives
/// that string back.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use ws_lifecycle::transport::{Message, Text};
///
/// let text = Text::from(String::from("hello"));
/// assert_eq!(text, "hello");
/// assert_eq!(text.len(), 5); // `str`'s methods, through `Deref`
/// assert!(text.starts_with("he"));
///
/// let checked = Text::try_from(Bytes::from_static(b"hello"))?;
/// assert_eq!(checked, text);
/// assert!(Text::try_from(Bytes::from_static(b"\xff")).is_err());
///
/// let message = Message::Text(Text::from_static("ping"));
/// assert_eq!(message.len(), 4);
/// # Ok::<(), ws_lifecycle::transport::InvalidUtf8>(())
/// ```
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    /// Built by the application or the writer; moved to the stack as is.
    Owned(String),
    Static(&'static str),
    /// Read from tokio-tungstenite or warp, or checked from `Bytes`.
    #[cfg(any(feature = "axum", feature = "warp", feature = "tungstenite"))]
    Shared(tungstenite::Utf8Bytes),
    /// Read from axum, which wraps tungstenite's type in its own.
    #[cfg(feature = "axum")]
    Axum(axum::extract::ws::Utf8Bytes),
}

impl Text {
    /// A text of static string, without allocating.
    pub const fn from_static(text: &'static str) -> Self {
        Text(Repr::Static(text))
    }

    /// The text. O(1): the UTF-8 was checked when the text was built.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Owned(text) => text.as_str(),
            Repr::Static(text) => text,
            #[cfg(any(feature = "axum", feature = "warp", feature = "tungstenite"))]
            Repr::Shared(text) => text.as_str(),
            #[cfg(feature = "axum")]
            Repr::Axum(text) => text.as_str(),
        }
    }

    /// The text's bytes, without a copy.
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Repr::Owned(text) => Bytes::from(text),
            Repr::Static(text) => Bytes::from_static(text.as_bytes()),
            #[cfg(any(feature = "axum", feature = "warp", feature = "tungstenite"))]
            Repr::Shared(text) => Bytes::from(text),
            #[cfg(feature = "axum")]
            Repr::Axum(text) => Bytes::from(text),
        }
    }

    /// tungstenite's text, as read from tokio-tungstenite: no copy, no
    /// check.
    #[cfg(feature = "tungstenite")]
    pub(crate) fn from_tungstenite(text: tungstenite::Utf8Bytes) -> Self {
        Text(Repr::Shared(text))
    }

    /// For tokio-tungstenite: free for a text built from a `String` (the
    /// writer's frames) or read from tungstenite; a copy only for one read
    /// from axum.
    #[cfg(feature = "tungstenite")]
    pub(crate) fn into_tungstenite(self) -> tungstenite::Utf8Bytes {
        match self.0 {
            Repr::Owned(text) => text.into(),
            Repr::Static(text) => tungstenite::Utf8Bytes::from_static(text),
            Repr::Shared(text) => text,
            #[cfg(feature = "axum")]
            Repr::Axum(text) => text.as_str().into(),
        }
    }

    /// axum's text, as read from its socket: no copy, no check.
    #[cfg(feature = "axum")]
    pub(crate) fn from_axum(text: axum::extract::ws::Utf8Bytes) -> Self {
        Text(Repr::Axum(text))
    }

    /// For axum: free for a text built from a `String` (the writer's
    /// frames) or read from axum; a copy only for one read from another
    /// stack.
    #[cfg(feature = "axum")]
    pub(crate) fn into_axum(self) -> axum::extract::ws::Utf8Bytes {
        match self.0 {
            Repr::Owned(text) => text.into(),
            Repr::Static(text) => axum::extract::ws::Utf8Bytes::from_static(text),
            Repr::Axum(text) => text,
            Repr::Shared(text) => text.as_str().into(),
        }
    }
}

impl From<String> for Text {
    /// Takes the string as is: no copy, no check.
    fn from(text: String) -> Self {
        Text(Repr::Owned(text))
    }
}

impl From<Text> for String {
    /// Free for a text built from a `String`; a copy otherwise.
    fn from(text: Text) -> String {
        match text.0 {
            Repr::Owned(text) => text,
            _ => text.as_str().to_owned(),
        }
    }
}

impl From<&'static str> for Text {
    /// As [`Text::from_static`].
    fn from(text: &'static str) -> Self {
        Text::from_static(text)
    }
}

impl TryFrom<Bytes> for Text {
    type Error = InvalidUtf8;

    /// Checks the UTF-8 once. Without a copy when an adapter feature is
    /// enabled; without one, `bytes` is copied unless it is the only handle
    /// on a buffer that came from a `Vec`.
    ///
    /// # Errors
    ///
    /// [`InvalidUtf8`] when `bytes` is not UTF-8.
    fn try_from(bytes: Bytes) -> Result<Self, InvalidUtf8> {
        #[cfg(any(feature = "axum", feature = "warp", feature = "tungstenite"))]
        let text = tungstenite::Utf8Bytes::try_from(bytes).map(Repr::Shared);
        #[cfg(not(any(feature = "axum", feature = "warp", feature = "tungstenite")))]
        let text = String::from_utf8(Vec::from(bytes))
            .map(Repr::Owned)
            .map_err(|e| e.utf8_error());
        text.map(Text).map_err(|error| InvalidUtf8 { error })
    }
}

/// Bytes that are not UTF-8, refused by [`Text::try_from`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("text is not UTF-8 (valid up to byte {})", .error.valid_up_to())]
pub struct InvalidUtf8 {
    #[source]
    error: std::str::Utf8Error,
}

impl InvalidUtf8 {
    /// How many bytes from the start are valid UTF-8.
    pub fn valid_up_to(&self) -> usize {
        self.error.valid_up_to()
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Text {
    /// As the string: `"hello"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Default for Text {
    /// The empty text.
    fn default() -> Self {
        Text::from_static("")
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    /// As the string, so a `Text` key is found by a `&str`.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_representation_reads_and_compares_as_its_string() {
        #[cfg_attr(not(any(feature = "axum", feature = "tungstenite")), allow(unused_mut))]
        let mut texts = vec![
            Text::from(String::from("héllo")),
            Text::from_static("héllo"),
            Text::try_from(Bytes::from_static("héllo".as_bytes())).unwrap_or_default(),
        ];
        #[cfg(feature = "tungstenite")]
        texts.push(Text::from_tungstenite("héllo".into()));
        #[cfg(feature = "axum")]
        texts.push(Text::from_axum("héllo".into()));
        let set: HashSet<Text> = texts.iter().cloned().collect();
        assert_eq!(set.len(), 1);
        assert!(set.contains("héllo"));
        for text in texts {
            assert_eq!(text, "héllo");
            assert_eq!(text, *"héllo");
            assert_eq!(text, String::from("héllo"));
            assert_eq!("héllo", text);
            assert_eq!(text.len(), 6);
            assert_eq!(format!("{text} {text:?}"), "héllo \"héllo\"");
            assert_eq!(text.clone().into_bytes(), "héllo".as_bytes());
            #[cfg(feature = "tungstenite")]
            assert_eq!(text.clone().into_tungstenite(), "héllo");
            #[cfg(feature = "axum")]
            assert_eq!(text.clone().into_axum(), "héllo");
            assert_eq!(String::from(text.clone()), "héllo");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused_with_where_they_stop() {
        let refused = Text::try_from(Bytes::from_static(b"ok\xff"));
        assert_eq!(refused.map_err(|e| e.valid_up_to()), Err(2));
    }

    #[test]
    fn a_string_is_moved_not_copied() {
        let string = String::from("frame");
        let ptr = string.as_ptr();
        let bytes = Text::from(string).into_bytes();
        assert_eq!(bytes.as_ptr(), ptr);
    }
}
