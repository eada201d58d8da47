//! Opening the Redis client, and saying why connecting failed.
//!
//! * `redis://` (or `valkey://`, or a Unix socket URL): plaintext, as before.
//! * `rediss://` (or `valkeys://`): TLS through rustls on the `ring`
//!   provider, with feature `redis-tls`. The server's certificate is checked
//!   against the system's trusted roots, or only against the CA given with
//!   [`TlsOptions::root_ca_pem`]; [`TlsOptions::client_identity_pem`] adds a
//!   client certificate for servers that require one (mutual TLS).
//! * A `rediss://` URL in a build without `redis-tls` is refused when the
//!   backplane is built: it never connects in plaintext instead.
//!
//! Certificates and keys are checked when the backplane is built, so a
//! malformed PEM fails [`RedisBackplane::new`](super::RedisBackplane::new)
//! rather than every connection attempt. What cannot be checked then (the
//! server's certificate) is explained when a connection fails: see
//! [`FailureLog`].

use redis::{Client, RedisError};

use super::RedisConfig;

/// TLS settings for a `rediss://` URL, in
/// [`RedisConfig::tls`](super::RedisConfig::tls). Without them (`None`), a
/// `rediss://` URL trusts the system's roots and sends no client
/// certificate, which suits managed Redis services with a public CA.
///
/// ```
/// use ws_lifecycle::backplane::redis::{RedisConfig, TlsOptions};
///
/// # fn pem() -> Vec<u8> { Vec::new() }
/// let ca_pem: Vec<u8> = pem(); // e.g. std::fs::read("ca.crt")?
/// # let key = ws_lifecycle::backplane::redis::ClusterKey::new([7u8; 32]).unwrap();
/// let mut config = RedisConfig::new("rediss://redis.internal:6380/", key);
/// config.tls = Some(TlsOptions::new().root_ca_pem(ca_pem));
/// ```
#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
#[derive(Clone, Default)]
pub struct TlsOptions {
    root_ca_pem: Option<Vec<u8>>,
    client_identity: Option<ClientIdentity>,
}

#[cfg(feature = "redis-tls")]
#[derive(Clone)]
struct ClientIdentity {
    cert_chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

#[cfg(feature = "redis-tls")]
impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key; the certificates are public but long.
        f.debug_struct("TlsOptions")
            .field(
                "root_ca_pem",
                &self
                    .root_ca_pem
                    .as_ref()
                    .map(|pem| format!("{} bytes", pem.len())),
            )
            .field(
                "client_identity",
                &self.client_identity.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg(feature = "redis-tls")]
impl TlsOptions {
    /// No CA of its own (the system's roots) and no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in `pem` (one or more PEM `CERTIFICATE`
    /// blocks) **instead of** the system's roots: for a private CA or a
    /// self-signed server certificate. The server's certificate must still
    /// name the host of the URL (as a DNS name or IP address in its
    /// subjectAltName).
    pub fn root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca_pem = Some(pem.into());
        self
    }

    /// Presents a client certificate, for servers that require one (mutual
    /// TLS, `tls-auth-clients yes`): `cert_chain_pem` holds the client's
    /// certificate first, then any intermediates; `key_pem` its private key
    /// (PKCS#8, PKCS#1 or SEC1, unencrypted).
    pub fn client_identity_pem(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_identity = Some(ClientIdentity {
            cert_chain_pem: cert_chain_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }

    /// Checks the PEM now, and hands it to the redis crate.
    fn certificates(&self) -> Result<redis::TlsCertificates, OpenError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        if let Some(pem) = &self.root_ca_pem {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| OpenError::RootCa(format!("the PEM does not parse ({e})")))?;
            if certs.is_empty() {
                return Err(OpenError::RootCa(
                    "no `-----BEGIN CERTIFICATE-----` block found: give the CA's certificate in \
                     PEM"
                    .into(),
                ));
            }
            let mut store = rustls::RootCertStore::empty();
            for cert in certs {
                store.add(cert).map_err(|e| {
                    OpenError::RootCa(format!("a certificate is not a usable CA ({e})"))
                })?;
            }
        }
        if let Some(identity) = &self.client_identity {
            let chain = CertificateDer::pem_slice_iter(&identity.cert_chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    OpenError::ClientIdentity(format!("the certificate PEM does not parse ({e})"))
                })?;
            if chain.is_empty() {
                return Err(OpenError::ClientIdentity(
                    "no `-----BEGIN CERTIFICATE-----` block in the certificate PEM".into(),
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(&identity.key_pem).map_err(|e| {
                OpenError::ClientIdentity(format!(
                    "no unencrypted private key found in the key PEM ({e})"
                ))
            })?;
            // Loads the key and checks it belongs to the certificate.
            rustls::sign::CertifiedKey::from_der(
                chain,
                key,
                &rustls::crypto::ring::default_provider(),
            )
            .map_err(|e| {
                OpenError::ClientIdentity(format!(
                    "the key is unsupported or does not match the certificate ({e})"
                ))
            })?;
        }
        Ok(redis::TlsCertificates {
            client_tls: self
                .client_identity
                .as_ref()
                .map(|identity| redis::ClientTlsConfig {
                    client_cert: identity.cert_chain_pem.clone(),
                    client_key: identity.key_pem.clone(),
                }),
            root_cert: self.root_ca_pem.clone(),
        })
    }
}

/// Why [`open`] refused a configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("invalid Redis URL: {0}")]
    Url(#[source] RedisError),
    #[cfg(not(feature = "redis-tls"))]
    #[error(
        "the URL `{scheme}://…` asks for TLS, which this build lacks: enable the `redis-tls` \
         feature of ws-lifecycle (it never falls back to plaintext)"
    )]
    TlsNotEnabled { scheme: String },
    #[cfg(feature = "redis-tls")]
    #[error(
        "`RedisConfig::tls` is set but the URL is not `rediss://`: use a `rediss://` URL to \
         connect over TLS, or remove the TLS options for a plaintext server"
    )]
    TlsOptionsWithoutTls,
    #[cfg(feature = "redis-tls")]
    #[error(
        "the URL's `#insecure` (no certificate check) is not supported: trust the server's CA \
         with `TlsOptions::root_ca_pem` instead"
    )]
    Insecure,
    #[cfg(feature = "redis-tls")]
    #[error("`TlsOptions::root_ca_pem`: {0}")]
    RootCa(String),
    #[cfg(feature = "redis-tls")]
    #[error("`TlsOptions::client_identity_pem`: {0}")]
    ClientIdentity(String),
}

/// The client for `config`'s URL and TLS settings. Nothing connects yet.
pub(crate) fn open(config: &RedisConfig) -> Result<Client, OpenError> {
    let url = config.url.as_str();
    let scheme = url
        .split_once("://")
        .map_or("", |(scheme, _)| scheme)
        .to_ascii_lowercase();
    let tls = matches!(scheme.as_str(), "rediss" | "valkeys");
    #[cfg(not(feature = "redis-tls"))]
    if tls {
        return Err(OpenError::TlsNotEnabled { scheme });
    }
    #[cfg(feature = "redis-tls")]
    {
        if !tls {
            return match config.tls {
                Some(_) => Err(OpenError::TlsOptionsWithoutTls),
                None => Client::open(url).map_err(OpenError::Url),
            };
        }
        if url
            .rsplit_once('#')
            .is_some_and(|(_, fragment)| fragment == "insecure")
        {
            return Err(OpenError::Insecure);
        }
        install_crypto_provider();
        if let Some(options) = &config.tls {
            return Client::build_with_tls(url, options.certificates()?).map_err(OpenError::Url);
        }
    }
    Client::open(url).map_err(OpenError::Url)
}

/// The redis crate builds its rustls configuration from the process's
/// default provider: without one, or with two compiled in and none chosen,
/// rustls would panic at the first connection. Installs `ring`'s unless the
/// application has chosen one.
#[cfg(feature = "redis-tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error means another thread installed one meanwhile: it is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Why a connection to Redis failed, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error(
        "the Redis server's TLS certificate is not trusted ({0}): give the CA that signed it \
         with `TlsOptions::root_ca_pem` in `RedisConfig::tls`, or add it to the system's \
         trusted roots"
    )]
    UntrustedCertificate(String),
    #[error(
        "the Redis server's TLS certificate does not name the URL's host ({0}): connect with a \
         host name or IP address the certificate lists in its subjectAltName"
    )]
    CertificateNameMismatch(String),
    #[error(
        "the Redis server's TLS certificate is expired or not yet valid ({0}): renew it, or \
         check this machine's clock"
    )]
    CertificateNotCurrent(String),
    #[error(
        "the Redis server refused the TLS handshake ({0}): if it requires client certificates \
         (mutual TLS), give one with `TlsOptions::client_identity_pem`"
    )]
    HandshakeRefused(String),
    #[error(
        "the Redis server does not answer in TLS ({0}): check that the port is its TLS port, or \
         use a `redis://` URL for a plaintext server"
    )]
    NotTls(String),
    #[error("TLS with the Redis server failed: {0}")]
    Tls(String),
    #[error("cannot connect to Redis: {0}")]
    Other(String),
}

impl ConnectError {
    /// Classifies `err`. The redis crate keeps the rustls error only as
    /// text (behind an `io::Error` in an `Arc`, out of `downcast`'s reach),
    /// so this reads rustls' messages; an unknown one is still reported,
    /// whole, as [`ConnectError::Tls`] or [`ConnectError::Other`].
    fn classify(err: &RedisError) -> ConnectError {
        let text = err.to_string();
        let has = |needle: &str| text.contains(needle);
        if has("invalid peer certificate") {
            if has("UnknownIssuer") || has("BadSignature") {
                ConnectError::UntrustedCertificate(text)
            } else if has("not valid for name") || has("NotValidForName") {
                ConnectError::CertificateNameMismatch(text)
            } else if has("expired") || has("Expired") || has("not valid yet") || has("NotValidYet")
            {
                ConnectError::CertificateNotCurrent(text)
            } else {
                ConnectError::Tls(text)
            }
        } else if has("received fatal alert") {
            ConnectError::HandshakeRefused(text)
        } else if has("received corrupt message") || has("InvalidContentType") {
            ConnectError::NotTls(text)
        } else if has("peer is incompatible")
            || has("peer misbehaved")
            || has("peer sent no certificates")
            || has("handshake not complete")
        {
            ConnectError::Tls(text)
        } else {
            ConnectError::Other(text)
        }
    }
}

/// A connection task's record of its failures: the first failure of a
/// streak, and each change of reason, is logged at WARN with what to do
/// about it; a repeat of the same reason at DEBUG, so a persistent fault
/// (an untrusted certificate, a server that is down) is reported once, not
/// at every retry.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    last: Option<String>,
}

impl FailureLog {
    /// Passes `result` through, logging a failure and forgetting the
    /// streak on success.
    pub(crate) fn observe<T>(&mut self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        match &result {
            Ok(_) => self.last = None,
            Err(err) => {
                let error = ConnectError::classify(err);
                let text = error.to_string();
                if self.last.as_deref() == Some(text.as_str()) {
                    tracing::debug!(%error, "Redis backplane: still cannot connect; retrying");
                } else {
                    tracing::warn!(%error, "Redis backplane: cannot connect; retrying");
                    self.last = Some(text);
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    fn test_key() -> crate::backplane::redis::ClusterKey {
        crate::backplane::redis::ClusterKey::new([7u8; 32]).unwrap()
    }

    use super::*;

    #[test]
    fn plain_urls_open_and_bad_urls_say_so() {
        assert!(open(&RedisConfig::new("redis://127.0.0.1:6379/", test_key())).is_ok());
        let err = open(&RedisConfig::new("redis://127.0.0.1:6379/x", test_key())).unwrap_err();
        assert!(err.to_string().starts_with("invalid Redis URL"), "{err}");
    }

    #[test]
    fn other_failures_are_reported_whole() {
        let err = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let error = ConnectError::classify(&err);
        assert!(matches!(error, ConnectError::Other(_)), "{error:?}");
        assert!(error.to_string().starts_with("cannot connect to Redis: "));
    }

    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn a_tls_url_without_the_feature_is_refused() {
        for url in ["rediss://127.0.0.1:6380/", "REDISS://h/", "valkeys://h/"] {
            let err = open(&RedisConfig::new(url, test_key())).unwrap_err();
            assert!(matches!(err, OpenError::TlsNotEnabled { .. }), "{err:?}");
            // What the public constructor says.
            let err =
                super::super::RedisBackplane::new(RedisConfig::new(url, test_key())).unwrap_err();
            assert!(
                err.to_string().contains("enable the `redis-tls` feature"),
                "{err}"
            );
        }
    }

    #[cfg(feature = "redis-tls")]
    mod tls {
        use super::*;

        const NOT_PEM: &[u8] = b"not a certificate";

        fn redis_io_error(inner: impl std::error::Error + Send + Sync + 'static) -> RedisError {
            RedisError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, inner))
        }

        #[test]
        fn a_tls_url_opens_with_the_system_roots_or_options() {
            assert!(open(&RedisConfig::new("rediss://127.0.0.1:6380/", test_key())).is_ok());
            assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        }

        #[test]
        fn tls_options_need_a_tls_url() {
            let mut config = RedisConfig::new("redis://127.0.0.1:6379/", test_key());
            config.tls = Some(TlsOptions::new());
            let err = open(&config).unwrap_err();
            assert!(matches!(err, OpenError::TlsOptionsWithoutTls), "{err:?}");
        }

        #[test]
        fn insecure_urls_are_refused() {
            let err = open(&RedisConfig::new(
                "rediss://127.0.0.1:6380/#insecure",
                test_key(),
            ))
            .unwrap_err();
            assert!(matches!(err, OpenError::Insecure), "{err:?}");
        }

        #[test]
        fn malformed_pem_fails_at_open() {
            let mut config = RedisConfig::new("rediss://127.0.0.1:6380/", test_key());
            config.tls = Some(TlsOptions::new().root_ca_pem(NOT_PEM));
            let err = open(&config).unwrap_err();
            assert!(matches!(err, OpenError::RootCa(_)), "{err:?}");
            assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");

            config.tls = Some(TlsOptions::new().client_identity_pem(NOT_PEM, NOT_PEM));
            let err = open(&config).unwrap_err();
            assert!(matches!(err, OpenError::ClientIdentity(_)), "{err:?}");
        }

        #[test]
        fn debug_never_shows_the_key() {
            let options = TlsOptions::new().client_identity_pem("CERT", "SECRET KEY");
            let text = format!("{options:?}");
            assert!(!text.contains("SECRET"), "{text}");
        }

        /// Pins the rustls messages [`ConnectError::classify`] reads, so a
        /// rustls upgrade that rewords them fails here.
        #[test]
        fn rustls_errors_are_classified() {
            use CertificateError::{Expired, NotValidForName, UnknownIssuer};
            use rustls::{AlertDescription, CertificateError, Error, InvalidMessage};
            let cases = [
                (Error::InvalidCertificate(UnknownIssuer), "is not trusted"),
                (Error::InvalidCertificate(NotValidForName), "does not name"),
                (Error::InvalidCertificate(Expired), "expired or not yet"),
                (
                    Error::AlertReceived(AlertDescription::CertificateRequired),
                    "refused the TLS handshake",
                ),
                (
                    Error::InvalidMessage(InvalidMessage::InvalidContentType),
                    "does not answer in TLS",
                ),
            ];
            for (rustls_error, expected) in cases {
                let shown = rustls_error.to_string();
                let error = ConnectError::classify(&redis_io_error(rustls_error)).to_string();
                assert!(error.contains(expected), "{shown} classified as {error}");
                assert!(error.to_string().contains(&shown), "{error}");
            }
        }
    }
}
