//! Authentication: the [`Authenticator`] seam the [`Hub`](crate::Hub)
//! calls, the framework-free [`HandshakeRequest`] it reads, and the
//! [`AuthError`] that says where a failure surfaces.
//!
//! A connection enters the routing table only after an [`AuthOutcome`] binds
//! its user. Where authentication runs decides how a failure reaches the
//! client (see `docs/architecture.md`): before the upgrade it is an HTTP
//! status ([`AuthError::http_status`]); after it, a close frame
//! ([`AuthError::close_frame`]), because a browser cannot read the status of
//! a refused upgrade.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use crate::event::WireMode;
use crate::extensions::Extensions;
use crate::id::UserId;
use crate::stream::Position;

mod error;
mod extract;
#[cfg(feature = "jwt")]
mod jwt;
mod origin;
pub(crate) mod reauth;
mod request;

pub use error::{AuthError, AuthFailure, Surface};
pub use extract::{Credentials, Token, TokenSource, TokenSources};
/// A JWK set (RFC 7517) as identity providers publish it: jsonwebtoken's
/// type, re-exported so an application can deserialize one without
/// depending on jsonwebtoken itself. See [`JwtKeySet::from_jwks`].
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jsonwebtoken::jwk::JwkSet;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jwt::{
    JwtAlgorithm, JwtAuthenticator, JwtAuthenticatorBuilder, JwtConfigError, JwtKey, JwtKeySet,
};
pub use origin::OriginPolicy;
pub use request::{HandshakeRequest, HandshakeRequestBuilder};

/// Who a connection belongs to, as established by an [`Authenticator`].
#[derive(Clone)]
#[non_exhaustive]
pub struct AuthOutcome {
    /// The authenticated user: the only key the router uses.
    pub user: UserId,
    /// The token's claims, for the application (empty when there are none).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// When the credentials expire, if they do.
    pub expires_at: Option<SystemTime>,
    /// The subprotocol to echo in the upgrade response: a marker such as
    /// `jwt-auth`, never a token-bearing entry.
    pub selected_subprotocol: Option<String>,
    /// How this connection's frames spell event types; `None` uses the
    /// hub's [`HubConfig::wire_mode`](crate::config::HubConfig::wire_mode).
    /// Lets one server keep old clients on numeric codes.
    pub wire_mode: Option<WireMode>,
    /// The application's own values for this connection (a tenant, a plan),
    /// readable from its handle: see [`Extensions`].
    pub extensions: Extensions,
    /// Where the client asks to resume its user's stream (the `since`
    /// query parameter, which the adapters read): see
    /// [`stream`](crate::stream). It only selects inside `user`'s own
    /// stream.
    pub since: Option<Position>,
}

impl fmt::Debug for AuthOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claims are the application's data and may be personal: keys only.
        f.debug_struct("AuthOutcome")
            .field("user", &self.user)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .field("selected_subprotocol", &self.selected_subprotocol)
            .field("wire_mode", &self.wire_mode)
            .field("extensions", &self.extensions)
            .field("since", &self.since)
            .finish()
    }
}

impl AuthOutcome {
    /// An outcome binding `user`, with no claims, expiry or subprotocol.
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::auth::AuthOutcome;
    /// use ws_lifecycle::event::WireMode;
    /// use ws_lifecycle::id::UserId;
    ///
    /// let outcome = AuthOutcome::new(UserId::new("alice")?).with_wire_mode(WireMode::LegacyNumeric);
    /// assert_eq!(outcome.user.as_str(), "alice");
    /// # Ok::<(), ws_lifecycle::id::IdError>(())
    /// ```
    pub fn new(user: UserId) -> Self {
        AuthOutcome {
            user,
            claims: serde_json::Map::new(),
            expires_at: None,
            selected_subprotocol: None,
            wire_mode: None,
            extensions: Extensions::new(),
            since: None,
        }
    }

    /// Asks to resume `user`'s stream after `since` (what an adapter does
    /// with the `since` query parameter).
    #[must_use]
    pub fn with_since(mut self, since: Position) -> Self {
        self.since = Some(since);
        self
    }

    /// Attaches `value` to the connection (one per type; see
    /// [`Extensions`]), for the application to read from its handle.
    #[must_use]
    pub fn with_extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Sets when the credentials expire: the hub asks the client to
    /// re-authenticate ahead of it (through the [`Authenticator`] the
    /// connection was admitted with, see
    /// [`Authenticator::reauthenticate`]) and closes with 4401 once it
    /// passes.
    #[must_use]
    pub fn with_expiry(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Sets the subprotocol to echo.
    #[must_use]
    pub fn with_subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.selected_subprotocol = Some(protocol.into());
        self
    }

    /// Sets this connection's wire mode.
    #[must_use]
    pub fn with_wire_mode(mut self, mode: WireMode) -> Self {
        self.wire_mode = Some(mode);
        self
    }
}

impl From<UserId> for AuthOutcome {
    fn from(user: UserId) -> Self {
        AuthOutcome::new(user)
    }
}

/// Decides who a handshake belongs to.
///
/// Implementations must not panic on hostile input and must not log the
/// credentials they read. The hub bounds each call by
/// [`HubConfig::auth_timeout`](crate::config::HubConfig::auth_timeout).
/// A plain [`AuthError`] converts into an [`AuthFailure`] refused before the
/// upgrade, so `?` works.
///
/// # Examples
///
/// ```
/// use ws_lifecycle::auth::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
/// use ws_lifecycle::id::UserId;
///
/// /// Trusts a header set by a gateway that already authenticated the user.
/// struct GatewayHeader;
///
/// impl Authenticator for GatewayHeader {
///     async fn authenticate(&self, request: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
///         let user = request.header("x-authenticated-user").ok_or(AuthError::TokenMissing)?;
///         let user = UserId::new(user).map_err(|_| AuthError::ClaimInvalid("bad user id"))?;
///         Ok(AuthOutcome::new(user))
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync {
    /// Authenticates `request` from what the handshake carries.
    ///
    /// # Errors
    ///
    /// An [`AuthFailure`]: the [`AuthError`] and where it surfaces.
    fn authenticate(
        &self,
        request: &HandshakeRequest,
    ) -> impl Future<Output = Result<AuthOutcome, AuthFailure>> + Send;

    /// Whether a handshake without credentials may authenticate with its
    /// first message (`{"type":"auth","token":"…"}`) instead. Default: no.
    fn first_message_auth(&self) -> bool {
        false
    }

    /// Authenticates the token from the first message (called by
    /// [`Hub::serve_with_auth`](crate::Hub::serve_with_auth) only when
    /// [`first_message_auth`](Authenticator::first_message_auth) is true).
    ///
    /// # Errors
    ///
    /// An [`AuthFailure`]; the connection is already upgraded, so it is
    /// closed with the error's close frame.
    fn authenticate_message(
        &self,
        request: &HandshakeRequest,
        token: &str,
    ) -> impl Future<Output = Result<AuthOutcome, AuthFailure>> + Send {
        let _ = (request, token);
        async { Err(AuthError::TokenMissing.into()) }
    }

    /// Decides a re-authentication: a fresh `token` sent in-band
    /// (`{"type":"reauth","token":"…"}`) on a live connection this
    /// authenticator admitted. The hub calls it (within
    /// [`HubConfig::auth_timeout`](crate::config::HubConfig::auth_timeout))
    /// for every connection whose credentials expire, on every path that
    /// knows the authenticator: [`Hub::serve_with_auth`](crate::Hub::serve_with_auth),
    /// the adapters and [`upgrade::Admitted::serve`](crate::upgrade::Admitted::serve).
    ///
    /// `request` is the handshake the connection was admitted with, without
    /// its credentials: the `Authorization` and `Sec-WebSocket-Protocol`
    /// headers, the WebSocket handshake headers and the query string are
    /// removed (the rest, `Origin`, `Cookie`, the peer address …, is kept).
    ///
    /// The default makes the **whole** decision again: it calls
    /// [`authenticate`](Authenticator::authenticate) on `request` with
    /// `Authorization: Bearer <token>` added, so whatever an implementation
    /// checks there (a ban or revocation list, an account state) is checked
    /// on every re-authentication too. Override it only to decide
    /// differently, never to skip those checks; an authenticator that needs
    /// the query string to decide must override it.
    ///
    /// What the hub does with the result: an outcome for the connection's
    /// user extends the connection (`reauth_ok`, with the new expiry); an
    /// outcome for another user closes it with 4403 `user_mismatch`; an
    /// error whose close code is 4403 ([`AuthError::Forbidden`],
    /// [`AuthError::OriginNotAllowed`]) closes it with that frame; any other
    /// error is answered `reauth_failed` and the expiry stands.
    ///
    /// # Errors
    ///
    /// An [`AuthFailure`]; only its [`error`](AuthFailure::error) is used
    /// (the connection is upgraded already).
    ///
    /// # Examples
    ///
    /// A wrapper adding a ban list needs nothing for re-authentication: the
    /// default runs its `authenticate`, ban list included.
    ///
    /// ```
    /// use std::collections::HashSet;
    /// use std::sync::{Arc, Mutex};
    /// use ws_lifecycle::auth::{AuthError, AuthFailure, AuthOutcome, Authenticator, HandshakeRequest};
    ///
    /// struct Banning<A> {
    ///     inner: A,
    ///     banned: Arc<Mutex<HashSet<String>>>,
    /// }
    ///
    /// impl<A: Authenticator> Authenticator for Banning<A> {
    ///     async fn authenticate(&self, request: &HandshakeRequest) -> Result<AuthOutcome, AuthFailure> {
    ///         let outcome = self.inner.authenticate(request).await?;
    ///         let banned = self.banned.lock().map_or(true, |b| b.contains(outcome.user.as_str()));
    ///         if banned {
    ///             return Err(AuthFailure::after_upgrade(AuthError::Forbidden, outcome.selected_subprotocol));
    ///         }
    ///         Ok(outcome)
    ///     }
    /// }
    /// ```
    fn reauthenticate(
        &self,
        request: &HandshakeRequest,
        token: &str,
    ) -> impl Future<Output = Result<AuthOutcome, AuthFailure>> + Send {
        let request = request.for_reauthentication(token);
        async move { self.authenticate(&request).await }
    }
}

/// Implements [`Authenticator`] for a pointer to one by forwarding every
/// method, the defaults included (so an override is never bypassed).
macro_rules! forward_authenticator {
    ($(#[$meta:meta])* $pointer:ty) => {
        $(#[$meta])*
        impl<A: Authenticator + ?Sized> Authenticator for $pointer {
            fn authenticate(
                &self,
                request: &HandshakeRequest,
            ) -> impl Future<Output = Result<AuthOutcome, AuthFailure>> + Send {
                (**self).authenticate(request)
            }

            fn first_message_auth(&self) -> bool {
                (**self).first_message_auth()
            }

            fn authenticate_message(
                &self,
                request: &HandshakeRequest,
                token: &str,
            ) -> impl Future<Output = Result<AuthOutcome, AuthFailure>> + Send {
                (**self).authenticate_message(request, token)
            }

            fn reauthenticate(
                &self,
                request: &HandshakeRequest,
                token: &str,
            ) -> impl Future<Output = Result<AuthOutcome, AuthFailure>> + Send {
                (**self).reauthenticate(request, token)
            }
        }
    };
}

forward_authenticator!(&A);
forward_authenticator!(
    /// An authenticator shared behind an [`Arc`] (the adapters keep one per
    /// connection for re-authentication, so one that is not [`Clone`] can be
    /// passed as `&Arc<_>`).
    Arc<A>
);
