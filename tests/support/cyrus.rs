//! Test fixture: a private, throw-away Cyrus IMAP 3.6 server (Debian bookworm `cyrus-imapd`) on a free
//! loopback port — the second IMAP implementation, with a personal namespace prefix (`INBOX.`).
//!
//! Owns: the unpacked Cyrus tree it runs from (`$CUTOVER_CYRUS_ROOT`, default `/opt/cutover-test/cyrus`,
//! made by `.ci/install-cyrus.sh`: `cyrus-imapd` conflicts with the installed `dovecot-imapd`, so its .debs
//! are unpacked with `dpkg -x`, never dpkg-installed), a temp dir with a self-contained `imapd.conf` +
//! `cyrus.conf` (own configdirectory, partition, socket dir, pid file; /etc/imapd.conf is never read),
//! `master` in the foreground in its own process group (`-L master.log` holds stdout/stderr of master and
//! its children; Cyrus logs everything else to syslog, and there is no /dev/log here, so those lines are
//! lost), users created on demand by the admin (`CREATE user.<name>`; Cyrus has no INBOX before that), optional
//! SPECIAL-USE folders (`CREATE name (USE (\Sent))` + SUBSCRIBE as the user, at user creation), and a tiny
//! synchronous IMAP client ([`RawImap`]) for admin work and for commands async-imap lacks (NAMESPACE,
//! `LIST (SPECIAL-USE)`).
//! Must never: bind anything but 127.0.0.1, use fixed ports, touch /etc or a system Cyrus, leave a Cyrus
//! process behind (Drop: SIGTERM to the group, SIGKILL after 3 s), or depend on support files other than
//! `common.rs` and `dovecot.rs` (whose generic [`ImapClient`] and modified UTF-7 `wire_name` it reuses;
//! it starts no Dovecot).
//!
//! Authentication: `sasl_pwcheck_method: alwaystrue` — every password is accepted (LOGIN and AUTHENTICATE
//! PLAIN, `allowplaintext: yes`); the fixture still hands out `pw-<user>` so job configs look like the Dovecot
//! ones. `admin` is in `admins:` (creates users; may proxy: AUTHENTICATE PLAIN authzid=alice authcid=admin).
//! Processes run as the system user `cyrus` (group mail), which the installer creates.
//!
//! Namespaces (measured with 3.6.1; `NAMESPACE` as alice, `CREATE INBOX<sep>Projects<sep>Alpha`):
//!
//! | constructor | altnamespace | unixhierarchysep | NAMESPACE | personal prefix |
//! |---|---|---|---|---|
//! | `default()` (Cyrus 3.6 defaults) | yes | yes | `(("" "/")) (("Other Users/" "/")) (("Shared Folders/" "/"))` | `""` |
//! | `alt_dot()` | yes | no | `(("" ".")) (("Other Users." ".")) (("Shared Folders." "."))` | `""` |
//! | `inbox_slash()` | no | yes | `(("INBOX/" "/")) (("user/" "/")) (("" "/"))` | `INBOX/` |
//! | `inbox_dot()` (classic Cyrus) | no | no | `(("INBOX." ".")) (("user." ".")) (("" "."))` | `INBOX.` |
//!
//! With altnamespace, personal folders are top-level siblings of INBOX (`Projects/Alpha`), and
//! `INBOX/Projects/Alpha` is a different folder, a child of INBOX. Without it every personal folder is
//! under INBOX (`INBOX.Projects.Alpha`); a top-level `CREATE Projects` is `NO Permission denied` (it would be
//! a shared folder), and a top-level `CREATE "Sent Messages" (USE (\Sent))` is `NO SPECIAL-USE flag
//! conflict`. CREATE does not subscribe. LIST returns INBOX with `\HasChildren`/`\HasNoChildren`;
//! intermediate folders (`Projects` of `Projects/Alpha`) are created as real, selectable mailboxes.
//!
//! Quirks seen with 3.6.1 (tests/cyrus_fixture_selftest.rs `quirks`): APPEND refuses an empty message
//! (`NO Zero-length message literal`), a NUL (`NO Message contains NUL characters`), bare LF (`NO Message
//! contains bare newlines`); raw 8-bit header bytes are replaced by `X` unless `munge8bit(false)`; at most
//! 100 distinct keywords per mailbox (the 101st: `NO Too many user flags in mailbox`); INTERNALDATE with an offset
//! keeps its instant; a header-only message (no blank line) is accepted; `maxliteral` (128 KiB) does not
//! limit APPEND (1 MB accepted).
//!
//! Include with `#[path = "support/cyrus.rs"] mod cyrus;` plus `common.rs` and `dovecot.rs`.
//!
//! ```ignore
//! let cy = Cyrus::start(CyrusOptions::inbox_dot().special_use(&[("Sent Messages", "\\Sent")]));
//! let mut c = cy.login("alice").await;                   // creates alice on demand
//! c.create(&cy.wire_name("Projects/Alpha")).await;       // "INBOX.Projects.Alpha"
//! c.append("INBOX", &["\\Seen", "$Label1"], 1_500_000_000, b"Subject: x\r\n\r\nhi\r\n").await;
//! corpus.load_imap_prefixed(cy.addr(), "alice", &cy.password("alice"), cy.separator(), &cy.personal_prefix());
//! // job config: plain_side(cy.port(), &cy.secret_file("alice"))
//! // imapcheck: FolderMap::identity().prefixes("", &cy.personal_prefix_utf8())
//! ```
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{
    check_user_name, free_port, greeting_ok, required_tool, set_mode, stop_group, tail_of,
    write_secret,
};
use crate::dovecot::{ImapClient, wire_name as plain_wire_name};

/// Where `.ci/install-cyrus.sh` unpacks the .debs unless `CUTOVER_CYRUS_ROOT` says otherwise.
pub const DEFAULT_ROOT: &str = "/opt/cutover-test/cyrus";
pub const ROOT_ENV: &str = "CUTOVER_CYRUS_ROOT";
/// System user Cyrus switches to (`cyrus_user`); created by the installer.
const CYRUS_USER: &str = "cyrus";
const START_TIMEOUT: Duration = Duration::from_secs(15);
const RAW_TIMEOUT: Duration = Duration::from_secs(30);

/// Root of the unpacked Cyrus tree.
pub fn cyrus_root() -> PathBuf {
    std::env::var_os(ROOT_ENV).map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
}

/// A Cyrus service binary (`master`, `imapd`, `ctl_cyrusdb`, ...) of the unpacked tree.
pub fn cyrus_bin(name: &str) -> PathBuf {
    cyrus_root().join("usr/lib/cyrus/bin").join(name)
}

/// The multiarch library directory holding `libcyrus_min.so.0` (for LD_LIBRARY_PATH).
fn cyrus_libdir() -> PathBuf {
    let lib = cyrus_root().join("usr/lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("libcyrus_min.so.0").exists())
        .unwrap_or(lib)
}

/// (uid, gid) of the `cyrus` system user.
fn cyrus_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == CYRUS_USER)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .unwrap_or_else(|| panic!("no system user {CYRUS_USER} (.ci/install-cyrus.sh creates it)"))
}

/// Options for [`Cyrus::start`]; see the module doc for what each namespace combination looks like.
#[derive(Clone, Debug)]
pub struct CyrusOptions {
    /// `altnamespace` (Cyrus 3.6 default: yes): personal folders beside INBOX instead of under it.
    pub altnamespace: bool,
    /// `unixhierarchysep` (Cyrus 3.6 default: yes): `/` instead of `.` as hierarchy separator.
    pub unixhierarchysep: bool,
    /// `munge8bit` (Cyrus default: yes): raw 8-bit bytes in headers are replaced by `X` on APPEND (same
    /// size, different bytes). `false` stores them as sent (`reject8bit` stays no), so copies can be exact.
    pub munge8bit: bool,
    /// SPECIAL-USE folders made for every user at creation: (logical name with `/` hierarchy, attribute).
    pub special_use: Vec<(String, String)>,
    /// Users created at start (more are created on demand).
    pub users: Vec<String>,
    /// Extra imapd.conf lines appended verbatim.
    pub extra_conf: String,
    /// Label used in the server name and in panic messages.
    pub label: String,
}

impl Default for CyrusOptions {
    /// Cyrus 3.6's own defaults: altnamespace yes, unixhierarchysep yes (NAMESPACE `(("" "/"))`).
    fn default() -> Self {
        CyrusOptions {
            altnamespace: true,
            unixhierarchysep: true,
            munge8bit: true,
            special_use: Vec::new(),
            users: Vec::new(),
            extra_conf: String::new(),
            label: "cyrus".into(),
        }
    }
}

impl CyrusOptions {
    /// Classic Cyrus: personal prefix `INBOX.`, separator `.` (altnamespace no, unixhierarchysep no).
    pub fn inbox_dot() -> Self {
        Self::default().altnamespace(false).unixhierarchysep(false)
    }
    /// Personal prefix `INBOX/`, separator `/` (altnamespace no, unixhierarchysep yes).
    pub fn inbox_slash() -> Self {
        Self::default().altnamespace(false)
    }
    /// No prefix, separator `.` (altnamespace yes, unixhierarchysep no).
    pub fn alt_dot() -> Self {
        Self::default().unixhierarchysep(false)
    }
    pub fn altnamespace(mut self, on: bool) -> Self {
        self.altnamespace = on;
        self
    }
    pub fn unixhierarchysep(mut self, on: bool) -> Self {
        self.unixhierarchysep = on;
        self
    }
    pub fn munge8bit(mut self, on: bool) -> Self {
        self.munge8bit = on;
        self
    }
    pub fn special_use(mut self, folders: &[(&str, &str)]) -> Self {
        self.special_use = folders
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        self
    }
    pub fn users(mut self, users: &[&str]) -> Self {
        self.users = users.iter().map(|u| u.to_string()).collect();
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
    pub fn separator(&self) -> char {
        if self.unixhierarchysep { '/' } else { '.' }
    }
    /// Personal namespace prefix on the wire: `INBOX.` / `INBOX/` without altnamespace, else empty.
    pub fn personal_prefix(&self) -> String {
        if self.altnamespace {
            String::new()
        } else {
            format!("INBOX{}", self.separator())
        }
    }
}

/// A running private Cyrus. Dropping it stops the server and deletes its directory.
pub struct Cyrus {
    opts: CyrusOptions,
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    users: Mutex<BTreeSet<String>>,
    startup: Duration,
}

impl Cyrus {
    /// Start an instance; panics (with the log) if it cannot be started within 15 s.
    pub fn start(opts: CyrusOptions) -> Cyrus {
        let master = required_tool(&cyrus_bin("master").display().to_string());
        let mut cy = Cyrus {
            opts: opts.clone(),
            dir: tempfile::Builder::new()
                .prefix("cutover-cyrus-")
                .tempdir_in("/tmp")
                .expect("tempdir"),
            child: None,
            port: 0,
            users: Mutex::new(BTreeSet::new()),
            startup: Duration::ZERO,
        };
        cy.prepare();
        let mut last_err = String::new();
        // A free port found by bind(0) can be taken by someone else before master binds it: retry.
        for _attempt in 0..4 {
            cy.port = free_port();
            std::fs::write(cy.dir.path().join("imapd.conf"), cy.imapd_conf()).expect("imapd.conf");
            std::fs::write(cy.dir.path().join("cyrus.conf"), cy.cyrus_conf()).expect("cyrus.conf");
            let t0 = Instant::now();
            match cy.spawn_and_wait(&master) {
                Ok(()) => {
                    cy.startup = t0.elapsed();
                    for u in opts.users.clone() {
                        cy.ensure_user(&u);
                    }
                    return cy;
                }
                Err(e) => last_err = e,
            }
        }
        panic!("cyrus ({}) failed to start: {last_err}", opts.label);
    }

    /// configdirectory (with the sub-directories Cyrus does not create itself) and partition, owned by cyrus.
    fn prepare(&self) {
        let root = self.dir.path();
        set_mode(root, 0o755);
        let (uid, gid) = cyrus_ids();
        for d in ["conf", "conf/socket", "conf/proc", "conf/lock", "spool"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).expect("mkdir");
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap_or_else(|e| {
                panic!("chown {}: {e} (the Cyrus fixture needs root)", p.display())
            });
        }
    }

    fn imapd_conf(&self) -> String {
        let root = self.dir.path().display();
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        format!(
            "configdirectory: {root}/conf
partition-default: {root}/spool
defaultpartition: default
servername: cutover-{label}
syslog_prefix: cutover-{label}
cyrus_user: {CYRUS_USER}
admins: admin
allowplaintext: yes
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN LOGIN
altnamespace: {alt}
unixhierarchysep: {uhs}
munge8bit: {munge}
delete_mode: immediate
lmtpsocket: {root}/conf/socket/lmtp
idlesocket: {root}/conf/socket/idle
notifysocket: {root}/conf/socket/notify
{extra}",
            label = self.opts.label,
            alt = yes_no(self.opts.altnamespace),
            uhs = yes_no(self.opts.unixhierarchysep),
            munge = yes_no(self.opts.munge8bit),
            extra = self.opts.extra_conf,
        )
    }

    fn cyrus_conf(&self) -> String {
        let conf = self.dir.path().join("imapd.conf");
        format!(
            "START {{\n  recover cmd=\"{recover} -C {conf} -r\"\n}}\nSERVICES {{\n  imap cmd=\"{imapd} -C {conf}\" listen=\"127.0.0.1:{port}\" prefork=0\n}}\nEVENTS {{\n}}\nDAEMON {{\n}}\n",
            recover = cyrus_bin("ctl_cyrusdb").display(),
            imapd = cyrus_bin("imapd").display(),
            conf = conf.display(),
            port = self.port,
        )
    }

    fn spawn_and_wait(&mut self, master: &Path) -> Result<(), String> {
        let root = self.dir.path().to_path_buf();
        let stderr = std::fs::File::create(root.join("start.err")).map_err(|e| e.to_string())?;
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(master)
            // own process group: Drop signals master and every service it forked at once
            .process_group(0)
            .env("LD_LIBRARY_PATH", cyrus_libdir())
            .current_dir(&root)
            .arg("-C")
            .arg(root.join("imapd.conf"))
            .arg("-M")
            .arg(root.join("cyrus.conf"))
            .arg("-p")
            .arg(root.join("master.pid"))
            .arg("-L")
            .arg(root.join("master.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", master.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("master exited with {status}: {}", self.log_tail()));
            }
            if greeting_ok(self.addr()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "no `* OK` greeting within 15 s: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop the server and wait for it. Idempotent.
    pub fn stop(&mut self) {
        stop_group(&mut self.child);
    }

    pub fn options(&self) -> &CyrusOptions {
        &self.opts
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Time from spawning master to the first `* OK` greeting.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }
    /// Last ~40 lines of master's stdout/stderr (services inherit them). Syslog lines are not captured.
    pub fn log_tail(&self) -> String {
        let root = self.dir.path();
        tail_of(&[root.join("master.log"), root.join("start.err")], 40)
    }
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }
    /// Plain IMAP port (no TLS configured).
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    pub fn separator(&self) -> char {
        self.opts.separator()
    }
    /// Personal namespace prefix on the wire (`INBOX.`, `INBOX/` or empty).
    pub fn personal_prefix(&self) -> String {
        self.opts.personal_prefix()
    }
    /// The personal prefix as imapcheck names it (UTF-8, `/` hierarchy): `INBOX/` or empty.
    pub fn personal_prefix_utf8(&self) -> String {
        if self.opts.altnamespace {
            String::new()
        } else {
            "INBOX/".into()
        }
    }
    /// Admin name and password (any password works; see the module doc).
    pub fn admin(&self) -> (&'static str, &'static str) {
        ("admin", "pw-admin")
    }
    /// Password of `user` (`pw-<user>`); creates the user if needed.
    pub fn password(&self, user: &str) -> String {
        self.ensure_user(user);
        format!("pw-{user}")
    }
    /// Write `pw-<user>` to a 0600 file in the instance directory (for `password_file`); creates the user
    /// (except for `admin`).
    pub fn secret_file(&self, user: &str) -> PathBuf {
        if user != "admin" {
            self.ensure_user(user);
        }
        write_secret(self.dir.path(), user)
    }

    /// Create `user`'s INBOX (as admin: `CREATE user<sep><name>`) and its SPECIAL-USE folders, once.
    pub fn ensure_user(&self, user: &str) {
        check_user_name(user, "");
        let mut users = self.users.lock().unwrap();
        if !users.insert(user.to_string()) {
            return;
        }
        let mut admin = self.raw_login("admin");
        admin
            .cmd(&format!("CREATE \"user{}{user}\"", self.separator()))
            .unwrap_or_else(|e| panic!("create user {user}: {e}\n{}", self.log_tail()));
        admin.logout();
        if self.opts.special_use.is_empty() {
            return;
        }
        let mut c = self.raw_login(user);
        for (folder, attr) in &self.opts.special_use {
            let wire = self.wire_name(folder);
            c.cmd(&format!("CREATE \"{wire}\" (USE ({attr}))"))
                .unwrap_or_else(|e| panic!("create {wire} ({attr}) for {user}: {e}"));
            c.cmd(&format!("SUBSCRIBE \"{wire}\""))
                .unwrap_or_else(|e| panic!("subscribe {wire} for {user}: {e}"));
        }
        c.logout();
    }

    /// Wire name of a logical folder (UTF-8, `/` hierarchy, no prefix): personal prefix + modified UTF-7
    /// parts joined with the separator; INBOX stays INBOX. (`ImapClient::wire_name` knows no prefix.)
    pub fn wire_name(&self, folder: &str) -> String {
        let wire = plain_wire_name(folder, self.separator());
        if wire == "INBOX" {
            wire
        } else {
            format!("{}{wire}", self.personal_prefix())
        }
    }

    /// Log in as `user` (created if needed) with an async client usable by the Dovecot-era helpers.
    pub async fn login(&self, user: &str) -> ImapClient {
        let pw = self.password(user);
        ImapClient::login(self.addr(), user, &pw, self.separator())
            .await
            .unwrap_or_else(|e| panic!("login {user}: {e}\n{}", self.log_tail()))
    }
    /// AUTHENTICATE PLAIN with authzid=`user`, authcid=`admin` (Cyrus admins may proxy).
    pub async fn login_authzid(&self, user: &str) -> ImapClient {
        self.ensure_user(user);
        ImapClient::authenticate_plain(self.addr(), user, "admin", "pw-admin", self.separator())
            .await
            .unwrap_or_else(|e| panic!("authzid login {user}: {e}\n{}", self.log_tail()))
    }
    /// A synchronous session logged in as `user` (does not create the user).
    pub fn raw_login(&self, user: &str) -> RawImap {
        let mut c = RawImap::connect(self.addr())
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.log_tail()));
        c.cmd(&format!("LOGIN {user} pw-{user}"))
            .unwrap_or_else(|e| panic!("LOGIN {user}: {e}\n{}", self.log_tail()));
        c
    }
    /// The `* NAMESPACE ...` line `user` sees.
    pub fn namespace(&self, user: &str) -> String {
        self.ensure_user(user);
        let mut c = self.raw_login(user);
        let lines = c.cmd("NAMESPACE").expect("NAMESPACE");
        c.logout();
        lines
            .into_iter()
            .find(|l| l.starts_with("* NAMESPACE"))
            .unwrap_or_default()
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal synchronous IMAP session: one command at a time, untagged lines collected. No literals in
/// commands or responses (enough for LOGIN, CREATE, SUBSCRIBE, NAMESPACE, LIST). Panics on I/O errors.
pub struct RawImap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    tag: u32,
}

impl RawImap {
    pub fn connect(addr: SocketAddr) -> Result<RawImap, String> {
        let s = TcpStream::connect_timeout(&addr, RAW_TIMEOUT).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(RAW_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut c = RawImap {
            reader: BufReader::new(s.try_clone().map_err(|e| e.to_string())?),
            writer: s,
            tag: 0,
        };
        let greeting = c.line()?;
        if !greeting.starts_with("* OK") {
            return Err(format!("greeting: {greeting}"));
        }
        Ok(c)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("connection closed".into()),
            Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Send `command`; Ok(untagged lines) on a tagged OK, Err(tagged line) on NO/BAD.
    pub fn cmd(&mut self, command: &str) -> Result<Vec<String>, String> {
        self.tag += 1;
        let tag = format!("r{}", self.tag);
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut untagged = Vec::new();
        loop {
            let line = self.line()?;
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return if rest.starts_with("OK") {
                    Ok(untagged)
                } else {
                    Err(line)
                };
            }
            untagged.push(line);
        }
    }

    pub fn logout(mut self) {
        let _ = self.cmd("LOGOUT");
    }
}
