//! `cutover wave list|status`: the routing rules as waves (windows, next switch, what moves),
//! and one wave's readiness (members' routes now and after the switch, pending legs, backfill
//! convergence, the verdict). Reads the config, the queue the way `queue list` does (a running
//! gateway's admin API or a stopped one's store) and the backfill reports; the figures come from
//! `cutover::waves` (the same as `/api/waves`). Human output only here; never changes anything.

use super::ConfigArg;
use super::queue_cmd::escape;
use anyhow::Context;
use clap::Subcommand;
use cutover::config::values::Timestamp;
use cutover::waves::{
    self, BackfillCounts, MailboxBackfill, Overview, Pending, Verdict, WaveStatus, WaveWindow,
    span_text, targets_text,
};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::SystemTime;

/// The options every `wave` command takes.
#[derive(clap::Args, Debug)]
pub struct WaveOpts {
    #[command(flatten)]
    config: ConfigArg,
    /// Evaluate at this instant (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339", value_parser = Timestamp::parse)]
    at: Option<Timestamp>,
    /// Print JSON (the same as the admin API's GET /api/waves and /api/waves/NAME).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum WaveCmd {
    /// Every routing rule as a wave: its window (from → until, active now or not), its next
    /// switch and what moves then, pending legs, backfill convergence and the verdict.
    List(WaveOpts),
    /// One wave: for each member, where mail goes now and after the switch, the legs still
    /// pending for it and its mailbox's backfill; then ready to switch or not, with the reasons.
    #[command(
        after_help = "Exit status: 0 ready to switch, 1 not ready (or an error), 2 no such wave."
    )]
    Status {
        /// The wave: a `[[routing.rule]]` name.
        name: String,
        #[command(flatten)]
        opts: WaveOpts,
    },
}

pub fn run(cmd: WaveCmd) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: WaveCmd) -> anyhow::Result<ExitCode> {
    let (WaveOpts { config, at, json }, name) = match &cmd {
        WaveCmd::List(opts) => (opts, None),
        WaveCmd::Status { opts, name } => (opts, Some(name.as_str())),
    };
    let json = *json;
    let loaded = match super::load_config(&config.config)? {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let cfg = &loaded.config;
    let routes = &loaded.router;
    if let Some(name) = name
        && !routes.rules().iter().any(|r| r.name == name)
    {
        eprintln!(
            "cutover: no wave named {:?} in {} (waves are [[routing.rule]] names: {})",
            escape(name),
            config.config.display(),
            waves::load::names(routes)
        );
        return Ok(ExitCode::from(2));
    }
    let queue = super::queue_cmd::summaries(cfg).await?;
    let now = at.map_or_else(SystemTime::now, |t| t.0);
    let Some(name) = name else {
        print(
            json,
            &waves::load::overview(cfg, routes, &queue, now),
            render_list,
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    let s = waves::load::status(cfg, routes, &queue, name, now)
        .with_context(|| format!("wave {name:?} vanished from the routing table"))?;
    print(json, &s, render_status)?;
    Ok(if s.verdict.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print<T: serde::Serialize>(json: bool, v: &T, text: fn(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", text(v));
    }
    Ok(())
}

/// `2026-12-01T18:00:00Z → (no end)`, `always`.
fn window_text(w: &WaveWindow) -> String {
    match (&w.active_from, &w.active_until) {
        (None, None) => "always".into(),
        (f, u) => format!(
            "{} → {}",
            f.as_deref().unwrap_or("(no start)"),
            u.as_deref().unwrap_or("(no end)")
        ),
    }
}

fn state_text(w: &WaveWindow) -> &'static str {
    match w.state {
        waves::WindowState::Always => "always",
        waves::WindowState::Scheduled => "scheduled",
        waves::WindowState::Active => "active",
        waves::WindowState::Ended => "ended",
    }
}

fn verdict_mark(v: &Verdict) -> String {
    if v.ready {
        "✔ ready".into()
    } else {
        format!("✘ not ready ({} reason(s))", v.reasons.len())
    }
}

fn switch_lines(out: &mut String, w: &WaveWindow, indent: &str) {
    let Some(s) = &w.next_switch else {
        return;
    };
    let kind = match s.kind {
        waves::SwitchKind::Starts => "starts",
        waves::SwitchKind::Ends => "ends",
    };
    let _ = writeln!(
        out,
        "{indent}next switch: {kind} {} (in {})",
        s.at,
        span_text(s.in_secs)
    );
    if s.changes.is_empty() {
        let _ = writeln!(out, "{indent}  nothing moves for its members");
    }
    for c in &s.changes {
        let _ = writeln!(out, "{indent}  {}", escape(&c.text));
    }
}

fn backfill_text(b: &BackfillCounts) -> String {
    if b.mailboxes == 0 {
        return "no backfill mailboxes".into();
    }
    let mut s = format!("{}/{} mailbox(es) converged", b.converged, b.mailboxes);
    for (n, what) in [
        (b.failed, "failed"),
        (b.not_converged, "not converged"),
        (b.in_progress, "in progress"),
        (b.never_run, "never run"),
    ] {
        if n > 0 {
            let _ = write!(s, ", {n} {what}");
        }
    }
    s
}

fn pending_text(p: &Pending) -> String {
    if p.legs == 0 {
        return "no pending legs".into();
    }
    let by: Vec<String> = p
        .by_target
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    let mut s = format!("{} pending leg(s) ({}", p.legs, by.join(", "));
    if p.deferred > 0 {
        let _ = write!(s, "; {} deferred", p.deferred);
    }
    if p.held > 0 {
        let _ = write!(s, "; {} held", p.held);
    }
    s.push(')');
    if let (Some(o), Some(age)) = (&p.oldest, p.oldest_age_secs) {
        let _ = write!(s, ", oldest {o} ({} ago)", span_text(age));
    }
    s
}

/// `cutover wave list`.
pub fn render_list(o: &Overview) -> String {
    let mut out = format!("waves at {}", o.at);
    match &o.next_switch {
        Some(n) => {
            let _ = writeln!(
                out,
                "; next switch: {} at {} (in {})",
                escape(&n.wave),
                n.at,
                span_text(n.in_secs)
            );
        }
        None => out.push_str("; no switch ahead\n"),
    }
    if o.waves.is_empty() {
        out.push_str("no [[routing.rule]] in the configuration\n");
    }
    let width = o.waves.iter().map(|w| w.wave.name.len()).max().unwrap_or(0);
    for w in &o.waves {
        let _ = writeln!(
            out,
            "\n{:<width$}  {:<9}  {}  deliver {}  {}",
            escape(&w.wave.name),
            state_text(&w.wave),
            window_text(&w.wave),
            targets_text(&w.wave.deliver),
            verdict_mark(&w.verdict)
        );
        switch_lines(&mut out, &w.wave, "    ");
        let _ = writeln!(
            out,
            "    {} address(es), {} pattern(s); {}; backfill: {}",
            w.addresses,
            w.patterns,
            pending_text(&w.pending),
            backfill_text(&w.backfill)
        );
    }
    out
}

fn mailbox_cell(b: &[MailboxBackfill]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    let cells: Vec<String> = b
        .iter()
        .map(|m| {
            let state = serde_json::to_value(m.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
                .replace('_', " ");
            let mut s = format!("{}: {state}", m.job);
            if m.failures > 0 {
                let _ = write!(s, ", {} failure(s)", m.failures);
            }
            if let Some(t) = &m.last_pass {
                let _ = write!(s, " ({t})");
            }
            s
        })
        .collect();
    cells.join("; ")
}

/// `cutover wave status NAME`.
pub fn render_status(s: &WaveStatus) -> String {
    let w = &s.wave;
    let mut out = format!(
        "wave {} (rule[{}]) at {}: {}, deliver {}\n",
        escape(&w.name),
        w.rule_index,
        s.at,
        state_text(w),
        targets_text(&w.deliver)
    );
    let _ = writeln!(out, "  window:   {}", window_text(w));
    switch_lines(&mut out, w, "  ");
    let _ = writeln!(
        out,
        "  members:  {} address(es), {} pattern(s); {} move at the switch",
        s.members.len(),
        s.patterns.len(),
        s.moving
    );
    let _ = writeln!(out, "  pending:  {}", pending_text(&s.pending));
    let _ = writeln!(out, "  backfill: {}", backfill_text(&s.backfill));
    member_table(&mut out, s);
    verdict_lines(&mut out, &s.verdict);
    out
}

fn member_table(out: &mut String, s: &WaveStatus) {
    if s.members.is_empty() && s.patterns.is_empty() {
        return;
    }
    let aw = s
        .members
        .iter()
        .map(|m| m.address.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let side = |t: &[String]| {
        if t.is_empty() {
            "unrouted".to_string()
        } else {
            targets_text(t)
        }
    };
    let _ = writeln!(
        out,
        "\n  {:<aw$}  {:<12} {:<12} {:<8} backfill",
        "address", "now", "after", "pending"
    );
    for m in &s.members {
        let _ = writeln!(
            out,
            "  {:<aw$}  {:<12} {:<12} {:<8} {}",
            escape(&m.address),
            side(&m.now.targets),
            side(&m.after.targets),
            if m.pending.legs == 0 {
                "-".to_string()
            } else {
                m.pending.legs.to_string()
            },
            mailbox_cell(&m.backfill)
        );
    }
    for p in &s.patterns {
        let _ = write!(out, "  {}", escape(&p.summary));
        if p.backfill.mailboxes > 0 {
            let _ = write!(out, " — {}", backfill_text(&p.backfill));
        }
        out.push('\n');
    }
}

fn verdict_lines(out: &mut String, v: &Verdict) {
    if v.ready {
        out.push_str("\n✔ ready to switch\n");
    } else {
        out.push_str("\n✘ NOT ready to switch:\n");
    }
    for r in &v.reasons {
        let _ = writeln!(out, "  - {}", escape(r));
    }
    if !v.notes.is_empty() {
        out.push_str("notes:\n");
        for n in &v.notes {
            let _ = writeln!(out, "  - {}", escape(n));
        }
    }
}
