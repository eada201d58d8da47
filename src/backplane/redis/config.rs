//! [`RedisConfig`]: where the Redis backplane connects, how it signs, and
//! its timings, checked once when the backplane is built.

use std::sync::Arc;
use std::time::Duration;

/// Settings of a [`RedisBackplane`](super::RedisBackplane).
///
/// Every duration is checked by [`RedisBackplane::new`](super::RedisBackplane::new):
/// a zero or inconsistent value is a [`RedisConfigError`], never a panic
/// inside a background task.
///
/// `Debug` hides the URL's password and the cluster key.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server, for example `redis://127.0.0.1:6379/`.
    pub url: String,
    /// Prefix of every key and channel, so several deployments can share a
    /// server. It separates names only: it is no access control (see
    /// [`cluster_key`](RedisConfig::cluster_key)). Default: `wsl`.
    pub prefix: String,
    /// The key every node signs its messages with (HMAC-SHA256) and checks
    /// every received message against before anything is delivered. All
    /// nodes of a cluster share it; a message that fails the check is
    /// dropped and counted. Anyone able to `PUBLISH` on the Redis server
    /// without it can neither inject events nor close connections.
    pub cluster_key: ClusterKey,
    /// Longest any Redis command (or connection attempt) may take before
    /// Redis counts as down. Default: 2 s; at least 1 ms.
    pub command_timeout: Duration,
    /// How long a node's presence outlives its last refresh: a crashed
    /// node's users are offline, and its per-user connection counts
    /// ignored, after at most this. Refreshed every third of it. Default:
    /// 30 s; longer than `command_timeout` and at least 30 ms.
    pub presence_ttl: Duration,
    /// Events waiting for the publishing connection; past it, publishes
    /// fail with [`BackplaneError::Overloaded`](crate::backplane::BackplaneError::Overloaded).
    /// Default: 4,096; at least 1.
    pub publish_queue: usize,
    /// Bytes of signed messages waiting for the publishing connection, all
    /// together; past it, publishes fail with
    /// [`BackplaneError::Overloaded`](crate::backplane::BackplaneError::Overloaded),
    /// whatever [`publish_queue`](RedisConfig::publish_queue) says: a count
    /// alone lets large events pile up without bound in memory. Default:
    /// 16 MiB; at least 1.
    pub publish_queue_bytes: usize,
    /// Longest wait between reconnection attempts. Default: 5 s; at least
    /// 1 ms.
    pub max_backoff: Duration,
    /// Whether Redis keeps the users' streams (see the [module
    /// docs](super)): every event gets its offset from Redis as it
    /// is published, with the user's history kept beside it, so offsets are
    /// the same on every node and a client resumes on any node
    /// ([`Backplane::keeps_streams`](crate::backplane::Backplane::keeps_streams)
    /// is then `true`). Each event then goes through a script in Redis (one
    /// call per batch of queued events: about 5 – 7 µs of Redis CPU per
    /// event instead of about 1 µs for a bare `PUBLISH`; Redis 6.2 or later
    /// for the cheapest form), needs Redis to accept writes, and this
    /// node's own connections get it back through Redis rather than
    /// directly.
    ///
    /// `false`: each node numbers its own streams and keeps their history
    /// in memory; a client resumes only on the node it left. Every node of
    /// a cluster must agree: a node in stream mode drops the plain events of
    /// a node that is not (counted as rejected). Default: `true`.
    pub streams: bool,
    /// TLS settings for a `rediss://` URL: a CA to trust instead of the
    /// system's roots, a client certificate. Default: `None` (the system's
    /// roots, no client certificate). Set with a `redis://` URL, it fails
    /// [`RedisBackplane::new`](super::RedisBackplane::new) rather than
    /// being ignored.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub tls: Option<super::TlsOptions>,
}

impl RedisConfig {
    /// The defaults, for the server at `url`, signing with `cluster_key`.
    ///
    /// ```
    /// use ws_lifecycle::backplane::redis::{ClusterKey, RedisConfig};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // In production: the same secret on every node, from your secret store.
    /// let key = ClusterKey::new(b"an example key of at least 32 bytes!")?;
    /// let config = RedisConfig::new("redis://127.0.0.1:6379/", key);
    /// assert_eq!(config.prefix, "wsl");
    /// # Ok(()) }
    /// ```
    pub fn new(url: impl Into<String>, cluster_key: ClusterKey) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "wsl".into(),
            cluster_key,
            command_timeout: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(30),
            publish_queue: 4096,
            publish_queue_bytes: 16 << 20,
            max_backoff: Duration::from_secs(5),
            streams: true,
            #[cfg(feature = "redis-tls")]
            tls: None,
        }
    }

    /// Checks every setting that a background task relies on.
    pub(super) fn validate(&self) -> Result<(), RedisConfigError> {
        let invalid =
            |field, requirement| Err(RedisConfigError::InvalidSetting { field, requirement });
        if self.prefix.is_empty() {
            return invalid("prefix", "must not be empty");
        }
        if self.command_timeout < Duration::from_millis(1) {
            return invalid("command_timeout", "must be at least 1 ms");
        }
        if self.presence_ttl < Duration::from_millis(30) {
            return invalid("presence_ttl", "must be at least 30 ms");
        }
        if self.presence_ttl <= self.command_timeout {
            return invalid("presence_ttl", "must be longer than command_timeout");
        }
        if self.max_backoff < Duration::from_millis(1) {
            return invalid("max_backoff", "must be at least 1 ms");
        }
        if self.publish_queue == 0 {
            return invalid("publish_queue", "must be at least 1");
        }
        if self.publish_queue_bytes == 0 {
            return invalid("publish_queue_bytes", "must be at least 1");
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RedisConfig");
        d.field("url", &redacted(&self.url))
            .field("prefix", &self.prefix)
            .field("cluster_key", &self.cluster_key)
            .field("command_timeout", &self.command_timeout)
            .field("presence_ttl", &self.presence_ttl)
            .field("publish_queue", &self.publish_queue)
            .field("publish_queue_bytes", &self.publish_queue_bytes)
            .field("max_backoff", &self.max_backoff)
            .field("streams", &self.streams);
        #[cfg(feature = "redis-tls")]
        d.field("tls", &self.tls);
        d.finish()
    }
}

/// `url` with the password of its user-info part (`user:password@`)
/// replaced, so logs never carry it.
pub(super) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') || user.is_empty() {
                format!("{user}:***")
            } else {
                // `redis://secret@host` puts the password where a user
                // would be: hide it too.
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The cluster's shared signing key: at least [`ClusterKey::MIN_LEN`] bytes.
/// Cheap to clone; `Debug` never prints it.
#[derive(Clone)]
pub struct ClusterKey(Arc<[u8]>);

impl ClusterKey {
    /// The shortest key accepted: the output size of SHA-256 (RFC 2104
    /// §3 and RFC 7518 §3.2 ask at least that of an HMAC-SHA256 key).
    pub const MIN_LEN: usize = 32;

    /// A key from secret bytes (for example 48 random bytes, shared by all
    /// nodes through your secret store).
    ///
    /// # Errors
    ///
    /// [`RedisConfigError::ClusterKeyTooShort`] below [`ClusterKey::MIN_LEN`]
    /// bytes: an empty or short key (an unset environment variable) would
    /// let anyone forge messages.
    pub fn new(key: impl AsRef<[u8]>) -> Result<ClusterKey, RedisConfigError> {
        let key = key.as_ref();
        if key.len() < Self::MIN_LEN {
            return Err(RedisConfigError::ClusterKeyTooShort {
                len: key.len(),
                min: Self::MIN_LEN,
            });
        }
        Ok(ClusterKey(Arc::from(key)))
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(***)")
    }
}

/// Why a [`RedisBackplane`](super::RedisBackplane) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConfigError {
    /// The URL or the TLS settings cannot work: a URL that does not parse,
    /// a `rediss://` URL without the `redis-tls` feature, a malformed
    /// certificate or key (the message never includes the password).
    #[error("cannot use Redis at {url}: {reason}")]
    Unusable {
        /// The URL, password hidden.
        url: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The cluster key is too short to resist forgery.
    #[error(
        "the cluster key is {len} bytes; at least {min} are needed (for example 48 random \
         bytes: `openssl rand -base64 48`), the same on every node"
    )]
    ClusterKeyTooShort {
        /// The key's length.
        len: usize,
        /// The least accepted.
        min: usize,
    },
    /// A setting is out of range.
    #[error("RedisConfig::{field} {requirement}")]
    InvalidSetting {
        /// The field.
        field: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords_in_every_userinfo_form() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/"),
            ("redis://:hunter2@h:1/0", "redis://:***@h:1/0"),
            ("redis://bob:hunter2@h:1", "redis://bob:***@h:1"),
            ("rediss://hunter2@h/", "rediss://***@h/"),
            ("redis://bob:p@ss@h/", "redis://bob:***@h/"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
    }
}
