//! What a connection needs for a secured broker: a TLS configuration ([`ClientTls`]) and a
//! user's keys ([`Credentials`]), set per connection in [`crate::ConnectOptions`] or once
//! for the process with [`set_default_security`] (what `mq --tls --access-key ...` does,
//! so that every `connect(addr)` helper uses them).

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Error, Result};

/// A user's access key and secret key (`mq user add` prints them).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key (the user's name).
    pub access_key: String,
    /// The secret key; never sent, only used to sign the broker's challenge.
    pub secret_key: String,
}

impl Credentials {
    /// Keys of one user.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }

    /// The proof of the handshake: HMAC-SHA256 keyed by the secret over
    /// [`protocol::auth::proof_message`].
    pub(crate) fn proof(&self, server_nonce: &[u8], client_nonce: &[u8]) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.secret_key.as_bytes());
        let message = protocol::auth::proof_message(server_nonce, client_nonce, &self.access_key);
        ring::hmac::sign(&key, &message).as_ref().to_vec()
    }
}

impl std::fmt::Debug for Credentials {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// How a connection speaks TLS: whom it trusts and, for mutual TLS, its own certificate.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

fn tls_error(what: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Tls {
        addr: what.display().to_string(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

impl ClientTls {
    /// Trusts the CA certificates of a PEM file (a private CA, or a self-signed broker
    /// certificate), with an optional client certificate and key for mutual TLS.
    ///
    /// # Errors
    /// `Tls` naming a file that cannot be read or used.
    pub fn with_ca_file(ca: &Path, client_cert: Option<(&Path, &Path)>) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(ca)? {
            roots.add(cert).map_err(|e| tls_error(ca, e))?;
        }
        Self::with_roots(roots, client_cert)
    }

    /// Trusts the platform's CA certificates (for a broker with a public certificate).
    ///
    /// # Errors
    /// `Tls` when none can be loaded, or a client certificate file cannot be used.
    pub fn with_platform_roots(client_cert: Option<(&Path, &Path)>) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // Skip the odd unusable certificate rather than refuse the whole store.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(Error::Tls {
                addr: "the platform's certificate store".into(),
                reason: "no trusted CA certificate found; give one with --tls-ca".into(),
            });
        }
        Self::with_roots(roots, client_cert)
    }

    fn with_roots(roots: RootCertStore, client_cert: Option<(&Path, &Path)>) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls {
                addr: "TLS".into(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots);
        let config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error(cert, e))?
            }
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Uses a rustls configuration as it is (custom verification, session resumption...).
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }

    pub(crate) fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
    }
}

/// The name a broker's certificate must carry: the host of `host:port` (an IP address or
/// a DNS name).
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| Error::Tls {
        addr: addr.to_string(),
        reason: format!("{host:?} is no server name: {e}"),
    })
}

type Defaults = (Option<ClientTls>, Option<Credentials>);

fn defaults() -> &'static RwLock<Defaults> {
    static DEFAULTS: RwLock<Defaults> = RwLock::new((None, None));
    &DEFAULTS
}

/// Sets the TLS configuration and credentials that [`crate::ConnectOptions::default`]
/// starts with from now on, in this process: how one setting reaches every connection a
/// program opens through `Producer::connect`, `Admin::connect` and the consumers.
pub fn set_default_security(tls: Option<ClientTls>, credentials: Option<Credentials>) {
    let mut d = defaults()
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *d = (tls, credentials);
}

pub(crate) fn default_security() -> Defaults {
    defaults()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        assert!(matches!(
            server_name("127.0.0.1:10911").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:10911").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("localhost:1").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn credentials_never_print_the_secret() {
        let c = Credentials::new("app", "very-secret");
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
