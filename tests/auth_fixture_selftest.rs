//! Self-test of the DKIM/ARC fixtures (tests/support/dkimpy.rs) without cutover in the path:
//! dnsmasq serves keys made by openssl (an RSA-2048 record longer than one 255-byte TXT string,
//! an Ed25519 one); dkimpy signs and verifies; a changed body fails; an ARC set sealed by dkimpy
//! validates as `pass`, and a changed body breaks the chain.

#[path = "support/common.rs"]
mod common;
#[path = "support/dkimpy.rs"]
mod dkimpy;
#[path = "support/dnsmasq.rs"]
mod dnsmasq;

use dkimpy::{Algo, Key};

const MSG: &[u8] = b"From: Alice <alice@signer.test>\r\n\
To: bob@example.test\r\n\
Subject: fixture self-test\r\n\
Date: Mon, 30 Nov 2026 12:00:00 +0000\r\n\
Message-ID: <selftest-1@signer.test>\r\n\
\r\n\
Hello, this body is signed.\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkimpy_signs_and_verifies_against_dnsmasq() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = Key::generate(dir.path(), "rsa", Algo::Rsa);
    let ed = Key::generate(dir.path(), "ed", Algo::Ed25519);
    let arc = Key::generate(dir.path(), "arc", Algo::Rsa);
    let rsa_arg = rsa.dnsmasq_arg("sel1", "signer.test");
    assert!(
        rsa_arg.matches(',').count() >= 2,
        "an RSA-2048 record takes several strings: {rsa_arg}"
    );
    let d = dnsmasq::dnsmasq(&[
        "--host-record=ready.test,127.0.0.1",
        &rsa_arg,
        &ed.dnsmasq_arg("ed1", "signer.test"),
        &arc.dnsmasq_arg("seal", "forwarder.test"),
    ]);
    dnsmasq::resolver(&d).await;

    let signed = dkimpy::dkim_sign(MSG, "signer.test", "sel1", &rsa);
    assert!(signed.starts_with(b"DKIM-Signature:"));
    assert!(signed.ends_with(MSG));
    let (ok, why) = dkimpy::dkim_verify_detail(&signed, d.addr);
    assert!(ok, "RSA signature does not verify: {why}");

    let mut changed = signed.clone();
    let n = changed.len();
    changed[n - 3] = b'?';
    assert!(
        !dkimpy::dkim_verify(&changed, d.addr),
        "a changed body verified"
    );

    let signed_ed = dkimpy::dkim_sign(MSG, "signer.test", "ed1", &ed);
    let (ok, why) = dkimpy::dkim_verify_detail(&signed_ed, d.addr);
    assert!(ok, "Ed25519 signature does not verify: {why}");

    // A key the DNS does not publish fails.
    let other = Key::generate(dir.path(), "other", Algo::Rsa);
    let wrong = dkimpy::dkim_sign(MSG, "signer.test", "sel1", &other);
    assert!(!dkimpy::dkim_verify(&wrong, d.addr));

    let sealed = dkimpy::arc_sign(&signed, "forwarder.test", "seal", &arc, "fwd.test");
    let text = String::from_utf8_lossy(&sealed);
    assert!(text.starts_with("ARC-Seal: i=1;"), "{text}");
    assert!(text.contains("cv=none"), "{text}");
    let (cv, why) = dkimpy::arc_verify(&sealed, d.addr);
    assert_eq!(cv, "pass", "{why}\n{text}");
    assert!(dkimpy::dkim_verify(&sealed, d.addr), "sealing broke DKIM");

    // A second sealer extends the valid chain: i=2, cv=pass, still valid.
    let resealed = dkimpy::arc_seal(&sealed, "forwarder.test", "seal", &arc, "mx.test", "pass");
    let text = String::from_utf8_lossy(&resealed);
    assert!(text.starts_with("ARC-Seal: i=2;"), "{text}");
    assert!(text.contains("cv=pass"), "{text}");
    let (cv, why) = dkimpy::arc_verify(&resealed, d.addr);
    assert_eq!(cv, "pass", "{why}\n{text}");

    let mut broken = sealed.clone();
    let n = broken.len();
    broken[n - 3] = b'?';
    let (cv, _) = dkimpy::arc_verify(&broken, d.addr);
    assert_eq!(cv, "fail");

    let (cv, _) = dkimpy::arc_verify(MSG, d.addr);
    assert_eq!(cv, "none");
}
