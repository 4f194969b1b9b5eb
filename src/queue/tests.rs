//! Unit tests of the queue as a whole: commit, durability across reopen, group commit, recovery.

use super::*;
use std::time::Duration;

fn env(from: &str) -> Envelope {
    Envelope {
        mail_from: from.into(),
        helo: "client.example.org".into(),
        client_addr: "192.0.2.1:4567".parse().unwrap(),
        received_at: SystemTime::now(),
        smtputf8: false,
        body_8bit: false,
    }
}

fn legs() -> Vec<NewLeg> {
    vec![
        NewLeg {
            target: "old".into(),
            rules: vec!["default".into()],
            recipients: vec!["carol@example.com".into()],
        },
        NewLeg {
            target: "new".into(),
            rules: vec!["pilot".into(), "wave-1".into()],
            recipients: vec!["bob@example.com".into(), "alice@example.com".into()],
        },
    ]
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    let mut b = format!("From: a@example.org\r\nSubject: test {seed}\r\n\r\n").into_bytes();
    while b.len() < n {
        b.extend_from_slice(format!("line {seed} {}\r\n", b.len()).as_bytes());
    }
    b.truncate(n.max(40));
    b
}

async fn put(q: &Queue, data: &[u8]) -> QueueId {
    let mut w = q.body_writer().unwrap();
    for c in data.chunks(7000) {
        w.write(c).await.unwrap();
    }
    assert_eq!(w.len(), data.len() as u64);
    q.commit(w, env("a@example.org"), legs()).await.unwrap()
}

fn opts(threshold: usize) -> QueueOptions {
    QueueOptions {
        inline_threshold: threshold,
        cache_capacity: 8 << 20,
    }
}

fn spool_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn commit_inline_and_spool_then_reopen() {
    let d = tempfile::tempdir().unwrap();
    let small = body(2000, 1);
    let large = body(200_000, 2);
    let (a, b) = {
        let q = Queue::open_with(d.path(), opts(64 * 1024)).unwrap();
        let a = put(&q, &small).await;
        let b = put(&q, &large).await;
        assert!(a < b, "ids sort by time");
        assert_eq!(q.read_body(&a).unwrap(), small);
        assert_eq!(q.read_body(&b).unwrap(), large);
        q.close().unwrap();
        (a, b)
    };
    assert_eq!(spool_files(d.path()), vec![b.0.clone()]);
    let q = Queue::open_with(d.path(), opts(64 * 1024)).unwrap();
    assert_eq!(q.recovery().messages, 2);
    assert_eq!(q.recovery().legs, 4);
    assert_eq!(q.read_body(&a).unwrap(), small);
    assert_eq!(q.read_body(&b).unwrap(), large);
    let m = q
        .get(&QueueId::parse(&b.0.to_ascii_lowercase()).unwrap())
        .unwrap();
    assert_eq!(m.record.body, BodyLocation::Spool { file: b.0.clone() });
    assert_eq!(m.record.size, large.len() as u64);
    assert_eq!(
        m.headers,
        vec!["From: a@example.org".to_string(), "Subject: test 2".into()]
    );
    assert_eq!(m.record.legs[1].recipients[1].address, "alice@example.com");
    assert_eq!(m.record.legs[1].recipients[1].rule, "wave-1");
    let list = q.list().unwrap();
    assert_eq!(
        list.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![a.clone(), b]
    );
    // Two legs each due now.
    let due = q.store().due_until(id::now_ms() + 1000, 100).unwrap();
    assert_eq!(due.len(), 4);
    assert!(matches!(
        q.get(&QueueId("00000000000000".into())),
        Err(QueueError::NotFound(_))
    ));
    // A new id after reopen is still later than every stored one.
    let c = put(&q, &small).await;
    assert!(c > a);
}

#[tokio::test]
async fn dropped_writer_leaves_no_trace() {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open_with(d.path(), opts(1024)).unwrap();
    let mut w = q.body_writer().unwrap();
    w.write(&body(10_000, 3)).await.unwrap();
    assert!(w.is_spooled());
    assert_eq!(spool_files(d.path()).len(), 1);
    drop(w);
    assert!(spool_files(d.path()).is_empty());
    assert!(q.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_flushes_and_is_durable() {
    let d = tempfile::tempdir().unwrap();
    let n = 200;
    let mut ids = Vec::new();
    {
        let q = Queue::open_with(d.path(), opts(64 * 1024)).unwrap();
        let mut tasks = Vec::new();
        for i in 0..n {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                let data = body(1500 + i, (i % 250) as u8);
                let id = put(&q, &data).await;
                (id, data)
            }));
        }
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        let flushes = q.flush_count();
        assert!(
            flushes < (n as u64) / 2,
            "{flushes} flushes for {n} concurrent commits"
        );
        assert!(flushes >= 1);
        q.close().unwrap();
    }
    let q = Queue::open_with(d.path(), opts(64 * 1024)).unwrap();
    assert_eq!(q.recovery().messages, n);
    let mut seen = std::collections::HashSet::new();
    for (id, data) in &ids {
        assert!(seen.insert(id.clone()), "duplicate id {id}");
        assert_eq!(&q.read_body(id).unwrap(), data);
    }
}

#[tokio::test]
async fn recovery_removes_tmp_orphans_and_dangling_entries() {
    let d = tempfile::tempdir().unwrap();
    let kept;
    let missing;
    {
        let q = Queue::open_with(d.path(), opts(100)).unwrap();
        kept = put(&q, &body(5000, 4)).await;
        missing = put(&q, &body(5000, 5)).await;
        // Dangling index entries, as an interrupted non-transactional writer could leave.
        let db = q.store().db();
        db.open_tree(store::TREE_BODIES)
            .unwrap()
            .insert("0000000000000Z", &b"x"[..])
            .unwrap();
        db.open_tree(store::TREE_DUE)
            .unwrap()
            .insert(
                store::due_key(1, &QueueId("0000000000000Z".into()), model::LegId(0)),
                &[][..],
            )
            .unwrap();
        q.close().unwrap();
    }
    let spool = d.path().join("spool");
    std::fs::write(spool.join("0123456789abcdef.tmp"), b"half a body").unwrap();
    std::fs::write(spool.join("00000000000001"), b"orphan").unwrap();
    std::fs::remove_file(spool.join(&missing.0)).unwrap();
    let q = Queue::open_with(d.path(), opts(100)).unwrap();
    let r = q.recovery().clone();
    assert_eq!(
        r,
        RecoveryReport {
            messages: 2,
            legs: 4,
            removed_tmp: 1,
            quarantined_orphans: 1,
            removed_entries: 2,
            missing_bodies: 1,
        }
    );
    assert_eq!(spool_files(d.path()), vec![kept.0.clone()]);
    // Quarantined, not deleted.
    assert_eq!(
        std::fs::read(spool.join("orphans").join("00000000000001")).unwrap(),
        b"orphan"
    );
    let m = q.get(&missing).unwrap();
    assert!(m.record.body_missing);
    assert!(m.headers.is_empty());
    assert!(!q.get(&kept).unwrap().record.body_missing);
    q.close().unwrap();
    // Idempotent: a second recovery finds nothing new to remove.
    let q = Queue::open_with(d.path(), opts(100)).unwrap();
    assert_eq!(
        q.recovery().removed_tmp + q.recovery().quarantined_orphans,
        0
    );
    assert_eq!(q.recovery().removed_entries, 0);
    assert_eq!(q.recovery().missing_bodies, 1);
}

#[tokio::test]
async fn second_open_is_locked() {
    let d = tempfile::tempdir().unwrap();
    let _q = Queue::open_with(d.path(), opts(100)).unwrap();
    match Queue::open_with(d.path(), opts(100)) {
        Err(QueueError::Locked(_)) => {}
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, got a second handle"),
    }
}

#[tokio::test]
async fn flush_of_an_idle_queue_returns() {
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open_with(d.path(), opts(100)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), q.flush())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn spool_failure_fails_the_commit_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    {
        let q = Queue::open_with(d.path(), opts(1000)).unwrap();
        let mut w = q.body_writer().unwrap();
        w.write(&body(50_000, 6)).await.unwrap();
        assert!(w.is_spooled());
        // The rename into the spool directory cannot succeed any more.
        std::fs::remove_dir_all(d.path().join("spool")).unwrap();
        let r = q.commit(w, env("a@example.org"), legs()).await;
        assert!(r.is_err(), "commit must fail");
        assert!(q.list().unwrap().is_empty());
        assert!(q.has_reserve(1).unwrap());
        assert!(!q.has_reserve(u64::MAX).unwrap());
        q.close().unwrap();
    }
    let q = Queue::open_with(d.path(), opts(1000)).unwrap();
    assert_eq!(q.recovery().messages, 0);
    assert!(spool_files(d.path()).is_empty());
}

/// Sessions run on `tokio::spawn`: the writer, the queue and the commit future must be Send.
#[test]
fn commit_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync<T: Send + Sync>() {}
    assert_sync::<Queue>();
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open_with(d.path(), opts(100)).unwrap();
    let w = q.body_writer().unwrap();
    assert_send(&w);
    let fut = q.commit(w, env("a@example.org"), legs());
    assert_send(&fut);
}

#[tokio::test]
async fn update_moves_due_entries_and_remove_deletes_everything() {
    use model::RcptState;
    let d = tempfile::tempdir().unwrap();
    let q = Queue::open_with(d.path(), opts(1000)).unwrap();
    let small = put(&q, &body(500, 7)).await;
    let large = put(&q, &body(5000, 8)).await;
    let far = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(q.due(SystemTime::now(), 100).unwrap().len(), 4);

    // Leg 0 delivered (leaves the index), leg 1 deferred an hour, then held.
    let mut rec = q.record(&small).unwrap();
    rec.legs[0].recipients[0].state = RcptState::Delivered {
        reply: "250 2.0.0 ok".into(),
    };
    rec.legs[0].refresh_state();
    for r in &mut rec.legs[1].recipients {
        r.state = RcptState::Deferred {
            next: far,
            attempts: 1,
            last_reply: "451 4.4.1 later".into(),
        };
    }
    rec.legs[1].attempts = 1;
    rec.legs[1].next_attempt = Some(far);
    rec.legs[1].refresh_state();
    q.update(&rec).await.unwrap();
    let now_due = q.due(SystemTime::now(), 100).unwrap();
    assert_eq!(now_due.len(), 2, "only the other message's legs");
    assert!(now_due.iter().all(|e| e.id == large));
    let later = q.due(far, 100).unwrap();
    assert_eq!(later.len(), 3);
    assert_eq!(later[2].id, small);
    assert_eq!(later[2].leg, model::LegId(1));
    rec.legs[1].held = true;
    q.update(&rec).await.unwrap();
    assert_eq!(q.due(far, 100).unwrap().len(), 2, "held legs are not due");
    assert_eq!(
        q.get(&small).unwrap().record.legs[1].state,
        model::LegState::Deferred
    );

    q.remove(&large).await.unwrap();
    assert!(spool_files(d.path()).is_empty());
    assert!(matches!(q.get(&large), Err(QueueError::NotFound(_))));
    assert!(matches!(
        q.remove(&large).await,
        Err(QueueError::NotFound(_))
    ));
    assert!(q.due(far, 100).unwrap().is_empty());
    q.remove(&small).await.unwrap();
    assert!(q.store().body(&small).unwrap().is_none());
    let mut ghost = rec.clone();
    ghost.id = QueueId("0000000000000Z".into());
    assert!(matches!(
        q.update(&ghost).await,
        Err(QueueError::NotFound(_))
    ));
    q.close().unwrap();
    let q = Queue::open_with(d.path(), opts(1000)).unwrap();
    assert_eq!(q.recovery().messages, 0);
    assert_eq!(q.recovery().removed_entries, 0);
}
