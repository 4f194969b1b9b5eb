//! Test helper: a private, throw-away Postfix instance (the real `master` and daemons from the
//! Debian package `postfix`) whose smtpd listens on a free 127.0.0.1 port and whose virtual(8)
//! delivery agent writes Maildirs under its own temp directory. Everything (main.cf, master.cf,
//! queue, data, mailboxes, maillog) lives in that directory; the system Postfix (/etc/postfix)
//! is never read, touched or started. Stopped (`postfix stop`, then SIGKILL by PID) on drop.
//! It must never bind anything but loopback, nor need syslog. Needs `crate::common`.
#![allow(dead_code)]

use crate::common::{free_port, required_tool};

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A running private Postfix.
pub struct Postfix {
    pub dir: PathBuf,
    pub etc: PathBuf,
    pub spool: PathBuf,
    pub vmail: PathBuf,
    pub maillog: PathBuf,
    pub port: u16,
    /// `address -> Maildir` (relative to `vmail`, trailing slash).
    pub mailboxes: BTreeMap<String, String>,
}

/// `(uid, gid)` of a user in /etc/passwd.
fn passwd_ids(user: &str) -> (u32, u32) {
    let text = std::fs::read_to_string("/etc/passwd").unwrap();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == user {
            return (f[2].parse().unwrap(), f[3].parse().unwrap());
        }
    }
    panic!("user {user} not in /etc/passwd (is the postfix package installed?)");
}

/// Postfix refuses to use a config/table file modified within the last second (it waits for
/// the mtime to be in the past): backdate freshly written files.
fn backdate(path: &Path) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(10))
        .unwrap();
}

impl Postfix {
    /// Configure and start Postfix in `dir` (created; its parents must be traversable by the
    /// `postfix` and `nobody` users). `domains` are the virtual mailbox domains; `mailboxes`
    /// maps full addresses to Maildir paths relative to the mailbox base (`"bob/old/"`).
    pub fn start(dir: &Path, domains: &[&str], mailboxes: &[(&str, &str)]) -> Postfix {
        let postfix = required_tool("/usr/sbin/postfix");
        let (pf_uid, pf_gid) = passwd_ids("postfix");
        let (vuid, vgid) = passwd_ids("nobody");

        let etc = dir.join("etc");
        let spool = dir.join("spool");
        let data = dir.join("data");
        let vmail = dir.join("vmail");
        let maillog = dir.join("maillog");
        std::fs::create_dir_all(&etc).unwrap();
        // queue_directory must be root-owned (postfix creates and owns its subdirectories);
        // data_directory must be owned by mail_owner; the mailbox base by the virtual uid.
        for d in [dir, &spool, &data, &vmail] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::chown(&data, Some(pf_uid), Some(pf_gid)).unwrap();
        std::os::unix::fs::chown(&vmail, Some(vuid), Some(vgid)).unwrap();

        let port = free_port();
        let map: String = mailboxes
            .iter()
            .map(|(addr, mbox)| format!("{addr} {mbox}\n"))
            .collect();
        let map_path = etc.join("vmailbox");
        std::fs::write(&map_path, map).unwrap();

        let main_cf = format!(
            "# private test instance (tests/support/postfix.rs): loopback only, virtual Maildirs
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.test
mydomain = pf.test
myorigin = $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_banner = $myhostname ESMTP
biff = no
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled
alias_maps =
alias_database =
relay_domains =
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = texthash:{map}
virtual_uid_maps = static:{vuid}
virtual_gid_maps = static:{vgid}
virtual_minimum_uid = {vuid}
virtual_transport = virtual
# deliver what arrives, byte for byte: no header rewriting or added headers for loopback
# clients, no delay on intake, no DNS
local_header_rewrite_clients =
in_flow_delay = 0
smtpd_peername_lookup = no
smtp_host_lookup = native
smtpd_tls_security_level = none
smtp_tls_security_level = none
maillog_file_prefixes = {dir}
maillog_file = {maillog}
",
            spool = spool.display(),
            data = data.display(),
            domains = domains.join(", "),
            vmail = vmail.display(),
            map = map_path.display(),
            dir = dir.display(),
            maillog = maillog.display(),
        );
        let master_cf = format!(
            "# service type private unpriv chroot wakeup maxproc command
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
virtual    unix  - n n - - virtual
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"
        );
        std::fs::write(etc.join("main.cf"), main_cf).unwrap();
        std::fs::write(etc.join("master.cf"), master_cf).unwrap();
        for f in ["main.cf", "master.cf", "vmailbox"] {
            backdate(&etc.join(f));
        }

        let pf = Postfix {
            dir: dir.to_path_buf(),
            etc,
            spool,
            vmail,
            maillog,
            port,
            mailboxes: mailboxes
                .iter()
                .map(|(a, m)| (a.to_string(), m.to_string()))
                .collect(),
        };
        let out = Command::new(postfix)
            .arg("-c")
            .arg(&pf.etc)
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postfix start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "postfix smtpd not listening on 127.0.0.1:{port}; maillog:\n{}",
                pf.maillog_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pf
    }

    pub fn master_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.spool.join("pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn maillog_text(&self) -> String {
        std::fs::read_to_string(&self.maillog).unwrap_or_default()
    }

    /// Raw bytes of every delivered message (`new/` and `cur/`) of `address`'s Maildir.
    pub fn messages(&self, address: &str) -> Vec<Vec<u8>> {
        let mbox = &self.mailboxes[address];
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = std::fs::read_dir(self.vmail.join(mbox).join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                if let Ok(b) = std::fs::read(e.path()) {
                    out.push(b);
                }
            }
        }
        out
    }

    /// Number of delivered messages in `address`'s Maildir.
    pub fn count(&self, address: &str) -> usize {
        let mbox = &self.mailboxes[address];
        ["new", "cur"]
            .iter()
            .filter_map(|s| std::fs::read_dir(self.vmail.join(mbox).join(s)).ok())
            .map(|rd| rd.count())
            .sum()
    }

    fn alive(pid: i32) -> bool {
        // Not merely present: a zombie (exited, not yet reaped by init) counts as gone.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => s
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z')),
            Err(_) => false,
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let pid = self.master_pid();
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.etc)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = pid {
            let t = Instant::now();
            while Self::alive(pid) && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if Self::alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}
