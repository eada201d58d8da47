//! The README's embed snippet compiles: every line of it appears, in order,
//! in `examples/embed.rs`, which CI builds (`cargo clippy --all-targets`).

// Tests assert by panicking; the crate's panic lints guard library code.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

#[test]
fn the_readme_embed_snippet_is_the_embed_example() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/embed.rs");
    let section = readme
        .split("## Embedding it in your axum app")
        .nth(1)
        .expect("README has the embed section");
    let snippet = section
        .split("```rust")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the embed section opens with a rust block");
    let mut lines = example.lines().map(str::trim);
    for wanted in snippet.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            lines.any(|line| line == wanted),
            "README line not found (in order) in examples/embed.rs: {wanted}"
        );
    }
}
