//! Property tests for typed ids (design invariant 1: one identity).
//!
//! Ids minted by the default [`UlidGenerator`] survive Display/parse and
//! serde_json round trips; mutated ids are rejected with the right
//! [`IdKind`] and [`IdProblem`]; [`UserId`] validation and the
//! `from_custom` grammar match a model written here; and errors for hostile
//! inputs stay short.

use std::fmt::Display;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use ws_lifecycle::id::{
    ConnectionId, ContextIds, IdError, IdGenerator, IdKind, IdProblem, RequestId, RunId, ThreadId,
    UlidGenerator, UserId,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ULID_LEN: usize = 26;

/// Encodes a 128-bit value as a canonical 26-character Crockford ULID.
fn encode_ulid(value: u128) -> String {
    (0..ULID_LEN)
        .map(|i| {
            let shift = 5 * (ULID_LEN - 1 - i);
            let index = ((value >> shift) & 31) as usize;
            CROCKFORD.get(index).map_or('?', |b| char::from(*b))
        })
        .collect()
}

/// Decodes a canonical ULID body (as produced by [`encode_ulid`]).
fn decode_ulid(body: &str) -> Option<u128> {
    if body.len() != ULID_LEN {
        return None;
    }
    body.bytes().try_fold(0u128, |acc, b| {
        let digit = CROCKFORD.iter().position(|c| *c == b)?;
        acc.checked_mul(32)?.checked_add(digit as u128)
    })
}

/// The default run id format, written out independently of the crate: the
/// run ULID's low 40 bits are FNV-1a-64 of the thread ULID's 16 big-endian
/// bytes, and the run sorts after the thread.
fn thread_check(thread: u128) -> u128 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in thread.to_be_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u128::from(hash) & ((1 << 40) - 1)
}

/// A valid run ULID for `thread`, built from `base` (which must sort after
/// `thread`).
fn run_for(thread: u128, base: u128) -> u128 {
    let mask = (1u128 << 40) - 1;
    let run = (base & !mask) | thread_check(thread);
    if run < base { run + (1 << 40) } else { run }
}

fn user() -> UserId {
    // A literal known to be valid; the fallback keeps clippy's
    // `expect_used` quiet and is never taken.
    UserId::new("prop-user").unwrap_or_else(|_| unreachable!())
}

/// `text` parsed as `T` must fail with exactly `kind` and `problem`.
fn assert_rejected<T: FromStr<Err = IdError> + std::fmt::Debug>(
    text: &str,
    kind: IdKind,
    problem: IdProblem,
) -> Result<(), TestCaseError> {
    match text.parse::<T>() {
        Ok(id) => Err(TestCaseError::fail(format!(
            "{text:?} was accepted as {id:?}; expected {kind} / {problem:?}"
        ))),
        Err(err) => {
            prop_assert_eq!(err.kind(), kind, "input {:?}: {}", text, err);
            prop_assert_eq!(err.problem(), problem, "input {:?}: {}", text, err);
            Ok(())
        }
    }
}

/// Display, `as_str`, FromStr and serde_json (as a JSON string) agree.
fn assert_round_trip<T>(id: &T, text: &str) -> Result<(), TestCaseError>
where
    T: FromStr<Err = IdError>
        + Display
        + Serialize
        + DeserializeOwned
        + PartialEq
        + std::fmt::Debug,
{
    prop_assert_eq!(id.to_string(), text);
    let parsed: T = text.parse()?;
    prop_assert_eq!(&parsed, id);
    prop_assert_eq!(parsed.to_string(), text);

    let json = serde_json::to_string(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&json, &format!("\"{text}\""));
    let back: T = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, id);
    Ok(())
}

/// Characters that are never Crockford base32 digits (the canonical
/// upper-case alphabet): the excluded letters, all lower case, punctuation,
/// `_`, whitespace, controls and non-ASCII.
fn non_crockford_char() -> impl Strategy<Value = char> {
    prop_oneof![
        proptest::sample::select(vec!['I', 'L', 'O', 'U']),
        proptest::char::range('a', 'z'),
        proptest::sample::select(vec![
            '!', '-', '_', ' ', '.', '/', '+', '=', '"', '\\', '\0', '\n', '\u{7f}'
        ]),
        any::<char>().prop_filter("not ASCII alphanumeric", |c| !c.is_ascii_alphanumeric()),
    ]
    .prop_filter("must not be a Crockford digit", |c| {
        !(c.is_ascii() && CROCKFORD.contains(&(*c as u8)))
    })
}

/// Replaces the char at `index` (a char index) of `text` with `with`.
fn replace_char(text: &str, index: usize, with: char) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| if i == index { with } else { c })
        .collect()
}

/// The four default-form kinds, for tests that treat them alike.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Thread,
    Run,
    Request,
}

const KINDS: [Kind; 4] = [Kind::Connection, Kind::Thread, Kind::Run, Kind::Request];

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Connection => "conn_",
            Kind::Thread => "thread_",
            Kind::Run => "run_",
            Kind::Request => "req_",
        }
    }

    fn id_kind(self) -> IdKind {
        match self {
            Kind::Connection => IdKind::Connection,
            Kind::Thread => IdKind::Thread,
            Kind::Run => IdKind::Run,
            Kind::Request => IdKind::Request,
        }
    }

    /// A freshly minted id of this kind, as text.
    fn mint(self, ids: &UlidGenerator) -> String {
        let ContextIds {
            thread,
            run,
            request,
        } = ids.mint_context(&user());
        match self {
            Kind::Connection => ids.mint_connection_id().to_string(),
            Kind::Thread => thread.to_string(),
            Kind::Run => run.to_string(),
            Kind::Request => request.to_string(),
        }
    }

    /// Parses `text` as this kind, returning only the error (if any).
    fn parse_err(self, text: &str) -> Option<IdError> {
        match self {
            Kind::Connection => text.parse::<ConnectionId>().err(),
            Kind::Thread => text.parse::<ThreadId>().err(),
            Kind::Run => text.parse::<RunId>().err(),
            Kind::Request => text.parse::<RequestId>().err(),
        }
    }

    fn expect_rejected(self, text: &str, problem: IdProblem) -> Result<(), TestCaseError> {
        match self.parse_err(text) {
            None => Err(TestCaseError::fail(format!(
                "{text:?} accepted as {self:?}; expected {problem:?}"
            ))),
            Some(err) => {
                prop_assert_eq!(err.kind(), self.id_kind(), "input {:?}: {}", text, err);
                prop_assert_eq!(err.problem(), problem, "input {:?}: {}", text, err);
                Ok(())
            }
        }
    }
}

fn any_kind() -> impl Strategy<Value = Kind> {
    proptest::sample::select(KINDS.to_vec())
}

/// Any value a ULID body can hold.
fn any_ulid() -> impl Strategy<Value = u128> {
    prop_oneof![
        any::<u128>(),
        Just(0u128),
        Just(u128::MAX),
        (0u128..1024),
        (u128::MAX - 1024..=u128::MAX),
    ]
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

proptest! {
    /// Ids minted by `UlidGenerator` round-trip through Display/FromStr and
    /// serde_json, and a run keeps its thread.
    #[test]
    fn minted_ids_round_trip_display_parse_and_serde(batch in 1usize..16) {
        let ids = UlidGenerator::new();
        for _ in 0..batch {
            let conn = ids.mint_connection_id();
            assert_round_trip(&conn, conn.as_str())?;
            prop_assert!(conn.as_str().starts_with("conn_"));

            let ctx = ids.mint_context(&user());
            assert_round_trip(&ctx.thread, ctx.thread.as_str())?;
            assert_round_trip(&ctx.run, ctx.run.as_str())?;
            assert_round_trip(&ctx.request, ctx.request.as_str())?;
            prop_assert_eq!(ctx.run.thread_id(), &ctx.thread);

            let parsed: RunId = ctx.run.to_string().parse()?;
            prop_assert_eq!(parsed.thread_id(), &ctx.thread);
            let json = serde_json::to_string(&ctx.run).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: RunId = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.thread_id(), &ctx.thread);
            prop_assert_eq!(back.thread_id().as_str(), ctx.thread.as_str());
        }
    }

    /// Any canonical ULID (any 128-bit value) with the right prefix parses
    /// and displays unchanged, including inside a JSON struct field.
    #[test]
    fn arbitrary_valid_ids_round_trip(value in any_ulid(), kind in any_kind()) {
        let body = encode_ulid(value);
        prop_assert_eq!(decode_ulid(&body), Some(value));
        match kind {
            Kind::Connection => {
                let text = format!("conn_{body}");
                let id: ConnectionId = text.parse()?;
                assert_round_trip(&id, &text)?;
            }
            Kind::Thread => {
                let text = format!("thread_{body}");
                let id: ThreadId = text.parse()?;
                assert_round_trip(&id, &text)?;
            }
            Kind::Request => {
                let text = format!("req_{body}");
                let id: RequestId = text.parse()?;
                assert_round_trip(&id, &text)?;
            }
            Kind::Run => {
                // The run part must sort after the thread part and carry
                // its check.
                prop_assume!(value < u128::MAX - (1 << 42));
                let thread = encode_ulid(value);
                let text = format!("run_{thread}_{}", encode_ulid(run_for(value, value + 1)));
                let id: RunId = text.parse()?;
                assert_round_trip(&id, &text)?;
                prop_assert_eq!(id.thread_id().as_str(), format!("thread_{thread}"));
            }
        }
    }
}

/// Ids from one generator sort in minting order (the generator is
/// monotonic), and a run's two halves are ordered thread first.
#[test]
fn minted_ids_sort_in_minting_order() -> TestResult {
    let ids = UlidGenerator::new();
    let conns: Vec<ConnectionId> = (0..500).map(|_| ids.mint_connection_id()).collect();
    assert!(conns.windows(2).all(|w| matches!(w, [a, b] if a < b)));
    let runs: Vec<RunId> = (0..100).map(|_| ids.mint_context(&user()).run).collect();
    for run in &runs {
        let rest = run.as_str().strip_prefix("run_").ok_or("prefix")?;
        let (thread, run_part) = rest.split_once('_').ok_or("separator")?;
        assert!(decode_ulid(thread) < decode_ulid(run_part), "{run:?}");
        assert_eq!(run.thread_id().as_str(), format!("thread_{thread}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------

proptest! {
    /// An id of one kind parsed as another kind: WrongPrefix, naming the
    /// kind that was expected.
    #[test]
    fn other_kinds_id_is_wrong_prefix(from in 0usize..4, offset in 1usize..4) {
        // Distinct kinds by construction (no rejected cases).
        let (from, to) = (KINDS[from], KINDS[(from + offset) % KINDS.len()]);
        let ids = UlidGenerator::new();
        let text = from.mint(&ids);
        to.expect_rejected(&text, IdProblem::WrongPrefix)?;
    }

    /// Changing any character of the prefix (letters or the `_`) to any
    /// other character: WrongPrefix.
    #[test]
    fn altered_prefix_is_wrong_prefix(
        kind in any_kind(),
        position in any::<proptest::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let ids = UlidGenerator::new();
        let text = kind.mint(&ids);
        let at = position.index(kind.prefix().len());
        let original = kind.prefix().chars().nth(at);
        prop_assume!(original != Some(replacement));
        kind.expect_rejected(&replace_char(&text, at, replacement), IdProblem::WrongPrefix)?;
        // Upper-casing the prefix is a different prefix too.
        let upper = format!("{}{}", kind.prefix().to_uppercase(), text.get(kind.prefix().len()..).unwrap_or_default());
        kind.expect_rejected(&upper, IdProblem::WrongPrefix)?;
    }

    /// A body character replaced by a non-Crockford character:
    /// InvalidUlid (for a run id: InvalidThreadPart in the thread half,
    /// InvalidUlid in the run half).
    #[test]
    fn non_crockford_body_char_is_rejected(
        kind in any_kind(),
        position in any::<proptest::sample::Index>(),
        bad in non_crockford_char(),
    ) {
        let ids = UlidGenerator::new();
        let text = kind.mint(&ids);
        let prefix = kind.prefix().len();
        match kind {
            Kind::Run => {
                // run_<26>_<26>: thread half at 4..30, separator at 30, run
                // half at 31..57.
                let body_positions: Vec<usize> = (prefix..prefix + ULID_LEN)
                    .chain(prefix + ULID_LEN + 1..prefix + 2 * ULID_LEN + 1)
                    .collect();
                let at = body_positions.get(position.index(body_positions.len())).copied().unwrap_or(prefix);
                let mutated = replace_char(&text, at, bad);
                let problem = if at < prefix + ULID_LEN {
                    IdProblem::InvalidThreadPart
                } else {
                    IdProblem::InvalidUlid
                };
                kind.expect_rejected(&mutated, problem)?;
            }
            _ => {
                let at = prefix + position.index(ULID_LEN);
                kind.expect_rejected(&replace_char(&text, at, bad), IdProblem::InvalidUlid)?;
            }
        }
    }

    /// A first body digit above `7` overflows 128 bits: rejected, even
    /// though every character is Crockford.
    #[test]
    fn overflowing_first_digit_is_rejected(
        kind in any_kind(),
        digit in proptest::sample::select(b"89ABCDEFGHJKMNPQRSTVWXYZ".to_vec()),
        half in any::<bool>(),
    ) {
        let ids = UlidGenerator::new();
        let text = kind.mint(&ids);
        let prefix = kind.prefix().len();
        let digit = char::from(digit);
        match kind {
            Kind::Run if half => kind.expect_rejected(&replace_char(&text, prefix, digit), IdProblem::InvalidThreadPart)?,
            Kind::Run => kind.expect_rejected(&replace_char(&text, prefix + ULID_LEN + 1, digit), IdProblem::InvalidUlid)?,
            _ => kind.expect_rejected(&replace_char(&text, prefix, digit), IdProblem::InvalidUlid)?,
        }
    }

    /// Truncation at any position: WrongPrefix inside the prefix,
    /// InvalidUlid after it (for a run id too: with no complete
    /// `thread_run` pair there is no body to judge the halves of).
    #[test]
    fn truncated_ids_are_rejected(kind in any_kind(), position in any::<proptest::sample::Index>()) {
        let ids = UlidGenerator::new();
        let text = kind.mint(&ids);
        let cut = position.index(text.len());
        let truncated = text.get(..cut).unwrap_or_default();
        let problem = if cut < kind.prefix().len() {
            IdProblem::WrongPrefix
        } else {
            IdProblem::InvalidUlid
        };
        kind.expect_rejected(truncated, problem)?;
    }

    /// An extra character after a valid id: InvalidUlid.
    #[test]
    fn extended_ids_are_rejected(kind in any_kind(), extra in any::<char>()) {
        let ids = UlidGenerator::new();
        let text = format!("{}{extra}", kind.mint(&ids));
        kind.expect_rejected(&text, IdProblem::InvalidUlid)?;
    }

    /// A run id whose thread half was replaced by a valid ULID that sorts
    /// at or after the run half: RunBeforeThread.
    #[test]
    fn run_with_larger_thread_part_is_run_before_thread(offset in prop_oneof![0u128..1024, any::<u128>()]) {
        let ids = UlidGenerator::new();
        let run = ids.mint_context(&user()).run;
        let run_part = run.as_str().get(4 + ULID_LEN + 1..).unwrap_or_default();
        let run_value = decode_ulid(run_part).ok_or_else(|| TestCaseError::fail("undecodable"))?;
        let larger = run_value.saturating_add(offset);
        let text = format!("run_{}_{run_part}", encode_ulid(larger));
        assert_rejected::<RunId>(&text, IdKind::Run, IdProblem::RunBeforeThread)?;
    }

    /// Any pair of valid halves: accepted iff the run half sorts strictly
    /// after the thread half and carries the thread's check, and then
    /// `thread_id()` is exactly the thread half; otherwise RunBeforeThread
    /// or ThreadMismatch.
    #[test]
    fn run_halves_are_accepted_iff_ordered_and_checked(
        thread in any_ulid(),
        run in any_ulid(),
        with_check in any::<bool>(),
    ) {
        let mask = (1u128 << 40) - 1;
        let run = if with_check { (run & !mask) | thread_check(thread) } else { run };
        let text = format!("run_{}_{}", encode_ulid(thread), encode_ulid(run));
        if run <= thread {
            assert_rejected::<RunId>(&text, IdKind::Run, IdProblem::RunBeforeThread)?;
        } else if run & mask != thread_check(thread) {
            assert_rejected::<RunId>(&text, IdKind::Run, IdProblem::ThreadMismatch)?;
        } else {
            let id: RunId = text.parse()?;
            prop_assert_eq!(id.thread_id().as_str(), format!("thread_{}", encode_ulid(thread)));
            prop_assert_eq!(id.as_str(), text.as_str());
        }
    }

    /// One thread character changed to another valid Crockford digit: the
    /// id is rejected, as RunBeforeThread (the thread now sorts at or after
    /// the run) or ThreadMismatch (the run does not carry its check). An
    /// altered thread is never accepted.
    #[test]
    fn run_with_altered_valid_thread_char_is_rejected(
        position in 0usize..ULID_LEN,
        digit in proptest::sample::select(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".to_vec()),
    ) {
        let ids = UlidGenerator::new();
        let ctx = ids.mint_context(&user());
        let text = ctx.run.to_string();
        // Position 0 only takes 0-7: larger digits overflow 128 bits.
        prop_assume!(position > 0 || digit <= b'7');
        let mutated = replace_char(&text, 4 + position, char::from(digit));
        prop_assume!(mutated != text);
        let thread_part = mutated.get(4..4 + ULID_LEN).unwrap_or_default();
        let run_part = mutated.get(4 + ULID_LEN + 1..).unwrap_or_default();
        let (t, r) = (decode_ulid(thread_part), decode_ulid(run_part));
        prop_assert!(t.is_some() && r.is_some());
        let problem = if r <= t { IdProblem::RunBeforeThread } else { IdProblem::ThreadMismatch };
        assert_rejected::<RunId>(&mutated, IdKind::Run, problem)?;
    }

    /// A bad id inside JSON is refused by serde with the kind named.
    #[test]
    fn serde_rejects_mutated_ids(kind in any_kind(), cut in 0usize..20) {
        let ids = UlidGenerator::new();
        let text = kind.mint(&ids);
        let truncated = text.get(..text.len().saturating_sub(cut + 1)).unwrap_or_default();
        let json = serde_json::to_string(truncated).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let message = match kind {
            Kind::Connection => serde_json::from_str::<ConnectionId>(&json).err(),
            Kind::Thread => serde_json::from_str::<ThreadId>(&json).err(),
            Kind::Run => serde_json::from_str::<RunId>(&json).err(),
            Kind::Request => serde_json::from_str::<RequestId>(&json).err(),
        }
        .map(|e| e.to_string());
        let message = message.ok_or_else(|| TestCaseError::fail(format!("{json} accepted")))?;
        prop_assert!(message.contains(&kind.id_kind().to_string()), "{}", message);
    }
}

/// Hand-picked mutations, so the common cases are pinned even if the
/// strategies above drift.
#[test]
fn mutation_examples() -> TestResult {
    let thread = "01HZX3V6Q0C1K9A3YB7W2M4N5P";
    // Computed with `run_for` above from base `…N5Q`.
    let run = "01HZX3V6Q0C1K9A3YBQAHBZWT3";
    assert_eq!(
        Some(encode_ulid(run_for(
            decode_ulid(thread).ok_or("thread")?,
            decode_ulid("01HZX3V6Q0C1K9A3YB7W2M4N5Q").ok_or("base")?
        ))),
        Some(run.to_owned())
    );
    let ok: RunId = format!("run_{thread}_{run}").parse()?;
    assert_eq!(ok.thread_id().as_str(), format!("thread_{thread}"));

    let cases: [(&str, IdProblem); 9] = [
        (
            "run_01HZX3V6Q0C1K9A3YB7W2M4N5N_01HZX3V6Q0C1K9A3YBQAHBZWT3",
            IdProblem::ThreadMismatch,
        ),
        ("", IdProblem::WrongPrefix),
        ("run", IdProblem::WrongPrefix),
        (
            "RUN_01HZX3V6Q0C1K9A3YB7W2M4N5P_01HZX3V6Q0C1K9A3YB7W2M4N5Q",
            IdProblem::WrongPrefix,
        ),
        ("run_01HZX3V6Q0C1K9A3YB7W2M4N5P", IdProblem::InvalidUlid),
        (
            "run_01HZX3V6Q0C1K9A3YB7W2M4NIP_01HZX3V6Q0C1K9A3YB7W2M4N5Q",
            IdProblem::InvalidThreadPart,
        ),
        (
            "run_01HZX3V6Q0C1K9A3YB7W2M4N5P_01hzx3v6q0c1k9a3yb7w2m4n5q",
            IdProblem::InvalidUlid,
        ),
        (
            "run_01HZX3V6Q0C1K9A3YB7W2M4N5Q_01HZX3V6Q0C1K9A3YB7W2M4N5Q",
            IdProblem::RunBeforeThread,
        ),
        (
            "run_01HZX3V6Q0C1K9A3YB7W2M4N5R_01HZX3V6Q0C1K9A3YB7W2M4N5Q",
            IdProblem::RunBeforeThread,
        ),
    ];
    for (text, problem) in cases {
        let err = text.parse::<RunId>().err().ok_or(text)?;
        assert_eq!(
            (err.kind(), err.problem()),
            (IdKind::Run, problem),
            "{text}"
        );
    }

    let conn = format!("conn_{thread}");
    assert!(conn.parse::<ConnectionId>().is_ok());
    for (text, problem) in [
        (format!("thread_{thread}"), IdProblem::WrongPrefix),
        (format!("conn-{thread}"), IdProblem::WrongPrefix),
        (
            format!("conn_{}", thread.to_lowercase()),
            IdProblem::InvalidUlid,
        ),
        (
            format!("conn_8{}", thread.get(1..).unwrap_or_default()),
            IdProblem::InvalidUlid,
        ),
        (format!("conn_{thread} "), IdProblem::InvalidUlid),
    ] {
        let err = text.parse::<ConnectionId>().err().ok_or("accepted")?;
        assert_eq!(
            (err.kind(), err.problem()),
            (IdKind::Connection, problem),
            "{text}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// UserId
// ---------------------------------------------------------------------------

/// Strings that exercise every UserId rule: empty, long, multi-byte and
/// control characters.
fn user_input() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => proptest::char::range('a', 'z'),
        2 => any::<char>(),
        1 => proptest::char::range('\u{0}', '\u{1f}'),
        1 => proptest::char::range('\u{7f}', '\u{9f}'),
        1 => proptest::sample::select(vec!['é', '日', '😀', ' ', '\u{2028}', '\u{200b}']),
    ];
    prop_oneof![
        proptest::collection::vec(ch.clone(), 0..40)
            .prop_map(|v| v.into_iter().collect::<String>()),
        proptest::collection::vec(ch, 60..300).prop_map(|v| v.into_iter().collect::<String>()),
        (250usize..262).prop_map(|n| "a".repeat(n)),
        (120usize..132).prop_map(|n| "é".repeat(n)),
    ]
}

proptest! {
    /// `UserId::new` accepts exactly the non-empty strings of at most 256
    /// bytes without control characters, and names the right problem
    /// otherwise.
    #[test]
    fn user_id_accepts_iff_nonempty_short_and_printable(input in user_input()) {
        let expected = if input.is_empty() {
            Some(IdProblem::Empty)
        } else if input.len() > 256 {
            Some(IdProblem::TooLong)
        } else if input.chars().any(char::is_control) {
            Some(IdProblem::ControlCharacter)
        } else {
            None
        };
        match (UserId::new(&input), expected) {
            (Ok(id), None) => {
                prop_assert_eq!(id.as_str(), input.as_str());
                prop_assert_eq!(id.to_string(), input.clone());
                let parsed: UserId = input.parse()?;
                prop_assert_eq!(&parsed, &id);
                let json = serde_json::to_string(&id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back: UserId = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back, id);
            }
            (Err(err), Some(problem)) => {
                prop_assert_eq!(err.kind(), IdKind::User);
                prop_assert_eq!(err.problem(), problem);
                prop_assert!(err.to_string().contains("user id"), "{}", err);
                let json = serde_json::to_string(&input).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(serde_json::from_str::<UserId>(&json).is_err());
            }
            (result, expected) => {
                return Err(TestCaseError::fail(format!(
                    "{input:?}: got {result:?}, expected {expected:?}"
                )));
            }
        }
    }

    /// User ids compare byte for byte: changing the case of any letter
    /// gives a different user.
    #[test]
    fn user_ids_are_case_sensitive(input in "[a-zA-Z][a-zA-Z0-9]{0,30}") {
        let id = UserId::new(&input)?;
        let flipped: String = input
            .chars()
            .map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect();
        let other = UserId::new(&flipped)?;
        prop_assert_ne!(&id, &other);
        prop_assert_eq!(UserId::new(&input)?, id);
    }
}

#[test]
fn user_id_boundaries_and_case() -> TestResult {
    assert_ne!(UserId::new("Alice")?, UserId::new("alice")?);
    assert_eq!(UserId::new("alice")?, UserId::new("alice")?);
    assert_eq!(UserId::new("a".repeat(256))?.as_str().len(), 256);
    // 128 two-byte chars are exactly 256 bytes.
    assert!(UserId::new("é".repeat(128)).is_ok());
    for (input, problem) in [
        (String::new(), IdProblem::Empty),
        ("a".repeat(257), IdProblem::TooLong),
        ("é".repeat(129), IdProblem::TooLong),
        ("bob\n".to_owned(), IdProblem::ControlCharacter),
        ("\u{85}bob".to_owned(), IdProblem::ControlCharacter),
        ("bob\u{7f}".to_owned(), IdProblem::ControlCharacter),
    ] {
        let err = UserId::new(&input).err().ok_or("accepted")?;
        assert_eq!(
            (err.kind(), err.problem()),
            (IdKind::User, problem),
            "{input:?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Custom generators
// ---------------------------------------------------------------------------

/// A counter generator, as the `IdGenerator` docs suggest.
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

impl IdGenerator for Counter {
    fn mint_connection_id(&self) -> ConnectionId {
        ConnectionId::from_custom(&format!("conn_{}", self.next()))
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn mint_context(&self, _user: &UserId) -> ContextIds {
        let n = self.next();
        let thread =
            ThreadId::from_custom(&format!("thread_{n}")).unwrap_or_else(|e| unreachable!("{e}"));
        let run = RunId::from_custom(&thread, &format!("run_{n}-{n}"))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let request =
            RequestId::from_custom(&format!("req_{n}")).unwrap_or_else(|e| unreachable!("{e}"));
        ContextIds {
            thread,
            run,
            request,
        }
    }
}

proptest! {
    /// A counter generator's ids are accepted by `from_custom`, are
    /// distinct, keep the run's thread, and (not being ULIDs) are refused
    /// by `FromStr`, which parses only the default form.
    #[test]
    fn counter_generator_ids_are_accepted_by_from_custom(start in any::<u64>(), count in 1usize..20) {
        let generator = Counter(AtomicU64::new(start));
        let ids: &dyn IdGenerator = &generator;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..count {
            let conn = ids.mint_connection_id();
            prop_assert_eq!(&ConnectionId::from_custom(conn.as_str())?, &conn);
            prop_assert!(seen.insert(conn.to_string()));
            assert_rejected::<ConnectionId>(conn.as_str(), IdKind::Connection, IdProblem::InvalidUlid)?;

            let ctx = ids.mint_context(&user());
            prop_assert_eq!(&ThreadId::from_custom(ctx.thread.as_str())?, &ctx.thread);
            prop_assert_eq!(&RequestId::from_custom(ctx.request.as_str())?, &ctx.request);
            let run = RunId::from_custom(&ctx.thread, ctx.run.as_str())?;
            prop_assert_eq!(&run, &ctx.run);
            prop_assert_eq!(run.thread_id(), &ctx.thread);
            prop_assert_eq!(ctx.run.thread_id(), &ctx.thread);
            prop_assert!(seen.insert(ctx.run.to_string()));
            prop_assert_eq!(ctx.thread.to_string(), ctx.thread.as_str());
            // Serialising works like a default id; parsing back does not,
            // because FromStr is the ULID form only.
            let json = serde_json::to_string(&ctx.request).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(json, format!("\"{}\"", ctx.request));
            assert_rejected::<RequestId>(ctx.request.as_str(), IdKind::Request, IdProblem::InvalidUlid)?;
        }
    }
}

/// Text for `from_custom`: a likely prefix plus a body that is usually in
/// the grammar, sometimes too long, sometimes with a stray character.
fn custom_input() -> impl Strategy<Value = String> {
    let prefix = proptest::sample::select(vec![
        "", "conn_", "thread_", "run_", "req_", "conn", "CONN_", "req-", "x_",
    ]);
    let body = prop_oneof![
        4 => "[A-Za-z0-9_-]{0,20}",
        2 => "[A-Za-z0-9_-]{100,130}",
        2 => "[A-Za-z0-9_-]{0,10}[^A-Za-z0-9_-][A-Za-z0-9_-]{0,10}",
        1 => any::<String>(),
    ];
    (prefix, body).prop_map(|(p, b)| format!("{p}{b}"))
}

/// The `from_custom` grammar, written out: the checks in the order the
/// docs list them.
fn expected_custom_problem(prefix: &str, text: &str) -> Option<IdProblem> {
    if text.is_empty() {
        Some(IdProblem::Empty)
    } else if text.len() > 128 {
        Some(IdProblem::TooLong)
    } else if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Some(IdProblem::InvalidCharacter)
    } else if !text.starts_with(prefix) || text.len() == prefix.len() {
        Some(IdProblem::WrongPrefix)
    } else {
        None
    }
}

fn check_custom<T: std::fmt::Debug>(
    result: Result<T, IdError>,
    as_str: impl Fn(&T) -> &str,
    kind: IdKind,
    expected: Option<IdProblem>,
    text: &str,
) -> Result<(), TestCaseError> {
    match (result, expected) {
        (Ok(id), None) => {
            prop_assert_eq!(as_str(&id), text);
            Ok(())
        }
        (Err(err), Some(problem)) => {
            prop_assert_eq!(err.kind(), kind, "{:?}: {}", text, err);
            prop_assert_eq!(err.problem(), problem, "{:?}: {}", text, err);
            Ok(())
        }
        (result, expected) => Err(TestCaseError::fail(format!(
            "{text:?}: got {result:?}, expected {expected:?}"
        ))),
    }
}

proptest! {
    /// `from_custom` accepts exactly 1..=128 bytes of `[A-Za-z0-9_-]` that
    /// start with the kind's prefix and have something after it.
    #[test]
    fn from_custom_matches_the_grammar(text in custom_input()) {
        check_custom(ConnectionId::from_custom(&text), ConnectionId::as_str, IdKind::Connection, expected_custom_problem("conn_", &text), &text)?;
        check_custom(ThreadId::from_custom(&text), ThreadId::as_str, IdKind::Thread, expected_custom_problem("thread_", &text), &text)?;
        check_custom(RequestId::from_custom(&text), RequestId::as_str, IdKind::Request, expected_custom_problem("req_", &text), &text)?;
        let thread = ThreadId::from_custom("thread_t")?;
        let run = RunId::from_custom(&thread, &text);
        if let Ok(run) = &run {
            prop_assert_eq!(run.thread_id(), &thread);
        }
        check_custom(run, RunId::as_str, IdKind::Run, expected_custom_problem("run_", &text), &text)?;
    }
}

#[test]
fn from_custom_rejects_bad_grammar_examples() -> TestResult {
    let long = format!("conn_{}", "a".repeat(124));
    assert_eq!(long.len(), 129);
    for (text, problem) in [
        ("", IdProblem::Empty),
        ("conn_", IdProblem::WrongPrefix),
        ("thread_1", IdProblem::WrongPrefix),
        ("Conn_1", IdProblem::WrongPrefix),
        ("conn_a b", IdProblem::InvalidCharacter),
        ("conn_a.b", IdProblem::InvalidCharacter),
        ("conn_é", IdProblem::InvalidCharacter),
        ("conn_\n", IdProblem::InvalidCharacter),
        (long.as_str(), IdProblem::TooLong),
    ] {
        let err = ConnectionId::from_custom(text).err().ok_or(text)?;
        assert_eq!(
            (err.kind(), err.problem()),
            (IdKind::Connection, problem),
            "{text:?}"
        );
    }
    assert!(ConnectionId::from_custom(&format!("conn_{}", "a".repeat(123))).is_ok());
    let thread = ThreadId::from_custom("thread_x")?;
    let err = RunId::from_custom(&thread, "run_").err().ok_or("run_")?;
    assert_eq!(err.problem(), IdProblem::WrongPrefix);
    Ok(())
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

const MEGABYTE: usize = 1 << 20;

/// Every parser and constructor, run on `input`, with the kind it must name.
fn all_errors(input: &str) -> Vec<(IdKind, Option<IdError>)> {
    vec![
        (IdKind::Connection, input.parse::<ConnectionId>().err()),
        (IdKind::Thread, input.parse::<ThreadId>().err()),
        (IdKind::Run, input.parse::<RunId>().err()),
        (IdKind::Request, input.parse::<RequestId>().err()),
        (IdKind::User, UserId::new(input).err()),
        (IdKind::Connection, ConnectionId::from_custom(input).err()),
        (IdKind::Thread, ThreadId::from_custom(input).err()),
        (IdKind::Request, RequestId::from_custom(input).err()),
    ]
}

fn assert_short_errors(input: &str, max_chars: usize) -> TestResult {
    assert!(input.len() >= MEGABYTE);
    for (kind, err) in all_errors(input) {
        let err = err.ok_or("a megabyte input was accepted")?;
        let message = err.to_string();
        assert_eq!(err.kind(), kind, "{message}");
        assert!(
            message.chars().count() < max_chars,
            "{} chars: {message}",
            message.chars().count()
        );
        assert!(message.contains(&kind.to_string()), "{message}");
        // The kind's name as documented by `IdKind`'s Display.
        let name = match kind {
            IdKind::Connection => "connection id",
            IdKind::Thread => "thread id",
            IdKind::Run => "run id",
            IdKind::Request => "request id",
            IdKind::User => "user id",
            _ => "unknown kind",
        };
        assert!(message.contains(name), "{message}");
    }
    Ok(())
}

/// A 1 MB hostile input yields an error message under 200 characters that
/// names the expected kind, whatever the input is made of.
#[test]
fn megabyte_input_gives_short_error_naming_the_kind() -> TestResult {
    let inputs = [
        "x".repeat(MEGABYTE),
        format!("conn_{}", "0".repeat(MEGABYTE)),
        format!("run_{}", "_".repeat(MEGABYTE)),
        "\0".repeat(MEGABYTE),
        "\u{1b}[31m".repeat(MEGABYTE / 5 + 1),
        "\"".repeat(MEGABYTE),
        "\\".repeat(MEGABYTE),
        "é".repeat(MEGABYTE / 2),
        "日".repeat(MEGABYTE / 3 + 1),
        "😀".repeat(MEGABYTE / 4),
        format!("a{}", "é".repeat(MEGABYTE / 2)),
    ];
    for input in &inputs {
        assert_short_errors(input, 200)?;
    }
    Ok(())
}

/// Characters that `{:?}` would expand (combining marks, zero-width and
/// format characters) quoted from a 1 MB input: the error stays under 200
/// characters, because `IdError` replaces them with `?` before quoting.
#[test]
fn megabyte_input_of_debug_escaped_chars_gives_short_error() -> TestResult {
    let inputs = [
        "\u{300}".repeat(MEGABYTE / 2),
        "\u{200b}".repeat(MEGABYTE / 3 + 1),
        "\u{ad}".repeat(MEGABYTE / 2),
        "\u{e0001}".repeat(MEGABYTE / 4),
    ];
    for input in &inputs {
        assert_short_errors(input, 200)?;
    }
    Ok(())
}
