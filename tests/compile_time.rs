//! Compile-time proofs: what must not compile, with the compiler's error
//! pinned in `tests/ui/*.stderr` (regenerate with `TRYBUILD=overwrite` after
//! a toolchain upgrade, and review the diff).
//!
//! - `send_before_ready`: `send` exists only on `Connection<Ready<_>>`.
//! - `send_after_close`: `close` consumes the connection.
//! - `user_id_from_unchecked_string`: a `UserId` comes only from validation.

#[test]
fn what_must_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
