//! Progress display: indicatif bars on a TTY (overall, and one per active mailbox: messages,
//! bytes, rate, ETA), periodic `tracing` log lines otherwise. Counters are lock-free; the
//! display never blocks the copy. Never decides anything.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared counters of a run.
#[derive(Default)]
pub struct Counters {
    /// Messages planned for copying (grows as folders are indexed).
    pub planned: AtomicU64,
    pub planned_bytes: AtomicU64,
    pub copied: AtomicU64,
    pub bytes: AtomicU64,
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
    pub mailboxes_done: AtomicU64,
    pub mailboxes_total: AtomicU64,
}

/// The display of a run.
pub struct Progress {
    pub counters: Arc<Counters>,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    started: Instant,
}

/// A per-mailbox bar (no-op without a TTY).
pub struct MailboxBar {
    bar: Option<ProgressBar>,
    copied: u64,
    bytes: u64,
}

impl MailboxBar {
    pub fn plan(&mut self, msgs: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(msgs);
        }
    }
    pub fn copied(&mut self, bytes: u64) {
        self.copied += 1;
        self.bytes += bytes;
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("{}", indicatif::HumanBytes(self.bytes)));
        }
    }
    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress {
    pub fn new(force_quiet: bool) -> Progress {
        let tty = !force_quiet && std::io::stderr().is_terminal();
        let counters = Arc::new(Counters::default());
        if !tty {
            return Progress {
                counters,
                multi: None,
                overall: None,
                started: Instant::now(),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {pos}/{len} msgs {msg} {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("total");
        Progress {
            counters,
            multi: Some(multi),
            overall: Some(overall),
            started: Instant::now(),
        }
    }

    /// Bars are drawn (stderr is a terminal and not `--quiet`).
    pub fn is_tty(&self) -> bool {
        self.overall.is_some()
    }

    pub fn mailbox(&self, name: &str) -> MailboxBar {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(0));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {pos}/{len} msgs {msg} {per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(name.chars().take(10).collect::<String>());
            b
        });
        MailboxBar {
            bar,
            copied: 0,
            bytes: 0,
        }
    }

    /// Refresh the overall bar, or log a line (called periodically).
    pub fn tick(&self) {
        let c = &self.counters;
        let copied = c.copied.load(Ordering::Relaxed);
        let planned = c.planned.load(Ordering::Relaxed);
        let bytes = c.bytes.load(Ordering::Relaxed);
        match &self.overall {
            Some(b) => {
                b.set_length(planned);
                b.set_position(copied);
                b.set_message(format!("{}", indicatif::HumanBytes(bytes)));
            }
            None => {
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    copied,
                    planned,
                    bytes,
                    skipped = c.skipped.load(Ordering::Relaxed),
                    failed = c.failed.load(Ordering::Relaxed),
                    mailboxes_done = c.mailboxes_done.load(Ordering::Relaxed),
                    mailboxes_total = c.mailboxes_total.load(Ordering::Relaxed),
                    msgs_per_s = format!("{:.1}", copied as f64 / secs),
                    "backfill progress"
                );
            }
        }
    }

    /// Tick every `every` until `stop` resolves.
    pub async fn run_ticker(
        self: Arc<Self>,
        every: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut stop = stop;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => self.tick(),
                _ = stop.changed() => break,
            }
        }
        if let Some(b) = &self.overall {
            b.finish_and_clear();
        }
    }
}
