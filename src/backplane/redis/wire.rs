//! The messages nodes exchange on Redis, and their signatures.
//!
//! A message is `v2\n<node id>\n<kind>\n<mac>\n<body>`, published on a
//! user's channel (`<prefix>:u:<hex of the user id>`) or on the cluster's
//! control channel (`<prefix>:ctl`). `<mac>` is the hex HMAC-SHA256, under
//! the cluster key, of `<channel>\n<node id>\n<kind>\n<body>`: binding the
//! channel means a message signed for one user cannot be replayed onto
//! another user's channel. Kinds:
//!
//! * `E`: an event for the channel's user; the body is
//!   [`EncodedEvent::to_wire`](crate::event::EncodedEvent)'s form. Sent
//!   when the backplane does not keep the streams.
//! * `S`: an event of the channel's user's stream, as Redis placed it
//!   (stream mode): `v2\n<node id>\nS\n<mac>\n<epoch>:<offset>\n<body>`,
//!   the body as for `E`. The node signs `<body>` as for any kind; the
//!   append script in Redis assigns the position and inserts the
//!   `<epoch>:<offset>` line, so the position is **outside the MAC** (the
//!   node cannot know it when it signs). What that allows someone with
//!   write access to the Redis server: to reorder, drop or repeat authentic
//!   events, or move them to other offsets of the same user's stream (they
//!   could `DEL` the keys anyway); never to forge or alter an event's
//!   content, or move it to another user. The history keeps each event in
//!   exactly this form.
//! * `D`: close the channel's user's connections; the body is
//!   `<code>\n<reason>`.
//! * `G`: the sender lost events it had accepted for the channel's user (or,
//!   on the control channel, for anyone): receivers tell their connections
//!   of that user (of every user) with a `gap` event. Empty body.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::id::UserId;
use crate::stream::Position;

/// What a message asks of its receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Event,
    /// An event of a stream kept in Redis: its position travels with it.
    Stream,
    Disconnect,
    Gap,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Event => "E",
            Kind::Stream => "S",
            Kind::Disconnect => "D",
            Kind::Gap => "G",
        }
    }

    fn from_tag(tag: &str) -> Option<Kind> {
        match tag {
            "E" => Some(Kind::Event),
            "S" => Some(Kind::Stream),
            "D" => Some(Kind::Disconnect),
            "G" => Some(Kind::Gap),
            _ => None,
        }
    }

    /// Whether the message carries an event (lost ones are owed a gap).
    pub(super) fn is_event(self) -> bool {
        matches!(self, Kind::Event | Kind::Stream)
    }
}

/// A checked message, borrowing from the payload.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Message<'a> {
    pub(super) node: &'a str,
    pub(super) kind: Kind,
    pub(super) body: &'a str,
    /// Where Redis placed a [`Kind::Stream`] event (not covered by the
    /// signature); `None` for the other kinds.
    pub(super) position: Option<Position>,
}

/// Why a received message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejected {
    /// Not a message of this version's form.
    Malformed,
    /// Well-formed, but not signed with the cluster key (or altered).
    BadSignature,
}

const VERSION: &str = "v2";

/// Signs and checks messages with the cluster key. Keyed once; each
/// message clones the keyed state.
#[derive(Clone)]
pub(super) struct Signer {
    keyed: Hmac<Sha256>,
}

impl Signer {
    pub(super) fn new(key: &[u8]) -> Signer {
        Signer {
            // HMAC takes keys of any length: this cannot fail.
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable_hmac()),
        }
    }

    fn mac(&self, channel: &str, node: &str, kind: Kind, body: &str) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        for part in [channel, node, kind.tag()] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac.update(body.as_bytes());
        mac
    }

    /// The payload to publish on `channel`, its body written by `body`
    /// straight into it: one allocation per message, sized once.
    pub(super) fn seal(
        &self,
        channel: &str,
        node: &str,
        kind: Kind,
        body_len: usize,
        body: impl FnOnce(&mut String),
    ) -> String {
        self.seal_at(channel, node, kind, body_len, body).0
    }

    /// [`seal`](Signer::seal), and where the body starts in the payload:
    /// a [`Kind::Stream`] message gets its position line inserted there.
    pub(super) fn seal_at(
        &self,
        channel: &str,
        node: &str,
        kind: Kind,
        body_len: usize,
        body: impl FnOnce(&mut String),
    ) -> (String, usize) {
        const PLACEHOLDER: &str =
            "0000000000000000000000000000000000000000000000000000000000000000";
        let mut out = String::with_capacity(VERSION.len() + node.len() + body_len + 72);
        out.push_str(VERSION);
        out.push('\n');
        out.push_str(node);
        out.push('\n');
        out.push_str(kind.tag());
        out.push('\n');
        let tag_at = out.len();
        out.push_str(PLACEHOLDER);
        out.push('\n');
        let body_at = out.len();
        body(&mut out);
        let tag = self
            .mac(channel, node, kind, out.get(body_at..).unwrap_or_default())
            .finalize()
            .into_bytes();
        let mut hex = String::with_capacity(PLACEHOLDER.len());
        push_hex(&mut hex, &tag);
        // The placeholder is ASCII of the same length: this cannot split a
        // character or move the body.
        if out.is_char_boundary(tag_at) && out.is_char_boundary(tag_at + hex.len()) {
            out.replace_range(tag_at..tag_at + hex.len(), &hex);
        }
        (out, body_at)
    }

    /// Parses and checks a payload received on `channel`. The signature is
    /// compared in constant time, before anything of the body is used.
    pub(super) fn open<'a>(
        &self,
        channel: &str,
        payload: &'a [u8],
    ) -> Result<Message<'a>, Rejected> {
        let payload = std::str::from_utf8(payload).map_err(|_| Rejected::Malformed)?;
        let mut parts = payload.splitn(5, '\n');
        let (Some(VERSION), Some(node), Some(kind), Some(tag), Some(body)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Rejected::Malformed);
        };
        let kind = Kind::from_tag(kind).ok_or(Rejected::Malformed)?;
        let mut decoded = [0u8; 32];
        if tag.len() != 64 || !unhex_into(tag, &mut decoded) {
            return Err(Rejected::Malformed);
        }
        let tag = decoded;
        // A stream event's position line comes first, outside the MAC.
        let (position, body) = match kind {
            Kind::Stream => {
                let (position, body) = body.split_once('\n').ok_or(Rejected::Malformed)?;
                (Some(position), body)
            }
            _ => (None, body),
        };
        self.mac(channel, node, kind, body)
            .verify_slice(&tag)
            .map_err(|_| Rejected::BadSignature)?;
        let position = match position {
            Some(text) => Some(
                Position::parse_since(text)
                    .ok()
                    .filter(|p| p.offset > 0)
                    .ok_or(Rejected::Malformed)?,
            ),
            None => None,
        };
        Ok(Message {
            node,
            kind,
            body,
            position,
        })
    }
}

#[cold]
fn unreachable_hmac() -> Hmac<Sha256> {
    // `new_from_slice` only fails for fixed-size-key MACs; HMAC has none.
    // Keep a well-defined value rather than a panic path: an all-zero key,
    // which `ClusterKey`'s length check makes impossible to reach anyway.
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default())
}

/// A user's channel name: hex keeps it injective (`alice`, `alice:x` and
/// `Alice` never share a channel) and free of pattern characters.
pub(super) fn user_channel(prefix: &str, user: &UserId) -> String {
    let mut out = String::with_capacity(prefix.len() + 3 + user.as_str().len() * 2);
    out.push_str(prefix);
    out.push_str(":u:");
    push_hex(&mut out, user.as_str().as_bytes());
    out
}

/// The channel every node listens on, for cluster-wide control.
pub(super) fn control_channel(prefix: &str) -> String {
    format!("{prefix}:ctl")
}

/// The user a channel belongs to, if it is a user channel of `prefix`.
pub(super) fn user_of(prefix: &str, channel: &str) -> Option<UserId> {
    let hex_user = channel.strip_prefix(prefix)?.strip_prefix(":u:")?;
    UserId::new(String::from_utf8(unhex(hex_user)?).ok()?).ok()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` in lowercase hex to `out`. Written through a small
/// buffer, not a character at a time: it runs for every message's channel
/// and tag.
pub(super) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digit = |nibble: u8| DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
    out.reserve(bytes.len() * 2);
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(buf.len() / 2) {
        for (pair, &b) in buf.chunks_exact_mut(2).zip(chunk) {
            if let [hi, lo] = pair {
                *hi = digit(b >> 4);
                *lo = digit(b & 0x0f);
            }
        }
        // Hex digits are ASCII: this cannot fail.
        if let Some(text) = buf
            .get(..chunk.len() * 2)
            .and_then(|digits| std::str::from_utf8(digits).ok())
        {
            out.push_str(text);
        }
    }
}

/// The value of one hex digit (either case).
fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The byte of two hex digits.
fn unhex_pair(pair: &[u8]) -> Option<u8> {
    match pair {
        [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
        _ => None,
    }
}

/// Decodes `text` (exactly twice `out`'s length) into `out`.
fn unhex_into(text: &str, out: &mut [u8]) -> bool {
    text.len() == out.len() * 2
        && text
            .as_bytes()
            .chunks_exact(2)
            .zip(out.iter_mut())
            .all(|(pair, byte)| unhex_pair(pair).map(|b| *byte = b).is_some())
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes().chunks_exact(2).map(unhex_pair).collect()
}

/// One message waiting for the publishing connection, signed already (on
/// the sender's thread: its buffer is allocated and freed there's no lock
/// between).
pub(super) struct Outgoing {
    /// Whom it is for: told of a gap if the message is lost.
    pub(super) user: UserId,
    pub(super) kind: Kind,
    pub(super) channel: String,
    pub(super) payload: String,
    /// Where the body starts in `payload` (a stream event's position line
    /// is inserted there, by Redis).
    pub(super) body_at: usize,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashSet;

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn seal(signer: &Signer, channel: &str, node: &str, kind: Kind, body: &str) -> String {
        signer.seal(channel, node, kind, body.len(), |out| out.push_str(body))
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes: Vec<u8> = (0..=255).chain(0..40).collect();
        let text = hex(&bytes);
        assert_eq!(text.len(), bytes.len() * 2);
        assert!(text.starts_with("000102") && text.contains("7f80") && text.contains("feff"));
        assert_eq!(unhex(&text), Some(bytes.clone()));
        assert_eq!(unhex(&text.to_uppercase()), Some(bytes));
        let mut tag = [0u8; 2];
        assert!(unhex_into("0aFf", &mut tag) && tag == [0x0a, 0xff]);
        for bad in ["0", "+f", "0g", "ü0", "0 "] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
        assert!(!unhex_into("+f00", &mut tag));
        assert!(!unhex_into("00", &mut tag));
    }

    #[test]
    fn channel_names_are_injective() {
        let users = ["alice", "alice:x", "Alice", "ali", "ce", "ü"];
        let names: Vec<String> = users
            .iter()
            .map(|u| user_channel("wsl", &UserId::new(*u).unwrap()))
            .collect();
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for (user, name) in users.iter().zip(&names) {
            let back = user_of("wsl", name);
            assert_eq!(back.as_ref().map(UserId::as_str), Some(*user));
        }
        assert!(user_of("wsl", "wsl:u:zz").is_none());
        assert!(user_of("wsl", "other:u:61").is_none());
        assert!(user_of("wsl", &control_channel("wsl")).is_none());
    }

    #[test]
    fn a_sealed_message_opens_on_its_channel_only() {
        let signer = Signer::new(KEY);
        let sealed = seal(&signer, "wsl:u:61", "node1", Kind::Event, "a0\n,\"x\":1}");
        assert_eq!(
            signer.open("wsl:u:61", sealed.as_bytes()),
            Ok(Message {
                node: "node1",
                kind: Kind::Event,
                body: "a0\n,\"x\":1}",
                position: None,
            })
        );
        // Replayed onto another user's channel: refused.
        assert_eq!(
            signer.open("wsl:u:62", sealed.as_bytes()),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn forged_altered_and_malformed_messages_are_refused() {
        let signer = Signer::new(KEY);
        let other = Signer::new(b"another key of thirty-two bytes!");
        let forged = seal(&other, "c", "n", Kind::Disconnect, "4403\nx");
        assert_eq!(
            signer.open("c", forged.as_bytes()),
            Err(Rejected::BadSignature)
        );
        let good = seal(&signer, "c", "n", Kind::Event, "body");
        let altered = good.replace("body", "bodz");
        assert_eq!(
            signer.open("c", altered.as_bytes()),
            Err(Rejected::BadSignature)
        );
        let as_gap = good.replacen("\nE\n", "\nG\n", 1);
        assert_eq!(
            signer.open("c", as_gap.as_bytes()),
            Err(Rejected::BadSignature)
        );
        for malformed in [
            &b""[..],
            b"v1\nn\nE\nbody",
            b"v2\nn\nX\n00\nbody",
            b"v2\nn\nE\nzz\nbody",
            b"v2\nn\nE\n0\nbody",
            b"\xff\xfe",
        ] {
            assert_eq!(
                signer.open("c", malformed),
                Err(Rejected::Malformed),
                "{malformed:?}"
            );
        }
    }

    /// What the append script publishes (and keeps in the history): the
    /// sealed message with `<epoch>:<offset>\n` inserted where the body
    /// starts.
    fn placed(signer: &Signer, channel: &str, position: &str, body: &str) -> String {
        let (sealed, body_at) = signer.seal_at(channel, "node1", Kind::Stream, body.len(), |out| {
            out.push_str(body)
        });
        let (head, body) = sealed.split_at(body_at);
        format!("{head}{position}\n{body}")
    }

    #[test]
    fn a_stream_message_has_a_golden_form() {
        let signer = Signer::new(KEY);
        let message = placed(&signer, "wsl:u:61", "01JDZ4Q7:42", "a0\n,\"x\":1}");
        assert_eq!(
            message,
            format!("v2\nnode1\nS\n{GOLDEN_MAC}\n01JDZ4Q7:42\na0\n,\"x\":1}}")
        );
        // The MAC is the one of an `S` message of the body alone: the
        // position is not signed.
        let mac = signer
            .mac("wsl:u:61", "node1", Kind::Stream, "a0\n,\"x\":1}")
            .finalize()
            .into_bytes();
        assert_eq!(message.split('\n').nth(3).unwrap(), hex(&mac));
        assert_eq!(message.split('\n').nth(3).unwrap(), GOLDEN_MAC);
    }

    /// HMAC-SHA256 under `KEY` of `wsl:u:61\nnode1\nS\na0\n,"x":1}`.
    const GOLDEN_MAC: &str = "ec6075d090502db8ebcbbb48c793a82cb6ed4d2c3724db24985e5a954ea1328a";

    #[test]
    fn a_stream_message_opens_with_its_position() {
        let signer = Signer::new(KEY);
        let message = placed(&signer, "wsl:u:61", "01JDZ4Q7:42", "a0\n,\"x\":1}");
        let opened = signer.open("wsl:u:61", message.as_bytes()).unwrap();
        assert_eq!(opened.kind, Kind::Stream);
        assert_eq!(opened.node, "node1");
        assert_eq!(opened.body, "a0\n,\"x\":1}");
        assert_eq!(
            opened.position,
            Some(Position::parse_since("01JDZ4Q7:42").unwrap())
        );
        // The position is outside the MAC: Redis (or whoever writes to it)
        // may move an event, never alter it.
        let moved = message.replace("01JDZ4Q7:42", "01JDZ4Q7:43");
        let opened = signer.open("wsl:u:61", moved.as_bytes()).unwrap();
        assert_eq!(opened.position.map(|p| p.offset), Some(43));
        let altered = message.replace("\"x\":1", "\"x\":2");
        assert_eq!(
            signer.open("wsl:u:61", altered.as_bytes()),
            Err(Rejected::BadSignature)
        );
        assert_eq!(
            signer.open("wsl:u:62", message.as_bytes()),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn stream_messages_without_a_valid_position_are_malformed() {
        let signer = Signer::new(KEY);
        let body = "a0\n,\"x\":1}";
        for position in [
            "",
            "01JDZ4Q7",
            "01JDZ4Q7:",
            "01JDZ4Q7:-1",
            "bad epoch:1",
            "e:0",
        ] {
            let message = placed(&signer, "c", position, body);
            assert_eq!(
                signer.open("c", message.as_bytes()),
                Err(Rejected::Malformed),
                "{position:?}"
            );
        }
        // No position line at all (a body without a newline).
        let (sealed, _) = signer.seal_at("c", "n", Kind::Stream, 4, |out| out.push_str("body"));
        assert_eq!(
            signer.open("c", sealed.as_bytes()),
            Err(Rejected::Malformed)
        );
    }

    #[test]
    fn an_event_cannot_be_passed_off_as_a_stream_event_or_back() {
        let signer = Signer::new(KEY);
        let event = seal(&signer, "c", "n", Kind::Event, "a0\n,\"x\":1}");
        let as_stream = event
            .replacen("\nE\n", "\nS\n", 1)
            .replacen("\na0\n", "\ne:1\na0\n", 1);
        assert_eq!(
            signer.open("c", as_stream.as_bytes()),
            Err(Rejected::BadSignature)
        );
        let stream = placed(&signer, "c", "e:1", "a0\n,\"x\":1}");
        let as_event = stream
            .replacen("\nS\n", "\nE\n", 1)
            .replacen("e:1\n", "", 1);
        assert_eq!(
            signer.open("c", as_event.as_bytes()),
            Err(Rejected::BadSignature)
        );
    }
}
