//! ws-lifecycle (work in progress).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod close;
pub mod id;
