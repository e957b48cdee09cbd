//! TLS for every listener: one reloadable server configuration (certificate, key and an
//! optional client CA for mutual TLS), and an acceptor that tells TLS from plaintext by the
//! first byte a client sends, so that one port can serve both (`--tls-mode permissive`, as
//! the RocketMQ proxy does) or refuse plaintext (`required`).
//!
//! A TLS client always speaks first, and its first record is a handshake record (content
//! type 0x16); no FerroMQ frame, HTTP request or HTTP/2 preface starts with that byte.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::SecurityError;

/// The first byte of a TLS connection: the content type of a handshake record.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Whether a TLS listener also serves plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS and plaintext on the same port, told apart by the first byte.
    #[default]
    Permissive,
    /// TLS only; a plaintext client is told so and closed.
    Required,
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "permissive" => Ok(Self::Permissive),
            "required" => Ok(Self::Required),
            other => Err(format!("{other:?} is not permissive or required")),
        }
    }
}

/// Where the server's TLS material is read from (again on every reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to; `None` asks for none.
    pub client_ca: Option<PathBuf>,
}

/// The reloadable part every acceptor of a broker shares.
#[derive(Debug)]
struct Shared {
    files: TlsFiles,
    mode: TlsMode,
    /// Swapped whole by a reload; handshakes in progress keep the one they started with.
    current: RwLock<Arc<ServerConfig>>,
}

/// Accepts TLS or plaintext connections for one listener. Clones share the certificate,
/// so one [`TlsAcceptor::reload`] (the broker does it on SIGHUP) serves every listener.
#[derive(Debug, Clone)]
pub struct TlsAcceptor {
    shared: Arc<Shared>,
    /// Protocols offered by ALPN (`h2` for gRPC); empty offers none.
    alpn: Vec<Vec<u8>>,
    /// How long a client may take to send its first byte and finish the handshake.
    handshake_timeout: Duration,
}

/// A connection after [`TlsAcceptor::accept`]: plaintext or TLS, read and written alike.
#[derive(Debug)]
pub enum MaybeTlsStream {
    /// The client spoke plaintext (permissive mode).
    Plain(TcpStream),
    /// The client completed a TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Why a connection was not accepted.
#[derive(Debug)]
pub enum AcceptError {
    /// The peer went away, sent nothing in time, or failed the TLS handshake.
    Io(std::io::Error),
    /// `required` mode and the client spoke plaintext: the socket is handed back so that
    /// the listener can answer in its own protocol before closing it.
    PlaintextRefused(TcpStream),
}

impl TlsAcceptor {
    /// Loads the certificate, key and client CA.
    ///
    /// # Errors
    /// `Tls` naming the file that cannot be read or parsed, or the reason rustls refuses it.
    pub fn new(
        files: TlsFiles,
        mode: TlsMode,
        handshake_timeout: Duration,
    ) -> Result<Self, SecurityError> {
        let config = load(&files)?;
        Ok(Self {
            shared: Arc::new(Shared {
                files,
                mode,
                current: RwLock::new(Arc::new(config)),
            }),
            alpn: Vec::new(),
            handshake_timeout,
        })
    }

    /// The same certificate (and reloads) offering `protocols` by ALPN: `[b"h2"]` for a
    /// gRPC listener. The native and HTTP/1 listeners offer none.
    #[must_use]
    pub fn with_alpn(&self, protocols: Vec<Vec<u8>>) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            alpn: protocols,
            handshake_timeout: self.handshake_timeout,
        }
    }

    /// Whether plaintext is refused.
    pub fn mode(&self) -> TlsMode {
        self.shared.mode
    }

    /// Reads the files again and swaps the configuration in for new connections. On an
    /// error the old configuration stays in use.
    ///
    /// # Errors
    /// As for [`TlsAcceptor::new`].
    pub fn reload(&self) -> Result<(), SecurityError> {
        let config = Arc::new(load(&self.shared.files)?);
        match self.shared.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// The configuration new handshakes use now, with this acceptor's ALPN protocols:
    /// for a server that runs the handshake itself.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let base = match self.shared.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        if self.alpn.is_empty() {
            return base;
        }
        // A copy per handshake: its fields are mostly `Arc`s, cheap next to the handshake.
        let mut with_alpn = (*base).clone();
        with_alpn.alpn_protocols.clone_from(&self.alpn);
        Arc::new(with_alpn)
    }

    /// Waits for the client's first byte and runs the TLS handshake if it starts one;
    /// otherwise hands back the plaintext socket (permissive) or refuses it (required).
    ///
    /// # Errors
    /// `Io` when the client sends nothing within the handshake timeout, closes, or fails
    /// the handshake (a client certificate missing or not signed by the client CA among
    /// others); `PlaintextRefused` in `required` mode.
    pub async fn accept(&self, stream: TcpStream) -> Result<MaybeTlsStream, AcceptError> {
        let timeout = self.handshake_timeout;
        let timed_out = || {
            AcceptError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no TLS handshake or first frame in time",
            ))
        };
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(timeout, stream.peek(&mut first))
            .await
            .map_err(|_| timed_out())?
            .map_err(AcceptError::Io)?;
        if peeked == 0 {
            return Err(AcceptError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if first[0] != TLS_HANDSHAKE_BYTE {
            return match self.shared.mode {
                TlsMode::Permissive => Ok(MaybeTlsStream::Plain(stream)),
                TlsMode::Required => Err(AcceptError::PlaintextRefused(stream)),
            };
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config());
        let tls = tokio::time::timeout(timeout, acceptor.accept(stream))
            .await
            .map_err(|_| timed_out())?
            .map_err(AcceptError::Io)?;
        Ok(MaybeTlsStream::Tls(Box::new(tls)))
    }
}

impl MaybeTlsStream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The one crypto provider (ring), named rather than installed process-wide so that an
/// embedding program's own choice is never overridden.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> SecurityError {
    SecurityError::Tls {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads PEM certificates from `path`.
///
/// # Errors
/// `Tls` when the file cannot be read or holds no certificate.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let file = File::open(path).map_err(|e| tls_error(path, e))?;
    let certs = rustls_pemfile_certs(&mut BufReader::new(file)).map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn rustls_pemfile_certs(
    reader: &mut dyn std::io::BufRead,
) -> Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_reader_iter(reader).collect()
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_error(path, e))
}

fn load(files: &TlsFiles) -> Result<ServerConfig, SecurityError> {
    let certs = read_certificates(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| tls_error(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| tls_error(&files.key, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.key_pair.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn modes_parse_and_bad_files_name_the_file() {
        assert_eq!("Required".parse::<TlsMode>(), Ok(TlsMode::Required));
        assert!("maybe".parse::<TlsMode>().is_err());
        let dir = tempfile::TempDir::new().unwrap();
        let mut files = write_pair(dir.path());
        let ok = TlsAcceptor::new(files.clone(), TlsMode::Permissive, Duration::from_secs(1));
        assert!(ok.is_ok());
        files.key = dir.path().join("missing.pem");
        let e = TlsAcceptor::new(files, TlsMode::Permissive, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_old_certificate() {
        let dir = tempfile::TempDir::new().unwrap();
        let files = write_pair(dir.path());
        let acceptor =
            TlsAcceptor::new(files.clone(), TlsMode::Required, Duration::from_secs(1)).unwrap();
        let before = acceptor.server_config();
        std::fs::write(&files.cert, "not a certificate").unwrap();
        assert!(acceptor.reload().is_err());
        assert!(Arc::ptr_eq(&before, &acceptor.server_config()));
        write_pair(dir.path());
        acceptor.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &acceptor.server_config()));
        let h2 = acceptor.with_alpn(vec![b"h2".to_vec()]);
        assert_eq!(h2.server_config().alpn_protocols, vec![b"h2".to_vec()]);
    }
}
