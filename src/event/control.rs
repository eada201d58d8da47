//! The crate's own messages on a connection, typed: the control events it
//! writes (`gap`, `reauth_required`, `reauth_ok`, `reauth_failed`) and the
//! control messages a client sends (`auth`, `reauth`).
//!
//! Outbound control events are built from fixed names and fields, so making
//! one cannot fail; their bytes are pinned by the golden tests
//! (`tests/golden_wire.rs`) like every other frame.

use serde::Deserialize;

#[cfg(test)]
use crate::event::codec::CONTROL_NAMES;
use crate::event::codec::{EncodedEvent, TypeTag, push_u64};

/// Why a connection may have missed events: the payload of a `gap` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GapReason {
    /// This node's backplane subscription broke and was restored: events
    /// published by other nodes meanwhile were not received.
    BackplaneReconnected,
    /// Another node (or this one) lost events it had accepted for the user
    /// before they reached the backplane.
    BackplaneLostEvents,
    /// The user's stream was restarted (its history was lost, for example
    /// Redis lost the key): offsets start again under a new epoch.
    StreamRestarted,
    /// This node missed events of the user's stream and could not read
    /// them back from the history.
    StreamHole,
}

impl GapReason {
    /// The wire spelling (`backplane_reconnected`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::BackplaneReconnected => "backplane_reconnected",
            GapReason::BackplaneLostEvents => "backplane_lost_events",
            GapReason::StreamRestarted => "stream_restarted",
            GapReason::StreamHole => "stream_hole",
        }
    }
}

/// A control event the crate writes to a connection. Each is a frame like
/// any other (`v`, `seq`, `type`, `payload`); clients tell them apart by
/// `type`.
///
/// ```
/// use ws_lifecycle::event::{WireMode, control::{Control, GapReason}};
///
/// let gap = Control::Gap(GapReason::BackplaneReconnected).encode();
/// assert_eq!(
///     gap.frame(9, WireMode::Named),
///     r#"{"v":1,"seq":9,"type":"gap","payload":{"reason":"backplane_reconnected"}}"#
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Events for this connection may have been missed: resync.
    Gap(GapReason),
    /// The credentials expire soon (at `expires_at`, Unix seconds): send
    /// `{"type":"reauth","token":"…"}` with a fresh token.
    ReauthRequired {
        /// When they expire.
        expires_at: Option<u64>,
    },
    /// A re-authentication was accepted; the credentials now expire at
    /// `expires_at` (`None`: never).
    ReauthOk {
        /// When the new credentials expire.
        expires_at: Option<u64>,
    },
    /// A re-authentication was refused with `code` (an
    /// [`AuthError::code`](crate::auth::AuthError::code)); the old
    /// credentials still hold until they expire.
    ReauthFailed {
        /// Why.
        code: &'static str,
    },
}

impl Control {
    /// The wire `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Control::Gap(_) => "gap",
            Control::ReauthRequired { .. } => "reauth_required",
            Control::ReauthOk { .. } => "reauth_ok",
            Control::ReauthFailed { .. } => "reauth_failed",
        }
    }

    /// Serialises it once, for any number of connections.
    pub fn encode(&self) -> EncodedEvent {
        let mut tail = String::with_capacity(64);
        tail.push_str(",\"payload\":{");
        match self {
            Control::Gap(reason) => field(&mut tail, "reason", reason.as_str()),
            Control::ReauthRequired { expires_at } | Control::ReauthOk { expires_at } => {
                tail.push_str("\"expires_at\":");
                match expires_at {
                    Some(secs) => push_u64(&mut tail, *secs),
                    None => tail.push_str("null"),
                }
            }
            Control::ReauthFailed { code } => field(&mut tail, "code", code),
        }
        tail.push_str("}}");
        EncodedEvent::from_parts(TypeTag::Control(self.name()), tail)
    }
}

/// `"key":"value"` for the crate's own identifiers: `[a-z0-9_]` only, so
/// they need no escaping (checked in debug builds and by the golden tests).
fn field(out: &mut String, key: &str, value: &str) {
    debug_assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    );
    out.push('"');
    out.push_str(key);
    out.push_str("\":\"");
    out.push_str(value);
    out.push('"');
}

/// The control messages a client sends: `{"type":"auth","token":"…"}` (the
/// first message, when in-band authentication is on) and
/// `{"type":"reauth","token":"…"}` (a fresh token for a live connection).
pub(crate) struct ClientControl;

impl ClientControl {
    /// The token of a first message, if `text` is an `auth` message with
    /// one. Parsed whole: the first message of such a connection is always
    /// this one.
    pub(crate) fn auth_token(text: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Auth {
            #[serde(rename = "type")]
            kind: String,
            token: String,
        }
        let message: Auth = serde_json::from_str(text).ok()?;
        (message.kind == "auth").then_some(message.token)
    }

    /// The token of a `reauth` message (empty when it has none), or `None`
    /// for any other message, which is the application's.
    pub(crate) fn reauth_token(text: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Reauth {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            token: String,
        }
        // Cheap pre-check: most frames are application traffic.
        if !text.contains("\"reauth\"") {
            return None;
        }
        let message: Reauth = serde_json::from_str(text).ok()?;
        (message.kind == "reauth").then_some(message.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reauth_token(text: &str) -> Option<String> {
        ClientControl::reauth_token(text)
    }

    fn auth_token(text: &str) -> Option<String> {
        ClientControl::auth_token(text)
    }

    #[test]
    fn only_control_messages_are_intercepted() {
        assert_eq!(
            reauth_token(r#"{"type":"reauth","token":"a.b.c"}"#).as_deref(),
            Some("a.b.c")
        );
        assert_eq!(reauth_token(r#"{"type":"chat","text":"\"reauth\""}"#), None);
        assert_eq!(reauth_token("reauth"), None);
        assert_eq!(
            auth_token(r#"{"type":"auth","token":"a.b.c"}"#).as_deref(),
            Some("a.b.c")
        );
        assert_eq!(auth_token(r#"{"type":"auth"}"#), None);
        assert_eq!(
            auth_token(r#"{"type":"chat","token":"x","note":"auth\""}"#),
            None
        );
        // As before the consolidation: escapes in the type are JSON, and a
        // reauth with a null token is not a reauth (it is the handler's).
        assert_eq!(
            auth_token(r#"{"type":"\u0061uth","token":"t"}"#).as_deref(),
            Some("t")
        );
        assert_eq!(reauth_token(r#"{"type":"reauth","token":null}"#), None);
        assert_eq!(reauth_token(r#"{"type":"reauth"}"#).as_deref(), Some(""));
    }

    #[test]
    fn every_control_name_round_trips_through_the_wire_form() {
        for control in [
            Control::Gap(GapReason::BackplaneLostEvents),
            Control::ReauthRequired { expires_at: None },
            Control::ReauthOk {
                expires_at: Some(1),
            },
            Control::ReauthFailed {
                code: "token_expired",
            },
        ] {
            let encoded = control.encode();
            assert!(CONTROL_NAMES.contains(&control.name()));
            assert_eq!(EncodedEvent::from_wire(&encoded.to_wire()), Ok(encoded));
        }
    }
}
