//! Typed identifiers and the [`IdGenerator`] that mints them.
//!
//! Every id the crate hands out is minted by one [`IdGenerator`]: there is no
//! public constructor from an unchecked `String`, so a `ThreadId` can never be
//! passed where a `RunId` is expected, and a [`RunId`] always carries the
//! thread it was minted for ([`RunId::thread_id`]). That makes the
//! "`run_id` names one thread, `thread_id` another" class of bug
//! unrepresentable.
//!
//! The default generator, [`UlidGenerator`], mints monotonic ULIDs:
//!
//! | id | text form |
//! |---|---|
//! | [`ConnectionId`] | `conn_<ulid>` |
//! | [`ThreadId`] | `thread_<ulid>` |
//! | [`RunId`] | `run_<thread-ulid>_<ulid>` |
//! | [`RequestId`] | `req_<ulid>` |
//!
//! [`FromStr`](std::str::FromStr) (and serde) parse that default form strictly: the kind prefix,
//! 26 upper-case Crockford base32 characters, and for a run id a run part
//! minted after its thread part and carrying its thread's check. A generator with its own format builds ids
//! with the checked `from_custom` constructors instead.
//!
//! [`UserId`] is different: it comes from the application (usually the auth
//! layer) and is only validated, never minted.
//!
//! # Examples
//!
//! ```
//! use ws_lifecycle::id::{IdGenerator, RunId, UlidGenerator, UserId};
//!
//! let ids = UlidGenerator::new();
//! let user = UserId::new("alice")?;
//! let ctx = ids.mint_context(&user);
//! assert_eq!(ctx.run.thread_id(), &ctx.thread);
//!
//! let parsed: RunId = ctx.run.to_string().parse()?;
//! assert_eq!(parsed, ctx.run);
//! # Ok::<(), ws_lifecycle::id::IdError>(())
//! ```

/// The text form every id shares: `Display` and serde as its plain text,
/// parsed back (and so validated) through [`FromStr`](std::str::FromStr).
macro_rules! text_form {
    ($name:ident) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

mod error;
mod generator;
mod prefixed;
mod run;
mod user;

pub use error::{IdError, IdKind, IdProblem};
pub use generator::{ContextIds, IdGenerator, UlidGenerator};
pub use prefixed::{ConnectionId, RequestId, ThreadId};
pub use run::RunId;
pub use user::UserId;
