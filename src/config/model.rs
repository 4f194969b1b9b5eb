//! The typed configuration: one struct per TOML section, as DESIGN.md §4 lays out. Serde shapes
//! and defaults only; cross-checks live in `validate.rs`, file handling in `mod.rs`.

use super::values::{ByteSize, HostPort, HumanDuration, Timestamp};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use super::alert::{AlertRule, Alerting};
pub use super::backfill::BackfillSection;

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (for messages and for resolving relative paths).
    pub path: PathBuf,
    pub gateway: Gateway,
    /// Targets by name (`[targets.NAME]`).
    pub targets: BTreeMap<String, Target>,
    pub routing: Routing,
    pub queue: Queue,
    pub admin: Admin,
    pub dns: Dns,
    pub bounce: Bounce,
    pub backfill: BackfillSection,
    /// `[[alert]]` rules, in file order.
    pub alert: Vec<AlertRule>,
    /// `[alerting]`.
    pub alerting: Alerting,
    /// `[auth]`: edge authentication.
    pub auth: super::Auth,
    /// `[ledger]`: embedded (default) or a shared PostgreSQL.
    pub ledger: super::LedgerSection,
}

fn default_hostname() -> String {
    "localhost".to_string()
}
fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([0, 0, 0, 0], 25))]
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cutover")
}
fn default_max_message_size() -> ByteSize {
    ByteSize(50 << 20)
}
fn default_max_header_size() -> ByteSize {
    ByteSize(100 << 10)
}
fn default_max_received() -> u32 {
    30
}
fn default_true() -> bool {
    true
}
fn default_max_recipients() -> usize {
    1000
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_connections_per_ip() -> usize {
    50
}
fn default_command_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_data_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_data_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(120))
}
fn default_ipv6_prefix() -> u8 {
    64
}
fn default_max_connection_rate() -> u32 {
    100
}
fn default_max_session_time() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_min_data_rate() -> ByteSize {
    ByteSize(500)
}
fn default_junk_command_limit() -> u32 {
    100
}
fn default_hard_error_limit() -> u32 {
    20
}
fn default_min_free_space() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_verify_cache_positive() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_verify_cache_negative() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_verify_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// `[gateway]`: the SMTP listener and its policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub accept_domains: Vec<String>,
    #[serde(default)]
    pub trusted_networks: Vec<IpNet>,
    #[serde(default = "default_max_message_size")]
    pub max_message_size: ByteSize,
    /// Largest header section of a message (`552 5.3.4` above it); loop detection reads all of it.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: ByteSize,
    #[serde(default = "default_max_received")]
    pub max_received: u32,
    #[serde(default = "default_true")]
    pub reject_unrouted: bool,
    /// Let `trusted_networks` relay to any domain `routing.default` routes, not only to domains a
    /// rule names (off by default; `config check` warns when it is on).
    #[serde(default)]
    pub trusted_relay_any: bool,
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    #[serde(default = "default_command_timeout")]
    pub command_timeout: HumanDuration,
    /// Base of the DATA time limit, which grows with the message size (see
    /// `inbound::policy::Policy::data_time_limit`).
    #[serde(default = "default_data_timeout")]
    pub data_timeout: HumanDuration,
    /// Longest wait for the next byte during DATA (never longer than `data_timeout`).
    #[serde(default = "default_data_idle_timeout")]
    pub data_idle_timeout: HumanDuration,
    /// Per-client limits count IPv6 clients by this prefix length (a host usually owns a /64).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// New connections per client and minute (0 = no limit; `trusted_networks` are exempt).
    #[serde(default = "default_max_connection_rate")]
    pub max_connection_rate: u32,
    /// Longest session; checked between commands (`421 4.4.2`).
    #[serde(default = "default_max_session_time")]
    pub max_session_time: HumanDuration,
    /// Slowest DATA transfer allowed once `data_timeout` has passed, in bytes per second.
    #[serde(default = "default_min_data_rate")]
    pub min_data_rate: ByteSize,
    /// NOOP, RSET, VRFY, HELP and EXPN allowed per session between accepted messages.
    #[serde(default = "default_junk_command_limit")]
    pub junk_command_limit: u32,
    /// Errors (syntax, sequence, rejected recipients) allowed per session between accepted
    /// messages before it is closed (`421 4.7.0`).
    #[serde(default = "default_hard_error_limit")]
    pub hard_error_limit: u32,
    /// Expect a PROXY protocol (v1 or v2) header from clients in `proxy_from`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The load balancers allowed to send a PROXY header; other clients are taken as they come.
    #[serde(default)]
    pub proxy_from: Vec<IpNet>,
    #[serde(default = "default_min_free_space")]
    pub min_free_space: ByteSize,
    pub tls: Option<GatewayTls>,
    /// Recipient verification (`verify_recipients = "probe"`): how long a probe's "known"
    /// answer is reused.
    #[serde(default = "default_verify_cache_positive")]
    pub verify_cache_positive: HumanDuration,
    /// How long a probe's "unknown user" answer is reused (`0`: never cached).
    #[serde(default = "default_verify_cache_negative")]
    pub verify_cache_negative: HumanDuration,
    /// Longest a recipient's probes may take before the client gets `450 4.1.1`.
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout: HumanDuration,
    /// The names the world reaches this gateway by (what the MX records should name once
    /// switched; `cutover dns check` compares them). Empty: `hostname`.
    #[serde(default)]
    pub public_names: Vec<String>,
}

/// `gateway.tls`: STARTTLS on the MX listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub require: bool,
}

/// How a target's SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    None,
    #[default]
    Opportunistic,
    Required,
    Implicit,
}

fn default_connections() -> usize {
    10
}
fn default_messages_per_connection() -> usize {
    100
}
fn default_smtp_port() -> u16 {
    25
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_smtp_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// `[targets.NAME]`: a server legs are delivered to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Static `host:port` (no MX lookup).
    pub address: Option<HostPort>,
    /// Deliver by MX lookup of this domain.
    pub mx: Option<String>,
    /// Port used with `mx` (default 25).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    pub tls_ca: Option<PathBuf>,
    pub auth: Option<TargetAuth>,
    /// Rewrite the recipient's domain to this one at this target.
    pub rcpt_domain: Option<String>,
    /// Concurrent connections to this target.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Messages sent over one connection before it is closed.
    #[serde(default = "default_messages_per_connection")]
    pub messages_per_connection: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_smtp_timeout")]
    pub timeout: HumanDuration,
    /// Ask this target (RCPT TO) whether each recipient routed to it exists before accepting.
    pub verify_recipients: Option<VerifyMode>,
    /// Allow-list: every recipient routed to this target must be in this file.
    pub recipients_known: Option<PathBuf>,
    /// Addresses read from `recipients_known` (filled in by the loader, so a reload re-reads it).
    #[serde(skip)]
    pub known: Option<KnownList>,
    /// Seal each copy delivered here with an ARC set (after edge authentication).
    pub arc: Option<super::ArcSealing>,
    /// Convert TNEF (`winmail.dat`) parts to MIME in the copies delivered here.
    #[serde(default)]
    pub convert_tnef: bool,
    /// With `convert_tnef`: keep the original `winmail.dat` beside the converted parts.
    #[serde(default)]
    pub keep_original: bool,
}

impl Target {
    /// The TNEF conversion of copies delivered here, if any.
    pub fn tnef(&self) -> Option<crate::convert::TnefOptions> {
        self.convert_tnef.then_some(crate::convert::TnefOptions {
            keep_original: self.keep_original,
        })
    }
}

/// `verify_recipients`: how recipients are checked before they are accepted. Only `"probe"`
/// exists; leaving the key out means no probing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum VerifyMode {
    /// `RCPT TO` at the target before answering the client (Postfix's
    /// `reject_unverified_recipient`).
    Probe,
}

impl TryFrom<String> for VerifyMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "probe" => Ok(VerifyMode::Probe),
            other => Err(format!(
                "invalid value {other:?}: write verify_recipients = \"probe\" (ask the target with RCPT TO before accepting; unknown users get 550 5.1.1) or leave the key out"
            )),
        }
    }
}

/// The lines of a `recipients_known` file: `(line number, address)`, comments and blank lines
/// dropped; checked by the loader, compiled by `inbound::verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownList {
    /// The file as resolved (for messages).
    pub file: PathBuf,
    pub addresses: Vec<(usize, String)>,
}

/// `targets.NAME.auth`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetAuth {
    pub username: String,
    pub password_file: PathBuf,
}

/// `[routing]`.
#[derive(Clone, Debug, Default)]
pub struct Routing {
    /// Targets for recipients no rule matches; `None` = unrouted.
    pub default: Option<Vec<String>>,
    /// Compare local parts case-insensitively (default true).
    pub ignore_local_case: bool,
    /// Separator of address extensions (`alice+tag`), Postfix's `recipient_delimiter`; empty = none.
    pub recipient_delimiter: String,
    pub rules: Vec<Rule>,
}

/// `[[routing.rule]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub recipients: Vec<String>,
    pub recipients_file: Option<PathBuf>,
    pub deliver: Vec<String>,
    pub active_from: Option<Timestamp>,
    pub active_until: Option<Timestamp>,
    /// Patterns read from `recipients_file` (filled in by the loader), with their line numbers.
    #[serde(skip)]
    pub file_patterns: Vec<(usize, String)>,
    /// Probe the rule's targets (RCPT TO) for each recipient the rule matches before accepting.
    pub verify_recipients: Option<VerifyMode>,
    /// Allow-list: every recipient the rule matches must be in this file.
    pub recipients_known: Option<PathBuf>,
    /// Addresses read from `recipients_known` (filled in by the loader).
    #[serde(skip)]
    pub known: Option<KnownList>,
}

fn default_retry_schedule() -> Vec<HumanDuration> {
    ["1m", "5m", "15m", "30m", "1h", "2h", "4h"]
        .iter()
        .filter_map(|s| HumanDuration::parse(s).ok())
        .collect()
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 86_400))
}
fn default_delay_warning() -> HumanDuration {
    HumanDuration(Duration::from_secs(4 * 3600))
}

/// `[queue]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    #[serde(default = "default_retry_schedule")]
    pub retry_schedule: Vec<HumanDuration>,
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// `0` = no delay warnings.
    #[serde(default = "default_delay_warning")]
    pub delay_warning: HumanDuration,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            retry_schedule: default_retry_schedule(),
            max_age: default_max_age(),
            delay_warning: default_delay_warning(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8025))
}

/// `[admin]`: the HTTP admin surface.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// File holding the bearer token for state-changing requests and the ledger (and every
    /// route but `/healthz` off loopback); relative to the config file.
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` (filled in by the loader, so a reload re-reads it).
    #[serde(skip)]
    pub token: Option<AdminToken>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token_file: None,
            token: None,
        }
    }
}

/// The admin API's bearer token. Its `Debug` never shows the secret; [`AdminToken::matches`]
/// compares in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token from the contents of a token file: surrounding whitespace (the final newline)
    /// is dropped; the rest must be non-empty printable ASCII without spaces (it travels in an
    /// HTTP header). The error says what is wrong, never the token.
    pub fn parse(text: &str) -> Result<AdminToken, &'static str> {
        let t = text.trim();
        if t.is_empty() {
            return Err("is empty (write a random token into it, e.g. `openssl rand -hex 32`)");
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "must hold one token of printable ASCII without spaces or line breaks \
                 (it is sent as `Authorization: Bearer <token>`)",
            );
        }
        Ok(AdminToken(t.to_string()))
    }

    /// The secret, for a client to send.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token. Both sides are hashed first and the digests compared
    /// without an early exit, so the time taken says nothing about the token (not even its
    /// length).
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

/// `[dns]`: resolver settings for `mx` targets.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Name servers to ask instead of the system resolver.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    /// Use MX exchanges that resolve to loopback, private, CGNAT, link-local, unique-local,
    /// unspecified or multicast addresses (off: such addresses are skipped, and a domain
    /// with no other address is deferred).
    #[serde(default)]
    pub allow_private_mx: bool,
}

/// `[bounce]`: where DSNs go.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounce {
    /// A target name, or `"mx"` for an MX lookup of the sender's domain. Unset: the target
    /// named `old` when there is one, else `"mx"` (resolved by the loader; always `Some` after it).
    #[serde(default)]
    pub via: Option<String>,
}
