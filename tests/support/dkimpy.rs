//! An independent DKIM/ARC implementation for tests: dkimpy (Debian `python3-dkim`, ARC with
//! `python3-authres`) through tests/support/dkimpy_tool.py, its DNS pointed at the test's
//! dnsmasq; keys made by `openssl genpkey` and their DNS TXT values computed by `openssl pkey`
//! (never by the code under test). Also the dnsmasq `--txt-record` argument for long values
//! (strings of at most 255 bytes). Needs `crate::common`. Never asserts on what a test is about:
//! verification results are returned, only its own plumbing panics.
#![allow(dead_code)]

use crate::common;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The helper script, run by the interpreter of dkimpy's own tools.
const TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/dkimpy_tool.py");

/// Signature algorithm of a [`Key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    /// RSA 2048 (rsa-sha256).
    Rsa,
    /// Ed25519 (ed25519-sha256, RFC 8463).
    Ed25519,
}

/// A private key on disk (PKCS#8 PEM, as `openssl genpkey` writes it) and its DNS public key.
#[derive(Clone, Debug)]
pub struct Key {
    pub algo: Algo,
    pub pem_path: PathBuf,
    /// The `p=` value: base64 of the DER SubjectPublicKeyInfo (RSA) or of the raw 32-byte key
    /// (Ed25519).
    pub public_b64: String,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new(common::required_tool("openssl"))
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Key {
    /// `openssl genpkey` a key into `dir/<name>.pem`.
    pub fn generate(dir: &Path, name: &str, algo: Algo) -> Key {
        let pem_path = dir.join(format!("{name}.pem"));
        let p = pem_path.to_str().unwrap();
        match algo {
            Algo::Rsa => openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                p,
            ]),
            Algo::Ed25519 => openssl(&["genpkey", "-algorithm", "ED25519", "-out", p]),
        };
        let der = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
        let public = match algo {
            Algo::Rsa => &der[..],
            // SubjectPublicKeyInfo of Ed25519 is a 12-byte prefix and the raw 32-byte key.
            Algo::Ed25519 => &der[der.len() - 32..],
        };
        Key {
            algo,
            pem_path,
            public_b64: base64(public),
        }
    }

    /// The same key as a PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`), written to `dir/<name>.pem`.
    pub fn pkcs1_copy(&self, dir: &Path, name: &str) -> Key {
        assert_eq!(self.algo, Algo::Rsa, "PKCS#1 is RSA only");
        let out = dir.join(format!("{name}.pem"));
        openssl(&[
            "rsa",
            "-in",
            self.pem_path.to_str().unwrap(),
            "-traditional",
            "-out",
            out.to_str().unwrap(),
        ]);
        Key {
            pem_path: out,
            ..self.clone()
        }
    }

    /// The DKIM key record: `v=DKIM1; k=rsa; p=…` (or `k=ed25519`).
    pub fn txt(&self) -> String {
        let k = match self.algo {
            Algo::Rsa => "rsa",
            Algo::Ed25519 => "ed25519",
        };
        format!("v=DKIM1; k={k}; p={}", self.public_b64)
    }

    /// dnsmasq argument publishing this key at `<selector>._domainkey.<domain>`.
    pub fn dnsmasq_arg(&self, selector: &str, domain: &str) -> String {
        txt_record(&format!("{selector}._domainkey.{domain}"), &self.txt())
    }
}

/// Standard base64 with padding, via openssl (an implementation independent of the product).
fn base64(bytes: &[u8]) -> String {
    let mut child = Command::new(common::required_tool("openssl"))
        .args(["base64", "-A"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl base64");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A dnsmasq `--txt-record=NAME,S1,S2,…` argument: `value` cut into character-strings of at most
/// 255 bytes (a TXT record's limit; dnsmasq separates them with commas, and a reader joins
/// them without separator; dnsmasq would also cut at 255 by itself, this keeps it explicit).
/// `value` must not contain commas.
pub fn txt_record(name: &str, value: &str) -> String {
    assert!(!value.contains(','), "TXT value with a comma: {value}");
    let chunks: Vec<&str> = value
        .as_bytes()
        .chunks(255)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!("--txt-record={name},{}", chunks.join(","))
}

/// Run the helper script with `args`, `stdin` as its input; its stdout.
fn run(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let python = interpreter();
    let mut child = Command::new(&python)
        .arg(TOOL)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy_tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The Python that runs dkimpy: the one named in the `#!` line of its `arcsign` tool (a python3
/// on $PATH may be another installation without the module).
fn interpreter() -> PathBuf {
    let arcsign = common::required_tool("arcsign");
    let text = std::fs::read_to_string(&arcsign).expect("read arcsign");
    let first = text.lines().next().unwrap_or_default();
    let python = first
        .strip_prefix("#!")
        .unwrap_or("/usr/bin/python3")
        .trim();
    PathBuf::from(
        python
            .split_whitespace()
            .next()
            .unwrap_or("/usr/bin/python3"),
    )
}

/// The helper's arguments for signing command `cmd` as `domain`/`selector` with `key`.
fn signer_args<'a>(cmd: &'a str, domain: &'a str, selector: &'a str, key: &'a Key) -> Vec<&'a str> {
    let pem = key.pem_path.to_str().expect("UTF-8 key path");
    vec![
        cmd,
        "--domain",
        domain,
        "--selector",
        selector,
        "--key",
        pem,
    ]
}

/// `msg` with a DKIM-Signature (relaxed/relaxed; From, To, Subject, Date, Message-ID) by
/// `domain`/`selector` prepended.
pub fn dkim_sign(msg: &[u8], domain: &str, selector: &str, key: &Key) -> Vec<u8> {
    let mut args = signer_args("dkim-sign", domain, selector, key);
    if key.algo == Algo::Ed25519 {
        args.push("--ed25519");
    }
    run(&args, msg)
}

/// `msg` as a foreign forwarder with authserv-id `authserv_id` passes it on: its own
/// `Authentication-Results: <authserv_id>; arc=none` and an ARC set i=1 (cv=none) sealed with
/// `domain`/`selector` prepended. RSA keys only.
pub fn arc_sign(msg: &[u8], domain: &str, selector: &str, key: &Key, authserv_id: &str) -> Vec<u8> {
    arc_seal(msg, domain, selector, key, authserv_id, "none")
}

/// Like [`arc_sign`], with `arc=<cv>` in the forwarder's A-R: `"pass"` adds the next instance
/// to a chain the caller found valid, `"none"` starts one.
pub fn arc_seal(
    msg: &[u8],
    domain: &str,
    selector: &str,
    key: &Key,
    authserv_id: &str,
    cv: &str,
) -> Vec<u8> {
    assert_eq!(key.algo, Algo::Rsa, "the fixture seals with RSA");
    let mut args = signer_args("arc-sign", domain, selector, key);
    args.extend(["--cv", cv, "--srv-id", authserv_id]);
    run(&args, msg)
}

/// dkimpy's verdict on the first DKIM-Signature of `msg` (keys looked up at `dns`): pass, and
/// the error text when it failed with one.
pub fn dkim_verify_detail(msg: &[u8], dns: SocketAddr) -> (bool, String) {
    let out = run(&["dkim-verify", "--dns", &dns.to_string()], msg);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("dkim-verify JSON");
    (
        v["pass"].as_bool().unwrap_or(false),
        v["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// Does the first DKIM-Signature of `msg` verify (dkimpy; keys looked up at `dns`)?
pub fn dkim_verify(msg: &[u8], dns: SocketAddr) -> bool {
    dkim_verify_detail(msg, dns).0
}

/// dkimpy's ARC chain validation of `msg` (keys looked up at `dns`): the cv result
/// (`pass`, `fail` or `none`) and its reason.
pub fn arc_verify(msg: &[u8], dns: SocketAddr) -> (String, String) {
    let out = run(&["arc-verify", "--dns", &dns.to_string()], msg);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("arc-verify JSON");
    (
        v["cv"].as_str().unwrap_or_default().to_string(),
        v["reason"].as_str().unwrap_or_default().to_string(),
    )
}
