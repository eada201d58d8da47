//! One connection, from the upgrade to its end.
//!
//! [`Connection<S>`] is the owning side, a typestate moving through
//! [`Connecting`], [`Accepted`], [`Authenticated`], [`ServicesReady`] and
//! [`Ready`]; each step consumes the previous value. Only
//! `Connection<Ready<T>>` has [`send`](Connection::send), and the
//! transport's write half only leaves the connection (for its writer task)
//! in [`Connection::ready`], so writing an event before Ready does not
//! compile on this path. [`ConnectionHandle`]s, held by other tasks, check
//! at run time instead.
//!
//! Most servers never touch this: [`Hub::serve`](crate::Hub::serve) drives
//! the whole life.
//!
//! # Types
//!
//! A wrong chain is a type error: calling `send` on a connection that is
//! not Ready is `error[E0599]: no method named `send` found for struct
//! `Connection<Authenticated<…>>``, and `close` consumes the connection, so
//! sending on a closed one is a use of a moved value (`E0382`). The
//! crate's `tests/ui` pins both errors with `trybuild`.
//!
//! Closing works in every stage with a transport and returns the
//! [`CloseReport`]. Dropping a connection at any stage runs the same cleanup
//! (routing entry removed, queued events counted as dropped, state `Failed`).
//!
//! # Inside
//!
//! | module | holds |
//! |---|---|
//! | `typestate` | [`Connection`] and its stages; the exit path of last resort (`Drop`) |
//! | `shared` | the part other tasks reach: identity, owner, outbox; the first isolation check |
//! | `outbox` | the pre-ready buffer and outbound queue in one ordered, bounded queue |
//! | `writer` | the one task that writes to the transport; the second isolation check |
//! | `signal` | how the outbox wakes its one writer |
//! | `reader` | the reader loop: inbound messages, heartbeat, rate limit, expiry |
//! | `expiry` | credential expiry and in-band re-authentication |
//! | `handle` | [`ConnectionHandle`], [`SendError`] |
//! | `owner` | what a connection asks of the hub that runs it |
//! | `span` | the `ws_connection` tracing span and the connection's origin (adapter, peer) |

mod expiry;
mod handle;
pub(crate) mod outbox;
mod owner;
mod reader;
mod report;
#[cfg(test)]
mod resume_props;
mod shared;
mod signal;
mod span;
mod typestate;
mod writer;

pub use handle::{ClaimsError, ConnectionHandle, SendError};
pub(crate) use owner::{EnterError, Joined, Owner};
pub(crate) use reader::first_message_token;
pub use report::CloseReport;
pub(crate) use shared::{ConnShared, Context};
pub(crate) use span::{Adapter, Origin};
pub use typestate::{Accepted, Authenticated, Connecting, Connection, Ready, ServicesReady, Stage};
