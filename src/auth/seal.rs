//! ARC sealing keys: reading a target's `arc` key file (RSA as PKCS#8 or PKCS#1 PEM, Ed25519 as
//! PKCS#8 PEM), sealing one message with it (mail-auth's `ArcSealer`: `ARC-Seal`,
//! `ARC-Message-Signature`, `ARC-Authentication-Results` as instance i+1 of the message's
//! chain), and the DNS TXT record the administrator publishes for its selector. It never looks
//! anything up: the chain's validation comes from `verify`.

use super::AuthError;
use crate::config::ArcSealing;
use base64::Engine;
use mail_auth::arc::{ArcSealer, Set};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{Header, HeaderWriter};
use mail_auth::dkim::Done;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimResult};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;

/// The header fields the `ARC-Message-Signature` covers (every instance present, so the seal
/// covers what this hop added: cutover's `Received:` and `X-Cutover-Loop:`; hops after it add
/// their `Received:` above, which a verifier of this set does not select).
const SIGNED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "DKIM-Signature",
    "Received",
    crate::header::LOOP_HEADER,
];

enum Key {
    Rsa(ArcSealer<RsaKey<Sha256>, Done>),
    Ed25519(ArcSealer<Ed25519Key, Done>),
}

/// A target's sealing key with its domain and selector.
pub struct Sealer {
    domain: String,
    selector: String,
    key: Key,
    /// The `p=` of the key record (SubjectPublicKeyInfo for RSA, the raw key for Ed25519).
    public: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm())
            .finish()
    }
}

impl Sealer {
    /// Read the key of `cfg` (`private_key_file` relative to `base_dir`).
    pub fn load(cfg: &ArcSealing, base_dir: &Path) -> Result<Sealer, AuthError> {
        let path = base_dir.join(&cfg.private_key_file);
        let bad = |why: String| AuthError::Key {
            file: path.display().to_string(),
            why,
        };
        let pem = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
        let der = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| bad(format!("no PEM private key in it ({e})")))?;
        let domain = cfg.domain.trim_end_matches('.').to_ascii_lowercase();
        let rsa = |k: RsaKey<Sha256>| {
            let public = rsa_spki(&k.public_key());
            (public, Key::Rsa(sealer(k, &domain, &cfg.selector)))
        };
        let ed = |k: Ed25519Key| {
            let public = k.public_key();
            (public, Key::Ed25519(sealer(k, &domain, &cfg.selector)))
        };
        let (public, key) = match der {
            PrivateKeyDer::Pkcs8(p) => {
                match Ed25519Key::from_pkcs8_maybe_unchecked_der(p.secret_pkcs8_der()) {
                    Ok(k) => ed(k),
                    Err(_) => rsa(RsaKey::from_key_der(PrivateKeyDer::Pkcs8(p))
                        .map_err(|e| bad(format!("neither RSA nor Ed25519: {e}")))?),
                }
            }
            PrivateKeyDer::Pkcs1(p) => rsa(RsaKey::from_key_der(PrivateKeyDer::Pkcs1(p))
                .map_err(|e| bad(format!("RSA key: {e}")))?),
            _ => return Err(bad("an EC (SEC1) key: use RSA or Ed25519".into())),
        };
        Ok(Sealer {
            domain,
            selector: cfg.selector.clone(),
            key,
            public,
        })
    }

    /// `(domain, selector)`.
    pub fn identity(&self) -> (&str, &str) {
        (&self.domain, &self.selector)
    }

    /// `rsa` or `ed25519` (the `k=` of the key record).
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "rsa",
            Key::Ed25519(_) => "ed25519",
        }
    }

    /// The record to publish: its owner name (`<selector>._domainkey.<domain>.`) and TXT text.
    pub fn dns_record(&self) -> (String, String) {
        let p = base64::engine::general_purpose::STANDARD.encode(&self.public);
        (
            format!("{}._domainkey.{}.", self.selector, self.domain),
            format!("v=DKIM1; k={}; p={p}", self.algorithm()),
        )
    }

    /// The ARC set (three header fields, CRLF-terminated) sealing `msg` exactly as it will be
    /// delivered, for the stamped `results`, continuing the chain `msg` carries, whose
    /// validation at intake was `chain`.
    pub fn seal(
        &self,
        msg: &[u8],
        results: &AuthenticationResults<'_>,
        chain: &DkimResult,
    ) -> Result<String, AuthError> {
        let parsed = AuthenticatedMessage::parse(msg)
            .ok_or_else(|| AuthError::Seal("the message has no header section".into()))?;
        let output = chain_of(&parsed, chain);
        if !output.can_be_sealed() {
            return Err(AuthError::Seal(
                "the message's ARC chain already ends in cv=fail".into(),
            ));
        }
        let set = match &self.key {
            Key::Rsa(k) => k.seal(&parsed, results, &output),
            Key::Ed25519(k) => k.seal(&parsed, results, &output),
        };
        set.map(|s| s.to_header())
            .map_err(|e| AuthError::Seal(e.to_string()))
    }
}

/// mail-auth's sealer for `key`, signing [`SIGNED`].
fn sealer<K: SigningKey<Hasher = Sha256>>(
    key: K,
    domain: &str,
    selector: &str,
) -> ArcSealer<K, Done> {
    ArcSealer::from_key(key)
        .domain(domain.to_string())
        .selector(selector.to_string())
        .headers(SIGNED.iter().copied())
}

/// The chain `parsed` carries, as `verify` judged it (the sets are re-read from the message
/// as delivered, whose ARC fields are those the client sent).
fn chain_of<'x>(parsed: &'x AuthenticatedMessage<'x>, chain: &DkimResult) -> ArcOutput<'x> {
    let mut out = ArcOutput::default().with_result(chain.clone());
    for ((seal, sig), res) in parsed
        .as_headers
        .iter()
        .zip(parsed.ams_headers.iter())
        .zip(parsed.aar_headers.iter())
    {
        out = out.with_set(Set {
            signature: Header {
                name: sig.name,
                value: sig.value,
                header: &sig.header,
            },
            seal: Header {
                name: seal.name,
                value: seal.value,
                header: &seal.header,
            },
            results: Header {
                name: res.name,
                value: res.value,
                header: &res.header,
            },
        });
    }
    out
}

/// A DER RSAPublicKey (PKCS#1) wrapped as the SubjectPublicKeyInfo DKIM records carry.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    const ALG: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut inner = ALG.to_vec();
    inner.extend(der(0x03, &bits));
    der(0x30, &inner)
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = der(0x04, &[0; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn spki_wraps_pkcs1() {
        let spki = rsa_spki(&[0x30, 0x03, 0x02, 0x01, 0x05]);
        assert_eq!(
            spki,
            vec![
                0x30, 0x17, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
                0x01, 0x05, 0x00, 0x03, 0x06, 0x00, 0x30, 0x03, 0x02, 0x01, 0x05
            ]
        );
    }
}
