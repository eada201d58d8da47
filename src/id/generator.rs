//! [`IdGenerator`], the one source of minted ids, and its default
//! [`UlidGenerator`].

use parking_lot::Mutex;

use super::prefixed::{ConnectionId, RequestId, ThreadId};
use super::run::{RunId, THREAD_CHECK_BITS, THREAD_CHECK_MASK, thread_check};
use super::user::UserId;

/// The ids of one unit of agent work, minted together so they agree:
/// `run.thread_id() == &thread` always holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextIds {
    /// The conversation thread.
    pub thread: ThreadId,
    /// The run, which belongs to `thread`.
    pub run: RunId,
    /// The request that started the run.
    pub request: RequestId,
}

/// The single source of every id the crate mints.
///
/// The [`Hub`](crate::Hub) asks its generator for each connection id, and
/// applications ask the same generator (through
/// [`Hub::ids`](crate::Hub::ids)) for thread, run and request ids. Implement
/// it to use another format, for example UUIDv7 or a counter; build the ids
/// with the `from_custom` constructors.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use ws_lifecycle::id::*;
///
/// #[derive(Default)]
/// struct Counter(AtomicU64);
///
/// impl IdGenerator for Counter {
///     fn mint_connection_id(&self) -> ConnectionId {
///         let n = self.0.fetch_add(1, Ordering::Relaxed);
///         ConnectionId::from_custom(&format!("conn_{n}")).unwrap_or_else(|_| unreachable!())
///     }
///     fn mint_context(&self, _user: &UserId) -> ContextIds {
///         let n = self.0.fetch_add(1, Ordering::Relaxed);
///         let thread = ThreadId::from_custom(&format!("thread_{n}")).unwrap_or_else(|_| unreachable!());
///         let run = RunId::from_custom(&thread, &format!("run_{n}")).unwrap_or_else(|_| unreachable!());
///         let request = RequestId::from_custom(&format!("req_{n}")).unwrap_or_else(|_| unreachable!());
///         ContextIds { thread, run, request }
///     }
/// }
///
/// let ids = Counter::default();
/// assert_eq!(ids.mint_connection_id().as_str(), "conn_0");
/// ```
pub trait IdGenerator: Send + Sync + 'static {
    /// Mints the id of a new connection. Called once per connection, before
    /// anything else happens to it. Ids must be unique among the hub's live
    /// connections: a repeated one is refused (close 1011), never routed.
    fn mint_connection_id(&self) -> ConnectionId;

    /// Mints a thread, a run in that thread, and a request id, in one call,
    /// for `user`.
    fn mint_context(&self, user: &UserId) -> ContextIds;
}

/// The default [`IdGenerator`]: monotonic ULIDs, so ids minted by one
/// generator sort in minting order.
///
/// A run's ULID carries a 40-bit check of its thread's ULID in its low bits
/// (the other 40 random bits and the timestamp keep it unique), which is how
/// parsing tells a genuine run id from one whose thread part was altered.
#[derive(Debug, Default)]
pub struct UlidGenerator {
    last: Mutex<ulid::Ulid>,
}

impl UlidGenerator {
    /// A new generator.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The next ULID after `last`: a fresh one when the clock has moved on,
/// otherwise `last + 1` (borrowing from the next millisecond when the
/// random part is exhausted), so order is kept even within a millisecond.
fn after(last: ulid::Ulid) -> ulid::Ulid {
    let fresh = ulid::Ulid::generate();
    if fresh > last {
        return fresh;
    }
    match last.increment() {
        Ok(next) => next,
        Err(_) => ulid::Ulid::from_parts(last.timestamp_ms().saturating_add(1), 0),
    }
}

impl IdGenerator for UlidGenerator {
    fn mint_connection_id(&self) -> ConnectionId {
        let mut last = self.last.lock();
        *last = after(*last);
        ConnectionId::from_ulid(*last)
    }

    fn mint_context(&self, _user: &UserId) -> ContextIds {
        let (thread, run, request) = {
            let mut last = self.last.lock();
            let thread = after(*last);
            let base = after(thread);
            let check = thread_check(thread);
            let mut run = ulid::Ulid((base.0 & !THREAD_CHECK_MASK) | check);
            if run < base {
                // The check lowered it: step the random part above the check
                // bits so the run still sorts after everything minted before.
                run = ulid::Ulid(run.0.saturating_add(1 << THREAD_CHECK_BITS));
            }
            let request = after(run);
            *last = request;
            (thread, run, request)
        };
        let run = RunId::from_ulids(thread, run);
        ContextIds {
            thread: run.thread_id().clone(),
            run,
            request: RequestId::from_ulid(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::prefixed::parse_ulid;
    use crate::id::{IdKind, IdProblem};

    #[test]
    fn default_forms() {
        let ids = UlidGenerator::new();
        let conn = ids.mint_connection_id();
        assert!(conn.as_str().starts_with("conn_"));
        assert_eq!(conn.as_str().len(), 5 + 26);
        let ctx = ids.mint_context(&UserId::new("u").unwrap_or_else(|e| panic!("{e}")));
        assert!(ctx.run.as_str().starts_with("run_"));
        assert_eq!(ctx.run.thread_id(), &ctx.thread);
        assert!(ctx.request.as_str().starts_with("req_"));
    }

    #[test]
    fn minted_runs_parse_and_altered_threads_do_not() {
        let ids = UlidGenerator::new();
        let user = UserId::new("u").unwrap();
        let body = |s: &str| parse_ulid(s.rsplit('_').next().unwrap()).unwrap();
        let a = ids.mint_context(&user);
        let b = ids.mint_context(&user);
        // Minting order is sort order, across kinds and calls.
        let order = [&a.thread.as_str(), &a.run.as_str(), &a.request.as_str()]
            .into_iter()
            .chain([&b.thread.as_str(), &b.run.as_str(), &b.request.as_str()])
            .map(|s| body(s))
            .collect::<Vec<_>>();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert_eq!(a.run.as_str().parse::<RunId>().as_ref(), Ok(&a.run));
        // A thread part altered to a valid ULID that still sorts first.
        let run_part = a.run.as_str().rsplit('_').next().unwrap();
        let altered = ulid::Ulid(body(a.thread.as_str()).0 - 1);
        let err = format!("run_{altered}_{run_part}")
            .parse::<RunId>()
            .unwrap_err();
        assert_eq!(err.problem(), IdProblem::ThreadMismatch);
    }

    #[test]
    fn error_quotes_truncated_input() {
        let long = "x".repeat(1000);
        let err = match long.parse::<ConnectionId>() {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(err.kind(), IdKind::Connection);
        assert_eq!(err.problem(), IdProblem::WrongPrefix);
        assert!(err.to_string().len() < 200, "{err}");
    }
}
