//! `[[backfill.job]]`: IMAP backfill jobs (DESIGN.md §4). Serde shapes and defaults only.

use super::profile::Profile;
use super::values::{ByteSize, Date};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[backfill]`.
#[derive(Clone, Debug, Default)]
pub struct BackfillSection {
    pub jobs: Vec<BackfillJob>,
}

/// IMAP connection security.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImapTls {
    None,
    #[default]
    Starttls,
    Implicit,
}

/// How an IMAP side authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImapAuth {
    /// LOGIN / SASL PLAIN (with `admin_user`: SASL PLAIN authzid = user, authcid = admin).
    #[default]
    Plain,
    /// SASL XOAUTH2 with a bearer token.
    Xoauth2,
}

/// How an admin acts for a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdminLogin {
    /// SASL PLAIN with authorization identity = user, authentication identity = admin.
    #[default]
    Authzid,
    /// Dovecot master-user form `user*admin` (separator configurable).
    Separator,
}

/// OAuth2 client-credentials flow for XOAUTH2 tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth {
    pub token_url: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    #[serde(default)]
    pub scope: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_separator() -> String {
    "*".to_string()
}

/// `source = {..}` / `destination = {..}`: an IMAP server (`host`, `port`, `tls`, `auth`...)
/// or a Maildir (`maildir = "/srv/mail/{user}/Maildir"`: `{user}` is the mailbox's user,
/// `{local}` and `{domain}` its parts around `@`; relative to the config file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapEndpoint {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub tls: ImapTls,
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    pub tls_ca: Option<PathBuf>,
    #[serde(default)]
    pub auth: ImapAuth,
    /// Act for each user as this admin (plain auth).
    pub admin_user: Option<String>,
    #[serde(default)]
    pub admin_login: AdminLogin,
    #[serde(default = "default_separator")]
    pub admin_separator: String,
    /// Password of the admin (or of each user, with `passwords_file`).
    pub password_file: Option<PathBuf>,
    /// Per-user passwords: CSV `user,password` (when there is no admin).
    pub passwords_file: Option<PathBuf>,
    /// XOAUTH2: run this with the user as argument; prints a token or JSON with `access_token`/`expires_in`.
    pub token_command: Option<PathBuf>,
    pub oauth: Option<OAuth>,
    /// Upload cap per account per day (destination).
    pub max_bytes_per_day: Option<ByteSize>,
    /// A Maildir per user instead of an IMAP server.
    pub maildir: Option<String>,
    /// The provider (`config::profile`): limits, folder names, labels. Gmail is also detected
    /// from `X-GM-EXT-1`.
    #[serde(default)]
    pub profile: super::profile::ProfileName,
    /// Largest message this side takes as a destination (default: the profile's); bigger ones
    /// are skipped and reported.
    pub max_message_size: Option<ByteSize>,
}

/// `folders = {..}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Folders {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub map: BTreeMap<String, String>,
}

/// `direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Forward,
    Both,
}

/// `dedupe_scope`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DedupeScope {
    #[default]
    Mailbox,
    Folder,
}

/// One `[[backfill.job]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillJob {
    pub name: String,
    pub source: ImapEndpoint,
    pub destination: ImapEndpoint,
    pub mailboxes_file: PathBuf,
    #[serde(default)]
    pub folders: Folders,
    pub since: Option<Date>,
    pub before: Option<Date>,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub dedupe_scope: DedupeScope,
    /// Mailboxes processed at once (default: the sides' profiles' throttling default, else 4).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// IMAP connections per mailbox, folders in parallel (default: the profiles', else 2).
    #[serde(default)]
    pub connections_per_mailbox: Option<usize>,
    /// Count only ledger deliveries to this `[targets.NAME]` as present on the destination
    /// (default: any delivery recorded for the destination mailbox).
    #[serde(default)]
    pub ledger_target: Option<String>,
    /// A Gmail source's labels: a copy in each label's folder, or one copy with keywords.
    #[serde(default)]
    pub gmail_labels: super::profile::Labels,
    /// Convert TNEF (`winmail.dat`) parts to MIME on the way.
    #[serde(default)]
    pub convert_tnef: bool,
    /// With `convert_tnef`: keep the original `winmail.dat` beside the converted parts.
    #[serde(default)]
    pub keep_original: bool,
}

impl BackfillJob {
    fn profile_default(&self, pick: impl Fn(&Profile) -> Option<usize>) -> Option<usize> {
        [self.source.profile, self.destination.profile]
            .into_iter()
            .filter_map(|p| pick(Profile::of(p)))
            .min()
    }

    /// Mailboxes at once: configured, else the stricter profile's default, else 4.
    pub fn concurrency(&self) -> usize {
        self.concurrency
            .or_else(|| self.profile_default(|p| p.concurrency))
            .unwrap_or(4)
            .max(1)
    }

    /// Connections per mailbox: configured, else the stricter profile's default, else 2.
    pub fn connections_per_mailbox(&self) -> usize {
        self.connections_per_mailbox
            .or_else(|| self.profile_default(|p| p.connections_per_mailbox))
            .unwrap_or(2)
            .max(1)
    }

    /// Upload cap of a side: configured, else its profile's (Gmail: 500 MB a day).
    pub fn max_bytes_per_day(side: &ImapEndpoint) -> Option<u64> {
        side.max_bytes_per_day
            .map(|b| b.0)
            .or(Profile::of(side.profile).max_bytes_per_day)
    }

    /// Largest message a side takes as a destination: configured, else its profile's.
    pub fn max_message_size(side: &ImapEndpoint) -> Option<u64> {
        Profile::of(side.profile).size_limit(side.max_message_size.map(|b| b.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dst: &str, extra: &str) -> BackfillJob {
        let text = format!(
            "name = \"a\"\nsource = {{ maildir = \"x\" }}\ndestination = {{ maildir = \"y\", {dst} }}\nmailboxes_file = \"m\"\n{extra}"
        );
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn profile_defaults_and_overrides() {
        let g = job("profile = \"gmail\"", "");
        assert_eq!(
            BackfillJob::max_bytes_per_day(&g.destination),
            Some(500_000_000)
        );
        assert_eq!(
            BackfillJob::max_message_size(&g.destination),
            Some(34 << 20)
        );
        assert_eq!((g.concurrency(), g.connections_per_mailbox()), (4, 2));
        let o = job("profile = \"office365\"", "");
        assert_eq!(o.connections_per_mailbox(), 1);
        assert_eq!(
            BackfillJob::max_message_size(&o.destination),
            Some(35 << 20)
        );
        let set = job(
            "profile = \"office365\", max_message_size = \"100MiB\", max_bytes_per_day = \"1GB\"",
            "connections_per_mailbox = 3\nconcurrency = 9\n",
        );
        assert_eq!((set.concurrency(), set.connections_per_mailbox()), (9, 3));
        assert_eq!(
            BackfillJob::max_message_size(&set.destination),
            Some(100 << 20)
        );
        assert_eq!(
            BackfillJob::max_bytes_per_day(&set.destination),
            Some(1_000_000_000)
        );
        let plain = job("tls = \"none\"", "");
        assert_eq!(BackfillJob::max_message_size(&plain.destination), None);
        assert_eq!(
            (plain.concurrency(), plain.connections_per_mailbox()),
            (4, 2)
        );
    }
}
