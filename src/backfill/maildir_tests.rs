use super::*;
use proptest::prelude::*;

fn tmp() -> (tempfile::TempDir, Maildir) {
    let d = tempfile::tempdir().unwrap();
    let md = Maildir::open(&d.path().join("Maildir")).unwrap();
    md.create_root().unwrap();
    (d, md)
}

fn put(dir: &Path, name: &str, bytes: &[u8], mtime: i64) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(epoch_time(mtime))
        .unwrap();
    p
}

#[test]
fn parse_info_forms() {
    let cases = [
        ("1.M2P3.host:2,FS", ("1.M2P3.host", "FS")),
        ("1.M2P3.host,S=10,W=12:2,", ("1.M2P3.host,S=10,W=12", "")),
        ("1.M2P3.host!2,RSa", ("1.M2P3.host", "RSa")),
        ("1.M2P3.host;2,S", ("1.M2P3.host", "S")),
        ("1.M2P3.host", ("1.M2P3.host", "")),
        ("", ("", "")),
        (":2,", ("", "")),
    ];
    for (name, want) in cases {
        assert_eq!(parse_info(name), want, "{name}");
    }
    assert_eq!(info_sep("a!2,S"), '!');
    assert_eq!(info_sep("a:2,S"), ':');
    assert_eq!(info_sep("a"), ':');
}

#[test]
fn flags_info_table() {
    let mut kw = vec!["$Label1".to_string()];
    let (info, dropped) = flags_to_info("(\\Seen \\Answered \\Recent $label1 Junk \\Foo)", &mut kw);
    assert_eq!(info, "RSab");
    assert_eq!(dropped, vec!["\\Foo".to_string()]);
    assert_eq!(kw, vec!["$Label1".to_string(), "Junk".to_string()]);
    assert_eq!(
        info_to_flags(&info, &kw),
        "(\\Answered \\Seen $Label1 Junk)"
    );
    // $Forwarded: P and a keyword; read back once.
    let (info, _) = flags_to_info("($Forwarded \\Draft \\Flagged \\Deleted)", &mut kw);
    assert_eq!(info, "DFPTc");
    assert_eq!(
        info_to_flags(&info, &kw),
        "(\\Draft \\Flagged $Forwarded \\Deleted)"
    );
    // Unknown letters (no keyword at that index, unknown upper case) are skipped.
    assert_eq!(info_to_flags("SzX", &kw), "(\\Seen)");
    assert_eq!(flags_to_info("()", &mut kw).0, "");
}

#[test]
fn keyword_overflow_is_reported() {
    let mut kw: Vec<String> = (0..25).map(|i| format!("k{i}")).collect();
    let (info, dropped) = flags_to_info("(\\Seen new1 new2 k3)", &mut kw);
    assert_eq!(info, "Sdz");
    assert_eq!(dropped, vec!["new2".to_string()]);
    assert_eq!(kw.len(), MAX_KEYWORDS);
}

#[test]
fn keywords_file_parse_and_format() {
    let kw = parse_keywords("0 $Label1\n2 Work\nbogus\n30 far\nx y\n");
    assert_eq!(
        kw,
        vec!["$Label1".to_string(), String::new(), "Work".into()]
    );
    assert_eq!(format_keywords(&kw), "0 $Label1\n2 Work\n");
    // A gap is never reused for a new keyword: indexes stay what they are.
    let mut kw2 = kw.clone();
    let (info, _) = flags_to_info("(New)", &mut kw2);
    assert_eq!(info, "d");
}

proptest! {
    #[test]
    fn flags_info_roundtrip(
        sys in proptest::sample::subsequence(vec!["\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted"], 0..=6),
        kws in proptest::collection::btree_set("[A-Za-z$][A-Za-z0-9_]{0,8}", 0..30),
    ) {
        let kws: Vec<String> = kws.into_iter().filter(|k| !k.eq_ignore_ascii_case("$Forwarded")).collect();
        let mut all: Vec<String> = sys.iter().map(|s| s.to_string()).collect();
        all.extend(kws.iter().cloned());
        let flags = format!("({})", all.join(" "));
        let mut table = Vec::new();
        let (info, dropped) = flags_to_info(&flags, &mut table);
        prop_assert!(table.len() <= MAX_KEYWORDS);
        let back = info_to_flags(&info, &table);
        let mut got = crate::backfill::meta::Flags::parse(&back).set();
        for d in &dropped {
            got.insert(d.to_ascii_lowercase());
        }
        prop_assert_eq!(got, crate::backfill::meta::Flags::parse(&flags).set());
        // Sorted letters, each once.
        let letters: Vec<char> = info.chars().collect();
        let mut sorted = letters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(letters, sorted);
    }

    #[test]
    fn line_ending_conversions(s in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..64)) {
        let mut crlf = Vec::new();
        to_crlf(&s, &mut false, &mut crlf);
        prop_assert_eq!(crlf.len() as u64, s.len() as u64 + crlf_extra(&s, &mut false));
        // Every LF of the CRLF form has its CR; LF drops exactly the CRs of CRLFs.
        prop_assert!(crlf.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'));
        let pairs = crlf.windows(2).filter(|w| *w == b"\r\n").count();
        prop_assert_eq!(to_lf(&crlf).len(), crlf.len() - pairs);
        // Without bare CRs, LF storage round-trips exactly.
        let no_cr: Vec<u8> = s.iter().copied().filter(|&b| b != b'\r').collect();
        let mut back = Vec::new();
        to_crlf(&to_lf(&no_cr), &mut false, &mut back);
        let mut want = Vec::new();
        to_crlf(&no_cr, &mut false, &mut want);
        prop_assert_eq!(back, want);
        // Chunked counting agrees.
        let mut prev = false;
        let (a, b) = s.split_at(s.len() / 2);
        let chunked = crlf_extra(a, &mut prev) + crlf_extra(b, &mut prev);
        prop_assert_eq!(chunked, crlf_extra(&s, &mut false));
    }
}

#[test]
fn listing_maildir_plus_plus() {
    let (_d, md) = tmp();
    md.create("Projects/Alpha").unwrap();
    md.create("Archive").unwrap();
    md.create("Entwürfe/Café").unwrap();
    md.create("A&B").unwrap();
    // A parent directory without cur/ (as left by a tool), a stray file and a non-folder dir.
    fs::create_dir_all(md.root().join(".Old")).unwrap();
    fs::create_dir_all(md.root().join(".Old.2019/cur")).unwrap();
    fs::write(md.root().join(".notadir"), b"").unwrap();
    fs::create_dir_all(md.root().join("courierimapkeywords")).unwrap();
    md.subscribe("Archive").unwrap();
    md.subscribe("Archive").unwrap();
    md.subscribe("Entwürfe/Café").unwrap();
    assert_eq!(
        fs::read_to_string(md.root().join("subscriptions")).unwrap(),
        "Archive\nEntw&APw-rfe.Caf&AOk-\n"
    );
    assert!(md.root().join(".Projects.Alpha/maildirfolder").is_file());
    assert!(md.root().join(".Entw&APw-rfe.Caf&AOk-/cur").is_dir());

    let l = md.list().unwrap();
    assert_eq!(l.delimiter, Some('.'));
    let got: Vec<(String, Vec<String>, bool)> = l
        .folders
        .iter()
        .map(|f| {
            (
                plan::logical(&f.wire, l.delimiter),
                f.attrs.clone(),
                f.subscribed,
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            ("INBOX".into(), s(&["\\HasNoChildren"]), false),
            ("A&B".into(), s(&["\\HasNoChildren"]), false),
            ("Archive".into(), s(&["\\HasNoChildren"]), true),
            (
                "Entwürfe".into(),
                s(&["\\Noselect", "\\HasChildren"]),
                false
            ),
            ("Entwürfe/Café".into(), s(&["\\HasNoChildren"]), true),
            ("Old".into(), s(&["\\Noselect", "\\HasChildren"]), false),
            ("Old/2019".into(), s(&["\\HasNoChildren"]), false),
            (
                "Projects".into(),
                s(&["\\Noselect", "\\HasChildren"]),
                false
            ),
            ("Projects/Alpha".into(), s(&["\\HasNoChildren"]), false),
        ]
    );
    assert!(md.folder("Projects/Alpha").is_ok());
    assert!(md.folder("projects/alpha").is_err());
    assert!(md.folder("Projects").is_err());
    assert!(md.folder("inbox").is_ok());
    for bad in ["", "a//b", "/a", "v1.2", "a/.b"] {
        assert!(md.create(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn reads_flags_keywords_dates_sizes() {
    let (_d, md) = tmp();
    let root = md.root().to_path_buf();
    fs::write(root.join(KEYWORDS_FILE), "0 $Label1\n1 Work\n").unwrap();
    put(
        &root.join("cur"),
        "100.M1P1.h,S=9,W=11:2,RSb",
        b"a\nb\nc\n",
        1_700_000_000,
    );
    put(
        &root.join("cur"),
        "200.M1P1.h!2,Fa",
        b"Subject: x\n\nhi\n",
        1_600_000_000,
    );
    put(&root.join("new"), "300.M1P1.h", b"x\r\ny\n", 1_700_000_000);
    put(&root.join("cur"), ".hidden", b"", 0);
    let f = md.folder("INBOX").unwrap();
    let e = f.entries().unwrap();
    let got: Vec<(&str, &str, i64, u32)> = e
        .iter()
        .map(|e| (e.key.as_str(), e.flags.as_str(), e.internaldate, e.size))
        .collect();
    assert_eq!(
        got,
        vec![
            ("200.M1P1.h", "(\\Flagged $Label1)", 1_600_000_000, 18),
            // W= wins over counting (11, not 9).
            (
                "100.M1P1.h,S=9,W=11",
                "(\\Answered \\Seen Work)",
                1_700_000_000,
                11
            ),
            ("300.M1P1.h", "()", 1_700_000_000, 6),
        ]
    );
    assert_eq!(f.read(&e[0]).unwrap(), b"Subject: x\r\n\r\nhi\r\n");
    assert_eq!(f.read(&e[2]).unwrap(), b"x\r\ny\r\n");
    assert_eq!(f.find("300.M1P1.h").unwrap(), e[2].path);
}

#[test]
fn non_utf8_names_are_skipped() {
    use std::os::unix::ffi::OsStrExt;
    let (_d, md) = tmp();
    let bad = std::ffi::OsStr::from_bytes(b"1.M\xff.h:2,S");
    fs::write(md.root().join("cur").join(bad), b"x\n").unwrap();
    fs::create_dir_all(md.root().join(std::ffi::OsStr::from_bytes(b".F\xfe/cur"))).unwrap();
    assert!(md.folder("INBOX").unwrap().entries().unwrap().is_empty());
    assert_eq!(md.list().unwrap().folders.len(), 1);
}

#[test]
fn append_stores_lf_with_sizes_and_date() {
    let (_d, md) = tmp();
    md.create("Sent").unwrap();
    let f = md.folder("Sent").unwrap();
    let msg = b"Subject: hi\r\nTo: a@b\r\n\r\nline1\r\nline2\r\n";
    let s = f
        .append(msg, "(\\Seen $Label1 \\Recent)", 1_500_000_000)
        .unwrap();
    assert!(s.dropped.is_empty());
    assert!(
        s.key
            .ends_with(&format!(",S={},W={}", msg.len() - 5, msg.len())),
        "{}",
        s.key
    );
    assert_eq!(
        fs::read(&s.path).unwrap(),
        b"Subject: hi\nTo: a@b\n\nline1\nline2\n"
    );
    assert!(s.path.starts_with(f.dir().join("cur")));
    assert!(s.path.to_str().unwrap().ends_with(":2,Sa"));
    assert_eq!(fs::read_dir(f.dir().join("tmp")).unwrap().count(), 0);
    assert_eq!(
        fs::read_to_string(f.dir().join(KEYWORDS_FILE)).unwrap(),
        "0 $Label1\n"
    );
    let e = f.entries().unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(
        (
            e[0].key.as_str(),
            e[0].flags.as_str(),
            e[0].internaldate,
            e[0].size
        ),
        (
            s.key.as_str(),
            "(\\Seen $Label1)",
            1_500_000_000,
            msg.len() as u32
        )
    );
    assert_eq!(f.read(&e[0]).unwrap(), msg);
    // read_head: header + at most max body bytes, CRLF.
    assert_eq!(
        f.read_head(&e[0], 3).unwrap(),
        b"Subject: hi\r\nTo: a@b\r\n\r\nlin"
    );
    assert_eq!(f.read_head(&e[0], 4096).unwrap(), msg);
    assert_eq!(f.read_head(&e[0], usize::MAX).unwrap(), msg);
    // Dates out of range don't panic (the file gets the epoch or the OS refuses).
    let _ = f.append(b"x\n", "()", i64::MAX);
    let _ = f.append(b"x\n", "()", i64::MIN);

    // Crlf: as given.
    let f2 = md
        .clone()
        .with_line_endings(LineEndings::Crlf)
        .folder("Sent")
        .unwrap();
    let s2 = f2.append(msg, "()", -5).unwrap();
    assert_eq!(fs::read(&s2.path).unwrap(), msg);
    assert!(s2.key.ends_with(&format!(",S={0},W={0}", msg.len())));
    assert_ne!(s.key, s2.key);
    assert!(
        f2.entries()
            .unwrap()
            .iter()
            .any(|e| e.key == s2.key && e.internaldate == -5)
    );
}

#[test]
fn append_keeps_keyword_indexes_and_reports_overflow() {
    let (_d, md) = tmp();
    let f = md.folder("INBOX").unwrap();
    let existing: String = (0..25).map(|i| format!("{i} k{i}\n")).collect();
    fs::write(f.dir().join(KEYWORDS_FILE), &existing).unwrap();
    let s = f.append(b"x\n", "(k7 extra1 extra2)", 0).unwrap();
    assert_eq!(s.dropped, vec!["extra2".to_string()]);
    assert!(s.path.to_str().unwrap().ends_with(":2,hz"));
    let kw = fs::read_to_string(f.dir().join(KEYWORDS_FILE)).unwrap();
    assert_eq!(kw, format!("{existing}25 extra1\n"));
    assert!(!f.dir().join("dovecot-keywords.lock").exists());
}

#[test]
fn set_flags_renames_and_keeps_the_key() {
    let (_d, md) = tmp();
    let f = md.folder("INBOX").unwrap();
    put(&f.dir().join("new"), "1.M1P1.h", b"a\n", 10);
    put(&f.dir().join("cur"), "2.M1P1.h!2,SX", b"b\n", 20);
    let e = f.entries().unwrap();
    let s = f.set_flags(&e[0], "(\\Seen Todo)").unwrap();
    assert_eq!(s.key, "1.M1P1.h");
    assert_eq!(s.path, f.dir().join("cur/1.M1P1.h:2,Sa"));
    // Unknown letter X and the '!' separator are kept.
    let s2 = f.set_flags(&e[1], "(\\Flagged)").unwrap();
    assert_eq!(s2.path, f.dir().join("cur/2.M1P1.h!2,FX"));
    // A stale entry (path renamed since) is found again by its key.
    let s3 = f.set_flags(&e[1], "()").unwrap();
    assert_eq!(s3.path, f.dir().join("cur/2.M1P1.h!2,X"));
    let e = f.entries().unwrap();
    assert_eq!(e[0].flags, "(\\Seen Todo)");
    assert_eq!(e[0].internaldate, 10);
    assert_eq!(e[1].flags, "()");
    let gone = Entry {
        key: "nope".into(),
        path: f.dir().join("cur/nope"),
        flags: "()".into(),
        internaldate: 0,
        size: 0,
    };
    assert!(f.set_flags(&gone, "()").is_err());
}

#[test]
fn stale_lock_is_broken_live_one_waits() {
    let (_d, md) = tmp();
    let lock = md.root().join("subscriptions.lock");
    fs::write(&lock, b"").unwrap();
    File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(600))
        .unwrap();
    md.subscribe("INBOX").unwrap();
    assert_eq!(md.subscriptions().unwrap(), vec!["INBOX".to_string()]);
    assert!(!lock.exists());
}

#[test]
fn stamp_detects_changes() {
    let (_d, md) = tmp();
    let f = md.folder("INBOX").unwrap();
    // Just created: too recent to tell.
    assert_eq!(f.stamp().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(2100));
    let a = f.stamp().unwrap();
    assert_ne!(a, 0);
    assert_eq!(f.stamp().unwrap(), a);
    let s = f.append(b"x\n", "()", 0).unwrap();
    assert_eq!(f.stamp().unwrap(), 0);
    std::thread::sleep(Duration::from_millis(2100));
    let b = f.stamp().unwrap();
    assert_ne!(b, 0);
    assert_ne!(a, b);
    let e = f.entries().unwrap();
    assert_eq!(e[0].key, s.key);
}

#[test]
fn subscriptions_version_2_is_read_and_kept() {
    let (_d, md) = tmp();
    md.create("Projects/Alpha").unwrap();
    md.create("Entwürfe").unwrap();
    let path = md.root().join(SUBSCRIPTIONS_FILE);
    fs::write(&path, "V\t2\n\nProjects\tAlpha\n").unwrap();
    assert_eq!(
        md.subscriptions().unwrap(),
        vec!["Projects.Alpha".to_string()]
    );
    md.subscribe("Entwürfe").unwrap();
    md.subscribe("Projects/Alpha").unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "V\t2\n\nProjects\tAlpha\nEntw&APw-rfe\n"
    );
    let l = md.list().unwrap();
    let subscribed: Vec<&str> = l
        .folders
        .iter()
        .filter(|f| f.subscribed)
        .map(|f| f.wire.as_str())
        .collect();
    assert_eq!(subscribed, vec!["Entw&APw-rfe", "Projects.Alpha"]);
}
