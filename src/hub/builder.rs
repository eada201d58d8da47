//! [`HubBuilder`].

use crate::stream::HistoryConfig;
use crate::stream::table::{self, Table};
use std::sync::{Arc, Weak};

use crate::backplane::{Backplane, Node, NodeLink, SharedBackplane};
use crate::config::{ConfigError, HubConfig};
use crate::connection::Context;
use crate::hub::admission::Admission;
use crate::hub::{Hub, Inner};
use crate::id::{IdGenerator, UlidGenerator};
use crate::router::Router;

/// Builds a [`Hub`].
///
/// ```
/// use ws_lifecycle::{Hub, config::HubConfig, id::UlidGenerator};
///
/// # fn main() -> Result<(), ws_lifecycle::config::ConfigError> {
/// let hub = Hub::builder()
///     .config(HubConfig::default())
///     .id_generator(UlidGenerator::new())
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct HubBuilder {
    config: HubConfig,
    ids: Option<Arc<dyn IdGenerator>>,
    backplane: Option<SharedBackplane>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HubBuilder {
    /// Uses `config` (default: [`HubConfig::default`]).
    pub fn config(mut self, config: HubConfig) -> Self {
        self.config = config;
        self
    }

    /// Mints every id with `ids` (default: [`UlidGenerator`]).
    pub fn id_generator(mut self, ids: impl IdGenerator) -> Self {
        self.ids = Some(Arc::new(ids));
        self
    }

    /// Routes to and from other nodes through `backplane` (default: none,
    /// this node only).
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Some(Arc::new(backplane));
        self
    }

    /// Builds the hub (and starts its backplane, if any: call within a
    /// Tokio runtime then).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when a setting is out of range
    /// ([`HubConfig::validate`]): caught here, once, rather than as a
    /// busy loop or a refused event later.
    pub fn build(self) -> Result<Hub, ConfigError> {
        self.config.validate()?;
        Ok(self.assemble())
    }

    /// Builds without validating: for configurations known to be valid
    /// (the default, checked by a test).
    pub(super) fn assemble(self) -> Hub {
        let remote_streams = self.backplane.as_ref().is_some_and(|b| b.keeps_streams());
        // A backplane that keeps the streams keeps their history too: this
        // node only tracks where its deliveries stand.
        let history = if remote_streams {
            HistoryConfig::off()
        } else {
            self.config.history
        };
        let inner = Arc::new(Inner {
            streams: Table::new(table::shards_for(self.config.router_shards), history),
            remote_streams,
            router: Router::new(self.config.router_shards),
            admission: Arc::new(Admission::new(&self.config)),
            ctx: Arc::new(Context::new(self.config)),
            ids: self.ids.unwrap_or_else(|| Arc::new(UlidGenerator::new())),
            backplane: self.backplane,
        });
        if let Some(backplane) = &inner.backplane {
            let node: Weak<Inner> = Arc::downgrade(&inner);
            let node: Weak<dyn Node> = node;
            backplane.start(NodeLink::new(node));
        }
        Hub { inner }
    }
}
