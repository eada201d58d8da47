//! Golden tests for the JSON wire envelope (design invariant 8: stable wire).
//!
//! **These strings are the wire contract.** Every expected frame below was
//! written by hand from the envelope documented in `docs/protocol.md`
//! (`v`, `seq`, `off` on events of a user's stream, `type`, then `thread_id`, `run_id`, `payload` for agent
//! events; `v`, `seq`, `type`, `payload` for custom events), in both
//! [`WireMode::Named`] and [`WireMode::LegacyNumeric`]. Changing one of them
//! is a breaking change for deployed clients and must be recorded in
//! `CHANGELOG.md` (and the envelope version `v` considered), never
//! "fixed" by pasting the new output over the old literal.
//!
//! Payload objects use keys in sorted order, so the goldens pin the envelope
//! and the payload escaping, not serde_json's map ordering.
//!
//! Every case is built twice: as an [`Event`] with a `serde_json::Value`
//! payload, and through an [`Envelope`] with a payload of the test's own
//! `Serialize` types (no `Value` in between). Both must produce the golden
//! bytes in both modes.

use proptest::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};
use ws_lifecycle::event::{
    AgentEventKind, EncodedEvent, Envelope, Event, EventName, WIRE_VERSION, WireMode,
};
use ws_lifecycle::id::RunId;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A fixed run id, valid as a minted one is: the run part sorts after the
/// thread part (`…N5P`) and carries its 40-bit thread check.
const RUN: &str = "run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3";
const THREAD: &str = "thread_01HZX3V6Q0C1K9A3YB7W2M4N5P";

/// One golden case: an event, the same event encoded from a typed payload,
/// the sequence number it is framed with, and the exact frame in each wire
/// mode.
struct Case {
    event: Event,
    typed: EncodedEvent,
    seq: u64,
    named: &'static str,
    legacy: &'static str,
}

fn run() -> Result<RunId, Box<dyn std::error::Error>> {
    let run: RunId = RUN.parse()?;
    assert_eq!(run.thread_id().as_str(), THREAD);
    Ok(run)
}

fn chat() -> Result<EventName, Box<dyn std::error::Error>> {
    Ok(EventName::new("chat.message")?)
}

/// A payload with unicode and every character class that needs JSON
/// escaping (or famously does not: `/` in `</script>`, DEL, U+2028).
fn hostile_payload() -> Value {
    json!({
        "ctl": "\u{1}\u{1f}\u{7f}\u{2028}",
        "text": "quote \" backslash \\ newline \n tab \t </script> café ☕ 日本語 😀",
    })
}

// The typed payloads: the application's own types, serialised straight into
// the event's bytes.

/// `{}`.
#[derive(Serialize)]
struct Empty {}

/// [`hostile_payload`], typed.
#[derive(Serialize)]
struct Hostile {
    ctl: &'static str,
    text: &'static str,
}

const HOSTILE: Hostile = Hostile {
    ctl: "\u{1}\u{1f}\u{7f}\u{2028}",
    text: "quote \" backslash \\ newline \n tab \t </script> café ☕ 日本語 😀",
};

#[derive(Serialize)]
struct Thinking<'a> {
    status: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct Search {
    q: String,
}

#[derive(Serialize)]
struct ToolCall {
    args: Search,
    tool: &'static str,
}

#[derive(Serialize)]
struct Usage {
    input: u32,
    output: u32,
}

#[derive(Serialize)]
struct Completed {
    ok: bool,
    tokens: (i32, f64, i32),
    usage: Usage,
}

#[derive(Serialize)]
struct Text<'a> {
    text: &'a str,
}

fn agent_started_cases() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
    let run = run()?;
    Ok(vec![
        Case {
            event: Event::agent(AgentEventKind::AgentStarted, &run, json!({})),
            typed: Envelope::agent(AgentEventKind::AgentStarted, &run).encode(&Empty {})?,
            seq: 1,
            named: r#"{"v":1,"seq":1,"type":"agent_started","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{}}"#,
            legacy: r#"{"v":1,"seq":1,"type":1,"thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{}}"#,
        },
        Case {
            event: Event::agent(AgentEventKind::AgentStarted, &run, json!({})),
            typed: Envelope::agent(AgentEventKind::AgentStarted, &run).encode(&Empty {})?,
            seq: u64::MAX,
            named: r#"{"v":1,"seq":18446744073709551615,"type":"agent_started","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{}}"#,
            legacy: r#"{"v":1,"seq":18446744073709551615,"type":1,"thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{}}"#,
        },
    ])
}

fn agent_thinking_cases() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
    let run = run()?;
    Ok(vec![
        Case {
            event: Event::agent(AgentEventKind::AgentThinking, &run, Value::Null),
            typed: Envelope::agent(AgentEventKind::AgentThinking, &run).encode(&())?,
            seq: 2,
            named: r#"{"v":1,"seq":2,"type":"agent_thinking","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":null}"#,
            legacy: r#"{"v":1,"seq":2,"type":2,"thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":null}"#,
        },
        Case {
            event: Event::agent(
                AgentEventKind::AgentThinking,
                &run,
                json!({"status": "reasoning", "text": "Let me think…"}),
            ),
            typed: Envelope::agent(AgentEventKind::AgentThinking, &run).encode(&Thinking {
                status: "reasoning",
                text: "Let me think…",
            })?,
            seq: 10,
            named: r#"{"v":1,"seq":10,"type":"agent_thinking","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{"status":"reasoning","text":"Let me think…"}}"#,
            legacy: r#"{"v":1,"seq":10,"type":2,"thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{"status":"reasoning","text":"Let me think…"}}"#,
        },
    ])
}

fn tool_executing_cases() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
    let run = run()?;
    Ok(vec![Case {
        event: Event::agent(
            AgentEventKind::ToolExecuting,
            &run,
            json!({"args": {"q": "weather in Zürich"}, "tool": "search"}),
        ),
        typed: Envelope::agent(AgentEventKind::ToolExecuting, &run).encode(&ToolCall {
            args: Search {
                q: "weather in Zürich".to_owned(),
            },
            tool: "search",
        })?,
        seq: 3,
        named: r#"{"v":1,"seq":3,"type":"tool_executing","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{"args":{"q":"weather in Zürich"},"tool":"search"}}"#,
        legacy: r#"{"v":1,"seq":3,"type":3,"thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{"args":{"q":"weather in Zürich"},"tool":"search"}}"#,
    }])
}

fn tool_completed_cases() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
    let run = run()?;
    Ok(vec![Case {
        event: Event::agent(AgentEventKind::ToolCompleted, &run, hostile_payload()),
        typed: Envelope::agent(AgentEventKind::ToolCompleted, &run).encode(&HOSTILE)?,
        seq: 4,
        // DEL (U+007F) and U+2028 are valid unescaped in JSON and are
        // written raw; C0 controls become lower-case `\u00xx` escapes.
        named: concat!(
            r#"{"v":1,"seq":4,"type":"tool_completed","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{"ctl":"\u0001\u001f"#,
            "\u{7f}\u{2028}",
            r#"","text":"quote \" backslash \\ newline \n tab \t </script> café ☕ 日本語 😀"}}"#,
        ),
        legacy: concat!(
            r#"{"v":1,"seq":4,"type":4,"thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{"ctl":"\u0001\u001f"#,
            "\u{7f}\u{2028}",
            r#"","text":"quote \" backslash \\ newline \n tab \t </script> café ☕ 日本語 😀"}}"#,
        ),
    }])
}

fn agent_completed_cases() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
    let run = run()?;
    Ok(vec![Case {
        event: Event::agent(
            AgentEventKind::AgentCompleted,
            &run,
            json!({"ok": true, "tokens": [1, 2.5, -3], "usage": {"input": 12, "output": 34}}),
        ),
        typed: Envelope::agent(AgentEventKind::AgentCompleted, &run).encode(&Completed {
            ok: true,
            tokens: (1, 2.5, -3),
            usage: Usage {
                input: 12,
                output: 34,
            },
        })?,
        seq: u64::MAX,
        named: r#"{"v":1,"seq":18446744073709551615,"type":"agent_completed","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{"ok":true,"tokens":[1,2.5,-3],"usage":{"input":12,"output":34}}}"#,
        legacy: r#"{"v":1,"seq":18446744073709551615,"type":5,"thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{"ok":true,"tokens":[1,2.5,-3],"usage":{"input":12,"output":34}}}"#,
    }])
}

fn custom_cases() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
    Ok(vec![
        Case {
            event: Event::custom(chat()?, json!({"text": "hello"})),
            typed: Envelope::custom(chat()?).encode(&Text { text: "hello" })?,
            seq: 1,
            named: r#"{"v":1,"seq":1,"type":"chat.message","payload":{"text":"hello"}}"#,
            legacy: r#"{"v":1,"seq":1,"type":"chat.message","payload":{"text":"hello"}}"#,
        },
        Case {
            event: Event::custom(chat()?, json!({})),
            typed: Envelope::custom(chat()?).encode(&Empty {})?,
            seq: 8,
            named: r#"{"v":1,"seq":8,"type":"chat.message","payload":{}}"#,
            legacy: r#"{"v":1,"seq":8,"type":"chat.message","payload":{}}"#,
        },
        Case {
            event: Event::custom(chat()?, Value::Null),
            typed: Envelope::custom(chat()?).encode(&None::<u8>)?,
            seq: u64::MAX,
            named: r#"{"v":1,"seq":18446744073709551615,"type":"chat.message","payload":null}"#,
            legacy: r#"{"v":1,"seq":18446744073709551615,"type":"chat.message","payload":null}"#,
        },
        Case {
            event: Event::custom(chat()?, hostile_payload()),
            typed: Envelope::custom(chat()?).encode(&HOSTILE)?,
            seq: 42,
            named: concat!(
                r#"{"v":1,"seq":42,"type":"chat.message","payload":{"ctl":"\u0001\u001f"#,
                "\u{7f}\u{2028}",
                r#"","text":"quote \" backslash \\ newline \n tab \t </script> café ☕ 日本語 😀"}}"#,
            ),
            legacy: concat!(
                r#"{"v":1,"seq":42,"type":"chat.message","payload":{"ctl":"\u0001\u001f"#,
                "\u{7f}\u{2028}",
                r#"","text":"quote \" backslash \\ newline \n tab \t </script> café ☕ 日本語 😀"}}"#,
            ),
        },
        Case {
            event: Event::custom(chat()?, json!(["a", 1, null])),
            typed: Envelope::custom(chat()?).encode(&("a", 1, ()))?,
            seq: 9,
            named: r#"{"v":1,"seq":9,"type":"chat.message","payload":["a",1,null]}"#,
            legacy: r#"{"v":1,"seq":9,"type":"chat.message","payload":["a",1,null]}"#,
        },
    ])
}

fn all_cases() -> Result<Vec<Case>, Box<dyn std::error::Error>> {
    let mut all = Vec::new();
    all.extend(agent_started_cases()?);
    all.extend(agent_thinking_cases()?);
    all.extend(tool_executing_cases()?);
    all.extend(tool_completed_cases()?);
    all.extend(agent_completed_cases()?);
    all.extend(custom_cases()?);
    Ok(all)
}

/// Asserts both wire modes of `case` byte for byte, from the `Value` path
/// and from the typed path.
fn assert_golden(cases: Vec<Case>) -> TestResult {
    assert!(!cases.is_empty());
    for case in cases {
        let encoded = case.event.encode()?;
        for (path, encoded) in [("Value", &encoded), ("typed", &case.typed)] {
            assert_eq!(
                encoded.frame(case.seq, WireMode::Named),
                case.named,
                "Named frame for {:?} seq {} ({path} path)",
                case.event,
                case.seq
            );
            assert_eq!(
                encoded.frame(case.seq, WireMode::LegacyNumeric),
                case.legacy,
                "LegacyNumeric frame for {:?} seq {} ({path} path)",
                case.event,
                case.seq
            );
        }
        // The same event either way, backplane form included.
        assert_eq!(case.typed, encoded, "{:?}", case.event);
        assert_eq!(case.typed.to_wire(), encoded.to_wire());
    }
    Ok(())
}

#[test]
fn agent_started_frames_match_golden() -> TestResult {
    assert_golden(agent_started_cases()?)
}

#[test]
fn agent_thinking_frames_match_golden() -> TestResult {
    assert_golden(agent_thinking_cases()?)
}

#[test]
fn tool_executing_frames_match_golden() -> TestResult {
    assert_golden(tool_executing_cases()?)
}

#[test]
fn tool_completed_frames_match_golden() -> TestResult {
    assert_golden(tool_completed_cases()?)
}

#[test]
fn agent_completed_frames_match_golden() -> TestResult {
    assert_golden(agent_completed_cases()?)
}

#[test]
fn custom_event_frames_match_golden_and_keep_their_name_in_legacy_mode() -> TestResult {
    assert_golden(custom_cases()?)
}

/// The goldens cover all five agent events, each once per mode.
#[test]
fn goldens_cover_all_five_agent_events() -> TestResult {
    let mut seen = Vec::new();
    for case in all_cases()? {
        if let Event::Agent { kind, .. } = case.event
            && !seen.contains(&kind)
        {
            seen.push(kind);
        }
    }
    assert_eq!(seen, AgentEventKind::ALL.to_vec());
    assert_eq!(WIRE_VERSION, 1);
    Ok(())
}

/// Checks a frame's JSON structure against the event it was built from.
fn assert_frame_json(frame: &str, event: &Event, seq: u64, mode: WireMode) -> TestResult {
    let parsed: Value = serde_json::from_str(frame)?;
    let object = parsed.as_object().ok_or("frame is not a JSON object")?;
    assert_eq!(parsed.get("v"), Some(&json!(1)), "{frame}");
    assert_eq!(
        parsed.get("seq").and_then(Value::as_u64),
        Some(seq),
        "{frame}"
    );
    match event {
        Event::Agent { kind, run, payload } => {
            let expected_type = match mode {
                WireMode::Named => json!(kind.name()),
                WireMode::LegacyNumeric => json!(kind.legacy_code()),
            };
            assert_eq!(parsed.get("type"), Some(&expected_type), "{frame}");
            assert_eq!(
                parsed.get("thread_id"),
                Some(&json!(run.thread_id().as_str()))
            );
            assert_eq!(parsed.get("run_id"), Some(&json!(run.as_str())));
            assert_eq!(parsed.get("payload"), Some(payload));
            assert_eq!(object.len(), 6, "{frame}");
        }
        Event::Custom { name, payload, .. } => {
            assert_eq!(parsed.get("type"), Some(&json!(name.as_str())), "{frame}");
            assert_eq!(parsed.get("payload"), Some(payload));
            assert_eq!(object.len(), 4, "{frame}");
        }
    }
    Ok(())
}

/// Every golden string and every frame the encoder produces parses as a
/// JSON object with `v == 1`, the right `seq`, `type`, ids and payload.
#[test]
fn every_frame_parses_as_json_with_v_1() -> TestResult {
    for case in all_cases()? {
        let encoded = case.event.encode()?;
        for (mode, golden) in [
            (WireMode::Named, case.named),
            (WireMode::LegacyNumeric, case.legacy),
        ] {
            assert_frame_json(golden, &case.event, case.seq, mode)?;
            assert_frame_json(&encoded.frame(case.seq, mode), &case.event, case.seq, mode)?;
        }
    }
    Ok(())
}

/// `write_frame` appends to the buffer it is given, and one encoding serves
/// any number of sequence numbers (only `seq` differs between them).
#[test]
fn write_frame_appends_and_one_encoding_serves_many_seqs() -> TestResult {
    let run = run()?;
    let event = Event::agent(AgentEventKind::AgentStarted, &run, json!({}));
    let encoded: EncodedEvent = event.encode()?;
    let mut out = String::from("prefix|");
    encoded.write_frame(1, WireMode::Named, &mut out);
    assert_eq!(
        out,
        r#"prefix|{"v":1,"seq":1,"type":"agent_started","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{}}"#
    );
    assert_eq!(
        encoded.frame(2, WireMode::Named),
        r#"{"v":1,"seq":2,"type":"agent_started","thread_id":"thread_01HZX3V6Q0C1K9A3YB7W2M4N5P","run_id":"run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YBQAHBZWT3","payload":{}}"#
    );
    Ok(())
}

proptest! {
    /// For any sequence number and any string payload, every frame is a
    /// JSON object with `v == 1` and the given `seq`, in both modes.
    #[test]
    fn arbitrary_frames_parse_as_json_with_v_1(
        seq in any::<u64>(),
        text in any::<String>(),
        kind in proptest::sample::select(AgentEventKind::ALL.to_vec()),
    ) {
        let run = run().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let chat = chat().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let payload = json!({ "text": text });
        let typed_payload = Text { text: &text };
        for (event, typed) in [
            (Event::agent(kind, &run, payload.clone()), Envelope::agent(kind, &run)),
            (Event::custom(chat.clone(), payload.clone()), Envelope::custom(chat.clone())),
        ] {
            let encoded = event.encode()?;
            prop_assert_eq!(&typed.encode(&typed_payload)?, &encoded);
            for mode in [WireMode::Named, WireMode::LegacyNumeric] {
                let frame = encoded.frame(seq, mode);
                assert_frame_json(&frame, &event, seq, mode)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {frame}")))?;
                prop_assert!(frame.starts_with(&format!("{{\"v\":1,\"seq\":{seq},\"type\":")), "{}", frame);
            }
        }
    }
}

/// Extra top-level fields of a custom event sit between `type` and
/// `payload`, in name order; the envelope's own names are refused.
#[test]
fn custom_event_fields_golden() -> TestResult {
    let message = Event::custom(EventName::new("message")?, json!("hi \"there\""))
        .with_field("to", "bob")?
        .with_field("from", "alice")?;
    let typed = Envelope::custom(EventName::new("message")?)
        .with_field("to", "bob")?
        .with_field("from", "alice")?
        .encode("hi \"there\"")?;
    for encoded in [message.encode()?, typed] {
        for mode in [WireMode::Named, WireMode::LegacyNumeric] {
            assert_eq!(
                encoded.frame(3, mode),
                r#"{"v":1,"seq":3,"type":"message","from":"alice","to":"bob","payload":"hi \"there\""}"#
            );
        }
    }
    for reserved in [
        "v",
        "seq",
        "type",
        "payload",
        "thread_id",
        "run_id",
        "",
        "From",
        "a-b",
    ] {
        let refused = Event::custom(EventName::new("x")?, json!(null)).with_field(reserved, 1);
        assert!(refused.is_err(), "{reserved:?} accepted");
        let refused = Envelope::custom(EventName::new("x")?).with_field(reserved, 1);
        assert!(refused.is_err(), "{reserved:?} accepted by an envelope");
    }
    Ok(())
}

/// The crate's own control events, pinned like every other frame: the
/// same in both wire modes (their names are not agent events).
#[test]
fn control_events_are_pinned_byte_for_byte() {
    use ws_lifecycle::event::control::{Control, GapReason};
    let cases = [
        (
            Control::Gap(GapReason::BackplaneReconnected),
            r#"{"v":1,"seq":4,"type":"gap","payload":{"reason":"backplane_reconnected"}}"#,
        ),
        (
            Control::Gap(GapReason::BackplaneLostEvents),
            r#"{"v":1,"seq":4,"type":"gap","payload":{"reason":"backplane_lost_events"}}"#,
        ),
        (
            Control::Gap(GapReason::StreamRestarted),
            r#"{"v":1,"seq":4,"type":"gap","payload":{"reason":"stream_restarted"}}"#,
        ),
        (
            Control::Gap(GapReason::StreamHole),
            r#"{"v":1,"seq":4,"type":"gap","payload":{"reason":"stream_hole"}}"#,
        ),
        (
            Control::ReauthRequired {
                expires_at: Some(1_767_225_600),
            },
            r#"{"v":1,"seq":4,"type":"reauth_required","payload":{"expires_at":1767225600}}"#,
        ),
        (
            Control::ReauthOk { expires_at: None },
            r#"{"v":1,"seq":4,"type":"reauth_ok","payload":{"expires_at":null}}"#,
        ),
        (
            Control::ReauthFailed {
                code: "token_expired",
            },
            r#"{"v":1,"seq":4,"type":"reauth_failed","payload":{"code":"token_expired"}}"#,
        ),
    ];
    for (control, golden) in cases {
        let encoded = control.encode();
        assert_eq!(encoded.frame(4, WireMode::Named), golden);
        assert_eq!(encoded.frame(4, WireMode::LegacyNumeric), golden);
        assert_eq!(encoded.frame_len(4, WireMode::Named), golden.len());
    }
}

/// An event of a user's stream carries its offset, `off`, right after
/// `seq`, in both wire modes; an event for one connection has none.
#[test]
fn stream_offsets_are_pinned_byte_for_byte() -> TestResult {
    let run = run()?;
    let agent = Event::agent(
        AgentEventKind::ToolExecuting,
        &run,
        json!({"tool": "search"}),
    )
    .encode()?;
    let named = format!(
        r#"{{"v":1,"seq":7,"off":42,"type":"tool_executing","thread_id":"{THREAD}","run_id":"{RUN}","payload":{{"tool":"search"}}}}"#
    );
    let legacy = format!(
        r#"{{"v":1,"seq":7,"off":42,"type":3,"thread_id":"{THREAD}","run_id":"{RUN}","payload":{{"tool":"search"}}}}"#
    );
    assert_eq!(agent.frame_at(7, Some(42), WireMode::Named), named);
    assert_eq!(agent.frame_at(7, Some(42), WireMode::LegacyNumeric), legacy);
    assert_eq!(
        agent.frame_len_at(7, Some(42), WireMode::Named),
        named.len()
    );
    let custom = Event::custom(chat()?, json!("hi")).encode()?;
    assert_eq!(
        custom.frame_at(1, Some(u64::MAX), WireMode::Named),
        r#"{"v":1,"seq":1,"off":18446744073709551615,"type":"chat.message","payload":"hi"}"#
    );
    assert_eq!(
        custom.frame_at(1, None, WireMode::Named),
        custom.frame(1, WireMode::Named)
    );
    Ok(())
}

/// The `ready` frame's stream fields, as `Event::with_resume` writes them.
#[test]
fn the_ready_frames_stream_position_is_pinned() -> TestResult {
    use ws_lifecycle::stream::{Epoch, Position, ResumeOutcome};
    let resume = ResumeOutcome::new(
        Some(Position {
            epoch: Epoch::new("01JDZ4Q7")?,
            offset: 3,
        }),
        Position {
            epoch: Epoch::new("01JDZ4Q7")?,
            offset: 8,
        },
        true,
        5,
    );
    let ready = Event::custom(EventName::new("ready")?, Value::Null)
        .with_field("user", "alice")?
        .with_resume(&resume)
        .encode()?;
    assert_eq!(
        ready.frame(1, WireMode::Named),
        r#"{"v":1,"seq":1,"type":"ready","epoch":"01JDZ4Q7","off":8,"recovered":true,"user":"alice","payload":null}"#
    );
    Ok(())
}
