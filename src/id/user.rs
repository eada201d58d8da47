//! [`UserId`]: validated, never minted.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::error::{IdError, IdKind, IdProblem};

/// The authenticated user a connection belongs to.
///
/// Supplied by the application (normally the auth layer, from a token claim),
/// so it is validated rather than minted: non-empty, at most 256 bytes, no
/// control characters. Compared byte for byte: `Alice` and `alice` are two
/// users.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Longest accepted user id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates `id` as a user id.
    ///
    /// # Errors
    ///
    /// [`IdError`] with kind [`IdKind::User`] when `id` is empty, longer than
    /// [`UserId::MAX_LEN`] bytes, or contains a control character.
    ///
    /// # Examples
    ///
    /// ```
    /// use ws_lifecycle::id::UserId;
    /// assert!(UserId::new("alice").is_ok());
    /// assert!(UserId::new("").is_err());
    /// assert!(UserId::new("bob\n").is_err());
    /// ```
    pub fn new(id: impl AsRef<str>) -> Result<Self, IdError> {
        let id = id.as_ref();
        if id.is_empty() {
            return Err(IdError::new(IdKind::User, IdProblem::Empty, id));
        }
        if id.len() > Self::MAX_LEN {
            return Err(IdError::new(IdKind::User, IdProblem::TooLong, id));
        }
        if id.chars().any(char::is_control) {
            return Err(IdError::new(IdKind::User, IdProblem::ControlCharacter, id));
        }
        Ok(UserId(Arc::from(id)))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two handles share one allocation: a cheap pre-check before a
    /// byte comparison on the write path.
    pub(crate) fn ptr_eq(&self, other: &UserId) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl FromStr for UserId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        UserId::new(s)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", &self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

text_form!(UserId);
