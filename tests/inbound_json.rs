//! `Inbound::json`: an inbound text message decoded into the application's
//! own type, and every failure a 4400 close frame whose reason never quotes
//! the peer's text.

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use serde::Deserialize;
use ws_lifecycle::close::{CloseCause, CloseFrame};
use ws_lifecycle::transport::memory;
use ws_lifecycle::{ConnectionHandle, Handler, Hub, Inbound, InboundError};

#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Say { text: String },
    Leave,
}

const REASONS: [&str; 3] = [
    "text_message_expected",
    "invalid_json",
    "unexpected_message",
];

fn text(s: &str) -> Inbound {
    Inbound::Text(s.to_owned().into())
}

#[test]
fn a_text_message_decodes_into_the_applications_type() {
    assert_eq!(
        text(r#"{"type":"say","text":"hi \"there\""}"#).json::<ClientMessage>(),
        Ok(ClientMessage::Say {
            text: "hi \"there\"".to_owned()
        })
    );
    assert_eq!(
        text(r#"{"type":"leave"}"#).json::<ClientMessage>(),
        Ok(ClientMessage::Leave)
    );
    // Borrowing from the message works too.
    let message = text(r#"["a","b"]"#);
    assert_eq!(message.json::<Vec<&str>>(), Ok(vec!["a", "b"]));
}

#[test]
fn each_failure_is_a_4400_with_its_own_fixed_reason() {
    let cases = [
        (
            Inbound::Binary(Bytes::from_static(b"{}")),
            "text_message_expected",
        ),
        (text("{not json"), "invalid_json"),
        (text(""), "invalid_json"),
        (text(r#"{"type":"say"}"#), "unexpected_message"),
        (text(r#"{"type":"shout","text":"x"}"#), "unexpected_message"),
        (text(r#"[1,2]"#), "unexpected_message"),
    ];
    for (message, reason) in cases {
        let error = message.json::<ClientMessage>().unwrap_err();
        let frame = CloseFrame::from(error);
        assert_eq!(frame, error.close_frame());
        assert_eq!(
            (frame.code.as_u16(), frame.reason.as_str()),
            (4400, reason),
            "{message:?}"
        );
    }
    assert_eq!(
        text("{\n  \"type\": 1}").json::<ClientMessage>(),
        Err(InboundError::UnexpectedShape {
            line: 2,
            column: 11
        })
    );
}

proptest! {
    /// Whatever the peer sends, the error's text and the close frame's
    /// reason never quote it, and the reason is one of the three.
    #[test]
    fn the_peers_text_is_never_echoed(body in any::<String>()) {
        for sent in [format!("zqx{body}"), format!("{{\"type\":\"zqx{body}\"}}"), format!("\"zqx{body}\"")] {
            if let Err(error) = text(&sent).json::<ClientMessage>() {
                let frame = error.close_frame();
                prop_assert!(REASONS.contains(&frame.reason.as_str()), "{}", frame.reason.as_str());
                prop_assert!(!error.to_string().contains("zqx"), "{}", error);
                prop_assert!(!frame.reason.as_str().contains("zqx"));
            }
        }
    }
}

/// A handler that decodes with `?`: a message of another shape closes its
/// connection with 4400.
struct Strict;

impl Handler for Strict {
    async fn on_message(&self, _: &ConnectionHandle, message: Inbound) -> Result<(), CloseFrame> {
        match message.json::<ClientMessage>()? {
            ClientMessage::Say { .. } | ClientMessage::Leave => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_handler_closes_a_bad_message_with_4400_through_the_question_mark() {
    let hub = Hub::new();
    let (transport, mut client) = memory::pair(16);
    let serving = hub.serve(transport, support::user("alice"), &Strict);
    let peer = async {
        client
            .send_text(r#"{"type":"say","text":"fine"}"#)
            .await
            .unwrap();
        client
            .send_text(r#"{"type":"say","secret":"hunter2"}"#)
            .await
            .unwrap();
        support::read_to_close(&mut client).await
    };
    let (report, (frames, close)) = tokio::join!(serving, peer);
    assert!(frames.is_empty());
    let expected = support::frame(4400, "unexpected_message");
    assert_eq!(close, Some(expected.clone()));
    assert_eq!(report.cause, CloseCause::Requested(expected));
    support::assert_accounted(&hub.metrics());
}
