//! The one TLS client builder, for SMTP targets, IMAP endpoints and HTTPS token requests: one
//! meaning of `tls_ca` everywhere (a PEM file of CA certificates, or the server's own
//! self-signed certificate, pinned), the system roots otherwise, or no verification for labs
//! (`tls_verify = false`); and the connector pair SMTP delivery uses (the policy's, and the
//! non-verifying one opportunistic TLS falls back to: encrypted, never plaintext). Builds
//! configurations only; never connects.

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
    let unverified = TlsConnector::from(Arc::new(client_config(false, None)?));
    if !verify {
        return Ok(Connector {
            primary: unverified.clone(),
            verifies: false,
            unverified,
        });
    }
    Ok(Connector {
        primary: TlsConnector::from(Arc::new(client_config(true, ca)?)),
        verifies: true,
        unverified,
    })
}

/// The client TLS configuration: verifying against the system roots, or against `ca` (a PEM
/// file: CA certificates, or the server's own self-signed certificate, pinned), or (`verify =
/// false`) not verifying at all.
pub fn client_config(
    verify: bool,
    ca: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Other(e.to_string()))?;
    if !verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                webpki: None,
                pinned: Vec::new(),
                any: true,
                provider,
            }))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    match ca {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let err = |why: String| TlsSetupError::Ca {
                path: path.display().to_string(),
                why,
            };
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?;
            for c in certs {
                let c = c.map_err(|e| err(e.to_string()))?;
                pinned.push(c.to_vec());
                // A self-signed server certificate may not be usable as a trust anchor; it is
                // still accepted below when the server presents exactly it.
                let _ = roots.add(c);
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
        }
    }
    if ca.is_some() && pinned.is_empty() {
        return Err(TlsSetupError::Ca {
            path: ca.map(|p| p.display().to_string()).unwrap_or_default(),
            why: "no certificates in file".into(),
        });
    }
    if pinned.is_empty() {
        return Ok(builder.with_root_certificates(roots).with_no_client_auth());
    }
    let webpki = if roots.is_empty() {
        None
    } else {
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .ok()
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            webpki,
            pinned,
            any: false,
            provider,
        }))
        .with_no_client_auth())
}

/// `tls_ca` verification: a chain to one of the given certificates (WebPKI rules), or exactly
/// one of them as the server's own certificate (a self-signed lab certificate, which WebPKI
/// rejects as "CA used as end entity"); or, for `tls_verify = false`, any certificate.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pinned: Vec<Vec<u8>>,
    /// `tls_verify = false`: any certificate (signatures are still checked).
    any: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.any {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        let webpki = match &self.webpki {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        match webpki {
            Ok(v) => Ok(v),
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|p| p.as_slice() == end_entity.as_ref()) =>
            {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS server on a loopback port with a fresh self-signed certificate for `name`; returns
    /// its address and the certificate's PEM.
    async fn server(name: &str) -> (std::net::SocketAddr, String) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let pem = ck.cert.pem();
        let key =
            rustls_pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let a = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut t) = a.accept(s).await {
                        let _ = t.write_all(b"hi").await;
                        let _ = t.shutdown().await;
                    }
                });
            }
        });
        (addr, pem)
    }

    async fn handshake(addr: std::net::SocketAddr, name: &str, c: &TlsConnector) -> bool {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let sn = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        match c.connect(sn, tcp).await {
            Ok(mut t) => {
                let mut b = Vec::new();
                t.read_to_end(&mut b).await.is_ok() && b == b"hi"
            }
            Err(_) => false,
        }
    }

    /// `tls_ca` means the same for SMTP targets and IMAP endpoints: the server's own self-signed
    /// certificate, pinned, is accepted (WebPKI alone refuses it), another one is not; without
    /// verification anything goes.
    #[tokio::test]
    async fn tls_ca_pins_a_self_signed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, pem) = server("mail.lab.test").await;
        let (_, other) = server("mail.lab.test").await;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &pem).unwrap();
        let wrong = dir.path().join("other.pem");
        std::fs::write(&wrong, &other).unwrap();
        let pinned = connector(true, Some(&ca)).unwrap();
        assert!(pinned.verifies);
        assert!(handshake(addr, "mail.lab.test", &pinned.primary).await);
        let not_it = connector(true, Some(&wrong)).unwrap();
        assert!(!handshake(addr, "mail.lab.test", &not_it.primary).await);
        let system = connector(true, None).unwrap();
        assert!(!handshake(addr, "mail.lab.test", &system.primary).await);
        assert!(handshake(addr, "mail.lab.test", &system.unverified).await);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            connector(true, Some(&empty)),
            Err(TlsSetupError::Ca { .. })
        ));
    }
}
