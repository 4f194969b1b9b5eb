//! STARTTLS for the MX listener: loading the PEM certificate chain and key into a rustls server
//! configuration (TLS 1.2 and 1.3 only, aws-lc-rs), and the session's byte stream that is either
//! plain TCP or TLS over it. Never decides policy (when TLS is required is the session's call).

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificate chain: {msg}")]
    Cert { path: String, msg: String },
    #[error("{path}: cannot read private key: {msg}")]
    Key { path: String, msg: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Build the server configuration from PEM files.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |msg: String| TlsError::Cert {
        path: cert.display().to_string(),
        msg,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        msg: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

/// Any byte stream a session can run on: a TCP socket in service, an in-memory pipe in tests and
/// fuzzing.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The session's connection: plain, or upgraded.
pub enum Stream {
    Plain(Box<dyn Io>),
    Tls(Box<TlsStream<Box<dyn Io>>>),
    /// Transiently, during the upgrade (and after a failed one).
    Closed,
}

impl Stream {
    pub async fn read_buf(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
            Stream::Closed => Ok(0),
        }
    }

    pub async fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(b).await,
            Stream::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Closed => Ok(()),
        };
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// `(protocol version, cipher suite)` of a TLS session, e.g. `("TLSv1.3", "TLS13_AES_256_GCM_SHA384")`.
    pub fn tls_info(&self) -> Option<(String, String)> {
        let Stream::Tls(s) = self else { return None };
        let conn = s.get_ref().1;
        let version = match conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
            v => format!("{v:?}"),
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|c| {
                c.suite()
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{:?}", c.suite()))
            })
            .unwrap_or_default();
        Some((version, cipher))
    }
}
