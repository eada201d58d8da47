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

use std::future::Future;
use std::time::SystemTime;

use crate::event::WireMode;
use crate::id::UserId;

mod error;
mod request;

pub use error::AuthError;
pub use request::{HandshakeRequest, HandshakeRequestBuilder};

/// Who a connection belongs to, as established by an [`Authenticator`].
#[derive(Debug, Clone, PartialEq)]
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
        }
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
///
/// # Examples
///
/// ```
/// use ws_lifecycle::auth::{AuthError, AuthOutcome, Authenticator, HandshakeRequest};
/// use ws_lifecycle::id::UserId;
///
/// /// Trusts a header set by a gateway that already authenticated the user.
/// struct GatewayHeader;
///
/// impl Authenticator for GatewayHeader {
///     async fn authenticate(&self, request: &HandshakeRequest) -> Result<AuthOutcome, AuthError> {
///         let user = request.header("x-authenticated-user").ok_or(AuthError::MissingCredentials)?;
///         let user = UserId::new(user).map_err(|_| AuthError::InvalidToken("bad user id"))?;
///         Ok(AuthOutcome::new(user))
///     }
/// }
/// ```
pub trait Authenticator: Send + Sync {
    /// Authenticates `request`.
    ///
    /// # Errors
    ///
    /// An [`AuthError`] saying why; the hub closes the connection with its
    /// [`close_frame`](AuthError::close_frame) and counts it under its
    /// [`code`](AuthError::code).
    fn authenticate(
        &self,
        request: &HandshakeRequest,
    ) -> impl Future<Output = Result<AuthOutcome, AuthError>> + Send;
}
