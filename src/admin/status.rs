//! The `/` status page: a small, dependency-free HTML view of the queue (counts by target and
//! leg state, the oldest messages) with links to the JSON API and metrics. Read-only.

use crate::queue::model::MessageSummary;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::SystemTime;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Render the page for `msgs` (oldest first) as of `now`.
pub fn render(hostname: &str, msgs: &[MessageSummary], now: SystemTime) -> String {
    let mut by: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    for m in msgs {
        for l in &m.legs {
            let state = if l.held { "held" } else { l.state.as_str() };
            *by.entry((l.target.clone(), state)).or_default() += 1;
        }
    }
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>cutover on {host}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}</style></head><body>\
         <h1>cutover on {host}</h1><p>{n} message(s) in the queue. \
         JSON: <a href=\"/api/queue\">/api/queue</a> · metrics: <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/healthz\">/healthz</a></p><h2>Legs by target and state</h2>\
         <table><tr><th>target</th><th>state</th><th>legs</th></tr>",
        host = esc(hostname),
        n = msgs.len()
    );
    for ((t, s), n) in &by {
        let _ = write!(h, "<tr><td>{}</td><td>{s}</td><td>{n}</td></tr>", esc(t));
    }
    h.push_str("</table><h2>Oldest messages</h2><table><tr><th>id</th><th>age</th><th>from</th><th>size</th><th>legs</th></tr>");
    for m in msgs.iter().take(100) {
        let age = crate::time::age_secs(now, m.received_at);
        let legs: Vec<String> = m
            .legs
            .iter()
            .map(|l| {
                let last = l
                    .last_reply()
                    .map(|r| format!(" ({})", esc(r)))
                    .unwrap_or_default();
                format!(
                    "{} {} {}{last}",
                    esc(&l.target),
                    if l.held { "held" } else { l.state.as_str() },
                    l.recipients.len()
                )
            })
            .collect();
        let from = if m.mail_from.is_empty() {
            "&lt;&gt;".to_string()
        } else {
            esc(&m.mail_from)
        };
        let _ = write!(
            h,
            "<tr><td><a href=\"/api/queue/{id}\">{id}</a></td><td>{age}s</td><td>{from}</td><td>{}</td><td>{}</td></tr>",
            m.size,
            legs.join("<br>"),
            id = esc(&m.id.0)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_queue_renders_and_escapes() {
        let page = super::render("mx<1>", &[], std::time::SystemTime::now());
        assert!(page.contains("cutover on mx&lt;1&gt;"));
        assert!(page.contains("0 message(s)"));
        assert!(page.contains("href=\"/metrics\""));
    }
}
