//! The `/` status page: the cutover-day dashboard. One server-rendered HTML page (tables work
//! without JavaScript) with the last hour per target as inline SVG charts, the queue by target
//! and state, the oldest deferred messages with their last reply, the waves on a timeline,
//! backfill jobs per mailbox (progress, speed, error rate, convergence) and recent alerts; a
//! small inline script re-fetches the page every few seconds and swaps its `<main>` (same
//! origin, same guard as any request: nothing loaded from elsewhere). Pure rendering from a
//! [`Dashboard`] snapshot; never reads the store, files or the clock itself.

use super::chart::{self, Series, Span};
use super::html::esc;
use crate::alerts::AlertEvent;
use crate::alerts::delivery::Status;
use crate::backfill::report::{JobReport, MailboxReport};
use crate::queue::model::{LegState, MessageSummary};
use crate::telemetry::LastHour;
use crate::waves::WaveStatus;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

/// How often the page refreshes itself (seconds).
pub const REFRESH_SECS: u32 = 5;

/// Everything the page shows, read by the handler.
pub struct Dashboard<'a> {
    pub hostname: &'a str,
    pub now: SystemTime,
    /// Queued messages, oldest first.
    pub msgs: &'a [MessageSummary],
    pub last_hour: Option<&'a LastHour>,
    pub waves: &'a [WaveStatus],
    /// Configured backfill jobs and their last report (`None`: never run).
    pub backfill: &'a [(String, Option<JobReport>)],
    /// Newest first.
    pub alerts: &'a [AlertEvent],
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top}\
.tiles{display:flex;gap:1em;flex-wrap:wrap}.tile{border:1px solid #ccc;border-radius:6px;padding:.5em 1em}.tile b{font-size:1.4em;display:block}\
.charts{display:flex;flex-wrap:wrap;gap:1em}.chart,.timeline{background:#fafafa;border:1px solid #ddd}\
.axis{stroke:#999}.tick{font-size:10px;fill:#666}polyline{stroke-width:1.6}\
.s-accepted{stroke:#1f77b4}.s-delivered{stroke:#2ca02c}.s-deferred{stroke:#ff7f0e}.s-bounced{stroke:#d62728}\
.l-accepted{background:#1f77b4}.l-delivered{background:#2ca02c}.l-deferred{background:#ff7f0e}.l-bounced{background:#d62728}\
.legend span{margin-right:1em}.legend i{display:inline-block;width:1em;height:.3em;margin-right:.3em;vertical-align:middle}\
.wave{fill:#9ecae1}.wave.active{fill:#31a354}.wave.ended{fill:#bbb}.wave.always{fill:#c7e9c0}\
.now-marker{stroke:#d62728;stroke-width:2}.now-label{fill:#d62728}\
.ok{color:#2ca02c}.bad{color:#d62728}.warn{color:#e6550d}\
progress{width:8em}footer{margin-top:2em;color:#666;font-size:.9em}";

const SCRIPT: &str = "(function(){var n=0;function tick(){fetch(location.pathname,{cache:'no-store',credentials:'same-origin'})\
.then(function(r){if(!r.ok)throw new Error(r.status);return r.text()})\
.then(function(t){var d=new DOMParser().parseFromString(t,'text/html');var m=d.querySelector('main');\
if(m){document.querySelector('main').replaceWith(m);n++;document.body.setAttribute('data-refreshed',String(n));}\
document.body.removeAttribute('data-refresh-error')})\
.catch(function(e){document.body.setAttribute('data-refresh-error',String(e))})}\
setInterval(tick,REFRESH_MS);document.body.setAttribute('data-live','1')})();";

/// Render the whole page.
pub fn render(d: &Dashboard<'_>) -> String {
    let mut h = String::with_capacity(16 << 10);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cutover on {host}</title>\
         <noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript><style>{STYLE}</style></head><body>\
         <h1>cutover on {host}</h1><main>",
        host = esc(d.hostname),
    );
    summary(&mut h, d);
    charts(&mut h, d.last_hour);
    queue_tables(&mut h, d.msgs, d.now);
    waves(&mut h, d.waves, crate::time::unix_secs(d.now) as i64);
    backfill(&mut h, d.backfill);
    alerts(&mut h, d.alerts);
    oldest_messages(&mut h, d.msgs, d.now);
    let _ = writeln!(
        h,
        "<footer>As of {}. JSON: <a href=\"/api/queue\">/api/queue</a> · <a href=\"/api/waves\">/api/waves</a> · \
         <a href=\"/api/alerts\">/api/alerts</a> · metrics: <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/healthz\">/healthz</a></footer></main><script>{}</script></body></html>",
        crate::time::rfc3339_secs(crate::time::unix_secs(d.now) as i64),
        SCRIPT.replace("REFRESH_MS", &(REFRESH_SECS * 1000).to_string()),
    );
    h
}

fn deferred_legs(msgs: &[MessageSummary]) -> impl Iterator<Item = (&MessageSummary, usize)> {
    msgs.iter().flat_map(|m| {
        m.legs
            .iter()
            .enumerate()
            .filter(|(_, l)| l.state == LegState::Deferred)
            .map(move |(i, _)| (m, i))
    })
}

fn summary(h: &mut String, d: &Dashboard<'_>) {
    let pending: usize = d
        .msgs
        .iter()
        .flat_map(|m| &m.legs)
        .filter(|l| !l.state.is_final())
        .count();
    let deferred = deferred_legs(d.msgs).count();
    let oldest = deferred_legs(d.msgs)
        .map(|(m, _)| crate::time::age_secs(d.now, m.received_at))
        .max()
        .unwrap_or(0);
    let firing = firing_alerts(d.alerts).len();
    let _ = write!(
        h,
        "<div class=\"tiles\"><div class=\"tile\" id=\"t-messages\"><b>{}</b>messages queued</div>\
         <div class=\"tile\" id=\"t-pending\"><b>{pending}</b>legs pending</div>\
         <div class=\"tile\" id=\"t-deferred\"><b>{deferred}</b>legs deferred</div>\
         <div class=\"tile\" id=\"t-oldest\"><b>{}</b>oldest deferred</div>\
         <div class=\"tile\" id=\"t-alerts\"><b class=\"{}\">{firing}</b>alerts firing</div></div>",
        d.msgs.len(),
        human_age(oldest),
        if firing > 0 { "bad" } else { "ok" },
    );
}

fn human_age(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn charts(h: &mut String, last_hour: Option<&LastHour>) {
    h.push_str("<h2>Last hour by target</h2><p class=\"legend\">");
    for k in ["accepted", "delivered", "deferred", "bounced"] {
        let _ = write!(h, "<span><i class=\"l-{k}\"></i>{k}</span>");
    }
    h.push_str("</p><div class=\"charts\" id=\"charts\">");
    let Some(lh) = last_hour.filter(|l| !l.targets.is_empty()) else {
        h.push_str("<p>No delivery engine figures yet.</p></div>");
        return;
    };
    for t in &lh.targets {
        type Pick = fn(&crate::telemetry::MinuteCounts) -> u64;
        let kinds: [(&str, Pick); 4] = [
            ("accepted", |b| b.accepted),
            ("delivered", |b| b.delivered),
            ("deferred", |b| b.deferred),
            ("bounced", |b| b.bounced),
        ];
        let series: Vec<Series<'_>> = kinds
            .iter()
            .map(|(name, f)| Series {
                name,
                values: t.buckets.iter().map(f).collect(),
            })
            .collect();
        let _ = write!(
            h,
            "<figure data-target=\"{name}\"><figcaption>{name}</figcaption>{}</figure>",
            chart::lines(
                &format!("target {}", t.target),
                &series,
                lh.bucket_starts.len()
            ),
            name = esc(&t.target),
        );
    }
    h.push_str("</div>");
}

fn queue_tables(h: &mut String, msgs: &[MessageSummary], now: SystemTime) {
    let mut by: BTreeMap<(&str, &'static str), (usize, usize)> = BTreeMap::new();
    for l in msgs.iter().flat_map(|m| &m.legs) {
        let state = if l.held && !l.state.is_final() {
            "held"
        } else {
            l.state.as_str()
        };
        let e = by.entry((l.target.as_str(), state)).or_default();
        e.0 += 1;
        e.1 += l.recipients.len();
    }
    h.push_str("<h2>Queue by target and state</h2><table id=\"queue-by-target\"><tr><th>target</th><th>state</th><th>legs</th><th>recipients</th></tr>");
    if by.is_empty() {
        h.push_str("<tr><td colspan=\"4\">The queue is empty.</td></tr>");
    }
    for ((t, s), (legs, rcpts)) in &by {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{s}</td><td>{legs}</td><td>{rcpts}</td></tr>",
            esc(t)
        );
    }
    h.push_str("</table><h2>Oldest deferred</h2><table id=\"oldest-deferred\"><tr><th>id</th><th>age</th><th>target</th><th>recipients</th><th>attempts</th><th>next try</th><th>last reply</th></tr>");
    let mut rows: Vec<_> = deferred_legs(msgs).collect();
    rows.sort_by_key(|(m, _)| m.received_at);
    if rows.is_empty() {
        h.push_str("<tr><td colspan=\"7\">Nothing deferred.</td></tr>");
    }
    for (m, i) in rows.into_iter().take(20) {
        let Some(l) = m.legs.get(i) else { continue };
        let next = l
            .next_attempt
            .map(|t| format!("in {}", human_age(crate::time::age_secs(t, now))))
            .unwrap_or_default();
        let rcpts: Vec<String> = l.recipients.iter().map(|r| esc(&r.address)).collect();
        let _ = write!(
            h,
            "<tr><td><a href=\"/api/queue/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{next}</td><td class=\"reply\">{}</td></tr>",
            human_age(crate::time::age_secs(now, m.received_at)),
            esc(&l.target),
            rcpts.join("<br>"),
            l.attempts,
            esc(l.last_reply().unwrap_or("")),
            id = esc(&m.id.0),
        );
    }
    h.push_str("</table>");
}

/// Epoch seconds of an RFC 3339 instant the waves module wrote.
fn epoch(t: Option<&str>) -> Option<i64> {
    let t = crate::config::values::Timestamp::parse(t?).ok()?;
    Some(crate::time::unix_secs(t.0) as i64)
}

fn waves(h: &mut String, waves: &[WaveStatus], now: i64) {
    h.push_str("<h2>Waves</h2>");
    if waves.is_empty() {
        h.push_str("<p>No routing rules.</p>");
        return;
    }
    let spans: Vec<Span<'_>> = waves
        .iter()
        .map(|w| Span {
            name: &w.wave.name,
            from: epoch(w.wave.active_from.as_deref()),
            until: epoch(w.wave.active_until.as_deref()),
            state: w.wave.state.as_str(),
        })
        .collect();
    h.push_str(&chart::timeline(&spans, now));
    h.push_str("<table id=\"waves\"><tr><th>wave</th><th>deliver</th><th>window</th><th>state</th><th>next switch</th><th>backfill</th><th>verdict</th></tr>");
    for w in waves {
        let verdict = if w.verdict.ready {
            "<span class=\"ok\">ready</span>".to_string()
        } else {
            let reasons: Vec<String> = w.verdict.reasons.iter().map(|r| esc(r)).collect();
            format!(
                "<span class=\"bad\">not ready</span>: {}",
                reasons.join("; ")
            )
        };
        let next = w.wave.next_switch.as_ref().map_or("none".to_string(), |n| {
            let changes: Vec<String> = n.changes.iter().map(|c| esc(&c.text)).collect();
            format!(
                "{} (in {})<br>{}",
                esc(&n.at),
                human_age(n.in_secs),
                changes.join("<br>")
            )
        });
        let b = &w.backfill;
        let _ = write!(
            h,
            "<tr data-wave=\"{name}\"><td>{name}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{next}</td>\
             <td>{}/{} converged</td><td>{verdict}</td></tr>",
            esc(&w.wave.deliver.join(", ")),
            esc(w.wave.active_from.as_deref().unwrap_or("always")),
            esc(w.wave.active_until.as_deref().unwrap_or("open")),
            w.wave.state.as_str(),
            b.converged,
            b.mailboxes,
            name = esc(&w.wave.name),
        );
    }
    h.push_str("</table>");
}

/// Per mailbox: (messages handled, messages considered) over its folders.
fn handled(m: &MailboxReport) -> (u64, u64) {
    let total: u64 = m.folders.iter().map(|f| f.source_count).sum();
    let done: u64 = m
        .folders
        .iter()
        .map(|f| f.copied + f.skipped.values().sum::<u64>() + f.failed.len() as u64)
        .sum();
    (done.min(total), total)
}

fn backfill(h: &mut String, jobs: &[(String, Option<JobReport>)]) {
    h.push_str("<h2>Backfill</h2>");
    if jobs.is_empty() {
        h.push_str("<p>No backfill jobs configured.</p>");
        return;
    }
    for (name, report) in jobs {
        let Some(r) = report else {
            let _ = write!(h, "<h3 data-job=\"{n}\">{n}: never run</h3>", n = esc(name));
            continue;
        };
        let state = if r.running { "running" } else { "finished" };
        // Totals from the mailboxes: a running pass has not summed them up yet.
        let copied: u64 = r.mailboxes.iter().map(|m| m.copied).sum();
        let failed: u64 = r.mailboxes.iter().map(failures).sum();
        let _ = write!(
            h,
            "<h3 data-job=\"{n}\">{n}: {state}, started {}{} — {} copied, {} failed, <span class=\"{}\">{}</span></h3>\
             <table class=\"backfill\" data-job=\"{n}\"><tr><th>mailbox</th><th>direction</th><th>progress</th><th>copied</th>\
             <th>speed</th><th>errors</th><th title=\"TNEF converted · skipped by policy (size limit, Gmail label elsewhere) · mapped (labels)\">converted · skipped · mapped</th><th>converged</th></tr>",
            esc(&r.started),
            r.finished
                .as_deref()
                .map(|f| format!(", finished {}", esc(f)))
                .unwrap_or_default(),
            copied,
            failed,
            if r.converged { "ok" } else { "bad" },
            if r.converged {
                "converged"
            } else {
                "not converged"
            },
            n = esc(name),
        );
        for m in &r.mailboxes {
            mailbox_row(h, m);
        }
        h.push_str("</table>");
    }
}

/// Messages refused, folders failed as a whole, and a failed mailbox.
fn failures(m: &MailboxReport) -> u64 {
    m.folders
        .iter()
        .map(|f| f.failed.len() as u64 + u64::from(f.error.is_some()))
        .sum::<u64>()
        + u64::from(m.error.is_some())
}

fn mailbox_row(h: &mut String, m: &MailboxReport) {
    let (done, total) = handled(m);
    let secs = (m.duration_ms as f64 / 1000.0).max(0.001);
    let failures = failures(m);
    let rate = if m.copied + failures == 0 {
        0.0
    } else {
        100.0 * failures as f64 / (m.copied + failures) as f64
    };
    let err = m
        .error
        .as_deref()
        .map(|e| format!("<br>{}", esc(e)))
        .unwrap_or_default();
    let _ = write!(
        h,
        "<tr data-mailbox=\"{src}\"><td>{src} → {dst}</td><td>{}</td>\
         <td><progress max=\"{total}\" value=\"{done}\"></progress> {done}/{total}</td><td>{} ({:.1} MB)</td>\
         <td>{:.1} msg/s, {:.2} MB/s</td><td>{failures} ({rate:.1}%){err}</td>\
         <td class=\"policy\">{} · {} · {}</td><td class=\"{}\">{}</td></tr>",
        esc(&m.direction),
        m.copied,
        m.bytes as f64 / 1e6,
        m.copied as f64 / secs,
        m.bytes as f64 / 1e6 / secs,
        m.converted,
        m.skipped_by_policy,
        m.mapped,
        if m.converged { "ok" } else { "bad" },
        if m.converged { "yes" } else { "no" },
        src = esc(&m.source_user),
        dst = esc(&m.destination_user),
    );
}

/// Rules whose latest event is `firing`.
fn firing_alerts(alerts: &[AlertEvent]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    alerts
        .iter()
        .filter(|a| seen.insert(a.alert.as_str()))
        .filter(|a| a.status == Status::Firing)
        .map(|a| a.alert.as_str())
        .collect()
}

fn alerts(h: &mut String, alerts: &[AlertEvent]) {
    h.push_str("<h2>Recent alerts</h2><table id=\"alerts\"><tr><th>when</th><th>alert</th><th>status</th><th>text</th></tr>");
    if alerts.is_empty() {
        h.push_str("<tr><td colspan=\"4\">No alerts.</td></tr>");
    }
    for a in alerts.iter().take(50) {
        let _ = write!(
            h,
            "<tr data-alert=\"{rule}\"><td>{}</td><td>{rule}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&a.at),
            if a.status == Status::Firing {
                "bad"
            } else {
                "ok"
            },
            a.status.as_str(),
            esc(&a.text),
            rule = esc(&a.alert),
        );
    }
    h.push_str("</table>");
}

fn oldest_messages(h: &mut String, msgs: &[MessageSummary], now: SystemTime) {
    h.push_str("<h2>Oldest messages</h2><table id=\"messages\"><tr><th>id</th><th>age</th><th>from</th><th>size</th><th>legs</th></tr>");
    for m in msgs.iter().take(100) {
        let legs: Vec<String> = m
            .legs
            .iter()
            .map(|l| {
                let last = l
                    .last_reply()
                    .map(|r| format!(" ({})", esc(r)))
                    .unwrap_or_default();
                let state = if l.held { "held" } else { l.state.as_str() };
                format!("{} {state} {}{last}", esc(&l.target), l.recipients.len())
            })
            .collect();
        let from = if m.mail_from.is_empty() {
            "&lt;&gt;".to_string()
        } else {
            esc(&m.mail_from)
        };
        let _ = write!(
            h,
            "<tr><td><a href=\"/api/queue/{id}\">{id}</a></td><td>{}</td><td>{from}</td><td>{}</td><td>{}</td></tr>",
            human_age(crate::time::age_secs(now, m.received_at)),
            m.size,
            legs.join("<br>"),
            id = esc(&m.id.0)
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty<'a>(now: SystemTime) -> Dashboard<'a> {
        Dashboard {
            hostname: "mx<1>",
            now,
            msgs: &[],
            last_hour: None,
            waves: &[],
            backfill: &[],
            alerts: &[],
        }
    }

    #[test]
    fn empty_dashboard_renders_and_escapes() {
        let page = render(&empty(SystemTime::now()));
        assert!(page.contains("cutover on mx&lt;1&gt;"));
        assert!(page.contains("The queue is empty."));
        assert!(page.contains("href=\"/metrics\""));
        assert!(page.contains("<main>") && page.contains("</main><script>"));
    }

    #[test]
    fn backfill_and_alerts_sections() {
        let mut r = JobReport {
            job: "w1".into(),
            running: true,
            ..Default::default()
        };
        r.mailboxes.push(MailboxReport {
            source_user: "alice".into(),
            destination_user: "alice".into(),
            direction: "forward".into(),
            copied: 9,
            converted: 2,
            skipped_by_policy: 1,
            duration_ms: 3000,
            folders: vec![crate::backfill::report::FolderReport {
                source_count: 20,
                copied: 9,
                skipped: BTreeMap::from([("present".to_string(), 1)]),
                failed: vec![crate::backfill::report::Failure {
                    uid: 3,
                    reply: "NO x".into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let jobs = [("w1".to_string(), Some(r)), ("w2".to_string(), None)];
        let event = |at: u64, status: Status, text: &str| AlertEvent {
            at: crate::time::rfc3339_secs(at as i64),
            at_unix: at,
            alert: "a".into(),
            condition: "target_unreachable".into(),
            status,
            text: text.into(),
            details: serde_json::Value::Null,
        };
        let alerts = [
            event(2, Status::Resolved, "ok <now>"),
            event(1, Status::Firing, "down"),
        ];
        let d = Dashboard {
            backfill: &jobs,
            alerts: &alerts,
            ..empty(SystemTime::now())
        };
        let page = render(&d);
        assert!(page.contains("<progress max=\"20\" value=\"11\"></progress> 11/20"));
        assert!(page.contains("3.0 msg/s"));
        assert!(page.contains("1 (10.0%)"));
        assert!(page.contains("w2: never run"));
        assert!(
            page.contains("<td class=\"policy\">2 · 1 · 0</td>"),
            "{page}"
        );
        assert!(page.contains("ok &lt;now&gt;"));
        assert!(
            firing_alerts(&alerts).is_empty(),
            "the latest event of `a` resolved it"
        );
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(61), "1m");
        assert_eq!(human_age(3_700), "1h01m");
        assert_eq!(human_age(90_000), "1d1h");
    }
}
