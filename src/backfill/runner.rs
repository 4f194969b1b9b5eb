//! The job runner: reads the mailbox list, keeps the mailboxes of this shard, runs
//! `concurrency` of them at once, and per mailbox (and direction) plans the folders, indexes
//! what changed since the last pass, applies ledger credits, copies with several connections
//! (folders in parallel), advances the per-folder state only after confirmed APPENDs, and
//! retries on server back-off or broken connections, pausing that account only. Never parses
//! IMAP itself (that is `session` / `imap_ops`).

use super::endpoint::{self, Access, Endpoint};
use super::imap_ops::{self, Assigned, Meta, Outcome, SrcIndex};
use super::index::{self, FolderDecision, Verdict};
use super::plan::{self, FolderPair, Listing};
use super::profile::{self, Home, Labels, Profile};
use super::progress::{MailboxBar, Progress};
use super::report::{Failure, FolderReport, JobReport, MailboxReport, MessageNote, now_rfc3339};
use super::state::{FolderState, State, job_dir};
use super::throttle::Backoff;
use super::transform::Transform;
use super::{BackfillError, Result};
use crate::config::{BackfillJob, Config, DedupeScope, Direction, ImapEndpoint};
use crate::fingerprint::FpKey;
use futures_util::FutureExt;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::Instrument;

/// Source UIDs copied between two state saves.
const SAVE_EVERY: usize = 1000;

/// Command-line options of `backfill run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Only this mailbox (source or destination user).
    pub mailbox: Option<String>,
    pub dry_run: bool,
    /// Also write the final report here.
    pub report: Option<PathBuf>,
    /// `(I, N)`: only mailboxes whose stable hash falls in shard I of N.
    pub shard: Option<(u32, u32)>,
    /// No progress bars even on a TTY.
    pub quiet: bool,
    /// Override the retry policy (tests).
    pub backoff: Option<Backoff>,
}

/// One line of `mailboxes_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxPair {
    pub source: String,
    pub destination: String,
}

/// Parse `source_user[,destination_user]` lines (`#` comments, blank lines ignored).
pub fn parse_mailboxes(text: &str) -> Vec<MailboxPair> {
    text.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split(',').map(str::trim);
            let s = it.next()?.to_string();
            if s.is_empty() {
                return None;
            }
            let d = it
                .next()
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| s.clone());
            Some(MailboxPair {
                source: s,
                destination: d,
            })
        })
        .collect()
}

/// Stable shard of a mailbox (FNV-1a of the lowercased source user).
pub fn shard_of(user: &str, n: u32) -> u32 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in user.to_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % u64::from(n.max(1))) as u32
}

/// Parse `I/N` (0-based I).
pub fn parse_shard(s: &str) -> std::result::Result<(u32, u32), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("--shard {s:?}: write I/N, e.g. 0/4"))?;
    let i: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("--shard {s:?}: bad I"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("--shard {s:?}: bad N"))?;
    if n == 0 || i >= n {
        return Err(format!("--shard {s:?}: need 0 <= I < N"));
    }
    Ok((i, n))
}

/// Where a pass reads the ledger's credits.
pub(super) enum LedgerSource {
    /// The gateway's sled db (`<state_dir>/db`), or its admin API while it holds the lock.
    Local {
        db: PathBuf,
        admin: SocketAddr,
        /// `admin.token_file`, for the admin API's ledger route.
        token: Option<crate::config::AdminToken>,
    },
    /// The fleet's PostgreSQL (`[ledger] url`), trusted once every gateway's outbox drained.
    Shared {
        db: crate::pgdb::PgDb,
        drain_wait: Duration,
    },
}

impl LedgerSource {
    /// The shared ledger when `[ledger] url` is set, else the local one.
    pub(super) fn of(config: &Config) -> Result<LedgerSource> {
        if config.ledger.shared() {
            let base = config.path.parent().unwrap_or(Path::new("."));
            let db = crate::pgdb::PgDb::new(&config.ledger, base)
                .map_err(|e| BackfillError::Ledger(e.into()))?;
            return Ok(LedgerSource::Shared {
                db,
                drain_wait: config.ledger.drain_wait.0,
            });
        }
        Ok(LedgerSource::Local {
            db: config.gateway.state_dir.join("db"),
            admin: config.admin.listen,
            token: config.admin.token.clone(),
        })
    }
}

/// Everything a mailbox task needs.
pub(super) struct Ctx {
    job: BackfillJob,
    src: Access,
    dst: Access,
    state: State,
    ledger: LedgerSource,
    progress: Arc<Progress>,
    dry_run: bool,
    backoff: Backoff,
    window: imap_ops::Window,
    /// What copies change on the way (`convert_tnef`).
    transform: Transform,
}

impl Ctx {
    /// The context of a pass of `job` keeping its state in `state`.
    pub(super) fn new(
        config: &Config,
        job: &BackfillJob,
        state: State,
        progress: Arc<Progress>,
        opts: &RunOptions,
    ) -> Result<Arc<Ctx>> {
        let base = config
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(Arc::new(Ctx {
            src: Access::new("source", &job.source, &base)?,
            dst: Access::new("destination", &job.destination, &base)?,
            window: (
                job.since.map(crate::time::date_epoch),
                job.before.map(crate::time::date_epoch),
            ),
            job: job.clone(),
            state,
            ledger: LedgerSource::of(config)?,
            progress,
            dry_run: opts.dry_run,
            backoff: opts.backoff.unwrap_or_default(),
            transform: Transform::new(job),
        }))
    }

    /// Whether this direction's pass applies ledger credits.
    fn credits_apply(&self, way: Way) -> bool {
        way == Way::Forward && self.job.dedupe_scope == DedupeScope::Mailbox
    }

    /// Fleet mode: the database time before a round reads the destination; the credits are
    /// applied once every gateway shipped what it recorded before it (`ledger::shared`).
    async fn ledger_mark(&self, way: Way) -> Result<Option<std::time::SystemTime>> {
        match &self.ledger {
            LedgerSource::Shared { db, .. } if self.credits_apply(way) => {
                let t = crate::ledger::shared::now(db)
                    .await
                    .map_err(|e| BackfillError::Ledger(e.into()))?;
                Ok(Some(t))
            }
            _ => Ok(None),
        }
    }

    /// The (source, destination) endpoints of a direction.
    fn endpoints(&self, way: Way) -> (&ImapEndpoint, &ImapEndpoint) {
        match way {
            Way::Forward => (&self.job.source, &self.job.destination),
            Way::Reverse => (&self.job.destination, &self.job.source),
        }
    }

    /// The (source, destination) access of a direction.
    fn sides(&self, way: Way) -> (&Access, &Access) {
        match way {
            Way::Forward => (&self.src, &self.dst),
            Way::Reverse => (&self.dst, &self.src),
        }
    }

    fn dst_endpoint(&self, way: Way) -> &ImapEndpoint {
        self.endpoints(way).1
    }

    /// The (source, destination) profiles of a direction.
    fn profiles(&self, way: Way) -> (&'static Profile, &'static Profile) {
        let (s, d) = self.endpoints(way);
        (Profile::of(s.profile), Profile::of(d.profile))
    }
}

/// The directory holding a job's state and report.
pub fn state_dir_of(config: &Config, job: &str, shard: Option<(u32, u32)>) -> PathBuf {
    job_dir(&config.gateway.state_dir, job, shard)
}

/// Find a job by name.
pub fn find_job<'a>(config: &'a Config, name: &str) -> Result<&'a BackfillJob> {
    config
        .backfill
        .jobs
        .iter()
        .find(|j| j.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = config
                .backfill
                .jobs
                .iter()
                .map(|j| j.name.as_str())
                .collect();
            BackfillError::Config(format!(
                "no [[backfill.job]] named {name:?} (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// The mailboxes a pass works on: the job's `mailboxes_file` (relative to `base`), narrowed
/// to `--mailbox` and to the shard.
pub(super) fn selected_mailboxes(
    job: &BackfillJob,
    base: &Path,
    opts: &RunOptions,
) -> Result<Vec<MailboxPair>> {
    let list_path = crate::config::resolve_path(base, &job.mailboxes_file);
    let text = std::fs::read_to_string(&list_path)
        .map_err(|e| BackfillError::Config(format!("{}: {e}", list_path.display())))?;
    let mut pairs = parse_mailboxes(&text);
    if let Some(m) = &opts.mailbox {
        pairs.retain(|p| p.source.eq_ignore_ascii_case(m) || p.destination.eq_ignore_ascii_case(m));
        if pairs.is_empty() {
            return Err(BackfillError::Config(format!(
                "mailbox {m:?} is not in {}",
                list_path.display()
            )));
        }
    }
    if let Some((i, n)) = opts.shard {
        pairs.retain(|p| shard_of(&p.source, n) == i);
    }
    Ok(pairs)
}

/// Run one pass of a job.
pub async fn run_job(config: &Config, job_name: &str, opts: RunOptions) -> Result<JobReport> {
    let job = find_job(config, job_name)?.clone();
    let base = config
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let pairs = selected_mailboxes(&job, &base, &opts)?;
    let dir = state_dir_of(config, job_name, opts.shard);
    std::fs::create_dir_all(&dir)
        .map_err(|e| BackfillError::Config(format!("{}: {e}", dir.display())))?;
    let state = State::open(&dir)?;
    let progress = Arc::new(Progress::new(opts.quiet));
    progress
        .counters
        .mailboxes_total
        .store(pairs.len() as u64, Ordering::Relaxed);
    let ctx = Ctx::new(config, &job, state, progress.clone(), &opts)?;

    let started = Instant::now();
    let report = Arc::new(Mutex::new(JobReport {
        job: job_name.to_string(),
        shard: opts.shard.map(|(i, n)| format!("{i}/{n}")),
        dry_run: opts.dry_run,
        started: now_rfc3339(),
        finished: None,
        running: true,
        ..Default::default()
    }));
    let report_path = dir.join("report.json");
    if !opts.dry_run {
        let _ = report.lock().await.write(&report_path);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let every = if progress.is_tty() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let ticker = tokio::spawn(progress.clone().run_ticker(every, stop_rx));

    let sem = Arc::new(tokio::sync::Semaphore::new(job.concurrency()));
    let mut tasks = tokio::task::JoinSet::new();
    for p in pairs {
        let ctx = ctx.clone();
        let sem = sem.clone();
        let report = report.clone();
        let report_path = report_path.clone();
        tasks.spawn(async move {
            let Ok(_permit) = sem.acquire_owned().await else {
                return;
            };
            let span =
                tracing::info_span!("mailbox", source = %p.source, destination = %p.destination);
            let reports = run_mailbox(&ctx, &p).instrument(span).await;
            ctx.progress
                .counters
                .mailboxes_done
                .fetch_add(1, Ordering::Relaxed);
            let mut r = report.lock().await;
            r.mailboxes.extend(reports);
            r.total();
            if !ctx.dry_run {
                let _ = r.write(&report_path);
            }
        });
    }
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "mailbox task failed");
        }
    }
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    progress.tick();

    let r = report.lock().await.clone();
    final_report(r, started, &report_path, &opts)
}

/// The pass's report once every mailbox is done: sorted, totalled, written to the job's
/// state (`report_path`, not on a dry run) and to `--report`.
fn final_report(
    mut r: JobReport,
    started: Instant,
    report_path: &Path,
    opts: &RunOptions,
) -> Result<JobReport> {
    r.mailboxes
        .sort_by(|a, b| (&a.source_user, &a.direction).cmp(&(&b.source_user, &b.direction)));
    r.running = false;
    r.finished = Some(now_rfc3339());
    r.duration_ms = started.elapsed().as_millis() as u64;
    r.total();
    if !opts.dry_run {
        let _ = r.write(report_path);
    }
    if let Some(p) = &opts.report {
        r.write(p)
            .map_err(|e| BackfillError::Config(format!("--report {}: {e}", p.display())))?;
    }
    Ok(r)
}

/// Which way a mailbox is being synchronised.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Forward,
    Reverse,
}

impl Way {
    fn key(self) -> &'static str {
        match self {
            Way::Forward => "fwd",
            Way::Reverse => "rev",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Way::Forward => "forward",
            Way::Reverse => "reverse",
        }
    }
    /// The configured sides acting as (source, destination) of this way: keys of the
    /// fingerprint cache, which belongs to a server account, not to a direction.
    fn sides(self) -> (&'static str, &'static str) {
        match self {
            Way::Forward => ("source", "destination"),
            Way::Reverse => ("destination", "source"),
        }
    }
}

pub(super) async fn run_mailbox(ctx: &Arc<Ctx>, p: &MailboxPair) -> Vec<MailboxReport> {
    let mut out = vec![sync(ctx, Way::Forward, &p.source, &p.destination).await];
    if ctx.job.direction == Direction::Both {
        out.push(sync(ctx, Way::Reverse, &p.destination, &p.source).await);
    }
    out
}

/// Per-run bookkeeping of one mailbox direction across retries.
#[derive(Default)]
struct Book {
    finished: HashMap<String, FolderReport>,
    failed: HashMap<String, String>,
    attempts: HashMap<String, u32>,
    /// Copy results so far per folder (kept across retries for the report).
    copied: HashMap<String, (u64, u64)>,
}

/// Synchronise one mailbox in one direction, retrying on back-off.
async fn sync(ctx: &Arc<Ctx>, way: Way, src_user: &str, dst_user: &str) -> MailboxReport {
    let started = Instant::now();
    let mut rep = MailboxReport {
        source_user: src_user.to_string(),
        destination_user: dst_user.to_string(),
        direction: way.name().to_string(),
        ..Default::default()
    };
    let book = Mutex::new(Book::default());
    let mut bar = ctx.progress.mailbox(src_user);
    let mut mailbox_attempts = 0u32;
    loop {
        // A panic in the IMAP client (imap-proto 0.17 panics on some malformed server
        // responses, found by fuzz/imap_responses) fails this attempt like a broken
        // connection, instead of ending the mailbox's task without a report entry.
        let attempt = round(ctx, way, src_user, dst_user, &book, &mut bar);
        let r = match std::panic::AssertUnwindSafe(attempt).catch_unwind().await {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err((
                    None,
                    BackfillError::Connection(format!(
                        "IMAP client failed on a server response: {what}"
                    )),
                ))
            }
        };
        match r {
            Ok(()) => break,
            Err((folder, e)) => {
                let mut b = book.lock().await;
                let key = folder.clone().unwrap_or_default();
                let n = {
                    let n = b.attempts.entry(key.clone()).or_default();
                    *n += 1;
                    *n
                };
                if !e.retryable() || n >= ctx.backoff.attempts {
                    tracing::warn!(folder = key, error = %e, "giving up");
                    match folder {
                        Some(f) => {
                            b.failed.insert(f, e.to_string());
                        }
                        None => {
                            rep.error = Some(e.to_string());
                            break;
                        }
                    }
                    continue;
                }
                mailbox_attempts += 1;
                rep.retries = mailbox_attempts;
                let hint = match &e {
                    BackfillError::Throttled { hint, .. } => *hint,
                    _ => None,
                };
                let pause = ctx.backoff.pause(n, hint);
                tracing::warn!(folder = key, error = %e, pause_ms = pause.as_millis() as u64, "pausing this account, then reconnecting");
                drop(b);
                tokio::time::sleep(pause).await;
            }
        }
    }
    bar.finish();
    let b = book.into_inner();
    let mut folders: Vec<FolderReport> = b.finished.into_values().collect();
    for (f, err) in b.failed {
        let (copied, bytes) = b.copied.get(&f).copied().unwrap_or_default();
        folders.push(FolderReport {
            folder: f,
            copied,
            bytes,
            error: Some(err),
            converged: false,
            ..Default::default()
        });
    }
    folders.sort_by(|a, b| a.folder.cmp(&b.folder));
    rep.copied = folders.iter().map(|f| f.copied).sum();
    rep.converted = folders.iter().map(|f| f.converted).sum();
    let notes = || folders.iter().flat_map(|f| &f.messages);
    rep.skipped_by_policy = notes().filter(|n| n.action == "skipped").count() as u64;
    rep.mapped = notes().filter(|n| n.action == "mapped").count() as u64;
    rep.bytes = folders.iter().map(|f| f.bytes).sum();
    rep.converged = rep.error.is_none() && folders.iter().all(|f| f.converged);
    rep.folders = folders;
    rep.duration_ms = started.elapsed().as_millis() as u64;
    rep
}

type RoundErr = (Option<String>, BackfillError);

/// A folder that needs copying this round.
struct Work {
    pair: FolderPair,
    src: SrcIndex,
    dst_uv: u32,
    src_modseq: u64,
    /// Destination messages whose flags differ from their source counterpart: (flags, UIDs).
    flag_groups: Vec<(String, Vec<u32>)>,
    decision: FolderDecision,
    started: Instant,
    /// MULTIAPPEND allowed: not after a failed attempt at this folder (Cyrus drops the
    /// connection when it refuses one message of a MULTIAPPEND, so the retry goes one by one).
    multiappend: bool,
    /// Per message: skipped by policy, mapped, converted (for the report).
    notes: Vec<MessageNote>,
    /// Gmail source, `gmail_labels = "keywords"`: X-GM-MSGID of the messages to copy.
    gmail_ids: HashMap<u32, u64>,
}

/// Create or subscribe the destination folders of `pairs` as planned. A name the destination
/// refuses to create gets a deterministic substitute ([`plan::substitute`]), noted in the pair
/// (and so in the report).
async fn prepare_destination(
    dst: &mut Endpoint,
    dst_list: &plan::Listing,
    pairs: &mut [FolderPair],
) -> std::result::Result<(), RoundErr> {
    let dst_subscribed: HashSet<&str> = dst_list
        .folders
        .iter()
        .filter(|f| f.subscribed)
        .map(|f| f.wire.as_str())
        .collect();
    for p in pairs.iter_mut() {
        let r = if p.create {
            create_or_substitute(dst, dst_list, p).await
        } else if p.subscribe && !dst_subscribed.contains(p.dst_wire.as_str()) {
            dst.subscribe(&p.dst_wire).await
        } else {
            Ok(())
        };
        r.map_err(|e| (Some(p.name.clone()), e))?;
    }
    Ok(())
}

/// CREATE the pair's destination folder; when refused, the substitutes in turn.
async fn create_or_substitute(
    dst: &mut Endpoint,
    dst_list: &plan::Listing,
    p: &mut FolderPair,
) -> Result<()> {
    let mut attempt = 0;
    loop {
        match dst.create(&p.dst_wire, p.subscribe).await {
            Err(BackfillError::Refused(reply)) if attempt < 2 => {
                attempt += 1;
                let name = plan::substitute(&p.dst_name, attempt);
                let (wire, _) = dst_list.wire(&name);
                tracing::warn!(folder = %p.name, refused = %p.dst_wire, substitute = %wire, %reply, "destination refused the folder name");
                p.note = Some(format!(
                    "renamed to {name:?}: the destination refused {:?} ({reply})",
                    p.dst_name
                ));
                p.dst_wire = wire;
                p.dst_name = name;
            }
            r => return r,
        }
    }
}

/// Phase 1 for one folder pair: `None` when nothing changed since the last pass (its report
/// goes to `book`), else its indexes, copy decision and flag differences.
async fn index_pair(
    ctx: &Arc<Ctx>,
    way: Way,
    src_user: &str,
    (src, dst): (&mut Endpoint, &mut Endpoint),
    p: FolderPair,
    home: Option<Home>,
    book: &Mutex<Book>,
) -> Result<Option<Work>> {
    let st = ctx.state.get(way.key(), src_user, &p.name).await?;
    let sst = src.status(&p.src_wire).await?;
    let (suv, snext) = (sst.uidvalidity, sst.uidnext);
    let dst_missing = ctx.dry_run && p.create;
    let duv = if dst_missing {
        0
    } else {
        dst.status(&p.dst_wire).await?.uidvalidity
    };
    // Flag changes on the source (CONDSTORE) re-examine a folder even without new mail.
    let flags_changed = sync_flags(ctx, way)
        && sst.modseq != 0
        && st.as_ref().is_some_and(|s| s.src_modseq != sst.modseq);
    let watermark = st
        .as_ref()
        .filter(|s| {
            s.src_uidvalidity == suv && s.dst_uidvalidity == duv && s.dst_wire == p.dst_wire
        })
        .map(|s| s.done_uid)
        .unwrap_or(0);
    if watermark > 0 && snext.saturating_sub(1) <= watermark && !flags_changed {
        // Nothing new since the last pass.
        let fr = unchanged_report(&p, st.unwrap_or_default());
        book.lock().await.finished.insert(p.name.clone(), fr);
        return Ok(None);
    }
    let started = Instant::now();
    let (src_tag, dst_tag) = way.sides();
    let (src_account, dst_account) = (src.user().to_string(), dst.user().to_string());
    let known = ctx.state.known(src_tag, &src_account, &p.src_wire)?;
    let mut src_idx = src
        .index_source(&p.src_wire, watermark, ctx.window, &known)
        .await?;
    drop(known);
    // Saved, then let go: the copy phase holds only the per-message index record.
    let learnt = std::mem::take(&mut src_idx.learnt);
    if !ctx.dry_run {
        ctx.state
            .learn(src_tag, &src_account, &p.src_wire, &learnt)?;
    }
    drop(learnt);
    let dst_idx = if dst_missing {
        imap_ops::DstIndex::default()
    } else {
        let known = ctx.state.known(dst_tag, &dst_account, &p.dst_wire)?;
        let idx = dst.index_destination(&p.dst_wire, &known).await?;
        if !ctx.dry_run {
            ctx.state
                .learn(dst_tag, &dst_account, &p.dst_wire, &idx.learnt)?;
        }
        idx
    };
    let mut decision = index::decide(&src_idx.msgs, &dst_idx.msgs);
    let mut notes = skip_too_large(ctx, way, &src_idx, &mut decision);
    let gmail_ids = match home {
        Some(h) => {
            let g = GmailFolder {
                wire: &p.src_wire,
                home: h,
                account: &src_account,
            };
            apply_gmail_labels_of_source(ctx, src, g, &mut src_idx, &mut decision, &mut notes)
                .await?
        }
        None => HashMap::new(),
    };
    let flag_groups = if sync_flags(ctx, way) {
        flag_differences(&decision, &src_idx, &dst_idx)
    } else {
        Vec::new()
    };
    let multiappend = !book.lock().await.attempts.contains_key(&p.name);
    Ok(Some(Work {
        pair: p,
        src: src_idx,
        dst_uv: dst_idx.uidvalidity,
        decision,
        started,
        src_modseq: sst.modseq,
        flag_groups,
        multiappend,
        notes,
        gmail_ids,
    }))
}

/// The report of a folder with nothing new since the last pass (`st`).
fn unchanged_report(p: &FolderPair, st: FolderState) -> FolderReport {
    let mut fr = FolderReport {
        folder: p.name.clone(),
        destination: p.dst_name.clone(),
        note: p.note.clone(),
        source_count: st.src_count,
        destination_count: st.dst_count,
        converged: st.converged,
        ..Default::default()
    };
    fr.skipped.insert("earlier_pass".into(), st.src_count);
    fr
}

/// Source flags win for paired messages (forward jobs): the differences, grouped by the
/// source's flags, as (flags, destination UIDs).
fn flag_differences(
    d: &FolderDecision,
    src: &SrcIndex,
    dst: &imap_ops::DstIndex,
) -> Vec<(String, Vec<u32>)> {
    let mut groups: HashMap<String, Vec<u32>> = HashMap::new();
    for (su, du) in &d.pairs {
        let (Some(sm), Some(df)) = (src.meta.get(su), dst.flags.get(du)) else {
            continue;
        };
        if sm.flags.set() != df.set() {
            groups.entry(sm.flags.list()).or_default().push(*du);
        }
    }
    groups.into_iter().collect()
}

/// Messages over the destination's size limit (its profile's, or `max_message_size`) are
/// skipped and reported, never retried: a provider refuses them every time.
fn skip_too_large(ctx: &Ctx, way: Way, src: &SrcIndex, d: &mut FolderDecision) -> Vec<MessageNote> {
    let ep = ctx.dst_endpoint(way);
    let Some(limit) = BackfillJob::max_message_size(ep) else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for (m, v) in src.msgs.iter().zip(d.verdicts.iter_mut()) {
        if matches!(*v, Verdict::Copy | Verdict::Missing) && u64::from(m.size) > limit {
            *v = Verdict::Skip;
            notes.push(MessageNote::new(
                m.uid,
                "skipped",
                "too_large",
                format!(
                    "{} bytes: over the destination's limit of {limit} bytes ({} profile / max_message_size)",
                    m.size,
                    Profile::of(ep.profile).name
                ),
            ));
        }
    }
    notes
}

/// A Gmail source folder being indexed.
struct GmailFolder<'a> {
    wire: &'a str,
    home: Home,
    account: &'a str,
}

/// Gmail source: read the labels of the messages to copy or already present, and keep a
/// message only where `gmail_labels` puts it (every label's folder, or its first label's with
/// the others as keywords; All Mail only for messages without a label). In keywords mode a
/// message copied by an earlier pass (by X-GM-MSGID) is never copied again. Returns the
/// X-GM-MSGIDs of the messages to copy (keywords mode), to record once copied.
async fn apply_gmail_labels_of_source(
    ctx: &Ctx,
    src: &mut Endpoint,
    g: GmailFolder<'_>,
    idx: &mut SrcIndex,
    d: &mut FolderDecision,
    notes: &mut Vec<MessageNote>,
) -> Result<HashMap<u32, u64>> {
    let mode = ctx.job.gmail_labels;
    let uids: Vec<u32> = idx
        .msgs
        .iter()
        .zip(&d.verdicts)
        .filter(|(_, v)| matches!(v, Verdict::Copy | Verdict::Present | Verdict::Missing))
        .map(|(m, _)| m.uid)
        .collect();
    let infos = src.gmail_labels(g.wire, &uids).await?;
    let own = g.home.label();
    let mut ids = HashMap::new();
    for (m, v) in idx.msgs.iter().zip(d.verdicts.iter_mut()) {
        let Some(info) = infos.get(&m.uid) else {
            continue;
        };
        let mut labels = info.labels.clone();
        if let Some(l) = &own
            && !labels.iter().any(|x| x.eq_ignore_ascii_case(l))
        {
            labels.push(l.clone());
        }
        match profile::placement(mode, &g.home, &labels) {
            // Missing: handled by an earlier pass, which skipped it here for the same reason.
            None if matches!(*v, Verdict::Copy | Verdict::Missing) => {
                *v = Verdict::Skip;
                notes.push(MessageNote::new(
                    m.uid,
                    "skipped",
                    "gmail_label_elsewhere",
                    format!(
                        "X-GM-MSGID {}: copied with its label {:?}",
                        info.msgid,
                        profile::homes(&labels).first()
                    ),
                ));
            }
            None => {}
            Some(keywords) => {
                if mode == Labels::Keywords && *v == Verdict::Copy {
                    if ctx.state.gmail_copied(g.account, info.msgid).await? {
                        *v = Verdict::Skip;
                        notes.push(MessageNote::new(
                            m.uid,
                            "skipped",
                            "gmail_copied",
                            format!("X-GM-MSGID {} was copied by an earlier pass", info.msgid),
                        ));
                        continue;
                    }
                    ids.insert(m.uid, info.msgid);
                }
                if !keywords.is_empty()
                    && let Some(meta) = idx.meta.get_mut(&m.uid)
                {
                    let names: Vec<String> = meta.flags.names().map(str::to_string).collect();
                    meta.flags = imap_ops::Flags::from_names(
                        names
                            .iter()
                            .map(String::as_str)
                            .chain(keywords.iter().map(String::as_str)),
                    );
                    if *v == Verdict::Copy {
                        notes.push(MessageNote::new(
                            m.uid,
                            "mapped",
                            "gmail_keywords",
                            format!("other labels as keywords: {}", keywords.join(" ")),
                        ));
                    }
                }
            }
        }
    }
    Ok(ids)
}

/// Phase 2: apply the ledger's credits (deliveries by cutover into the destination mailbox)
/// to the decisions of `work` (forward passes with a mailbox-wide dedupe scope).
async fn credit_ledger(
    ctx: &Ctx,
    way: Way,
    dst_user: &str,
    mark: Option<std::time::SystemTime>,
    work: &mut [Work],
) -> Result<()> {
    if !ctx.credits_apply(way) || work.is_empty() {
        return Ok(());
    }
    let target = ctx.job.ledger_target.as_deref();
    let found = match &ctx.ledger {
        LedgerSource::Local { db, admin, token } => {
            crate::ledger::credits_for_backfill(db, *admin, token.as_ref(), dst_user, target)
                .await?
        }
        LedgerSource::Shared { db, drain_wait } => {
            if let Some(mark) = mark {
                crate::ledger::shared::wait_drained(db, mark, *drain_wait).await?;
            }
            crate::ledger::shared::credits(db, dst_user, target)
                .await
                .map_err(|e| BackfillError::Ledger(e.into()))?
        }
    };
    let mut credits: HashMap<FpKey, usize> = HashMap::new();
    for (fp, n) in found {
        *credits.entry(fp.key()).or_default() += n;
    }
    if !credits.is_empty() {
        let mut refs: Vec<(&[index::SrcMsg], &mut FolderDecision)> = work
            .iter_mut()
            .map(|w| (w.src.msgs.as_slice(), &mut w.decision))
            .collect();
        index::apply_credits(&mut credits, &mut refs);
    }
    Ok(())
}

/// One attempt at the whole mailbox: connect, plan, index, credit, copy.
async fn round(
    ctx: &Arc<Ctx>,
    way: Way,
    src_user: &str,
    dst_user: &str,
    book: &Mutex<Book>,
    bar: &mut MailboxBar,
) -> std::result::Result<(), RoundErr> {
    let (src_side, dst_side) = ctx.sides(way);
    let whole = |e: BackfillError| (None, e);
    let mark = ctx.ledger_mark(way).await.map_err(whole)?;
    let (s, d) = tokio::join!(
        src_side.connect(src_user, &ctx.state),
        dst_side.connect(dst_user, &ctx.state)
    );
    let mut src = s.map_err(whole)?;
    let mut dst = d.map_err(whole)?;
    let Planned {
        mut pairs,
        homes,
        dst_list,
        gmail_dst,
    } = plan_round(ctx, way, (&mut src, &mut dst), book)
        .await
        .map_err(whole)?;

    if !ctx.dry_run {
        dst.prepare_root().await.map_err(whole)?;
        prepare_destination(&mut dst, &dst_list, &mut pairs).await?;
    }

    // Phase 1: which folders changed, and their indexes.
    let mut work: Vec<Work> = Vec::new();
    for p in pairs {
        let name = p.name.clone();
        let home = homes.get(&p.name).cloned();
        if let Some(w) = index_pair(ctx, way, src_user, (&mut src, &mut dst), p, home, book)
            .await
            .map_err(|e| (Some(name), e))?
        {
            work.push(w);
        }
    }

    // Phase 2: ledger credits (deliveries by cutover into the destination mailbox).
    credit_ledger(ctx, way, dst_user, mark, &mut work)
        .await
        .map_err(whole)?;
    let label_adds = if gmail_dst {
        let existing = gmail_existing(ctx, way, &mut dst, &dst_list, &work)
            .await
            .map_err(whole)?;
        plan_gmail_labels(&mut work, &dst_list, existing)
    } else {
        Vec::new()
    };
    for w in &work {
        let n = w.decision.count(Verdict::Copy) as u64;
        bar.plan(n);
        ctx.progress
            .counters
            .planned
            .fetch_add(n, Ordering::Relaxed);
    }

    // Phase 3: copy, folders in parallel over `connections_per_mailbox` connection pairs.
    copy_folders(ctx, way, (src_user, dst_user), (src, dst), work, book, bar).await?;
    if !label_adds.is_empty() && !ctx.dry_run {
        let mut dst = dst_side
            .connect(dst_user, &ctx.state)
            .await
            .map_err(whole)?;
        apply_gmail_labels(ctx, way, &mut dst, label_adds, book)
            .await
            .map_err(whole)?;
    }
    Ok(())
}

/// Phase 3 of a round: copy the folders of `work`, in parallel over `connections_per_mailbox`
/// connection pairs (the first one given).
async fn copy_folders(
    ctx: &Arc<Ctx>,
    way: Way,
    (src_user, dst_user): (&str, &str),
    first: (Endpoint, Endpoint),
    work: Vec<Work>,
    book: &Mutex<Book>,
    bar: &mut MailboxBar,
) -> std::result::Result<(), RoundErr> {
    let (src_side, dst_side) = ctx.sides(way);
    let queue = Mutex::new(std::collections::VecDeque::from(work));
    let bar = Mutex::new(bar);
    let conns = ctx.job.connections_per_mailbox();
    let first = Mutex::new(Some(first));
    let workers = (0..conns).map(|_| async {
        let mut pair: Option<(Endpoint, Endpoint)> = first.lock().await.take();
        loop {
            let Some(w) = queue.lock().await.pop_front() else {
                return Ok(());
            };
            if pair.is_none() {
                let (s, d) = tokio::join!(
                    src_side.connect(src_user, &ctx.state),
                    dst_side.connect(dst_user, &ctx.state)
                );
                let name = w.pair.name.clone();
                pair = Some((
                    s.map_err(|e| (Some(name.clone()), e))?,
                    d.map_err(|e| (Some(name), e))?,
                ));
            }
            let Some((s, d)) = pair.as_mut() else {
                return Ok(());
            };
            let name = w.pair.name.clone();
            copy_folder(ctx, way, src_user, s, d, w, book, &bar)
                .await
                .map_err(|e| (Some(name), e))?;
        }
    });
    let results = futures_util::future::join_all(workers).await;
    for r in results {
        r?;
    }
    Ok(())
}

/// A round's folder plan.
struct Planned {
    pairs: Vec<FolderPair>,
    /// Gmail source: the label each folder stands for.
    homes: HashMap<String, Home>,
    dst_list: Listing,
    gmail_dst: bool,
}

/// LIST both sides, recognise the providers' folders, plan the pairs (those not finished or
/// failed by an earlier attempt of this run) and adjust them to the profiles.
async fn plan_round(
    ctx: &Ctx,
    way: Way,
    (src, dst): (&mut Endpoint, &mut Endpoint),
    book: &Mutex<Book>,
) -> Result<Planned> {
    let mut src_list = src.list().await?;
    let mut dst_list = dst.list().await?;
    let (sp, dp) = ctx.profiles(way);
    profile::annotate(sp, &mut src_list);
    profile::annotate(dp, &mut dst_list);
    let gmail_src = sp.labels || src.is_gmail();
    let pairs = plan::plan(&src_list, &dst_list, &ctx.job.folders);
    let (pairs, homes) = profile::adjust_plan(pairs, (&src_list, &dst_list), (sp, dp), gmail_src);
    let skip: HashSet<String> = {
        let b = book.lock().await;
        b.finished.keys().chain(b.failed.keys()).cloned().collect()
    };
    Ok(Planned {
        pairs: pairs
            .into_iter()
            .filter(|p| !skip.contains(&p.name))
            .collect(),
        homes,
        gmail_dst: dp.labels || dst.is_gmail(),
        dst_list,
    })
}

/// A label to add on a Gmail destination instead of a second APPEND of the same message.
struct LabelAdd {
    /// The destination folder holding the one copy, and the copy's fingerprint.
    on_wire: String,
    fp: FpKey,
    label: String,
    /// The source folder (report key) and UID the label stands for.
    folder: String,
    uid: u32,
}

/// Gmail destination: the messages it already holds (an index of its All Mail, by fingerprint),
/// when there is something to copy, so that a message filed into one more folder on the source
/// since an earlier pass gets a label rather than a second APPEND.
async fn gmail_existing(
    ctx: &Ctx,
    way: Way,
    dst: &mut Endpoint,
    dst_list: &Listing,
    work: &[Work],
) -> Result<HashMap<FpKey, String>> {
    let any_copy = work
        .iter()
        .any(|w| w.decision.verdicts.contains(&Verdict::Copy));
    let all = dst_list
        .folders
        .iter()
        .find(|f| f.selectable() && f.has_attr(profile::ALL_MAIL_ATTR));
    let (true, Some(all)) = (any_copy, all) else {
        return Ok(HashMap::new());
    };
    let account = dst.user().to_string();
    let known = ctx.state.known(way.sides().1, &account, &all.wire)?;
    let idx = dst.index_destination(&all.wire, &known).await?;
    if !ctx.dry_run {
        ctx.state
            .learn(way.sides().1, &account, &all.wire, &idx.learnt)?;
    }
    Ok(idx.msgs.iter().map(|m| (m.fp, all.wire.clone())).collect())
}

/// Gmail destination: a message to copy into several folders is appended once (into the first)
/// and given the other folders' labels (`STORE +X-GM-LABELS`) after the copies; one Gmail holds
/// already (`first`: fingerprint → its folder) only gets the label.
fn plan_gmail_labels(
    work: &mut [Work],
    dst_list: &Listing,
    mut first: HashMap<FpKey, String>,
) -> Vec<LabelAdd> {
    let mut out = Vec::new();
    for w in work.iter_mut() {
        // The label a destination folder stands for: its Gmail role, else its name.
        let label = dst_list
            .folders
            .iter()
            .find(|f| f.wire == w.pair.dst_wire)
            .and_then(profile::folder_label)
            .and_then(|h| h.label())
            .unwrap_or_else(|| w.pair.dst_wire.clone());
        for (m, v) in w.src.msgs.iter().zip(w.decision.verdicts.iter_mut()) {
            if *v != Verdict::Copy {
                continue;
            }
            match first.get(&m.fp) {
                None => {
                    first.insert(m.fp, w.pair.dst_wire.clone());
                }
                Some(on) if *on != w.pair.dst_wire => {
                    *v = Verdict::Skip;
                    w.notes.push(MessageNote::new(
                        m.uid,
                        "mapped",
                        "gmail_label",
                        format!("one Gmail message: label {label:?} added to its copy in {on:?}"),
                    ));
                    out.push(LabelAdd {
                        on_wire: on.clone(),
                        fp: m.fp,
                        label: label.clone(),
                        folder: w.pair.name.clone(),
                        uid: m.uid,
                    });
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// Add the planned labels to the copies (found by fingerprint in an index of their folder). A
/// label that cannot be placed fails its message in the report.
async fn apply_gmail_labels(
    ctx: &Ctx,
    way: Way,
    dst: &mut Endpoint,
    adds: Vec<LabelAdd>,
    book: &Mutex<Book>,
) -> Result<()> {
    let account = dst.user().to_string();
    let mut by_wire: HashMap<String, Vec<LabelAdd>> = HashMap::new();
    for a in adds {
        by_wire.entry(a.on_wire.clone()).or_default().push(a);
    }
    for (wire, adds) in by_wire {
        // The copies' UIDs: an index of the folder (APPENDUID is not always there: Gmail's
        // LITERAL- makes large APPENDs synchronising, whose replies async-imap drops).
        let known = ctx.state.known(way.sides().1, &account, &wire)?;
        let idx = dst.index_destination(&wire, &known).await?;
        ctx.state
            .learn(way.sides().1, &account, &wire, &idx.learnt)?;
        let uid_of: HashMap<FpKey, u32> = idx.msgs.iter().map(|m| (m.fp, m.uid)).collect();
        let mut groups: HashMap<String, Vec<u32>> = HashMap::new();
        let mut lost = Vec::new();
        for a in &adds {
            match uid_of.get(&a.fp) {
                Some(u) => groups.entry(a.label.clone()).or_default().push(*u),
                None => lost.push(a),
            }
        }
        for (label, uids) in groups {
            dst.gmail_add_label(&wire, &uids, &label).await?;
        }
        let mut b = book.lock().await;
        for a in lost {
            if let Some(fr) = b.finished.get_mut(&a.folder) {
                fr.converged = false;
                fr.failed.push(Failure {
                    uid: a.uid,
                    reply: format!("label {:?}: its copy in {wire:?} was not found", a.label),
                });
            }
        }
    }
    Ok(())
}

/// What one folder's copy has done so far.
#[derive(Default)]
struct Tally {
    outcomes: HashMap<u32, Outcome>,
    copied: u64,
    bytes: u64,
    failures: Vec<Failure>,
    adjusted: Vec<Failure>,
    /// Conversions made on the way (and parts kept as they were).
    notes: Vec<MessageNote>,
}

impl Tally {
    /// Whether `uid` is final: copied, or gone from the source meanwhile.
    fn done(&self, uid: &u32) -> bool {
        matches!(
            self.outcomes.get(uid),
            Some(Outcome::Copied { .. } | Outcome::Vanished)
        )
    }

    /// The folder's watermark: below the first UID to copy that is not yet final (refused ones
    /// stay below it, so the next pass tries them again); everything below `uidnext` when all are.
    fn watermark(&self, to_copy: &[u32], uidnext: u32) -> u32 {
        match to_copy.iter().find(|u| !self.done(u)) {
            Some(u) => u.saturating_sub(1),
            None => uidnext.saturating_sub(1),
        }
    }

    /// Count a batch's outcomes (and show them on the progress bar).
    async fn record(&mut self, ctx: &Ctx, bar: &Mutex<&mut MailboxBar>, got: Vec<(u32, Outcome)>) {
        let mut b = bar.lock().await;
        for (uid, o) in got {
            match &o {
                Outcome::Copied { bytes: n } => {
                    self.copied += 1;
                    self.bytes += n;
                    b.copied(*n);
                    ctx.progress.counters.copied.fetch_add(1, Ordering::Relaxed);
                    ctx.progress.counters.bytes.fetch_add(*n, Ordering::Relaxed);
                }
                Outcome::Refused(reply) | Outcome::RefusedBatch(reply) => {
                    ctx.progress.counters.failed.fetch_add(1, Ordering::Relaxed);
                    self.failures.push(Failure {
                        uid,
                        reply: reply.clone(),
                    });
                }
                Outcome::Vanished => {}
            }
            self.outcomes.insert(uid, o);
        }
    }
}

/// How much of `batch` fits under the destination's daily upload cap (e.g. Gmail's 500 MB/day):
/// the number of messages that fit, and the message to stop the folder with after them when the
/// cap is reached. `Err` when not one more fits.
fn fit_daily_cap(
    batch: &[u32],
    sizes: &HashMap<u32, u64>,
    cap: u64,
    used: u64,
    account: &str,
    day: &str,
) -> std::result::Result<(usize, Option<String>), String> {
    let reached = || {
        format!(
            "max_bytes_per_day ({cap} bytes) reached for {account} on {day}; the next pass continues"
        )
    };
    let mut room = cap.saturating_sub(used);
    let fit = batch
        .iter()
        .take_while(|u| {
            let n = sizes.get(u).copied().unwrap_or(0);
            if n <= room {
                room -= n;
                true
            } else {
                false
            }
        })
        .count();
    match fit {
        0 => Err(reached()),
        f if f < batch.len() => Ok((f, Some(reached()))),
        f => Ok((f, None)),
    }
}

/// Copy one batch (MULTIAPPEND where offered); a refused MULTIAPPEND batch is retried message by
/// message, and a message refused on its own is retried with gentler metadata
/// ([`imap_ops::degrade`]: keywords that fit, a 1970 date). Returns every outcome reported,
/// what was given up for which message, and how the connection fared.
async fn copy_batch(
    (src, dst): (&mut Endpoint, &mut Endpoint),
    w: &Work,
    batch: &[u32],
    t: &Transform,
) -> (Vec<(u32, Outcome)>, Vec<Failure>, Assigned, Result<()>) {
    let mut got: Vec<(u32, Outcome)> = Vec::new();
    let mut adjusted = Vec::new();
    let mut assigned = Assigned::default();
    let mut keep = |r: Result<Assigned>| {
        r.map(|a| {
            assigned.uidvalidity = a.uidvalidity;
            assigned.pairs.extend(a.pairs);
        })
    };
    let (sw, dw, meta) = (&w.pair.src_wire, &w.pair.dst_wire, &w.src.meta);
    let multi = w.multiappend;
    let mut r = keep(
        endpoint::copy_messages(src, dst, sw, dw, batch, meta, (multi, t), &mut |uid, o| {
            got.push((uid, o))
        })
        .await,
    );
    let again = take_refused(&mut got, true);
    if r.is_ok() && !again.is_empty() {
        r = keep(
            endpoint::copy_messages(src, dst, sw, dw, &again, meta, (false, t), &mut |uid, o| {
                got.push((uid, o))
            })
            .await,
        );
    }
    for level in 1..=2u8 {
        if r.is_err() || !got.iter().any(|(_, o)| matches!(o, Outcome::Refused(_))) {
            break;
        }
        let defined = match dst.defined_keywords(dw).await {
            Ok(d) => d,
            Err(e) => return (got, adjusted, assigned, Err(e)),
        };
        let mut gentler: HashMap<u32, Meta> = HashMap::new();
        let mut what: HashMap<u32, String> = HashMap::new();
        for (uid, o) in &got {
            if let (Outcome::Refused(reply), Some(m)) = (o, meta.get(uid))
                && let Some((m2, w)) = imap_ops::degrade(m, &defined, level)
            {
                gentler.insert(*uid, m2);
                what.insert(*uid, format!("{w} (destination refused: {reply})"));
            }
        }
        if gentler.is_empty() {
            break;
        }
        let mut retry: Vec<u32> = gentler.keys().copied().collect();
        retry.sort_unstable();
        got.retain(|(u, _)| !gentler.contains_key(u));
        r = keep(
            endpoint::copy_messages(
                src,
                dst,
                sw,
                dw,
                &retry,
                &gentler,
                (false, t),
                &mut |uid, o| {
                    if matches!(o, Outcome::Copied { .. })
                        && let Some(reply) = what.remove(&uid)
                    {
                        adjusted.push(Failure { uid, reply });
                    }
                    got.push((uid, o))
                },
            )
            .await,
        );
    }
    (got, adjusted, assigned, r)
}

/// Remove the refused outcomes (`batch`: refused as part of a MULTIAPPEND; else refused on
/// their own) from `got` and return their UIDs.
fn take_refused(got: &mut Vec<(u32, Outcome)>, batch: bool) -> Vec<u32> {
    let hit = |o: &Outcome| match o {
        Outcome::RefusedBatch(_) => batch,
        Outcome::Refused(_) => !batch,
        _ => false,
    };
    let uids = got
        .iter()
        .filter(|(_, o)| hit(o))
        .map(|(u, _)| *u)
        .collect();
    got.retain(|(_, o)| !hit(o));
    uids
}

/// Remember the fingerprints of the copies just made (their destination UIDs from APPENDUID),
/// so the next pass over the destination folder need not fetch them back.
fn learn_copies(ctx: &Ctx, way: Way, dst_account: &str, w: &Work, a: &Assigned) -> Result<()> {
    if a.pairs.is_empty() {
        return Ok(());
    }
    let items = a
        .pairs
        .iter()
        .filter_map(|(s, d)| Some((*d, w.src.msg(*s)?.fp, w.src.stamped.contains(s))))
        .collect();
    let learnt = imap_ops::Learnt {
        uidvalidity: a.uidvalidity,
        items,
    };
    ctx.state
        .learn(way.sides().1, dst_account, &w.pair.dst_wire, &learnt)?;
    Ok(())
}

/// The state saved for a folder. While it is being copied: not converged, no destination count,
/// and `src_modseq` 0 (flags are synchronised at the end of the folder).
fn folder_state(
    w: &Work,
    done_uid: u32,
    converged: bool,
    dst_count: u64,
    src_modseq: u64,
) -> FolderState {
    FolderState {
        src_uidvalidity: w.src.uidvalidity,
        dst_uidvalidity: w.dst_uv,
        done_uid,
        dst_wire: w.pair.dst_wire.clone(),
        converged,
        src_count: w.src.msgs.len() as u64,
        dst_count,
        src_modseq,
    }
}

/// Copy the `Copy` messages of one folder, saving state as confirmations arrive.
#[allow(clippy::too_many_arguments)]
async fn copy_folder(
    ctx: &Arc<Ctx>,
    way: Way,
    src_user: &str,
    src: &mut Endpoint,
    dst: &mut Endpoint,
    w: Work,
    book: &Mutex<Book>,
    bar: &Mutex<&mut MailboxBar>,
) -> Result<()> {
    let name = w.pair.name.clone();
    let to_copy: Vec<u32> = w
        .src
        .msgs
        .iter()
        .zip(&w.decision.verdicts)
        .filter(|(_, v)| **v == Verdict::Copy)
        .map(|(m, _)| m.uid)
        .collect();
    let present = w.decision.count(Verdict::Present) as u64;
    let ledger = w.decision.count(Verdict::Ledger) as u64;
    ctx.progress
        .counters
        .skipped
        .fetch_add(present + ledger, Ordering::Relaxed);
    let mut tally = Tally::default();
    let err = if ctx.dry_run {
        None
    } else {
        copy_batches(ctx, way, src_user, src, dst, &w, &to_copy, &mut tally, bar).await?
    };
    {
        let mut b = book.lock().await;
        let e = b.copied.entry(name.clone()).or_default();
        e.0 += tally.copied;
        e.1 += tally.bytes;
    }
    if let Some(e) = err {
        return Err(e);
    }
    finish_folder(ctx, way, src_user, dst, w, &to_copy, tally, book).await
}

/// Copy `to_copy` batch by batch, saving the watermark after each. `Ok(Some(e))`: the folder
/// stopped on `e` (a connection error or the daily cap) after what is in `tally`.
#[allow(clippy::too_many_arguments)]
async fn copy_batches(
    ctx: &Ctx,
    way: Way,
    src_user: &str,
    src: &mut Endpoint,
    dst: &mut Endpoint,
    w: &Work,
    to_copy: &[u32],
    tally: &mut Tally,
    bar: &Mutex<&mut MailboxBar>,
) -> Result<Option<BackfillError>> {
    let cap = BackfillJob::max_bytes_per_day(ctx.dst_endpoint(way));
    let sizes: HashMap<u32, u64> = w
        .src
        .msgs
        .iter()
        .map(|m| (m.uid, u64::from(m.size)))
        .collect();
    let dst_account = dst.user().to_string();
    for batch in to_copy.chunks(SAVE_EVERY) {
        let mut batch = batch;
        let mut capped = None;
        let day = today();
        if let Some(cap) = cap {
            let used = ctx.state.bytes_on(&dst_account, &day).await?;
            match fit_daily_cap(batch, &sizes, cap, used, &dst_account, &day) {
                Ok((fit, c)) => {
                    batch = &batch[..fit];
                    capped = c;
                }
                Err(reached) => return Ok(Some(BackfillError::Refused(reached))),
            }
        }
        let before_bytes = tally.bytes;
        let t = ctx.transform.fresh();
        let (got, adjusted, assigned, r) = copy_batch((src, dst), w, batch, &t).await;
        tally.notes.extend(t.take_notes());
        let gm: Vec<u64> = got
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Copied { .. }))
            .filter_map(|(u, _)| w.gmail_ids.get(u).copied())
            .collect();
        ctx.state.record_gmail_copies(src.user(), &gm).await?;
        tally.record(ctx, bar, got).await;
        tally.adjusted.extend(adjusted);
        learn_copies(ctx, way, dst.user(), w, &assigned)?;
        if cap.is_some() {
            ctx.state
                .add_bytes(&dst_account, &day, tally.bytes - before_bytes)
                .await?;
        }
        let done_uid = tally.watermark(to_copy, w.src.uidnext);
        let st = folder_state(w, done_uid, false, 0, 0);
        ctx.state
            .put(way.key(), src_user, &w.pair.name, &st)
            .await?;
        if let Err(e) = r {
            return Ok(Some(e));
        }
        if let Some(c) = capped {
            return Ok(Some(BackfillError::Refused(c)));
        }
    }
    Ok(None)
}

/// After the copies: synchronise flags, count the destination, save the folder's final state
/// and put its report in the book.
#[allow(clippy::too_many_arguments)]
async fn finish_folder(
    ctx: &Ctx,
    way: Way,
    src_user: &str,
    dst: &mut Endpoint,
    w: Work,
    to_copy: &[u32],
    tally: Tally,
    book: &Mutex<Book>,
) -> Result<()> {
    let name = w.pair.name.clone();
    let present = w.decision.count(Verdict::Present) as u64;
    let ledger = w.decision.count(Verdict::Ledger) as u64;
    let missing = w.decision.count(Verdict::Missing) as u64;
    let (total_copied, total_bytes) = book
        .lock()
        .await
        .copied
        .get(&name)
        .copied()
        .unwrap_or_default();
    let flags_updated: u64 = w.flag_groups.iter().map(|(_, u)| u.len() as u64).sum();
    if !ctx.dry_run {
        dst.store_flags(&w.pair.dst_wire, &w.flag_groups).await?;
    }
    let all_copied = to_copy.iter().all(|u| tally.done(u));
    let dst_count = if ctx.dry_run && w.pair.create {
        0
    } else {
        dst.status(&w.pair.dst_wire).await?.messages as u64
    };
    // Dry run: converged when there is nothing to copy; it keeps no state.
    let converged = if ctx.dry_run {
        to_copy.is_empty() && missing == 0
    } else {
        all_copied && missing == 0 && tally.failures.is_empty()
    };
    if !ctx.dry_run {
        let done_uid = if all_copied {
            w.src.uidnext.saturating_sub(1)
        } else {
            ctx.state
                .get(way.key(), src_user, &name)
                .await?
                .map(|s| s.done_uid)
                .unwrap_or(0)
        };
        let st = folder_state(&w, done_uid, converged, dst_count, w.src_modseq);
        ctx.state.put(way.key(), src_user, &name, &st).await?;
    }
    let mut fr = FolderReport {
        folder: name.clone(),
        destination: w.pair.dst_name.clone(),
        note: w.pair.note.clone(),
        source_count: w.src.msgs.len() as u64,
        destination_count: dst_count,
        copied: total_copied,
        missing,
        failed: tally.failures,
        adjusted: tally.adjusted,
        bytes: total_bytes,
        duration_ms: w.started.elapsed().as_millis() as u64,
        converged,
        error: None,
        ..Default::default()
    };
    fr.flags_updated = flags_updated;
    for n in &w.notes {
        if n.action == "skipped" {
            *fr.skipped.entry(n.kind.clone()).or_default() += 1;
        }
    }
    fr.converted = tally
        .notes
        .iter()
        .filter(|n| n.action == "converted")
        .count() as u64;
    let mut notes = w.notes;
    notes.extend(tally.notes);
    fr.messages = notes;
    fr.skipped.insert("present".into(), present);
    // Of those present, how many are copies cutover delivered (its loop stamp): informational.
    fr.skipped.insert(
        "present_dual_delivered".into(),
        w.decision.stamped_pairs.len() as u64,
    );
    fr.skipped.insert("ledger".into(), ledger);
    if ctx.dry_run {
        fr.skipped.insert("would_copy".into(), to_copy.len() as u64);
    }
    book.lock().await.finished.insert(name, fr);
    Ok(())
}

/// Forward-only jobs make the source's flags authoritative for copies already present.
fn sync_flags(ctx: &Ctx, way: Way) -> bool {
    way == Way::Forward && ctx.job.direction == Direction::Forward
}

fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_cap_copies_what_fits_then_stops() {
        let sizes: HashMap<u32, u64> = [(1, 40), (2, 40), (3, 40)].into_iter().collect();
        let b = [1, 2, 3];
        assert_eq!(fit_daily_cap(&b, &sizes, 200, 0, "a", "d"), Ok((3, None)));
        let (fit, stop) = fit_daily_cap(&b, &sizes, 100, 10, "a", "d").unwrap();
        assert_eq!(fit, 2);
        assert!(
            stop.unwrap()
                .contains("max_bytes_per_day (100 bytes) reached for a on d")
        );
        assert!(fit_daily_cap(&b, &sizes, 100, 70, "a", "d").is_err());
    }

    #[test]
    fn watermark_stays_below_the_first_open_uid() {
        let mut t = Tally::default();
        t.outcomes.insert(5, Outcome::Copied { bytes: 1 });
        t.outcomes.insert(7, Outcome::Refused("NO".into()));
        t.outcomes.insert(9, Outcome::Vanished);
        assert_eq!(t.watermark(&[5, 7, 9], 20), 6);
        assert_eq!(t.watermark(&[5, 9], 20), 19);
        assert_eq!(t.watermark(&[], 1), 0);
    }

    #[test]
    fn mailboxes_csv() {
        let m = parse_mailboxes("# c\nalice\nbob@x, robert@y\n\n carol ,\n");
        assert_eq!(
            m,
            vec![
                MailboxPair {
                    source: "alice".into(),
                    destination: "alice".into()
                },
                MailboxPair {
                    source: "bob@x".into(),
                    destination: "robert@y".into()
                },
                MailboxPair {
                    source: "carol".into(),
                    destination: "carol".into()
                },
            ]
        );
    }

    #[test]
    fn shards() {
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("x").is_err());
        let users: Vec<String> = (0..100).map(|i| format!("user{i}")).collect();
        let mut seen = [0u32; 4];
        for u in &users {
            let s = shard_of(u, 4);
            assert_eq!(s, shard_of(&u.to_uppercase(), 4));
            seen[s as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 10), "{seen:?}");
    }
}
