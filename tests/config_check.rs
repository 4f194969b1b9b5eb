//! `cutover config check` and `cutover route explain` through the real binary: exact messages,
//! file:line:key positions, exit codes.

use std::path::Path;
use std::process::Command;

fn cutover(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const BASE: &str = r#"[gateway]
hostname = "mx1.example.com"
listen = ["127.0.0.1:2525"]
state_dir = "/tmp/cutover-test-state"
accept_domains = ["example.com"]

[targets.old]
address = "127.0.0.1:2526"

[targets.new]
address = "127.0.0.1:2527"
rcpt_domain = "example-com.mail.onmicrosoft.com"
"#;

#[test]
fn example_config_is_ok() {
    let (code, out, err) = cutover(&["config", "check", "-c", "config/cutover.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("OK: 3 rules, 2 targets"), "{out}");
    assert_eq!(err, "", "the shipped example has no warnings");
}

#[test]
fn check_json_names_file_line_and_key() {
    let (code, out, err) = cutover(&["config", "check", "--json", "-c", "config/cutover.toml"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["rules"], 3);
    assert_eq!(v["errors"], serde_json::json!([]));
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cutover.toml",
        &format!("{BASE}\n[queue]\nretry_schedule = [\"1m\", \"5 parsecs\"]\n"),
    );
    let (code, out, _) = cutover(&["config", "check", "--json", "-c", &path]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    let e = &v["errors"][0];
    assert_eq!(e["severity"], "error");
    assert_eq!(e["file"], path.as_str());
    assert!(e["line"].as_u64().is_some_and(|l| l > 1), "{e}");
    assert!(
        e["key"]
            .as_str()
            .unwrap()
            .starts_with("queue.retry_schedule"),
        "{e}"
    );
    let (code, out, _) = cutover(&["config", "check", "--json", "-c", "/nonexistent.toml"]);
    assert_eq!(code, 1);
    assert!(out.contains("/nonexistent.toml"), "{out}");
}

#[test]
fn broken_config_reports_every_error_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wave.txt",
        "alice@example.com\n# comment\n\nnot an address\n@sales.example.com\n",
    );
    let cfg = format!(
        r#"{BASE}colour = "blue"

[routing]
default = ["old"]

[[routing.rule]]
name = "wave-1"
recipients_file = "wave.txt"
deliver = ["new"]

[[routing.rule]]
name = "pilot"
recipients = ["bob@example.com", "re:([a-z"]
deliver = ["old", "nwe"]

[queue]
retry_schedule = ["1m", "5 parsecs"]
"#
    );
    let path = write(dir.path(), "cutover.toml", &cfg);
    let (code, out, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 1, "{out}{err}");
    let wave = dir.path().join("wave.txt").display().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{path}:13: targets.new.colour: unknown key (expected one of address, mx, port, tls, tls_verify, tls_ca, auth, rcpt_domain, connections, messages_per_connection, connect_timeout, timeout, verify_recipients, recipients_known, arc, convert_tnef, keep_original)"
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "{path}:25: routing.rule[1].recipients[1]: invalid regex \"([a-z\": unclosed character class"
        )
    );
    assert_eq!(
        lines[2],
        format!("{path}:26: routing.rule[1].deliver: unknown target \"nwe\" (known: new, old)")
    );
    assert!(
        lines[3].starts_with(&format!(
            "{path}:29: queue.retry_schedule[1]: invalid duration \"5 parsecs\""
        )),
        "{}",
        lines[3]
    );
    assert_eq!(
        lines[4],
        format!(
            "{wave}:4: routing.rule[0].recipients_file: invalid pattern \"not an address\": contains whitespace"
        )
    );
    assert_eq!(lines[5], format!("{path}: 5 error(s)"));
    assert_eq!(lines.len(), 6, "{err}");
}

#[test]
fn structural_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "[gateway]\nhostname = \"a\"\nlisten = [\"127.0.0.1:25\"]\naccept_domains = []\n",
            ":4: gateway.accept_domains: must list at least one domain",
        ),
        ("[gateway\n", ":1: TOML syntax error"),
        (
            &format!("{BASE}\n[routing]\nfoo = 1\n"),
            ":15: routing.foo: unknown key",
        ),
        (
            &format!("{BASE}\n[nonsense]\n"),
            ":14: nonsense: unknown section",
        ),
        (
            &format!(
                "{BASE}\n[[routing.rule]]\nname = \"w\"\nrecipients = [\"a@example.com\"]\ndeliver = [\"new\"]\nactive_from = \"2026-12-02T00:00:00Z\"\nactive_until = \"2026-12-01T00:00:00Z\"\n"
            ),
            ":19: routing.rule[0].active_until: must be after active_from (2026-12-02T00:00:00Z >= 2026-12-01T00:00:00Z)",
        ),
        (
            &format!(
                "{BASE}\n[[routing.rule]]\nname = \"w\"\nrecipients = [\"a@example.com\"]\ndeliver = [\"new\"]\nactive_from = \"next tuesday\"\n"
            ),
            ":18: routing.rule[0].active_from: invalid time \"next tuesday\"",
        ),
        (
            &format!("{BASE}\n[targets.third]\naddress = \"nohost\"\n"),
            ":15: targets.third.address: invalid address \"nohost\"",
        ),
        (
            &format!("{BASE}\n[targets.third]\nmx = \"example.com\"\naddress = \"a:25\"\n"),
            ":15: targets.third.mx: set either address or mx, not both",
        ),
        (
            &format!("{BASE}max_message_size = \"lots\"\n"),
            ":13: targets.new.max_message_size: unknown key",
        ),
        (
            &BASE.replace(
                "accept_domains",
                "max_message_size = \"lots\"\naccept_domains",
            ),
            ":5: gateway.max_message_size: invalid size \"lots\"",
        ),
        (
            &BASE.replace(
                "accept_domains",
                "trusted_networks = [\"10.0.0.0/33\"]\naccept_domains",
            ),
            ":5: gateway.trusted_networks[0]: invalid IP address syntax",
        ),
        (
            &format!("{BASE}\n[routing]\ndefault = [\"od\"]\n"),
            ":15: routing.default: unknown target \"od\" (known: new, old)",
        ),
        (
            &format!(
                "{BASE}\n[[routing.rule]]\nname = \"w\"\nrecipients_file = \"missing.txt\"\ndeliver = [\"new\"]\n"
            ),
            ":16: routing.rule[0].recipients_file: cannot read",
        ),
        (
            &format!("{BASE}\n[bounce]\nvia = \"nope\"\n"),
            ":15: bounce.via: unknown target \"nope\" (known: new, old; or \"mx\")",
        ),
        (
            &format!("{BASE}\n[dns]\nallow_private_mx = \"yes\"\n"),
            ":15: dns.allow_private_mx:",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("c{i}.toml"), text);
        let (code, out, err) = cutover(&["config", "check", "-c", &path]);
        assert_eq!(code, 1, "case {i}: {out}{err}");
        let want = format!("{path}{expected}");
        if std::env::var("SHOW").is_ok() {
            eprintln!("case {i}: {}", err.lines().next().unwrap_or(""));
            continue;
        }
        assert!(
            err.lines().any(|l| l.starts_with(&want)),
            "case {i}: want {want:?}\ngot:\n{err}"
        );
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let (code, _, err) = cutover(&["config", "check", "-c", "/nonexistent/cutover.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("/nonexistent/cutover.toml: cannot read:"),
        "{err}"
    );
}

#[test]
fn warnings_do_not_fail_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{BASE}\n[[routing.rule]]\nname = \"all\"\nrecipients = [\"@example.com\"]\ndeliver = [\"new\"]\n\n[[routing.rule]]\nname = \"late\"\nrecipients = [\"alice@example.com\", \"@.example.com\"]\ndeliver = [\"old\"]\n\n[[routing.rule]]\nname = \"shadowed\"\nrecipients = [\"bob@example.com\", \"carol@other.org\"]\ndeliver = [\"old\"]\n"
    );
    let path = write(dir.path(), "w.toml", &cfg);
    let (code, out, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("OK: 3 rules, 2 targets"), "{out}");
    assert!(
        err.contains(&format!(
            "warning: {path}:26: routing.rule[2].recipients[1]: carol@other.org: domain \"other.org\" is not in gateway.accept_domains"
        )),
        "{err}"
    );
    assert!(
        !err.contains("can never match"),
        "bob is covered but carol is not; late has @.example.com: {err}"
    );
    // A rule fully covered by an earlier windowless one is reported.
    let cfg2 = format!(
        "{BASE}\n[[routing.rule]]\nname = \"all\"\nrecipients = [\"@example.com\"]\ndeliver = [\"new\"]\n\n[[routing.rule]]\nname = \"dead\"\nrecipients = [\"bob@example.com\", \"*.x@example.com\"]\ndeliver = [\"old\"]\n"
    );
    let path2 = write(dir.path(), "w2.toml", &cfg2);
    let (code, _, err) = cutover(&["config", "check", "-c", &path2]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "warning: {path2}:20: routing.rule[1].name: rule \"dead\" can never match: rule \"all\" (no time window) comes first and covers all its recipients"
        )),
        "{err}"
    );
}

#[test]
fn auth_needs_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "smtp.pass", "secret\n");
    let target = |tls: &str| {
        format!(
            "{BASE}\n[targets.relay]\naddress = \"127.0.0.1:2528\"\n{tls}auth = {{ username = \"cutover\", password_file = \"smtp.pass\" }}\n"
        )
    };
    let cases: &[(&str, &str)] = &[
        (
            "",
            ":16: targets.relay.auth: needs verified TLS: set tls = \"required\" or \"implicit\" and keep tls_verify = true (tls = \"opportunistic\" sends the password in cleartext when STARTTLS is not offered)",
        ),
        (
            "tls = \"opportunistic\"\n",
            ":17: targets.relay.auth: needs verified TLS: set tls = \"required\" or \"implicit\" and keep tls_verify = true (tls = \"opportunistic\" sends the password in cleartext when STARTTLS is not offered)",
        ),
        (
            "tls = \"none\"\n",
            ":17: targets.relay.auth: needs verified TLS: set tls = \"required\" or \"implicit\" and keep tls_verify = true (tls = \"none\" sends the password in cleartext)",
        ),
        (
            "tls = \"required\"\ntls_verify = false\n",
            ":18: targets.relay.auth: needs verified TLS: set tls = \"required\" or \"implicit\" and keep tls_verify = true (tls_verify = false sends the password to any server that answers)",
        ),
    ];
    for (i, (tls, expected)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("a{i}.toml"), &target(tls));
        let (code, out, err) = cutover(&["config", "check", "-c", &path]);
        assert_eq!(code, 1, "case {i}: {out}{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines[0], format!("{path}{expected}"), "case {i}: {err}");
        assert_eq!(lines.len(), 2, "case {i}: one error: {err}");
    }
    for tls in [
        "tls = \"required\"\n",
        "tls = \"implicit\"\ntls_verify = true\n",
    ] {
        let path = write(dir.path(), "ok.toml", &target(tls));
        let (code, out, err) = cutover(&["config", "check", "-c", &path]);
        assert_eq!(code, 0, "{tls}: {out}{err}");
        assert_eq!(err, "", "{tls}: no warning either");
    }
}

#[test]
fn admin_token_file_errors_and_the_exposed_listener_warning() {
    let dir = tempfile::tempdir().unwrap();
    let check = |admin: &str| {
        let path = write(
            dir.path(),
            "cutover.toml",
            &format!("{BASE}\n[admin]\n{admin}"),
        );
        let (code, out, err) = cutover(&["config", "check", "-c", &path]);
        (path, code, out, err)
    };
    // BASE is 12 lines; `[admin]` is line 14, its first key line 15, the second line 16.
    let missing = dir.path().join("nope.token").display().to_string();
    let (path, code, _, err) = check("listen = \"127.0.0.1:8025\"\ntoken_file = \"nope.token\"\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "{path}:16: admin.token_file: cannot read {missing}: No such file or directory"
        )),
        "{err}"
    );

    write(dir.path(), "empty.token", " \n");
    let empty = dir.path().join("empty.token").display().to_string();
    let (path, code, _, err) = check("token_file = \"empty.token\"\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!("{path}:15: admin.token_file: {empty}: is empty")),
        "{err}"
    );

    write(dir.path(), "spaced.token", "two words\n");
    let (_, code, _, err) = check("token_file = \"spaced.token\"\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("printable ASCII without spaces"), "{err}");
    assert!(!err.contains("two words"), "never echo the token: {err}");

    // A good token file: no error, no warning, even off loopback.
    write(dir.path(), "admin.token", "0123456789abcdef\n");
    let (_, code, out, err) = check("listen = \"0.0.0.0:8025\"\ntoken_file = \"admin.token\"\n");
    assert_eq!((code, err.as_str()), (0, ""), "{out}");

    // Off loopback without a token file: a warning naming the key, and the check still passes.
    let (path, code, out, err) = check("listen = \"0.0.0.0:8025\"\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 warning(s)"), "{out}");
    assert_eq!(
        err.trim_end(),
        format!(
            "warning: {path}:15: admin.listen: 0.0.0.0:8025 is not loopback and admin.token_file \
             is not set: the admin API will refuse everything but /healthz (set token_file; \
             clients send it as `Authorization: Bearer <token>`)"
        )
    );
    // On loopback without a token file: nothing to say (the zero-setup default).
    let (_, code, _, err) = check("listen = \"127.0.0.1:8025\"\n");
    assert_eq!((code, err.as_str()), (0, ""));
}

#[test]
fn public_names_must_be_fully_qualified() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BASE.replace(
        "[gateway]\n",
        "[gateway]\npublic_names = [\"mx1.example.com\", \"mx2\"]\n",
    );
    assert_ne!(cfg, BASE, "BASE has a [gateway] section");
    let path = write(dir.path(), "cutover.toml", &cfg);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("gateway.public_names[1]") && err.contains("\"mx2\" is not a fully qualified"),
        "{err}"
    );
}

#[test]
fn hostname_must_be_a_fully_qualified_domain_name() {
    let dir = tempfile::tempdir().unwrap();
    for (i, bad) in [
        "localhost",
        "mx",
        "192.0.2.25",
        "mx_1.example.com",
        "mx..example.com",
    ]
    .iter()
    .enumerate()
    {
        let text = BASE.replace("\"mx1.example.com\"", &format!("{bad:?}"));
        let path = write(dir.path(), &format!("h{i}.toml"), &text);
        let (code, out, err) = cutover(&["config", "check", "-c", &path]);
        assert_eq!(code, 1, "{bad}: {out}{err}");
        let want = format!(
            "{path}:2: gateway.hostname: {bad:?} is not a fully qualified domain name (it names the gateway in EHLO, Received:, X-Cutover-Loop: and DSNs; e.g. \"mx1.example.com\")"
        );
        assert_eq!(err.lines().next(), Some(want.as_str()), "{bad}: {err}");
    }
    // Left out, it defaults to "localhost": a warning (backfill-only configurations need no name).
    let text = BASE.replace("hostname = \"mx1.example.com\"\n", "");
    let path = write(dir.path(), "none.toml", &text);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.starts_with(&format!(
            "warning: {path}:1: gateway.hostname: not set, so \"localhost\" is not a fully qualified domain name"
        )),
        "{err}"
    );
    for good in ["mx1.example.com", "mx.test", "MX1.Example.COM."] {
        let text = BASE.replace("\"mx1.example.com\"", &format!("{good:?}"));
        let path = write(dir.path(), "good.toml", &text);
        let (code, out, err) = cutover(&["config", "check", "-c", &path]);
        assert_eq!(code, 0, "{good}: {out}{err}");
        assert_eq!(err, "", "{good}");
    }
}

#[test]
fn broad_trusted_networks_and_trusted_relay_any_warn() {
    let dir = tempfile::tempdir().unwrap();
    let text = BASE.replace(
        "accept_domains",
        "trusted_networks = [\"10.0.0.0/8\", \"10.1.2.25/32\", \"192.168.0.0/16\", \"172.16.5.0/24\", \"fd00::/8\", \"0.0.0.0/0\"]\ntrusted_relay_any = true\naccept_domains",
    );
    let path = write(dir.path(), "t.toml", &text);
    let (code, out, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 0, "warnings only: {out}{err}");
    let advice = "behind SNAT, a load balancer or a Kubernetes Service every client may come from it; list the old server's own addresses (e.g. \"10.1.2.3/32\")";
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!(
                "warning: {path}:5: gateway.trusted_networks[0]: 10.0.0.0/8 is a broad private range (/8): {advice}"
            ),
            format!(
                "warning: {path}:5: gateway.trusted_networks[2]: 192.168.0.0/16 is a broad private range (/16): {advice}"
            ),
            format!(
                "warning: {path}:5: gateway.trusted_networks[4]: fd00::/8 is a broad private range (/8): {advice}"
            ),
            format!(
                "warning: {path}:5: gateway.trusted_networks[5]: 0.0.0.0/0 is a broad range (/0): {advice}"
            ),
            format!(
                "warning: {path}:6: gateway.trusted_relay_any: trusted_networks may relay to any domain on the internet through routing.default (an open relay for every client in them)"
            ),
        ],
        "{err}"
    );
}

/// BASE with `line` added to `[gateway]` fails the check, first with `{path}{expected}…`.
fn first_error_is(dir: &Path, line: &str, expected: &str) {
    let text = BASE.replace("accept_domains", &format!("{line}\naccept_domains"));
    let path = write(dir, "e.toml", &text);
    let (code, out, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 1, "{line}: {out}{err}");
    assert!(
        err.lines()
            .next()
            .is_some_and(|l| l.starts_with(&format!("{path}{expected}"))),
        "{line}: {err}"
    );
}

#[test]
fn max_header_size_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (value, expected) in [
        (
            "\"0\"",
            ":5: gateway.max_header_size: must be greater than zero",
        ),
        (
            "\"lots\"",
            ":5: gateway.max_header_size: invalid size \"lots\"",
        ),
    ] {
        first_error_is(dir.path(), &format!("max_header_size = {value}"), expected);
    }
    let text = BASE.replace(
        "accept_domains",
        "max_header_size = \"1MiB\"\naccept_domains",
    );
    let path = write(dir.path(), "ok.toml", &text);
    let (code, out, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
}

#[test]
fn abuse_limits_and_proxy_protocol_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (value, expected) in [
        (
            "ipv6_prefix = 8",
            ":5: gateway.ipv6_prefix: must be a prefix length from 16 to 128",
        ),
        (
            "max_session_time = \"0s\"",
            ":5: gateway.max_session_time: must be greater than zero",
        ),
        (
            "min_data_rate = 0",
            ":5: gateway.min_data_rate: must be at least 1",
        ),
        (
            "hard_error_limit = 0",
            ":5: gateway.hard_error_limit: must be at least 1",
        ),
        (
            "junk_command_limit = 0",
            ":5: gateway.junk_command_limit: must be at least 1",
        ),
        (
            "proxy_protocol = true",
            ":5: gateway.proxy_protocol: needs proxy_from = [the load balancers' addresses]",
        ),
    ] {
        first_error_is(dir.path(), value, expected);
    }
    // A broad proxy_from warns; proxy_from without proxy_protocol is ignored with a warning.
    let text = BASE.replace(
        "accept_domains",
        "proxy_protocol = true\nproxy_from = [\"10.0.0.0/8\", \"10.0.0.5/32\"]\naccept_domains",
    );
    let path = write(dir.path(), "p.toml", &text);
    let (code, out, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "warning: {path}:6: gateway.proxy_from[0]: 10.0.0.0/8 is a broad private range (/8): every host in it may claim any client address; list the load balancers' own addresses"
        )
    );
    let text = BASE.replace(
        "accept_domains",
        "proxy_from = [\"10.0.0.5/32\"]\naccept_domains",
    );
    let path = write(dir.path(), "q.toml", &text);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 0);
    assert!(
        err.contains("gateway.proxy_from: ignored: proxy_protocol is not enabled"),
        "{err}"
    );
}

#[test]
fn recipient_verification_keys_are_checked_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "known.txt",
        "alice@example.com\n# comment\n\nbob@example.com\n",
    );
    write(dir.path(), "bad.txt", "alice@example.com\nnot an address\n");
    let ok = format!(
        "{BASE}recipients_known = \"known.txt\"\n\n[routing]\ndefault = [\"old\"]\n[[routing.rule]]\nname = \"pilot\"\nrecipients = [\"bob@example.com\"]\ndeliver = [\"old\", \"new\"]\nverify_recipients = \"probe\"\n"
    );
    let path = write(dir.path(), "ok.toml", &ok);
    let (code, out, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[1..],
        [
            "recipient verification (unknown users: 550 5.1.1 at RCPT; a probe without an answer: 450 4.1.1; postmaster is never checked):",
            "  routing.rule[0] \"pilot\": verify_recipients = \"probe\": asks old and new (RCPT TO, after its rcpt_domain rewrite) whether each recipient the rule matches exists before accepting it",
            "  targets.new: recipients_known = \"known.txt\" (2 addresses, re-read on SIGHUP): each recipient routed to new must be listed",
            "  probe answers cached per target and address: known 1h, unknown 10m (gateway.verify_cache_positive, verify_cache_negative; temporary failures never), at most 10s per recipient (gateway.verify_timeout)",
        ],
        "{out}"
    );

    let bad = format!(
        "{BASE}verify_recipients = \"yes\"\n\n[routing]\ndefault = [\"old\"]\n[[routing.rule]]\nname = \"pilot\"\nrecipients = [\"bob@example.com\"]\ndeliver = [\"old\"]\nrecipients_known = \"bad.txt\"\n"
    )
    .replace("accept_domains", "verify_timeout = \"0\"\naccept_domains")
    .replace(
        "2526\"\n",
        "2526\"\nrecipients_known = \"missing.txt\"\n",
    );
    let path = write(dir.path(), "bad.toml", &bad);
    let (code, out, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 1, "{out}{err}");
    let missing = dir.path().join("missing.txt");
    let bad_txt = dir.path().join("bad.txt");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            format!(
                "{path}:5: gateway.verify_timeout: must be greater than zero (the longest a recipient's probes may take)"
            ),
            format!(
                "{path}:10: targets.old.recipients_known: cannot read {}: No such file or directory (os error 2) (the allow-list of recipients: one address a line)",
                missing.display()
            ),
            format!(
                "{path}:15: targets.new.verify_recipients: invalid value \"yes\": write verify_recipients = \"probe\" (ask the target with RCPT TO before accepting; unknown users get 550 5.1.1) or leave the key out"
            ),
            format!(
                "{}:2: routing.rule[0].recipients_known: invalid address \"not an address\": recipients_known lists exact addresses (local@domain), one a line",
                bad_txt.display()
            ),
            format!("{path}: 4 error(s)"),
        ],
        "{err}"
    );
}

/// `[auth]` and a target's `arc`: a key file that is missing or not a key, sealing with
/// verification off, a bad `dmarc` value and time budget — each named by file:line and key.
#[test]
fn auth_and_arc_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "junk.pem", "not a key\n");
    let cfg = format!(
        "{}\n[auth]\nverify = false\ndmarc = \"quarantine\"\ntime_budget = \"0s\"\n",
        BASE.replace(
            "rcpt_domain = \"example-com.mail.onmicrosoft.com\"\n",
            "rcpt_domain = \"example-com.mail.onmicrosoft.com\"\narc = { domain = \"example.com\", selector = \"arc1\", private_key_file = \"junk.pem\" }\n",
        )
    );
    let path = write(dir.path(), "cutover.toml", &cfg);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("auth.dmarc") && err.contains("invalid value \"quarantine\""),
        "{err}"
    );
    // The dmarc error makes [auth] fall back to its defaults; fix it to see the rest.
    let cfg = cfg.replace("dmarc = \"quarantine\"\n", "");
    let path = write(dir.path(), "cutover.toml", &cfg);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("auth.time_budget: must be between"), "{err}");
    assert!(
        err.contains("targets.new.arc.private_key_file: ARC key")
            && err.contains("junk.pem: no PEM private key"),
        "{err}"
    );
    assert!(
        err.contains("targets.new.arc: ARC sealing needs auth.verify = true"),
        "{err}"
    );
    // A real key (openssl, when present) passes, and `arc key` prints its record.
    let Some(openssl) = ["/usr/bin/openssl", "/bin/openssl"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        assert!(std::env::var("CI").is_err(), "openssl missing under CI");
        return;
    };
    let key = dir.path().join("arc.pem");
    let st = Command::new(openssl)
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let cfg = cfg
        .replace("junk.pem", "arc.pem")
        .replace("verify = false\n", "")
        .replace("time_budget = \"0s\"\n", "");
    let path = write(dir.path(), "cutover.toml", &cfg);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cutover(&["arc", "key", "-c", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("arc1._domainkey.example.com. IN TXT \"v=DKIM1; k=ed25519; p="),
        "{out}"
    );
    let (code, _, err) = cutover(&["arc", "key", "--target", "old", "-c", &path]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn profile_and_tnef_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "wave.csv", "alice@example.com\n");
    let cfg = format!(
        "{}keep_original = true\n\n[[backfill.job]]\nname = \"w1\"\n\
         source = {{ maildir = \"/srv/{{user}}/Maildir\", profile = \"gmail\" }}\n\
         destination = {{ maildir = \"/srv/new/{{user}}\", profile = \"office365\", max_message_size = \"200MiB\" }}\n\
         mailboxes_file = \"wave.csv\"\nkeep_original = true\n",
        BASE
    );
    let path = write(dir.path(), "cutover.toml", &cfg);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(":13: targets.new.keep_original: keeps winmail.dat beside its conversion"),
        "{err}"
    );
    assert!(
        err.contains("backfill.job[0].destination.max_message_size: office365 takes messages up to 157286400 bytes (150 MiB)"),
        "{err}"
    );
    assert!(err.contains("backfill.job[0].keep_original"), "{err}");
    let bad = cfg.replace("profile = \"gmail\"", "profile = \"yahoo\"");
    let path = write(dir.path(), "cutover.toml", &bad);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("profile") && err.contains("yahoo") && err.contains("office365"),
        "{err}"
    );
    let good = cfg
        .replace(
            "keep_original = true\n",
            "convert_tnef = true\nkeep_original = true\n",
        )
        .replace("\"200MiB\"", "\"100MiB\"");
    let path = write(dir.path(), "cutover.toml", &good);
    let (code, _, err) = cutover(&["config", "check", "-c", &path]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn ledger_keys_are_checked_and_the_password_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let with = |ledger: &str| {
        let path = write(
            dir.path(),
            "cutover.toml",
            &format!("{BASE}\n[ledger]\n{ledger}"),
        );
        cutover(&["config", "check", "-c", &path])
    };
    // A URL the PostgreSQL client refuses: named by key, password redacted.
    let (code, _, err) = with("url = \"postgres://cutover:s3cret@db:notaport/cutover\"\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ledger.url: not a PostgreSQL URL"), "{err}");
    assert!(!err.contains("s3cret"), "the password was printed: {err}");
    // Both forms, a missing file, a lease too short to renew, a batch of 0.
    let (code, _, err) = with(
        "url = \"postgres://c@db/c\"\nurl_file = \"nope.url\"\nlease_ttl = \"1s\"\nbatch = 0\n",
    );
    assert_eq!(code, 1, "{err}");
    for key in [
        "ledger.url_file: set url or url_file",
        "ledger.lease_ttl",
        "ledger.batch",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    let (code, _, err) = with("url_file = \"nope.url\"\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ledger.url_file: cannot read"), "{err}");
    let (code, _, err) = with("lease = \"1m\"\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ledger") && err.contains("lease"), "{err}");
    // A readable file with a good URL.
    write(
        dir.path(),
        "ledger.url",
        "postgres://cutover:pw@db.internal:5432/cutover\n",
    );
    let (code, _, err) = with("url_file = \"ledger.url\"\n");
    assert_eq!(code, 0, "{err}");
}
