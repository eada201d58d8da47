//! [`Envelope`]: an event without its payload, for payloads of the
//! application's own types; and the one encoder both it and
//! [`Event::encode`](crate::event::Event::encode) go through.

use serde::Serialize;

use crate::event::{
    AgentEventKind, EncodeError, EncodedEvent, EventName, FieldError, Fields, TypeTag,
};
use crate::id::RunId;

/// An event without its payload: its type and, for an agent event, its run,
/// or, for a custom event, its extra top-level fields.
/// [`encode`](Envelope::encode) serialises any [`Serialize`] payload once,
/// straight into the event's bytes, without a `serde_json::Value` in
/// between.
///
/// The bytes are exactly those of the [`Event`](crate::event::Event) with
/// the same type, fields and payload (one encoder writes both; the golden
/// tests pin it). Send the result with
/// [`Hub::send_encoded_to_user`](crate::Hub::send_encoded_to_user),
/// [`Hub::send_encoded_to_users`](crate::Hub::send_encoded_to_users) or
/// [`ConnectionHandle::emit_encoded_event`](crate::ConnectionHandle::emit_encoded_event).
///
/// # Examples
///
/// ```
/// use serde::Serialize;
/// use ws_lifecycle::event::{Envelope, EventName, WireMode};
///
/// #[derive(Serialize)]
/// struct Chat<'a> {
///     text: &'a str,
/// }
///
/// let event = Envelope::custom(EventName::new("message")?)
///     .with_field("from", "alice")?
///     .encode(&Chat { text: "hi" })?;
/// assert_eq!(
///     event.frame(1, WireMode::Named),
///     r#"{"v":1,"seq":1,"type":"message","from":"alice","payload":{"text":"hi"}}"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope(Head);

#[derive(Debug, Clone, PartialEq)]
enum Head {
    Agent { kind: AgentEventKind, run: RunId },
    Custom { name: EventName, fields: Fields },
}

impl Envelope {
    /// The envelope of an agent event for `run` (and so its thread).
    ///
    /// ```
    /// use ws_lifecycle::Hub;
    /// use ws_lifecycle::event::{AgentEventKind, Envelope};
    /// use ws_lifecycle::id::UserId;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Thinking {
    ///     step: u32,
    /// }
    ///
    /// let hub = Hub::new();
    /// let alice = UserId::new("alice")?;
    /// let ctx = hub.ids().mint_context(&alice);
    /// let event = Envelope::agent(AgentEventKind::AgentThinking, &ctx.run).encode(&Thinking { step: 1 })?;
    /// let delivery = hub.send_encoded_to_user(&alice, event);
    /// assert!(delivery.is_miss()); // alice is not connected
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn agent(kind: AgentEventKind, run: &RunId) -> Self {
        Envelope(Head::Agent {
            kind,
            run: run.clone(),
        })
    }

    /// The envelope of a custom event.
    pub fn custom(name: EventName) -> Self {
        Envelope(Head::Custom {
            name,
            fields: Fields::default(),
        })
    }

    /// Adds a top-level field to a custom envelope, as
    /// [`Event::with_field`](crate::event::Event::with_field) does (agent
    /// events have a fixed shape and ignore it).
    ///
    /// # Errors
    ///
    /// [`FieldError`] when `name` breaks the grammar or is one of the
    /// envelope's own fields.
    pub fn with_field(
        mut self,
        name: &str,
        value: impl Into<serde_json::Value>,
    ) -> Result<Self, FieldError> {
        let value = value.into();
        match &mut self.0 {
            Head::Custom { fields, .. } => fields.insert(name, value)?,
            Head::Agent { .. } => Fields::check(name)?,
        }
        Ok(self)
    }

    /// Serialises the event with `payload`, once, for any number of
    /// connections.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if `payload` cannot be serialised (serde_json
    /// refuses, for example, maps with non-string keys, and a `Serialize`
    /// implementation may fail on its own).
    pub fn encode<P: Serialize + ?Sized>(&self, payload: &P) -> Result<EncodedEvent, EncodeError> {
        match &self.0 {
            Head::Agent { kind, run } => encode_agent(*kind, run, payload),
            Head::Custom { name, fields } => encode_custom(name, fields, payload),
        }
    }
}

/// An agent event's bytes.
pub(super) fn encode_agent<P: Serialize + ?Sized>(
    kind: AgentEventKind,
    run: &RunId,
    payload: &P,
) -> Result<EncodedEvent, EncodeError> {
    let mut out = buffer();
    field(&mut out, "thread_id", run.thread_id().as_str())?;
    field(&mut out, "run_id", run.as_str())?;
    finish(out, TypeTag::Agent(kind), payload)
}

/// A custom event's bytes.
pub(super) fn encode_custom<P: Serialize + ?Sized>(
    name: &EventName,
    fields: &Fields,
    payload: &P,
) -> Result<EncodedEvent, EncodeError> {
    let mut out = buffer();
    for (key, value) in fields.iter() {
        field(&mut out, key, value)?;
    }
    finish(out, TypeTag::Custom(name.clone()), payload)
}

// Written by hand rather than through a derived struct (a flattened map
// takes serde's slow path): `,"k":v…,"payload":p}`, the object without its
// opening brace, so it can follow the type field.

/// A fresh buffer per event: it becomes the event's shared bytes without a
/// copy. Its spare room is counted (`weight` uses the capacity), so byte
/// limits stay honest. (Copying into an exactly sized string, or shrinking,
/// measured slower: docs/benchmarks.md.)
fn buffer() -> Vec<u8> {
    Vec::with_capacity(256)
}

fn field<V: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    key: &str,
    value: &V,
) -> Result<(), EncodeError> {
    out.push(b',');
    serde_json::to_writer(&mut *out, key).map_err(EncodeError::from)?;
    out.push(b':');
    serde_json::to_writer(&mut *out, value).map_err(EncodeError::from)
}

fn finish<P: Serialize + ?Sized>(
    mut out: Vec<u8>,
    tag: TypeTag,
    payload: &P,
) -> Result<EncodedEvent, EncodeError> {
    field(&mut out, "payload", payload)?;
    out.push(b'}');
    // serde_json writes UTF-8; the check only guards that promise.
    let tail = String::from_utf8(out).map_err(|e| EncodeError(e.to_string()))?;
    Ok(EncodedEvent::from_parts(tag, tail))
}
