//! TLS client settings for targets: system trust store (via mail-send's platform verifier), a
//! private CA from a PEM file, or no verification (labs only, `tls_verify = false`).

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Why a connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: {why}")]
    Ca { path: String, why: String },
    #[error("TLS setup: {0}")]
    Other(String),
}

/// Build the connector for a target.
pub fn connector(verify: bool, ca: Option<&Path>) -> Result<TlsConnector, TlsSetupError> {
    match (verify, ca) {
        (false, _) => mail_send::smtp::tls::build_tls_connector(true).map_err(TlsSetupError::Other),
        (true, None) => {
            mail_send::smtp::tls::build_tls_connector(false).map_err(TlsSetupError::Other)
        }
        (true, Some(path)) => {
            use rustls_pki_types::{CertificateDer, pem::PemObject};
            let err = |why: String| TlsSetupError::Ca {
                path: path.display().to_string(),
                why,
            };
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
            for c in certs {
                let c = c.map_err(|e| err(e.to_string()))?;
                roots.add(c).map_err(|e| err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err("no certificates in file".into()));
            }
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(TlsConnector::from(Arc::new(config)))
        }
    }
}
