//! Events and the versioned wire envelope.
//!
//! Every frame the crate writes is one JSON object:
//!
//! ```text
//! {"v":1,"seq":7,"type":"agent_started","thread_id":"thread_…","run_id":"run_…","payload":{…}}
//! {"v":1,"seq":8,"type":"chat.message","payload":{…}}
//! ```
//!
//! `v` is the envelope version (1); `seq` the per-connection sequence number
//! (from 1, gap-free unless an overflow policy dropped an event); `type` the
//! event name. A connection in [`WireMode::LegacyNumeric`] gets the agent
//! events' numeric codes instead (`"type":1` … `"type":5`) for clients
//! written before the names existed; custom events keep their names there.
//! Golden tests pin both encodings byte for byte: changing them is a breaking
//! change.
//!
//! An event is serialised once per send ([`EncodedEvent`]); each connection
//! only splices its own `seq` into the shared bytes. A payload of the
//! application's own `Serialize` type goes through an [`Envelope`], straight
//! into those bytes, without a `serde_json::Value`.

use std::fmt;
use std::sync::Arc;

use crate::id::RunId;

mod codec;
pub mod control;
mod envelope;

pub(crate) use codec::TypeTag;
pub use codec::{EncodedEvent, WireError, WireMode};
pub use envelope::Envelope;

/// The envelope version written in every frame's `v` field.
pub const WIRE_VERSION: u32 = 1;

/// The five agent events.
///
/// Non-exhaustive: a later version may add kinds (with their own names and
/// legacy codes), so a `match` outside the crate needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AgentEventKind {
    /// A run started.
    AgentStarted,
    /// The agent is thinking (streamed reasoning, status).
    AgentThinking,
    /// A tool call started.
    ToolExecuting,
    /// A tool call finished.
    ToolCompleted,
    /// The run finished.
    AgentCompleted,
}

impl AgentEventKind {
    /// All five, in the order a run emits them.
    pub const ALL: [AgentEventKind; 5] = [
        AgentEventKind::AgentStarted,
        AgentEventKind::AgentThinking,
        AgentEventKind::ToolExecuting,
        AgentEventKind::ToolCompleted,
        AgentEventKind::AgentCompleted,
    ];

    /// The wire name (`agent_started`, …).
    pub fn name(self) -> &'static str {
        match self {
            AgentEventKind::AgentStarted => "agent_started",
            AgentEventKind::AgentThinking => "agent_thinking",
            AgentEventKind::ToolExecuting => "tool_executing",
            AgentEventKind::ToolCompleted => "tool_completed",
            AgentEventKind::AgentCompleted => "agent_completed",
        }
    }

    /// The numeric code legacy clients expect (1 to 5).
    pub fn legacy_code(self) -> u8 {
        match self {
            AgentEventKind::AgentStarted => 1,
            AgentEventKind::AgentThinking => 2,
            AgentEventKind::ToolExecuting => 3,
            AgentEventKind::ToolCompleted => 4,
            AgentEventKind::AgentCompleted => 5,
        }
    }
}

/// The name of a custom event: 1 to 64 bytes of `[a-z0-9_.-]`, not one of
/// the five agent event names.
///
/// The grammar keeps names safe to write into JSON without escaping.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventName(Arc<str>);

/// A custom event name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid event name: use 1 to 64 bytes of [a-z0-9_.-], not an agent event name (got {len} bytes)"
)]
pub struct EventNameError {
    len: usize,
}

impl EventName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`EventNameError`] when the name breaks the grammar or is reserved.
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::event::EventName;
    /// assert!(EventName::new("chat.message").is_ok());
    /// assert!(EventName::new("Chat").is_err());
    /// assert!(EventName::new("agent_started").is_err());
    /// ```
    pub fn new(name: &str) -> Result<Self, EventNameError> {
        let grammar = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'));
        let reserved = AgentEventKind::ALL.iter().any(|k| k.name() == name);
        if grammar && !reserved {
            Ok(EventName(Arc::from(name)))
        } else {
            Err(EventNameError { len: name.len() })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventName({})", &self.0)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event to deliver to a connection, its payload a `serde_json::Value`.
/// For a payload of the application's own [`Serialize`](serde::Serialize) type, build an
/// [`Envelope`] instead: it serialises the payload once, straight into the
/// event's bytes, with the same result.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One of the five agent events, for a run (and so its thread).
    Agent {
        /// Which one.
        kind: AgentEventKind,
        /// The run it belongs to; the thread id on the wire is
        /// `run.thread_id()`, so the two can never disagree.
        run: RunId,
        /// Application data.
        payload: serde_json::Value,
    },
    /// An application-defined event.
    Custom {
        /// Its name (the wire `type`).
        name: EventName,
        /// Extra top-level fields, written between `type` and `payload`
        /// (for protocols that expect, say, `"from"` beside `"type"`).
        fields: Fields,
        /// Application data.
        payload: serde_json::Value,
    },
}

/// Top-level fields of a custom event's envelope, beside `v`, `seq`, `type`
/// and `payload`. Names are 1 to 64 bytes of `[a-z0-9_]` and never one of
/// the envelope's own (`v`, `seq`, `type`, `payload`, `thread_id`,
/// `run_id`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(serde_json::Map<String, serde_json::Value>);

/// A field name was rejected: it breaks the grammar or is the envelope's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid event field name: use 1 to 64 bytes of [a-z0-9_], not v, seq, off, type, payload, thread_id or run_id"
)]
pub struct FieldError;

const ENVELOPE_FIELDS: [&str; 7] = ["v", "seq", "off", "type", "payload", "thread_id", "run_id"];

impl Fields {
    /// Checks a field name against the grammar and the envelope's own.
    fn check(name: &str) -> Result<(), FieldError> {
        let grammar = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'));
        if !grammar || ENVELOPE_FIELDS.contains(&name) {
            return Err(FieldError);
        }
        Ok(())
    }

    /// Adds (or replaces) a field, checking its name.
    fn insert(&mut self, name: &str, value: serde_json::Value) -> Result<(), FieldError> {
        Fields::check(name)?;
        self.0.insert(name.to_owned(), value);
        Ok(())
    }

    /// The fields, in the order they are written.
    fn iter(&self) -> impl Iterator<Item = (&String, &serde_json::Value)> {
        self.0.iter()
    }
}

impl Event {
    /// An agent event.
    pub fn agent(kind: AgentEventKind, run: &RunId, payload: serde_json::Value) -> Self {
        Event::Agent {
            kind,
            run: run.clone(),
            payload,
        }
    }

    /// A custom event.
    pub fn custom(name: EventName, payload: serde_json::Value) -> Self {
        Event::Custom {
            name,
            fields: Fields::default(),
            payload,
        }
    }

    /// Adds a top-level field to a custom event (agent events have a fixed
    /// shape and ignore it: use their payload).
    ///
    /// # Errors
    ///
    /// [`FieldError`] when `name` breaks the grammar or is one of the
    /// envelope's own fields.
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::event::{Event, EventName};
    /// let message = Event::custom(EventName::new("message")?, "hi".into()).with_field("from", "alice")?;
    /// let frame = message.encode()?.frame(1, Default::default());
    /// assert_eq!(frame, r#"{"v":1,"seq":1,"type":"message","from":"alice","payload":"hi"}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_field(
        mut self,
        name: &str,
        value: impl Into<serde_json::Value>,
    ) -> Result<Self, FieldError> {
        match &mut self {
            Event::Custom { fields, .. } => fields.insert(name, value.into())?,
            Event::Agent { .. } => Fields::check(name)?,
        }
        Ok(self)
    }

    /// Adds a connection's stream position to a custom event: the fields
    /// `epoch`, `off` and `recovered` of the `ready` frame that
    /// `docs/protocol.md` describes (`off` is the envelope's own field, so
    /// [`with_field`](Event::with_field) refuses it). Meant for the
    /// connection's own `ready` event, emitted with
    /// [`ConnectionHandle::emit`](crate::ConnectionHandle::emit): an event
    /// sent to a user's stream gets its own `off`.
    ///
    /// ```
    /// # use ws_lifecycle::{ConnectionHandle, event::{Event, EventName}};
    /// # fn ready(conn: &ConnectionHandle) -> Result<Event, Box<dyn std::error::Error>> {
    /// let mut ready = Event::custom(EventName::new("ready")?, serde_json::Value::Null);
    /// if let Some(resume) = conn.resume() {
    ///     ready = ready.with_resume(resume);
    /// }
    /// # Ok(ready)
    /// # }
    /// ```
    #[must_use]
    pub fn with_resume(mut self, resume: &crate::stream::ResumeOutcome) -> Self {
        if let Event::Custom { fields, .. } = &mut self {
            let position = &resume.position;
            fields
                .0
                .insert("epoch".to_owned(), position.epoch.as_str().into());
            fields.0.insert("off".to_owned(), position.offset.into());
            fields
                .0
                .insert("recovered".to_owned(), resume.recovered.into());
        }
        self
    }

    /// Serialises the event once, for any number of connections.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] if the payload cannot be serialised (serde_json
    /// refuses, for example, maps with non-string keys).
    pub fn encode(&self) -> Result<EncodedEvent, EncodeError> {
        match self {
            Event::Agent { kind, run, payload } => envelope::encode_agent(*kind, run, payload),
            Event::Custom {
                name,
                fields,
                payload,
            } => envelope::encode_custom(name, fields, payload),
        }
    }
}

impl EncodeError {
    fn from(error: serde_json::Error) -> Self {
        EncodeError(error.to_string())
    }
}

/// An event's payload could not be serialised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event could not be serialised: {0}")]
pub struct EncodeError(String);
