//! [`Extensions`]: the application's own per-connection values, by type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Values the application attaches to a connection while authenticating it
/// (a tenant id, a plan, feature flags), one per type, read back from
/// [`ConnectionHandle::extensions`](crate::ConnectionHandle::extensions) in
/// `on_ready`, `on_message` and `on_close`.
///
/// Filled on the [`AuthOutcome`](crate::auth::AuthOutcome) an
/// [`Authenticator`](crate::auth::Authenticator) returns; fixed once the
/// connection is bound (a connection's context never changes under it).
/// Cloning is cheap: values are shared.
///
/// ```
/// use ws_lifecycle::auth::AuthOutcome;
/// use ws_lifecycle::id::UserId;
///
/// #[derive(Debug, PartialEq)]
/// struct Tenant(&'static str);
///
/// let outcome = AuthOutcome::new(UserId::new("alice")?).with_extension(Tenant("acme"));
/// assert_eq!(outcome.extensions.get::<Tenant>(), Some(&Tenant("acme")));
/// assert_eq!(outcome.extensions.get::<u32>(), None);
/// # Ok::<(), ws_lifecycle::id::IdError>(())
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    // Boxed and optional: most connections carry none, and then this costs
    // one word instead of a `HashMap`'s six.
    #[allow(
        clippy::box_collection,
        reason = "one word per connection without extensions"
    )]
    map: Option<Box<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl Extensions {
    /// No values.
    pub fn new() -> Self {
        Extensions::default()
    }

    /// Stores `value`, replacing (and returning `true` for) one of the same
    /// type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> bool {
        self.map
            .get_or_insert_with(Box::default)
            .insert(TypeId::of::<T>(), Arc::new(value))
            .is_some()
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.map
            .as_ref()?
            .get(&TypeId::of::<T>())?
            .downcast_ref::<T>()
    }

    /// Whether a value of type `T` was stored.
    pub fn contains<T: Send + Sync + 'static>(&self) -> bool {
        self.get::<T>().is_some()
    }

    /// How many values are stored.
    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |map| map.len())
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The values are the application's, and may be personal: count only.
        f.debug_struct("Extensions")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type_replaced_by_the_next() {
        let mut ext = Extensions::new();
        assert!(ext.is_empty());
        assert!(!ext.insert(7u32));
        assert!(ext.insert(8u32));
        assert!(!ext.insert("plan"));
        assert_eq!(
            (ext.get::<u32>(), ext.get::<&str>()),
            (Some(&8), Some(&"plan"))
        );
        assert_eq!(ext.len(), 2);
        assert!(!ext.contains::<u64>());
        let copy = ext.clone();
        assert_eq!(copy.get::<u32>(), Some(&8));
    }
}
