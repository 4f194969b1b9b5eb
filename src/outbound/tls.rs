//! TLS client settings for targets: the connector a target's policy asks for (system trust store
//! via mail-send's platform verifier, a private CA from a PEM file, or no verification with
//! `tls_verify = false`), plus the non-verifying connector that opportunistic TLS falls back to
//! after a certificate failure (encrypted but unverified, never plaintext).

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

/// The TLS client side of one target.
#[derive(Clone)]
pub struct Connector {
    /// The connector the policy asks for.
    pub primary: TlsConnector,
    /// Does `primary` verify the server certificate (system roots or `tls_ca`)? Only then may
    /// AUTH credentials be sent.
    pub verifies: bool,
    /// Accepts any certificate: what `tls_verify = false` uses, and the opportunistic fallback
    /// after a verification failure.
    pub unverified: TlsConnector,
}

/// Build the connectors for a target: verifying (against `ca` when given, else the system trust
/// store) unless `verify` is false.
pub fn connector(verify: bool, ca: Option<&Path>) -> Result<Connector, TlsSetupError> {
    let unverified =
        mail_send::smtp::tls::build_tls_connector(true).map_err(TlsSetupError::Other)?;
    let primary = match (verify, ca) {
        (false, _) => {
            return Ok(Connector {
                primary: unverified.clone(),
                verifies: false,
                unverified,
            });
        }
        (true, None) => {
            mail_send::smtp::tls::build_tls_connector(false).map_err(TlsSetupError::Other)?
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
            TlsConnector::from(Arc::new(config))
        }
    };
    Ok(Connector {
        primary,
        verifies: true,
        unverified,
    })
}
