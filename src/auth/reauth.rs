//! What a connection keeps to re-authenticate in-band: the [`Authenticator`]
//! that admitted it and its request, type-erased for the reader loop.

use std::future::Future;
use std::pin::Pin;

use crate::auth::{AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};

/// A boxed re-authentication decision.
pub(crate) type Decision<'a> =
    Pin<Box<dyn Future<Output = Result<AuthOutcome, AuthFailure>> + Send + 'a>>;

/// The authenticator a connection was admitted with, type-erased for the
/// reader loop.
pub(crate) trait Reauthenticate: Send + Sync {
    /// Decides a re-authentication with `token`.
    fn reauthenticate<'a>(&'a self, token: &'a str) -> Decision<'a>;
}

/// An [`Authenticator`] and the request it admitted a connection with
/// (without its credentials): everything a re-authentication needs.
pub(crate) struct Admission<A> {
    authenticator: A,
    request: HandshakeRequest,
}

impl<A: Authenticator> Admission<A> {
    /// What a connection admitted by `authenticator` from `request` keeps,
    /// when `auth` admitted it with credentials that expire (anything else
    /// never re-authenticates, so nothing is kept).
    pub(crate) fn keep<E>(
        authenticator: A,
        request: &HandshakeRequest,
        auth: &Result<AuthOutcome, E>,
    ) -> Option<Self> {
        auth.as_ref()
            .is_ok_and(|outcome| outcome.expires_at.is_some())
            .then(|| Admission {
                authenticator,
                request: request.without_credentials(),
            })
    }
}

impl<A: Authenticator> Reauthenticate for Admission<A> {
    fn reauthenticate<'a>(&'a self, token: &'a str) -> Decision<'a> {
        Box::pin(self.authenticator.reauthenticate(&self.request, token))
    }
}
