//! The frame codec: an event serialised once ([`EncodedEvent`]), each
//! connection's frame made from it by splicing in `seq`, and the form
//! another node receives through a backplane.

use std::sync::Arc;

use crate::event::{AgentEventKind, EventName, WIRE_VERSION};

/// How a connection's frames spell the event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireMode {
    /// `"type":"agent_started"` (the default).
    #[default]
    Named,
    /// `"type":1` … `"type":5` for agent events, for clients written before
    /// the names existed. Custom events keep their names.
    LegacyNumeric,
}

/// The frame's opening up to `seq`'s digits. Spelled out rather than
/// formatted per frame; the assertion ties it to [`WIRE_VERSION`].
const PREFIX: &str = "{\"v\":1,\"seq\":";
const _: () = assert!(WIRE_VERSION == 1, "update PREFIX with WIRE_VERSION");
const TYPE_KEY: &str = ",\"type\":";
const OFF_KEY: &str = ",\"off\":";

/// Every control event's name (see [`Control`](crate::event::control::Control)).
pub(crate) const CONTROL_NAMES: [&str; 4] =
    ["gap", "reauth_required", "reauth_ok", "reauth_failed"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TypeTag {
    Agent(AgentEventKind),
    Custom(EventName),
    /// The crate's own control events (`gap`, `reauth_required`, …): names
    /// outside the application's grammar checks, fixed at compile time.
    Control(&'static str),
}

impl TypeTag {
    fn name(&self) -> &str {
        match self {
            TypeTag::Agent(kind) => kind.name(),
            TypeTag::Custom(name) => name.as_str(),
            TypeTag::Control(name) => name,
        }
    }
}

/// An event serialised once; [`EncodedEvent::frame`] splices in a
/// connection's sequence number.
///
/// A [`Backplane`](crate::backplane::Backplane) carries it between nodes in
/// its wire form ([`to_wire`](EncodedEvent::to_wire) and
/// [`from_wire`](EncodedEvent::from_wire)): the payload is serialised once,
/// on the publishing node, and never parsed into a value again.
///
/// ```
/// use ws_lifecycle::event::{EncodedEvent, Event, EventName, WireMode};
///
/// let event = Event::custom(EventName::new("note")?, serde_json::json!({"text": "hi"})).encode()?;
/// let wire = event.to_wire();
/// let back = EncodedEvent::from_wire(&wire)?;
/// assert_eq!(back.frame(3, WireMode::Named), r#"{"v":1,"seq":3,"type":"note","payload":{"text":"hi"}}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    tag: TypeTag,
    /// Everything after the type field, starting with `,`: serialised once
    /// and shared, so a copy for each of a fan-out's users, and the copy a
    /// user's history keeps, cost a reference count, not the bytes again.
    tail: Arc<str>,
}

/// A backplane message is not an event's wire form: the message is corrupt
/// or was not made by [`EncodedEvent::to_wire`] (drop it and count it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an event's wire form: {0}")]
pub struct WireError(&'static str);

impl EncodedEvent {
    pub(crate) fn from_parts(tag: TypeTag, tail: String) -> Self {
        EncodedEvent {
            tag,
            tail: Arc::from(tail),
        }
    }

    /// Bytes this event adds to a connection's buffer, for byte limits:
    /// its shared bytes plus an allowance for the frame's prefix (counted
    /// whole by every buffer holding it, though they share one copy).
    pub fn weight(&self) -> usize {
        // prefix + seq digits + type: a fixed allowance keeps this O(1).
        self.tail.len() + 48
    }

    /// The exact length of the frame for `seq` in `mode`.
    pub fn frame_len(&self, seq: u64, mode: WireMode) -> usize {
        self.frame_len_at(seq, None, mode)
    }

    /// The exact length of the frame for `seq` and the stream offset `off`
    /// in `mode`.
    pub fn frame_len_at(&self, seq: u64, off: Option<u64>, mode: WireMode) -> usize {
        let tag = match (&self.tag, mode) {
            (TypeTag::Agent(_), WireMode::LegacyNumeric) => 1,
            (tag, _) => tag.name().len() + 2,
        };
        let off = off.map_or(0, |off| OFF_KEY.len() + digits(off));
        PREFIX.len() + digits(seq) + off + TYPE_KEY.len() + tag + self.tail.len()
    }

    /// Appends the full frame for `seq` in `mode` to `out`.
    pub fn write_frame(&self, seq: u64, mode: WireMode, out: &mut String) {
        self.write_frame_at(seq, None, mode, out);
    }

    /// Appends the full frame for `seq` and the stream offset `off` (the
    /// `"off"` field, present only when `Some`) in `mode` to `out`.
    pub fn write_frame_at(&self, seq: u64, off: Option<u64>, mode: WireMode, out: &mut String) {
        out.push_str(PREFIX);
        push_u64(out, seq);
        if let Some(off) = off {
            out.push_str(OFF_KEY);
            push_u64(out, off);
        }
        out.push_str(TYPE_KEY);
        match (&self.tag, mode) {
            (TypeTag::Agent(kind), WireMode::LegacyNumeric) => {
                push_u64(out, u64::from(kind.legacy_code()));
            }
            (tag, _) => push_quoted(out, tag.name()),
        }
        out.push_str(&self.tail);
    }

    /// The frame for `seq` in `mode`, in a string of exactly its length.
    pub fn frame(&self, seq: u64, mode: WireMode) -> String {
        self.frame_at(seq, None, mode)
    }

    /// The frame for `seq` and the stream offset `off` in `mode`, in a
    /// string of exactly its length: what a connection writes for an event
    /// of its user's stream.
    ///
    /// ```
    /// use ws_lifecycle::event::{Event, EventName, WireMode};
    ///
    /// let event = Event::custom(EventName::new("note")?, serde_json::json!(1)).encode()?;
    /// assert_eq!(event.frame_at(3, Some(41), WireMode::Named), r#"{"v":1,"seq":3,"off":41,"type":"note","payload":1}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn frame_at(&self, seq: u64, off: Option<u64>, mode: WireMode) -> String {
        let mut out = String::with_capacity(self.frame_len_at(seq, off, mode));
        self.write_frame_at(seq, off, mode, &mut out);
        out
    }

    /// The form another node receives through a backplane:
    /// `a<code>\n<tail>` for an agent event, `c<name>\n<tail>` for a
    /// custom one, `x<name>\n<tail>` for a control event. The tail is the
    /// payload serialised once, shared as is.
    pub fn to_wire(&self) -> String {
        let mut out = String::with_capacity(self.wire_len());
        self.write_wire(&mut out);
        out
    }

    /// The exact length of [`to_wire`](EncodedEvent::to_wire)'s form, to
    /// size a buffer once.
    pub fn wire_len(&self) -> usize {
        let tag = match &self.tag {
            TypeTag::Agent(kind) => digits(u64::from(kind.legacy_code())),
            tag => tag.name().len(),
        };
        1 + tag + 1 + self.tail.len()
    }

    /// Appends [`to_wire`](EncodedEvent::to_wire)'s form to `out`.
    pub fn write_wire(&self, out: &mut String) {
        match &self.tag {
            TypeTag::Agent(kind) => {
                out.push('a');
                push_u64(out, u64::from(kind.legacy_code()));
            }
            TypeTag::Custom(name) => {
                out.push('c');
                out.push_str(name.as_str());
            }
            TypeTag::Control(name) => {
                out.push('x');
                out.push_str(name);
            }
        }
        out.push('\n');
        out.push_str(&self.tail);
    }

    /// Parses [`to_wire`](EncodedEvent::to_wire)'s form, checking it as
    /// untrusted input: a known tag and a tail that completes a JSON object,
    /// so a corrupt message can never become a broken frame.
    ///
    /// # Errors
    ///
    /// [`WireError`] when `wire` is not an event's wire form.
    pub fn from_wire(wire: &str) -> Result<EncodedEvent, WireError> {
        let event = EncodedEvent::from_kept(wire)?;
        let body = event
            .tail
            .strip_prefix(',')
            .ok_or(WireError("tail does not start with ','"))?;
        let object = format!("{{{body}");
        let complete =
            serde_json::from_str::<serde::de::IgnoredAny>(&object).is_ok() && object.ends_with('}');
        if !complete {
            return Err(WireError("tail does not complete a JSON object"));
        }
        Ok(event)
    }

    /// Parses [`to_wire`](EncodedEvent::to_wire)'s form written by this
    /// process (the history's own copy): the tag is checked, the tail is
    /// taken as it was written, without parsing its JSON again.
    pub(crate) fn from_kept(wire: &str) -> Result<EncodedEvent, WireError> {
        let (tag, tail) = wire.split_once('\n').ok_or(WireError("no tag line"))?;
        let tag = match tag.split_at_checked(1) {
            Some(("a", code)) => {
                let code: u8 = code.parse().map_err(|_| WireError("bad agent code"))?;
                AgentEventKind::ALL
                    .into_iter()
                    .find(|k| k.legacy_code() == code)
                    .map(TypeTag::Agent)
                    .ok_or(WireError("unknown agent code"))?
            }
            Some(("c", name)) => {
                TypeTag::Custom(EventName::new(name).map_err(|_| WireError("bad event name"))?)
            }
            Some(("x", name)) => CONTROL_NAMES
                .into_iter()
                .find(|n| *n == name)
                .map(TypeTag::Control)
                .ok_or(WireError("unknown control event"))?,
            _ => return Err(WireError("unknown tag")),
        };
        Ok(EncodedEvent {
            tag,
            tail: Arc::from(tail),
        })
    }
}

fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    out.push_str(s);
    out.push('"');
}

/// Decimal digits of `n`.
pub(crate) fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    // Only ASCII digits were written, so this is always valid UTF-8.
    out.push_str(std::str::from_utf8(digits.get(i..).unwrap_or_default()).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventName};
    use crate::id::RunId;

    #[test]
    fn wire_form_round_trips_and_refuses_corruption() {
        let run: RunId = "run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3"
            .parse()
            .unwrap();
        let events = [
            Event::agent(
                AgentEventKind::ToolCompleted,
                &run,
                serde_json::json!({"ok": true}),
            ),
            Event::custom(
                EventName::new("chat.message").unwrap(),
                serde_json::json!("hi"),
            )
            .with_field("from", "alice")
            .unwrap(),
        ];
        for event in events {
            let encoded = event.encode().unwrap();
            let back = EncodedEvent::from_wire(&encoded.to_wire());
            assert_eq!(back.as_ref(), Ok(&encoded));
            assert_eq!(encoded.to_wire().len(), encoded.wire_len());
            for (seq, mode) in [(1, WireMode::Named), (12345, WireMode::LegacyNumeric)] {
                for off in [None, Some(1), Some(u64::MAX)] {
                    let frame = encoded.frame_at(seq, off, mode);
                    assert_eq!(
                        (frame.len(), frame.capacity()),
                        (encoded.frame_len_at(seq, off, mode), frame.len())
                    );
                }
            }
        }
        for corrupt in [
            "",
            "a9\n,\"payload\":1}",
            "cBad\n,\"payload\":1}",
            "cok\n\"payload\":1}",
            "cok\n,\"payload\":1",
            "cok\n,\"payload\":1}}",
            "cok\n,\"payload\":1},\"x\":{",
            "x\n,\"payload\":1}",
        ] {
            assert!(EncodedEvent::from_wire(corrupt).is_err(), "{corrupt:?}");
        }
    }

    #[test]
    fn u64_digits() {
        for n in [0u64, 1, 9, 10, 12345, u64::MAX] {
            let mut v = String::new();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string());
            assert_eq!(digits(n), v.len());
        }
    }
}
