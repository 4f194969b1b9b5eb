//! Shared helpers for the fuzz targets: a scratch directory under /dev/shm (tmpfs, so the queue's
//! fsyncs are cheap), a self-signed certificate, and a configuration text.

use std::path::PathBuf;

/// A per-process scratch directory (tmpfs when available), created empty.
pub fn scratch(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("cutover-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Write a self-signed certificate for `mx.test` into `dir`; returns (cert path, key path, PEM).
pub fn write_cert(dir: &std::path::Path) -> (PathBuf, PathBuf, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).expect("rcgen");
    let pem = ck.cert.pem();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &pem).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (cert, key, pem)
}

/// A gateway configuration for fuzzing: small limits and short timeouts.
pub fn config_text(
    state_dir: &std::path::Path,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> String {
    let tls = tls
        .map(|(c, k)| {
            format!(
                "tls = {{ cert = \"{}\", key = \"{}\", require = false }}\n",
                c.display(),
                k.display()
            )
        })
        .unwrap_or_default();
    format!(
        r#"[gateway]
hostname = "mx1.example.com"
listen = ["127.0.0.1:0"]
state_dir = "{state}"
accept_domains = ["example.com", "sales.example.com"]
trusted_networks = ["192.0.2.0/24"]
max_message_size = "64KiB"
max_header_size = "8KiB"
max_received = 5
max_recipients = 8
command_timeout = "3s"
data_timeout = "3s"
data_idle_timeout = "3s"
min_free_space = "0B"
{tls}
[targets.old]
address = "127.0.0.1:1"
tls = "none"

[targets.new]
address = "127.0.0.1:2"
tls = "none"
rcpt_domain = "example-com.mail.onmicrosoft.com"

[routing]
default = ["old"]

[[routing.rule]]
name = "pilot"
recipients = ["bob@example.com"]
deliver = ["old", "new"]

[[routing.rule]]
name = "wave-1"
recipients = ["@sales.example.com", "re:it-[a-z]+@example\\.com", "@partner.net"]
deliver = ["new"]

[bounce]
via = "old"

# Edge authentication runs on every message (the held path, mail-auth's parser, the forged
# Authentication-Results filter) without leaving the machine: no name server answers here.
[dns]
servers = ["127.0.0.1:9"]
[auth]
time_budget = "50ms"
"#,
        state = state_dir.display()
    )
}
