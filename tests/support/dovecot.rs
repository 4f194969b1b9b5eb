//! Test fixture: a private, throw-away Dovecot IMAP server (Debian `dovecot-imapd`) on free loopback ports.
//!
//! Owns: writing a self-contained `dovecot.conf` (own base_dir, state_dir, log file; the system instance in
//! /etc/dovecot is neither read nor touched), a CA + server certificate made with rcgen (IMAPS and STARTTLS),
//! the passwd-file with users created on demand (`<user>` / `pw-<user>`), the master user `admin` / `pw-admin`
//! (log in as `alice*admin`, or SASL PLAIN authzid=alice authcid=admin), optional SPECIAL-USE folders,
//! an optional oauth2 passdb (XOAUTH2 / OAUTHBEARER against a local introspection URL), readiness polling,
//! UIDVALIDITY resets, and a small async IMAP client (async-imap over tokio) for tests.
//! Must never: bind anything but 127.0.0.1, use fixed ports, leave a dovecot process behind (Drop sends
//! SIGTERM, then SIGKILL, and waits), or depend on any other support file but `common.rs`.
//!
//! Include with `#[path = "support/dovecot.rs"] mod dovecot;` (and `#[path = "support/common.rs"] mod common;`). Needs root (CI runs as root): mail files belong
//! to uid/gid 5000 (`MAIL_UID`/`MAIL_GID`), login processes run as `dovenull`, internal ones as `dovecot`.
//!
//! ```ignore
//! let old = Dovecot::start(DovecotOptions::old());            // Maildir++, separator "."
//! let mut new = Dovecot::start(DovecotOptions::new());        // LAYOUT=fs, separator "/"
//! let mut c = old.login("alice").await;                       // also login_master / login_authzid / login_xoauth2
//! c.create(&old.wire_name("Projects/2024")).await;
//! c.append("INBOX", &["\\Seen", "$Label1"], 1_500_000_000, b"Subject: x\r\n\r\nhi\r\n").await;
//! // job config: host 127.0.0.1, old.port() (plain/STARTTLS) or old.tls_port() (IMAPS), tls_ca = old.ca_pem(),
//! // password_file = old.secret_file("alice") / old.secret_file("admin")
//! new.uidvalidity_reset("alice", "Projects/2024").await;     // same messages, new UIDVALIDITY
//! new.lda_deliver("alice", "INBOX", b"Message-ID: <x@y>\n\nbody\n"); // like a dual delivery
//! ```
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{
    check_user_name, free_port, greeting_ok, required_tool, set_mode, stop_group, tail_of,
    write_secret,
};
use futures_util::TryStreamExt as _;
use tokio::net::TcpStream;

/// Owner of every mail file (Dovecot refuses uid 0 for mail access).
pub const MAIL_UID: u32 = 5000;
pub const MAIL_GID: u32 = 5000;
const DOVECOT_BIN: &str = "/usr/sbin/dovecot";
const DOVECOT_LDA: &str = "/usr/lib/dovecot/dovecot-lda";
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Mailbox hierarchy layout of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Maildir++ (`.Folder.Sub` directories), hierarchy separator `.` — the "old" server.
    MaildirPlusPlus,
    /// `LAYOUT=fs` (`Folder/Sub` directories), hierarchy separator `/` — the "new" server.
    Fs,
}

impl Layout {
    pub fn separator(self) -> char {
        match self {
            Layout::MaildirPlusPlus => '.',
            Layout::Fs => '/',
        }
    }
}

/// Options for [`Dovecot::start`]. `DovecotOptions::old()` / `DovecotOptions::new()` are the two usual sides.
#[derive(Clone, Debug)]
pub struct DovecotOptions {
    pub layout: Layout,
    /// SPECIAL-USE folders: (top-level folder name, attribute such as `\Sent`). Empty: none configured.
    pub special_use: Vec<(String, String)>,
    /// Create (and subscribe) the SPECIAL-USE folders automatically (`auto = subscribe`).
    pub autocreate_special: bool,
    /// Users created at start (more are created on demand by `password()`, `maildir()`, `login()`...).
    pub users: Vec<String>,
    /// Enable the oauth2 passdb (XOAUTH2/OAUTHBEARER) with this token introspection URL
    /// (`introspection_mode = post`, username attribute `username`, active attribute `active` = `true`).
    pub oauth2_introspection_url: Option<String>,
    /// oauth2 passdb: accept client-credentials "app" tokens for every user (`username_format` set to a
    /// constant, so the introspected `username` is not compared with the login name — Office 365 app-only
    /// model). Default false: the token's `username` must equal the login user.
    pub oauth2_app_tokens: bool,
    /// Extra dovecot.conf lines appended verbatim.
    pub extra_conf: String,
    /// Label used in the instance name and in panic messages.
    pub label: String,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            layout: Layout::MaildirPlusPlus,
            special_use: default_special_use(),
            autocreate_special: true,
            users: vec!["alice".into(), "bob".into(), "carol".into()],
            oauth2_introspection_url: None,
            oauth2_app_tokens: false,
            extra_conf: String::new(),
            label: "dovecot".into(),
        }
    }
}

/// Sent, Drafts, Trash, Junk, Archive with their RFC 6154 attributes.
pub fn default_special_use() -> Vec<(String, String)> {
    [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

impl DovecotOptions {
    /// The "old" server: Maildir++ layout, separator `.`.
    pub fn old() -> Self {
        DovecotOptions {
            layout: Layout::MaildirPlusPlus,
            label: "old".into(),
            ..Default::default()
        }
    }
    /// The "new" server: fs layout, separator `/`.
    pub fn new() -> Self {
        DovecotOptions {
            layout: Layout::Fs,
            label: "new".into(),
            ..Default::default()
        }
    }
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    pub fn special_use(mut self, folders: &[(&str, &str)]) -> Self {
        self.special_use = folders
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        self
    }
    pub fn no_special_use(mut self) -> Self {
        self.special_use.clear();
        self
    }
    pub fn autocreate_special(mut self, on: bool) -> Self {
        self.autocreate_special = on;
        self
    }
    pub fn oauth2(mut self, introspection_url: &str) -> Self {
        self.oauth2_introspection_url = Some(introspection_url.to_string());
        self
    }
    /// Accept app (client-credentials) tokens for every user; see the field doc.
    pub fn oauth2_app_tokens(mut self, url: &str) -> Self {
        self.oauth2_introspection_url = Some(url.to_string());
        self.oauth2_app_tokens = true;
        self
    }
    pub fn extra_conf(mut self, lines: &str) -> Self {
        self.extra_conf.push_str(lines);
        self.extra_conf.push('\n');
        self
    }
    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }
}

/// A running private Dovecot. Dropping it stops the server and deletes its directory.
pub struct Dovecot {
    opts: DovecotOptions,
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    tls_port: u16,
    users: Mutex<BTreeSet<String>>,
}

impl Dovecot {
    /// Start an instance; panics (with the Dovecot log) if it cannot be started within ~15 s.
    pub fn start(opts: DovecotOptions) -> Dovecot {
        required_tool(DOVECOT_BIN);
        let mut dc = Dovecot {
            opts: opts.clone(),
            dir: tempfile::Builder::new()
                .prefix("cutover-dc-")
                .tempdir_in("/tmp")
                .expect("tempdir"),
            child: None,
            port: 0,
            tls_port: 0,
            users: Mutex::new(BTreeSet::new()),
        };
        dc.prepare();
        let mut last_err = String::new();
        // A free port found by bind(0) can be taken by someone else before Dovecot binds it: retry.
        for _attempt in 0..4 {
            dc.port = free_port();
            dc.tls_port = free_port();
            if dc.port == dc.tls_port {
                continue;
            }
            std::fs::write(dc.conf_path(), dc.config()).expect("write dovecot.conf");
            match dc.spawn_and_wait() {
                Ok(()) => return dc,
                Err(e) => last_err = e,
            }
        }
        panic!("dovecot ({}) failed to start: {last_err}", opts.label);
    }

    /// Directories, certificates, passwd-files, oauth2 config (once per instance).
    fn prepare(&mut self) {
        let root = self.dir.path().to_path_buf();
        set_mode(&root, 0o755);
        for d in ["run", "state", "ssl"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        let mail = root.join("mail");
        std::fs::create_dir_all(&mail).expect("mkdir mail");
        chown(&mail);
        write_certs(&root.join("ssl"));
        std::fs::write(root.join("users"), "").expect("write users");
        std::fs::write(root.join("master-users"), "admin:{PLAIN}pw-admin::::::\n")
            .expect("write master-users");
        set_mode(&root.join("users"), 0o644);
        set_mode(&root.join("master-users"), 0o644);
        for u in self.opts.users.clone() {
            self.ensure_user(&u);
        }
        if let Some(url) = &self.opts.oauth2_introspection_url {
            std::fs::write(
                root.join("oauth2.conf.ext"),
                oauth2_conf(url, self.opts.oauth2_app_tokens),
            )
            .expect("write oauth2");
            set_mode(&root.join("oauth2.conf.ext"), 0o644);
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let root = self.dir.path().to_path_buf();
        let stderr = std::fs::File::create(root.join("start.err")).map_err(|e| e.to_string())?;
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(DOVECOT_BIN)
            // own process group: stop() can signal the master and every child it forked at once
            .process_group(0)
            .arg("-F")
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {DOVECOT_BIN}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("dovecot exited with {status}: {}", self.log_tail()));
            }
            if greeting_ok(self.addr()) && greeting_tcp_ok(self.tls_addr()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "no `* OK` greeting within 15 s: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn config(&self) -> String {
        let root = self.dir.path().display().to_string();
        let sep = self.opts.layout.separator();
        let loc = match self.opts.layout {
            Layout::MaildirPlusPlus => "maildir:~/Maildir",
            Layout::Fs => "maildir:~/Maildir:LAYOUT=fs",
        };
        let mut special = String::new();
        for (name, attr) in &self.opts.special_use {
            special.push_str(&format!(
                "  mailbox \"{name}\" {{\n    special_use = {attr}\n    auto = {}\n  }}\n",
                if self.opts.autocreate_special {
                    "subscribe"
                } else {
                    "no"
                }
            ));
        }
        let (mechs, oauth_passdb) = match &self.opts.oauth2_introspection_url {
            Some(_) => (
                "plain login xoauth2 oauthbearer",
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {root}/oauth2.conf.ext\n}}\n"
                ),
            ),
            None => ("plain login", String::new()),
        };
        format!(
            r#"# generated by tests/support/dovecot.rs ({label}) - test instance, loopback only
instance_name = cutover-test-{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 500
disable_plaintext_auth = no
auth_mechanisms = {mechs}
auth_master_user_separator = *
auth_failure_delay = 0
ssl = yes
ssl_cert = <{root}/ssl/cert.pem
ssl_key = <{root}/ssl/key.pem
mail_location = {loc}
mail_max_userip_connections = 100
# throw-away test server: no fsync (the client under test is what gets killed, never Dovecot)
mail_fsync = never
lda_mailbox_autocreate = yes
lda_mailbox_autosubscribe = yes
imap_capability = +SPECIAL-USE
namespace inbox {{
  inbox = yes
  prefix =
  separator = {sep}
{special}}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/master-users
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {root}/users
}}
{oauth_passdb}userdb {{
  driver = passwd-file
  args = username_format=%n {root}/users
  default_fields = uid={uid} gid={gid} home={root}/mail/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service imap {{
  process_limit = 256
}}
# no auth penalty (anvil's per-IP 2..15 s delay after a failed login; tests fail logins on purpose)
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{extra}
"#,
            label = self.opts.label,
            port = self.port,
            tls_port = self.tls_port,
            uid = MAIL_UID,
            gid = MAIL_GID,
            extra = self.opts.extra_conf,
        )
    }

    /// Stop the server and wait for it. Idempotent. SIGTERM goes to the whole process group (master, log,
    /// auth, login and imap processes: the master alone takes ~1 s to shut its children down), SIGKILL after 3 s.
    pub fn stop(&mut self) {
        stop_group(&mut self.child);
    }

    /// Restart on the same ports with the same config and mail (e.g. after editing files on disk).
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        for _ in 0..3 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!("dovecot ({}) failed to restart: {last}", self.opts.label);
    }

    pub fn options(&self) -> &DovecotOptions {
        &self.opts
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn conf_path(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("dovecot.log")
    }
    /// Last ~40 lines of the Dovecot log (for assertion messages).
    pub fn log_tail(&self) -> String {
        tail_of(&[self.log_path(), self.dir.path().join("start.err")], 40)
    }
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }
    /// Plain IMAP port (STARTTLS offered).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Implicit-TLS IMAPS port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls_port))
    }
    /// PEM file of the CA that signed the server certificate (SANs: localhost, 127.0.0.1).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ssl/ca.pem")
    }
    pub fn separator(&self) -> char {
        self.opts.layout.separator()
    }
    pub fn layout(&self) -> Layout {
        self.opts.layout
    }
    /// Master user name and password (`alice*admin` / `pw-admin`, or SASL PLAIN authcid `admin`).
    pub fn admin(&self) -> (&'static str, &'static str) {
        ("admin", "pw-admin")
    }
    /// Password of `user` (`pw-<user>`); creates the user if needed.
    pub fn password(&self, user: &str) -> String {
        self.ensure_user(user);
        format!("pw-{user}")
    }
    /// Home directory of `user` (owned by MAIL_UID).
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }
    /// Maildir root (= INBOX) of `user`; created (with cur/new/tmp, owned by MAIL_UID) and the user added if needed.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.ensure_user(user);
        let md = self.home(user).join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            let p = md.join(sub);
            if !p.exists() {
                std::fs::create_dir_all(&p).expect("create maildir");
            }
        }
        for p in [
            self.home(user),
            md.clone(),
            md.join("cur"),
            md.join("new"),
            md.join("tmp"),
        ] {
            chown(&p);
        }
        md
    }
    /// Write `pw-<user>` (no newline) to a 0600 file in the instance directory and return its path
    /// (for `password_file` in job configs). `secret_file("admin")` holds the master password `pw-admin`.
    pub fn secret_file(&self, user: &str) -> PathBuf {
        if user != "admin" {
            self.ensure_user(user);
        }
        write_secret(self.dir.path(), user)
    }
    /// Add `user` (password `pw-<user>`) to the passwd-file if missing. Dovecot re-reads the file on change.
    pub fn ensure_user(&self, user: &str) {
        check_user_name(user, ".");
        let mut users = self.users.lock().unwrap();
        if users.insert(user.to_string()) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(self.dir.path().join("users"))
                .expect("open users");
            writeln!(f, "{user}:{{PLAIN}}pw-{user}::::::").expect("write users");
        }
    }

    /// Wire (modified UTF-7, server separator) name of a folder given as UTF-8 with `/` as hierarchy separator.
    pub fn wire_name(&self, folder: &str) -> String {
        wire_name(folder, self.separator())
    }

    /// Log in as `user` with its own password.
    pub async fn login(&self, user: &str) -> ImapClient {
        let pw = self.password(user);
        ImapClient::login(self.addr(), user, &pw, self.separator())
            .await
            .unwrap_or_else(|e| panic!("login {user}: {e}\n{}", self.log_tail()))
    }
    /// Log in as `user*admin` / `pw-admin` (Dovecot master user).
    pub async fn login_master(&self, user: &str) -> ImapClient {
        self.ensure_user(user);
        ImapClient::login(
            self.addr(),
            &format!("{user}*admin"),
            "pw-admin",
            self.separator(),
        )
        .await
        .unwrap_or_else(|e| panic!("master login {user}: {e}\n{}", self.log_tail()))
    }
    /// AUTHENTICATE XOAUTH2 as `user` with an access token (needs `DovecotOptions::oauth2`).
    pub async fn login_xoauth2(&self, user: &str, token: &str) -> Result<ImapClient, String> {
        self.ensure_user(user);
        ImapClient::authenticate_xoauth2(self.addr(), user, token, self.separator()).await
    }
    /// AUTHENTICATE PLAIN with authzid=`user`, authcid=`admin`, password `pw-admin`.
    pub async fn login_authzid(&self, user: &str) -> ImapClient {
        self.ensure_user(user);
        ImapClient::authenticate_plain(self.addr(), user, "admin", "pw-admin", self.separator())
            .await
            .unwrap_or_else(|e| panic!("authzid login {user}: {e}\n{}", self.log_tail()))
    }

    /// Deliver `message` to `user`'s `folder` (UTF-8, `/` hierarchy; created if missing) with Dovecot's own LDA
    /// (`/usr/lib/dovecot/dovecot-lda`, as an MTA would: what a dual-delivered message looks like on the server).
    /// INTERNALDATE = now, no flags.
    pub fn lda_deliver(&self, user: &str, folder: &str, message: &[u8]) {
        self.ensure_user(user);
        let _ = self.maildir(user);
        let mut child = Command::new(DOVECOT_LDA)
            .arg("-c")
            .arg(self.conf_path())
            .arg("-d")
            .arg(user)
            .arg("-m")
            .arg(self.wire_name(folder))
            .arg("-f")
            .arg("sender@example.net")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {DOVECOT_LDA}: {e}"));
        let mut stdin = child.stdin.take().expect("lda stdin");
        // LDA expects LF line endings like an MTA pipe; Dovecot stores and serves the same bytes either way
        stdin.write_all(message).expect("write to lda");
        drop(stdin);
        let out = child.wait_with_output().expect("wait lda");
        assert!(
            out.status.success(),
            "dovecot-lda {user}/{folder} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    /// Give `folder` (UTF-8, `/` hierarchy) of `user` a new UIDVALIDITY while keeping its messages
    /// (bytes, flags, INTERNALDATE). Returns (old, new) UIDVALIDITY.
    ///
    /// Non-INBOX folders: over IMAP, fetch everything, DELETE, CREATE (+SUBSCRIBE), APPEND it all back — what an
    /// admin "recreating the folder" does; Dovecot's uidvalidity generator guarantees a new value.
    /// INBOX (cannot be deleted): stop the server, remove `dovecot-uidlist` and the index files of the Maildir
    /// root, restart on the same ports: Dovecot rebuilds the folder with a new UIDVALIDITY (as after a restore);
    /// message files stay. Sessions open on this instance are cut in that case.
    pub async fn uidvalidity_reset(&mut self, user: &str, folder: &str) -> (u32, u32) {
        let mut c = self.login(user).await;
        let wire = self.wire_name(folder);
        let old = c.select(&wire).await.uid_validity.expect("UIDVALIDITY");
        if folder.eq_ignore_ascii_case("INBOX") {
            c.logout().await;
            self.stop();
            let md = self.maildir(user);
            for entry in std::fs::read_dir(&md).expect("read maildir").flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name == "dovecot-uidlist" || name.starts_with("dovecot.index") {
                    std::fs::remove_file(entry.path()).expect("remove uidlist/index");
                }
            }
            self.restart();
        } else {
            let msgs = c.fetch_all(&wire).await;
            c.close().await;
            c.delete(&wire).await;
            // an `auto = subscribe` SPECIAL-USE folder may already be back
            c.create_if_missing(&wire).await;
            c.subscribe(&wire).await;
            for m in &msgs {
                let flags: Vec<&str> = m.flags.iter().map(String::as_str).collect();
                c.append(&wire, &flags, m.internaldate, &m.body).await;
            }
            c.logout().await;
        }
        let mut c = self.login(user).await;
        let new = c.select(&wire).await.uid_validity.expect("UIDVALIDITY");
        c.logout().await;
        assert_ne!(old, new, "UIDVALIDITY of {user}/{folder} did not change");
        (old, new)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message as fetched by [`ImapClient::fetch_all`].
#[derive(Clone, Debug)]
pub struct FetchedMessage {
    pub uid: u32,
    /// System flags (`\Seen` ...) and keywords, `\Recent` excluded.
    pub flags: Vec<String>,
    /// Seconds since the epoch.
    pub internaldate: i64,
    pub size: u32,
    pub body: Vec<u8>,
}

/// Minimal async IMAP client for tests (async-imap over a plain loopback TcpStream). Panics on errors.
pub struct ImapClient {
    pub session: async_imap::Session<TcpStream>,
    pub separator: char,
}

struct PlainAuth(Vec<u8>);
impl async_imap::Authenticator for PlainAuth {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        self.0.clone()
    }
}

impl ImapClient {
    async fn connect(addr: SocketAddr) -> Result<async_imap::Client<TcpStream>, String> {
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timeout".to_string())?
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let mut client = async_imap::Client::new(tcp);
        tokio::time::timeout(IO_TIMEOUT, client.read_response())
            .await
            .map_err(|_| "greeting timeout".to_string())?
            .map_err(|e| format!("greeting: {e}"))?
            .ok_or("no greeting")?;
        Ok(client)
    }

    /// LOGIN user password.
    pub async fn login(
        addr: SocketAddr,
        user: &str,
        password: &str,
        separator: char,
    ) -> Result<ImapClient, String> {
        let client = Self::connect(addr).await?;
        let session = tokio::time::timeout(IO_TIMEOUT, client.login(user, password))
            .await
            .map_err(|_| "login timeout".to_string())?
            .map_err(|(e, _)| format!("LOGIN {user}: {e}"))?;
        Ok(ImapClient { session, separator })
    }

    /// AUTHENTICATE PLAIN with `authzid\0authcid\0password`.
    pub async fn authenticate_plain(
        addr: SocketAddr,
        authzid: &str,
        authcid: &str,
        password: &str,
        separator: char,
    ) -> Result<ImapClient, String> {
        let client = Self::connect(addr).await?;
        let payload = format!("{authzid}\0{authcid}\0{password}").into_bytes();
        let session =
            tokio::time::timeout(IO_TIMEOUT, client.authenticate("PLAIN", PlainAuth(payload)))
                .await
                .map_err(|_| "authenticate timeout".to_string())?
                .map_err(|(e, _)| format!("AUTHENTICATE PLAIN {authzid}/{authcid}: {e}"))?;
        Ok(ImapClient { session, separator })
    }

    /// AUTHENTICATE XOAUTH2 with `user=U\x01auth=Bearer T\x01\x01`.
    pub async fn authenticate_xoauth2(
        addr: SocketAddr,
        user: &str,
        token: &str,
        separator: char,
    ) -> Result<ImapClient, String> {
        let client = Self::connect(addr).await?;
        let payload = format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes();
        let session = tokio::time::timeout(
            IO_TIMEOUT,
            client.authenticate("XOAUTH2", PlainAuth(payload)),
        )
        .await
        .map_err(|_| "authenticate timeout".to_string())?
        .map_err(|(e, _)| format!("AUTHENTICATE XOAUTH2 {user}: {e}"))?;
        Ok(ImapClient { session, separator })
    }

    /// Wire name of a UTF-8 folder path with `/` hierarchy.
    pub fn wire_name(&self, folder: &str) -> String {
        wire_name(folder, self.separator)
    }

    pub async fn create(&mut self, wire: &str) {
        timeout(self.session.create(wire))
            .await
            .unwrap_or_else(|e| panic!("CREATE {wire}: {e}"));
    }
    /// CREATE, tolerating "already exists".
    pub async fn create_if_missing(&mut self, wire: &str) {
        let _ = timeout(self.session.create(wire)).await;
    }
    pub async fn delete(&mut self, wire: &str) {
        timeout(self.session.delete(wire))
            .await
            .unwrap_or_else(|e| panic!("DELETE {wire}: {e}"));
    }
    pub async fn subscribe(&mut self, wire: &str) {
        timeout(self.session.subscribe(wire))
            .await
            .unwrap_or_else(|e| panic!("SUBSCRIBE {wire}: {e}"));
    }
    pub async fn select(&mut self, wire: &str) -> async_imap::types::Mailbox {
        timeout(self.session.select(wire))
            .await
            .unwrap_or_else(|e| panic!("SELECT {wire}: {e}"))
    }
    pub async fn examine(&mut self, wire: &str) -> async_imap::types::Mailbox {
        timeout(self.session.examine(wire))
            .await
            .unwrap_or_else(|e| panic!("EXAMINE {wire}: {e}"))
    }
    pub async fn close(&mut self) {
        let _ = timeout(self.session.close()).await;
    }
    /// APPEND with flags (e.g. `["\\Seen", "$Label1"]`) and INTERNALDATE (epoch seconds, written as UTC).
    pub async fn append(&mut self, wire: &str, flags: &[&str], internaldate: i64, bytes: &[u8]) {
        let flags = format!("({})", flags.join(" "));
        let date = format!("\"{}\"", imap_date(internaldate));
        timeout(
            self.session
                .append(wire, Some(flags.as_str()), Some(date.as_str()), bytes),
        )
        .await
        .unwrap_or_else(|e| panic!("APPEND {wire}: {e}"));
    }
    /// SELECT `wire` and UID FETCH every message (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[]), in UID order.
    pub async fn fetch_all(&mut self, wire: &str) -> Vec<FetchedMessage> {
        let mb = self.select(wire).await;
        if mb.exists == 0 {
            return Vec::new();
        }
        let stream = timeout(
            self.session
                .uid_fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])"),
        )
        .await
        .unwrap_or_else(|e| panic!("UID FETCH {wire}: {e}"));
        let fetches: Vec<_> = tokio::time::timeout(IO_TIMEOUT, stream.try_collect::<Vec<_>>())
            .await
            .expect("fetch timeout")
            .unwrap_or_else(|e| panic!("UID FETCH {wire}: {e}"));
        let mut out: Vec<FetchedMessage> = fetches
            .iter()
            .filter_map(|f| {
                Some(FetchedMessage {
                    uid: f.uid?,
                    flags: f.flags().filter_map(|fl| flag_name(&fl)).collect(),
                    internaldate: f.internal_date()?.timestamp(),
                    size: f.size.unwrap_or(0),
                    body: f.body()?.to_vec(),
                })
            })
            .collect();
        out.sort_by_key(|m| m.uid);
        out
    }
    /// LIST "" "*": (wire name, attributes such as `\Sent`, `\HasNoChildren`).
    pub async fn list(&mut self) -> Vec<(String, Vec<String>)> {
        let stream = timeout(self.session.list(Some(""), Some("*")))
            .await
            .unwrap_or_else(|e| panic!("LIST: {e}"));
        let names: Vec<_> = tokio::time::timeout(IO_TIMEOUT, stream.try_collect::<Vec<_>>())
            .await
            .expect("list timeout")
            .unwrap_or_else(|e| panic!("LIST: {e}"));
        names
            .iter()
            .map(|n| {
                (
                    n.name().to_string(),
                    n.attributes().iter().map(|a| format!("{a:?}")).collect(),
                )
            })
            .collect()
    }
    pub async fn logout(mut self) {
        let _ = timeout(self.session.logout()).await;
    }
}

async fn timeout<T>(
    f: impl std::future::Future<Output = async_imap::error::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(IO_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

fn flag_name(f: &async_imap::types::Flag<'_>) -> Option<String> {
    use async_imap::types::Flag;
    Some(match f {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent | Flag::MayCreate => return None,
        Flag::Custom(c) => c.to_string(),
    })
}

// ------------------------------------------------------------------------------------------------ helpers

/// The IMAPS port only needs to accept TCP (the greeting comes after the TLS handshake).
fn greeting_tcp_ok(addr: SocketAddr) -> bool {
    StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn chown(p: &Path) {
    std::os::unix::fs::chown(p, Some(MAIL_UID), Some(MAIL_GID)).unwrap_or_else(|e| {
        panic!(
            "chown {}: {e} (the Dovecot fixture needs root)",
            p.display()
        )
    });
}

fn write_certs(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cutover test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key.pem");
    set_mode(&dir.join("key.pem"), 0o600);
    set_mode(&dir.join("ca.pem"), 0o644);
}

fn oauth2_conf(url: &str, app_tokens: bool) -> String {
    // username_format is expanded for both the login name and the introspected `username`; a constant makes
    // them always equal (any user may log in with an active app token).
    let fmt = if app_tokens { "cutover-app" } else { "%Lu" };
    format!(
        "introspection_mode = post\nintrospection_url = {url}\nusername_attribute = username\nusername_format = {fmt}\nactive_attribute = active\nactive_value = true\n"
    )
}

/// `"01-Jan-2024 10:00:00 +0000"` (no quotes) for epoch seconds, UTC.
pub fn imap_date(epoch: i64) -> String {
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        d,
        MON[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 -> (year, month 1-12, day 1-31) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Wire name: each `/`-separated part modified-UTF-7 encoded, joined with `sep`. `INBOX` stays `INBOX`.
pub fn wire_name(folder: &str, sep: char) -> String {
    if folder.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    folder
        .split('/')
        .map(mutf7_encode)
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

/// RFC 3501 modified UTF-7 encoding.
pub fn mutf7_encode(s: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    let mut buf: Vec<u16> = Vec::new();
    let flush = |buf: &mut Vec<u16>, out: &mut String| {
        if !buf.is_empty() {
            let bytes: Vec<u8> = buf.iter().flat_map(|u| u.to_be_bytes()).collect();
            let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
            out.push('&');
            out.push_str(&b.replace('/', ","));
            out.push('-');
            buf.clear();
        }
    };
    for ch in s.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut buf, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut tmp = [0u16; 2];
            buf.extend_from_slice(ch.encode_utf16(&mut tmp));
        }
    }
    flush(&mut buf, &mut out);
    out
}

/// RFC 3501 modified UTF-7 decoding (invalid input is returned unchanged).
pub fn mutf7_decode(s: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('-') else {
            return s.to_string();
        };
        if j == 0 {
            out.push('&');
        } else {
            let b64 = after[..j].replace(',', "/");
            let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64) else {
                return s.to_string();
            };
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            out.push_str(&String::from_utf16_lossy(&units));
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}
