//! Routing lookup cost vs table size: N exact addresses (one wave list) + 100 patterns
//! (domains, subdomains, globs, regexes). Prints ns per lookup for N = 1,000 / 10,000 / 50,000 and
//! the 50k/1k ratio (the index must keep it flat: within 2x). Run: `cargo bench --bench routing`.

use cutover::config::{Routing, Rule};
use cutover::routing::Router;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

fn rule(name: &str, recipients: Vec<String>) -> Rule {
    Rule {
        name: name.into(),
        recipients,
        recipients_file: None,
        deliver: vec!["new".into()],
        active_from: None,
        active_until: None,
        file_patterns: vec![],
        verify_recipients: None,
        recipients_known: None,
        known: None,
    }
}

fn table(n: usize) -> Routing {
    let wave: Vec<String> = (0..n).map(|i| format!("user{i:05}@example.com")).collect();
    let mut rules = vec![rule("wave", wave)];
    for i in 0..100 {
        let p = match i % 4 {
            0 => format!("@dept{i}.example.com"),
            1 => format!("@.region{i}.example.com"),
            2 => format!("*.team{i}@example.com"),
            _ => format!("re:svc{i}-[a-z]+@example\\.com"),
        };
        rules.push(rule(&format!("p{i}"), vec![p]));
    }
    Routing {
        default: Some(vec!["old".into()]),
        ignore_local_case: true,
        recipient_delimiter: "+".into(),
        rules,
    }
}

fn measure(router: &Router, addrs: &[String], now: SystemTime) -> f64 {
    let budget = Duration::from_millis(400);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for a in addrs {
            black_box(router.route(black_box(a), now));
            n += 1;
        }
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let now = SystemTime::now();
    let sizes = [1_000usize, 10_000, 50_000];
    let mut rows = Vec::new();
    println!("routing lookup, 100 patterns + N exact addresses (ns per lookup)");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10}",
        "N", "exact", "+ext", "domain", "miss"
    );
    for &n in &sizes {
        let (router, errors) = Router::new(&table(n));
        assert!(errors.is_empty());
        let exact: Vec<String> = (0..1000)
            .map(|i| format!("user{:05}@example.com", (i * 7919) % n))
            .collect();
        let ext: Vec<String> = (0..1000)
            .map(|i| format!("USER{:05}+tag@Example.com", (i * 104_729) % n))
            .collect();
        let domain: Vec<String> = (0..1000)
            .map(|i| format!("x{i}@dept{}.example.com", (i % 25) * 4))
            .collect();
        let miss: Vec<String> = (0..1000)
            .map(|i| format!("nobody{i}@example.com"))
            .collect();
        let row = [
            measure(&router, &exact, now),
            measure(&router, &ext, now),
            measure(&router, &domain, now),
            measure(&router, &miss, now),
        ];
        println!(
            "{:>8} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            n, row[0], row[1], row[2], row[3]
        );
        rows.push(row);
    }
    let first = rows[0];
    let last = rows[rows.len() - 1];
    println!(
        "ratio 50k/1k: exact {:.2}x, +ext {:.2}x, domain {:.2}x, miss {:.2}x (target: <= 2x)",
        last[0] / first[0],
        last[1] / first[1],
        last[2] / first[2],
        last[3] / first[3]
    );
}
