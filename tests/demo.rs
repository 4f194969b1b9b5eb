//! `cutover demo --once` (the README's main command, in CI mode): the stand-in servers' Maildirs
//! hold exactly what the routing rules say.

use std::path::Path;
use std::process::Command;

fn count(dir: &Path, user: &str) -> usize {
    std::fs::read_dir(dir.join(user).join("new"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn demo_once_routes_every_sample_where_the_rules_say() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("cutover-demo");
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "demo",
            "--once",
            "--smtp",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--json",
            "--dir",
        ])
        .arg(&demo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Phase 2: wave-2"), "{stdout}");
    let (old, new) = (demo.join("old"), demo.join("new"));
    // alice: 2 (quarterly + team lunch) on old only.
    assert_eq!((count(&old, "alice"), count(&new, "alice")), (2, 0));
    // bob: pilot dual delivery, 2 messages on each side.
    assert_eq!((count(&old, "bob"), count(&new, "bob")), (2, 2));
    // carol: wave-1 -> new only.
    assert_eq!((count(&old, "carol"), count(&new, "carol")), (0, 2));
    assert_eq!(count(&new, "team"), 1);
    assert_eq!(count(&new, "db.admin"), 1);
    // dave: before the wave on old, after it on new.
    assert_eq!((count(&old, "dave"), count(&new, "dave")), (1, 1));
    assert_eq!(count(&old, "erin+newsletter"), 1);
    // The relay attempt was refused and stored nowhere.
    assert_eq!(count(&old, "mallory") + count(&new, "mallory"), 0);
    assert!(stdout.contains("550 5.7.1"), "{stdout}");
    // Bytes arrive as sent, plus exactly one Authentication-Results: (edge authentication;
    // the demo client is not in trusted_networks), one Received: and one X-Cutover-Loop: on top.
    let f = std::fs::read_dir(new.join("carol").join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(f).unwrap();
    assert!(
        text.starts_with("Authentication-Results: mx.demo.example.com;"),
        "{text}"
    );
    assert_eq!(text.matches("Authentication-Results:").count(), 1, "{text}");
    assert_eq!(text.matches("\nReceived: from ").count(), 1, "{text}");
    assert_eq!(
        text.matches("X-Cutover-Loop: mx.demo.example.com").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("Delivered-To"), "{text}");

    // Phase 3: the old Maildirs' history backfilled into the new server's Maildirs, the
    // pilot's dual-delivered mail recognised through the ledger, not copied again.
    assert!(stdout.contains("Phase 3: backfill"), "{stdout}");
    let row = |user: &str| {
        stdout
            .lines()
            .rfind(|l| l.trim_start().starts_with(user))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        row("alice@example.com"),
        "alice@example.com 2 0 yes",
        "{stdout}"
    );
    assert_eq!(
        row("bob@example.com"),
        "bob@example.com 0 2 yes",
        "{stdout}"
    );
    assert_eq!(
        row("dave@example.com"),
        "dave@example.com 1 0 yes",
        "{stdout}"
    );
    let cur = |user: &str| {
        std::fs::read_dir(new.join(user).join("cur"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!((cur("alice"), cur("bob"), cur("dave")), (2, 0, 1));
}
