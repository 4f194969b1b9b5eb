//! Operator actions on queued messages (`cutover queue retry|hold|release|delete|reroute` and
//! the admin API's POST/DELETE routes): retry now, hold, release, delete (optionally with a
//! failure DSN, which `admin::ops` builds) and reroute pending recipients by a route function
//! (`admin::ops` gives the router in force). Each action is one
//! transaction over the record and its `due` entries, durable (group-committed) on return, and
//! returns a small serialisable report of what changed. The reroute plan is a pure function
//! ([`plan_reroute`]). Never does network IO and never delivers.
//!
//! Concurrency with a running scheduler (live, through the admin API): an attempt in flight
//! holds a snapshot of its leg and later applies its outcomes to the leg with the same
//! [`LegId`](super::model::LegId) (stable whatever happens to the other legs). So a live
//! reroute never moves recipients out of a leg that may be in flight (not held and due now:
//! reported as `busy`, try again shortly): they would be delivered there and where they go.

use super::model::{Leg, MessageRecord, RcptState, Recipient};
use super::store::{Change, Staged};
use super::{NewLeg, Queue, QueueError, QueueId};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::SystemTime;

/// How many messages `--all` actions work on concurrently (their flushes are group-committed).
const ALL_CONCURRENCY: usize = 16;

/// How a delete with bounce builds its DSN, composed above the queue (`admin::ops`): given
/// the record and the recipients not delivered anywhere (each with the first leg carrying it),
/// the messages to stage in the removal's transaction. It may run more than once (transaction
/// retries), so it must be a pure function of its arguments.
pub type BounceFn<'a> = dyn Fn(&MessageRecord, &[(&Leg, &Recipient)]) -> Vec<Staged> + Sync + 'a;

/// Where reroute sends a recipient: its targets and the rule's name, or `None` (unrouted).
/// Composed above the queue from the router in force.
pub type RouteFn<'a> = dyn Fn(&str) -> Option<(Vec<String>, String)> + Sync + 'a;

/// Which leg-wide action [`LegsChanged`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegAction {
    /// Pending legs made due now.
    Retry,
    Hold,
    Release,
}

impl LegAction {
    /// The word the CLI prints (`ID: held (2 legs)`).
    pub fn past(self) -> &'static str {
        match self {
            LegAction::Retry => "due now",
            LegAction::Hold => "held",
            LegAction::Release => "released",
        }
    }
}

/// Result of retry / hold / release on one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegsChanged {
    pub id: QueueId,
    pub action: LegAction,
    /// Pending legs now in the requested condition (due now / held / not held).
    pub legs: usize,
    /// Pending legs a retry left alone because they are held.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Result of a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: QueueId,
    /// Recipients that had not been delivered anywhere (the ones a bounce reports).
    pub pending: Vec<String>,
    /// The DSN queued for the sender (`--bounce`, sender not `<>`, someone pending).
    pub bounce: Option<QueueId>,
}

/// One recipient moved by a reroute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    pub recipient: String,
    /// The rule that routes it now.
    pub rule: String,
    /// Targets it was taken off (its pending entries there removed).
    pub from: Vec<String>,
    /// Targets it was added to, as `queued`.
    pub to: Vec<String>,
}

/// Result of a reroute of one message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rerouted {
    pub id: QueueId,
    pub moved: Vec<Moved>,
    /// Pending recipients whose target set is unchanged.
    pub unchanged: usize,
    /// Pending recipients no rule routes now: left where they were.
    pub unrouted: Vec<String>,
    /// Pending recipients left alone because a leg carrying them is being delivered right now
    /// (live only); run the reroute again shortly.
    pub busy: Vec<String>,
}

impl Rerouted {
    /// Nothing changed and nothing to report.
    pub fn is_noop(&self) -> bool {
        self.moved.is_empty() && self.unrouted.is_empty() && self.busy.is_empty()
    }
}

fn pending_legs(rec: &MessageRecord) -> impl Iterator<Item = &Leg> {
    rec.legs.iter().filter(|l| !l.state.is_final())
}

/// May a scheduler attempt be in flight for this leg? (not held, not final, due by `now`)
pub fn possibly_in_flight(leg: &Leg, now: SystemTime) -> bool {
    !leg.held && !leg.state.is_final() && leg.next_attempt.is_some_and(|t| t <= now)
}

/// Make `leg` due at `now` (operator retry): the leg and its deferred recipients.
fn make_due(leg: &mut Leg, now: SystemTime) {
    if leg.state.is_final() {
        return;
    }
    leg.next_attempt = Some(now);
    for r in leg.recipients.iter_mut() {
        if let RcptState::Deferred { next, .. } = &mut r.state {
            *next = now;
        }
    }
}

/// Plan a reroute of `rec` (pure). `route(address)` gives the current (targets, rule) of a
/// recipient or `None` when no rule routes it; `busy(leg)` says a leg may be in flight.
///
/// Per pending recipient whose target set changed: its pending entries on targets it no
/// longer goes to are removed, and it is added as `queued` for each new target it has no
/// entry on yet (an existing pending, idle leg of that target with the same held flag, else a
/// new leg with a fresh [`LegId`](super::model::LegId); held if the recipient was held
/// everywhere it was pending). Delivered and failed entries are never touched; unrouted
/// recipients stay where they are; a recipient on a busy leg is left alone entirely (an
/// attempt in flight would deliver it there too). Legs left empty are dropped: every other
/// leg keeps its id, so an attempt in flight still finds its leg.
pub fn plan_reroute<R, B>(
    rec: &MessageRecord,
    route: R,
    busy: B,
    now: SystemTime,
) -> (MessageRecord, Rerouted)
where
    R: Fn(&str) -> Option<(Vec<String>, String)>,
    B: Fn(&Leg) -> bool,
{
    let busy_legs: Vec<bool> = rec.legs.iter().map(&busy).collect();
    let (moves, report) = plan_moves(rec, route, &busy_legs);
    if report.moved.is_empty() {
        return (rec.clone(), report);
    }
    (apply_moves(rec, moves, &busy_legs, now), report)
}

/// Recipients (address, rule) a reroute adds to one (target, held) pair.
type Additions = ((String, bool), Vec<(String, String)>);

/// What a reroute changes in a record: recipient entries to remove (leg position, recipient
/// position in `rec`) and recipients to add per (target, held), in order of first appearance.
#[derive(Default)]
struct Moves {
    removals: HashSet<(usize, usize)>,
    additions: Vec<Additions>,
}

impl Moves {
    fn add(&mut self, key: (String, bool), address: &str, rule: &str) {
        let entry = (address.to_string(), rule.to_string());
        match self.additions.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(entry),
            None => self.additions.push((key, vec![entry])),
        }
    }
}

/// Decide, per pending recipient of `rec`, what moves (see [`plan_reroute`]); `busy_legs`
/// by leg position.
fn plan_moves<R>(rec: &MessageRecord, route: R, busy_legs: &[bool]) -> (Moves, Rerouted)
where
    R: Fn(&str) -> Option<(Vec<String>, String)>,
{
    let mut report = Rerouted {
        id: rec.id.clone(),
        moved: Vec::new(),
        unchanged: 0,
        unrouted: Vec::new(),
        busy: Vec::new(),
    };
    let mut moves = Moves::default();
    // Pending addresses in order of first appearance.
    let mut seen = HashSet::new();
    let addresses: Vec<&str> = rec
        .legs
        .iter()
        .flat_map(|l| l.recipients.iter())
        .filter(|r| r.state.is_pending())
        .map(|r| r.address.as_str())
        .filter(|a| seen.insert(*a))
        .collect();
    for addr in addresses {
        let Some((mut targets, rule)) = route(addr) else {
            report.unrouted.push(addr.to_string());
            continue;
        };
        let mut dedup = HashSet::new();
        targets.retain(|t| dedup.insert(t.clone()));
        // Every entry of this address: (leg, recipient index, target, pending).
        let entries: Vec<(usize, usize, &str, bool)> = rec
            .legs
            .iter()
            .enumerate()
            .flat_map(|(li, l)| {
                l.recipients
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.address == addr)
                    .map(move |(ri, r)| (li, ri, l.target.as_str(), r.state.is_pending()))
            })
            .collect();
        let away: Vec<&(usize, usize, &str, bool)> = entries
            .iter()
            .filter(|e| e.3 && !targets.iter().any(|t| t == e.2))
            .collect();
        let new_targets: Vec<String> = targets
            .iter()
            .filter(|t| !entries.iter().any(|e| e.2 == t.as_str()))
            .cloned()
            .collect();
        if away.is_empty() && new_targets.is_empty() {
            report.unchanged += 1;
            continue;
        }
        if entries.iter().any(|e| e.3 && busy_legs[e.0]) {
            report.busy.push(addr.to_string());
            continue;
        }
        // A recipient held everywhere it is pending stays held where it goes.
        let held = entries.iter().filter(|e| e.3).all(|e| rec.legs[e.0].held);
        let mut from: Vec<String> = Vec::new();
        for (li, ri, t, _) in away {
            moves.removals.insert((*li, *ri));
            if !from.iter().any(|f| f == t) {
                from.push(t.to_string());
            }
        }
        for t in &new_targets {
            moves.add((t.clone(), held), addr, &rule);
        }
        report.moved.push(Moved {
            recipient: addr.to_string(),
            rule,
            from,
            to: new_targets,
        });
    }
    (moves, report)
}

/// Apply `moves` to a copy of `rec`: remove entries, add recipients to an idle pending leg of
/// their target or to a new leg, drop the legs left empty.
fn apply_moves(
    rec: &MessageRecord,
    moves: Moves,
    busy_legs: &[bool],
    now: SystemTime,
) -> MessageRecord {
    let mut out = rec.clone();
    for (li, leg) in out.legs.iter_mut().enumerate() {
        let mut ri = 0;
        leg.recipients.retain(|_| {
            let keep = !moves.removals.contains(&(li, ri));
            ri += 1;
            keep
        });
        leg.refresh_state();
    }
    let created = rec
        .legs
        .iter()
        .map(|l| l.created)
        .min()
        .unwrap_or(rec.envelope.received_at);
    for ((target, held), adds) in moves.additions {
        let existing = out.legs.iter().enumerate().position(|(i, l)| {
            l.target == target
                && !l.recipients.is_empty()
                && !l.state.is_final()
                && l.held == held
                && !busy_legs.get(i).copied().unwrap_or(false)
        });
        if let Some(i) = existing {
            let l = &mut out.legs[i];
            l.recipients
                .extend(adds.into_iter().map(|(address, rule)| Recipient {
                    address,
                    rule,
                    state: RcptState::Queued,
                }));
            if l.next_attempt.is_none_or(|t| t > now) {
                l.next_attempt = Some(now);
            }
            l.refresh_state();
            continue;
        }
        let (rules, recipients): (Vec<String>, Vec<String>) =
            adds.into_iter().map(|(a, r)| (r, a)).unzip();
        let plan = NewLeg {
            target,
            rules,
            recipients,
        };
        let mut leg = out.new_leg(plan, now);
        leg.created = created;
        leg.held = held;
        out.legs.push(leg);
    }
    out.legs.retain(|l| !l.recipients.is_empty());
    out
}

/// Recipients of `rec` not delivered on any leg and still pending somewhere, once each, with
/// the (first) leg carrying them.
pub fn undelivered(rec: &MessageRecord) -> Vec<(&Leg, &Recipient)> {
    let delivered: HashSet<&str> = rec
        .legs
        .iter()
        .flat_map(|l| l.recipients.iter())
        .filter(|r| matches!(r.state, RcptState::Delivered { .. }))
        .map(|r| r.address.as_str())
        .collect();
    let mut seen = HashSet::new();
    rec.legs
        .iter()
        .flat_map(|l| l.recipients.iter().map(move |r| (l, r)))
        .filter(|(_, r)| r.state.is_pending() && !delivered.contains(r.address.as_str()))
        .filter(|(_, r)| seen.insert(r.address.as_str()))
        .collect()
}

impl Queue {
    /// Replace the record of `id` by `f(record)` (due entries moved to match), durable on
    /// return. `f` may run more than once (transaction retries): it must be a pure function
    /// of the record.
    async fn transform<F, T>(&self, id: &QueueId, f: F) -> Result<(MessageRecord, T), QueueError>
    where
        F: Fn(&MessageRecord) -> (MessageRecord, T),
    {
        let out = self
            .rewrite(id, |rec| {
                let (new, t) = f(rec);
                *rec = new;
                Ok(Change::keep(t))
            })
            .await?;
        self.notify_due();
        Ok((out.record, out.value))
    }

    /// Every pending leg of `id` due now (held legs stay held). Offline this only rewrites due
    /// times; the next `serve` picks them up.
    pub async fn retry(&self, id: &QueueId, now: SystemTime) -> Result<LegsChanged, QueueError> {
        let rec = self.update_legs(id, |l| make_due(l, now)).await?;
        Ok(LegsChanged {
            id: rec.id.clone(),
            action: LegAction::Retry,
            legs: pending_legs(&rec).filter(|l| !l.held).count(),
            held: pending_legs(&rec).filter(|l| l.held).count(),
        })
    }

    /// Hold every pending leg of `id`: no due entry until released.
    pub async fn hold(&self, id: &QueueId) -> Result<LegsChanged, QueueError> {
        let rec = self
            .update_legs(id, |l| {
                if !l.state.is_final() {
                    l.held = true;
                }
            })
            .await?;
        Ok(LegsChanged {
            id: rec.id.clone(),
            action: LegAction::Hold,
            legs: pending_legs(&rec).filter(|l| l.held).count(),
            held: 0,
        })
    }

    /// Release the held legs of `id`; they are due again at their next attempt time.
    pub async fn release(&self, id: &QueueId, now: SystemTime) -> Result<LegsChanged, QueueError> {
        let rec = self
            .update_legs(id, |l| {
                l.held = false;
                if !l.state.is_final() && l.next_attempt.is_none() {
                    l.next_attempt = Some(now);
                }
            })
            .await?;
        Ok(LegsChanged {
            id: rec.id.clone(),
            action: LegAction::Release,
            legs: pending_legs(&rec).filter(|l| !l.held).count(),
            held: 0,
        })
    }

    /// Delete `id`. With `bounce`, stage what it builds (a failure DSN to the sender for the
    /// recipients not delivered anywhere) in the same transaction as the removal. `live` (a
    /// scheduler runs in this process): with `bounce`, a message with a leg that may be in flight
    /// right now is refused with [`QueueError::Busy`] (the same check as reroute), so a sender is
    /// never told "not delivered" about mail being delivered at that moment.
    pub async fn delete(
        &self,
        id: &QueueId,
        bounce: Option<&BounceFn<'_>>,
        now: SystemTime,
        live: bool,
    ) -> Result<Deleted, QueueError> {
        let out = self
            .rewrite(id, |rec| {
                if bounce.is_some() && live && rec.legs.iter().any(|l| possibly_in_flight(l, now)) {
                    return Err(QueueError::Busy(format!(
                        "{id} is being delivered right now; try again in a moment"
                    )));
                }
                let pending = undelivered(rec);
                let add = bounce.map(|b| b(rec, &pending)).unwrap_or_default();
                let pending: Vec<String> = pending.iter().map(|(_, r)| r.address.clone()).collect();
                Ok(Change {
                    value: pending,
                    remove: true,
                    add,
                })
            })
            .await?;
        let dsn = out.added.first().cloned();
        tracing::info!(queue_id = %out.record.id, pending = out.value.len(), dsn_id = ?dsn.as_ref().map(|d| &d.0), "deleted by the administrator");
        Ok(Deleted {
            id: out.record.id,
            pending: out.value,
            bounce: dsn,
        })
    }

    /// Re-apply `route` (the routing in force at `now`) to the pending recipients of `id` (see
    /// [`plan_reroute`]). `live` (a scheduler runs in this process) leaves legs that may be in
    /// flight alone.
    pub async fn reroute(
        &self,
        id: &QueueId,
        route: &RouteFn<'_>,
        now: SystemTime,
        live: bool,
    ) -> Result<Rerouted, QueueError> {
        let busy = |l: &Leg| live && possibly_in_flight(l, now);
        // Plan on a snapshot first: no write at all when nothing moves.
        let snapshot = self.record(id)?;
        let (_, preview) = plan_reroute(&snapshot, route, busy, now);
        if preview.moved.is_empty() {
            return Ok(preview);
        }
        let (_, report) = self
            .transform(id, |rec| plan_reroute(rec, route, busy, now))
            .await?;
        for m in &report.moved {
            tracing::info!(queue_id = %report.id, to = %m.recipient, from = ?m.from, now = ?m.to, rule = %m.rule, "rerouted by the administrator");
        }
        Ok(report)
    }

    /// Ids of messages with at least one pending leg, oldest first.
    fn pending_ids(&self) -> Result<Vec<QueueId>, QueueError> {
        let mut out = Vec::new();
        for rec in self.inner.store.records() {
            let rec = rec?;
            if !rec.is_finished() {
                out.push(rec.id);
            }
        }
        Ok(out)
    }

    /// [`Queue::retry`] for every message with a pending, unheld leg.
    pub async fn retry_all(&self, now: SystemTime) -> Result<Vec<LegsChanged>, QueueError> {
        let ids = self.pending_ids()?;
        let results: Vec<Result<LegsChanged, QueueError>> = futures_util::stream::iter(ids)
            .map(|id| async move { self.retry(&id, now).await })
            .buffered(ALL_CONCURRENCY)
            .collect()
            .await;
        collect_existing(results, |r| r.legs > 0)
    }

    /// [`Queue::reroute`] for every message; reports only messages with something to say.
    pub async fn reroute_all(
        &self,
        route: &RouteFn<'_>,
        now: SystemTime,
        live: bool,
    ) -> Result<Vec<Rerouted>, QueueError> {
        let ids = self.pending_ids()?;
        let results: Vec<Result<Rerouted, QueueError>> = futures_util::stream::iter(ids)
            .map(|id| async move { self.reroute(&id, route, now, live).await })
            .buffered(ALL_CONCURRENCY)
            .collect()
            .await;
        collect_existing(results, |r| !r.is_noop())
    }
}

/// Keep the successes that pass `keep`; skip messages removed meanwhile; fail on other errors.
fn collect_existing<T>(
    results: Vec<Result<T, QueueError>>,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>, QueueError> {
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(t) if keep(&t) => out.push(t),
            Ok(_) | Err(QueueError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce;
    use crate::config::Config;
    use crate::queue::Envelope;
    use crate::queue::model::LegId;
    use crate::queue::store::DueEntry;
    use crate::routing::Router;
    use std::path::Path;
    use std::time::Duration;

    const CONFIG: &str = r#"
[gateway]
hostname = "mx.test"
listen = ["127.0.0.1:0"]
state_dir = "/nonexistent"
accept_domains = ["example.com"]
[targets.old]
address = "127.0.0.1:2525"
tls = "none"
[targets.new]
address = "127.0.0.1:2526"
tls = "none"
rcpt_domain = "example-com.new.test"
[bounce]
via = "old"
"#;

    /// Config with an extra routing section.
    fn config(routing: &str) -> Config {
        crate::loader::parse(&format!("{CONFIG}{routing}"), Path::new("/t/cutover.toml"))
            .unwrap()
            .config
    }

    fn router(routing: &str) -> Router {
        Router::new(&config(routing).routing).0
    }

    fn env(from: &str) -> Envelope {
        Envelope {
            mail_from: from.into(),
            helo: "client.test".into(),
            client_addr: "192.0.2.1:4567".parse().unwrap(),
            received_at: SystemTime::now(),
            smtputf8: false,
            body_8bit: false,
        }
    }

    fn leg(target: &str, rcpts: &[&str]) -> NewLeg {
        NewLeg {
            target: target.into(),
            rules: vec!["default".into()],
            recipients: rcpts.iter().map(|s| s.to_string()).collect(),
        }
    }

    async fn put(q: &Queue, from: &str, legs: Vec<NewLeg>) -> QueueId {
        let mut w = q.body_writer().unwrap();
        w.write(b"From: s@example.org\r\nSubject: ops test\r\n\r\nhello\r\n")
            .await
            .unwrap();
        q.commit(w, env(from), legs).await.unwrap()
    }

    fn due_of(q: &Queue, id: &QueueId) -> Vec<DueEntry> {
        let far = SystemTime::now() + Duration::from_secs(400 * 86_400);
        q.due(far, 10_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.id == *id)
            .collect()
    }

    fn delivered(l: &mut Leg, i: usize) {
        l.recipients[i].state = RcptState::Delivered {
            reply: "250 ok".into(),
        };
    }

    fn deferred(l: &mut Leg, until: SystemTime) {
        for r in l.recipients.iter_mut() {
            if r.state.is_pending() {
                r.state = RcptState::Deferred {
                    next: until,
                    attempts: 1,
                    last_reply: "451 4.3.0 later".into(),
                };
            }
        }
        l.attempts = 1;
        l.next_attempt = Some(until);
    }

    #[tokio::test]
    async fn hold_removes_due_entries_and_release_restores_them() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        let id = put(
            &q,
            "s@example.org",
            vec![
                leg("old", &["a@example.com"]),
                leg("new", &["b@example.com"]),
            ],
        )
        .await;
        assert_eq!(due_of(&q, &id).len(), 2);
        let r = q
            .hold(&QueueId::parse(&id.0.to_ascii_lowercase()).unwrap())
            .await
            .unwrap();
        assert_eq!((r.action, r.legs), (LegAction::Hold, 2));
        assert!(due_of(&q, &id).is_empty());
        assert!(q.record(&id).unwrap().legs.iter().all(|l| l.held));
        // Retry leaves held legs held.
        let r = q.retry(&id, SystemTime::now()).await.unwrap();
        assert_eq!((r.legs, r.held), (0, 2));
        assert!(due_of(&q, &id).is_empty());
        let r = q.release(&id, SystemTime::now()).await.unwrap();
        assert_eq!((r.action, r.legs), (LegAction::Release, 2));
        assert_eq!(due_of(&q, &id).len(), 2);
        assert!(matches!(
            q.hold(&QueueId("0000000000000Z".into())).await,
            Err(QueueError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn retry_makes_deferred_legs_due_now() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        let id = put(
            &q,
            "s@example.org",
            vec![
                leg("old", &["a@example.com", "c@example.com"]),
                leg("new", &["b@example.com"]),
            ],
        )
        .await;
        let later = SystemTime::now() + Duration::from_secs(3600);
        q.update_leg(&id, LegId(0), |l| {
            delivered(l, 0);
            deferred(l, later);
        })
        .await
        .unwrap();
        q.update_leg(&id, LegId(1), |l| deferred(l, later))
            .await
            .unwrap();
        assert!(q.due(SystemTime::now(), 100).unwrap().is_empty());
        let now = SystemTime::now();
        let r = q.retry(&id, now).await.unwrap();
        assert_eq!((r.action, r.legs, r.held), (LegAction::Retry, 2, 0));
        let due = q.due(now, 100).unwrap();
        assert_eq!(due.len(), 2, "{due:?}");
        let rec = q.record(&id).unwrap();
        assert!(matches!(
            rec.legs[0].recipients[0].state,
            RcptState::Delivered { .. }
        ));
        assert!(
            matches!(rec.legs[0].recipients[1].state, RcptState::Deferred { next, attempts: 1, .. } if next == now)
        );
        // retry_all: only messages with something pending.
        let other = put(&q, "s@example.org", vec![leg("old", &["x@example.com"])]).await;
        q.update_leg(&other, LegId(0), |l| delivered(l, 0))
            .await
            .unwrap();
        let all = q.retry_all(SystemTime::now()).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, id);
    }

    #[tokio::test]
    async fn live_delete_with_bounce_waits_for_a_leg_in_flight() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        let cfg = config("[routing]\ndefault = [\"old\"]\n");
        let id = put(&q, "s@example.org", vec![leg("old", &["a@example.com"])]).await;
        // Due now, not held: a live scheduler may be delivering it this instant.
        let now = SystemTime::now() + std::time::Duration::from_secs(1);
        assert!(matches!(
            crate::admin::ops::delete(&q, &id, Some(&cfg), now, true).await,
            Err(QueueError::Busy(_))
        ));
        assert_eq!(q.list().unwrap().len(), 1, "nothing deleted, no DSN");
        // A held leg is certainly not in flight.
        q.hold(&id).await.unwrap();
        let r = crate::admin::ops::delete(&q, &id, Some(&cfg), now, true)
            .await
            .unwrap();
        assert!(r.bounce.is_some());
    }

    #[tokio::test]
    async fn delete_without_and_with_bounce() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        let cfg = config("[routing]\ndefault = [\"old\"]\n");
        // Without bounce: gone, nothing queued.
        let id = put(&q, "s@example.org", vec![leg("old", &["a@example.com"])]).await;
        let r = q.delete(&id, None, SystemTime::now(), false).await.unwrap();
        assert_eq!(r.pending, vec!["a@example.com"]);
        assert_eq!(r.bounce, None);
        assert!(q.list().unwrap().is_empty());
        assert!(matches!(
            q.delete(&id, None, SystemTime::now(), false).await,
            Err(QueueError::NotFound(_))
        ));

        // With bounce: a DSN for the undelivered recipients only, from <> via bounce.via.
        let id = put(
            &q,
            "s@example.org",
            vec![
                leg("old", &["a@example.com", "bob@example.com"]),
                leg("new", &["bob@example.com", "c@example.com"]),
            ],
        )
        .await;
        q.update_leg(&id, LegId(0), |l| delivered(l, 1))
            .await
            .unwrap();
        let r = crate::admin::ops::delete(&q, &id, Some(&cfg), SystemTime::now(), false)
            .await
            .unwrap();
        assert_eq!(r.pending, vec!["a@example.com", "c@example.com"]);
        let dsn = r.bounce.expect("a DSN");
        let list = q.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, dsn);
        assert_eq!(list[0].mail_from, "");
        assert_eq!(list[0].legs[0].target, "old");
        assert_eq!(list[0].legs[0].recipients[0].address, "s@example.org");
        let text = String::from_utf8(q.read_body(&dsn).unwrap()).unwrap();
        assert!(text.contains("deleted by the administrator"), "{text}");
        assert!(text.contains("Action: failed"), "{text}");
        assert!(
            text.contains("Final-Recipient: rfc822; c@example-com.new.test"),
            "{text}"
        );
        assert!(text.contains("Subject: ops test"), "{text}");
        assert!(!text.contains("Final-Recipient: rfc822; bob@"), "{text}");
        // Never bounce a bounce.
        let r = crate::admin::ops::delete(&q, &dsn, Some(&cfg), SystemTime::now(), false)
            .await
            .unwrap();
        assert_eq!(r.bounce, None);
        assert!(q.list().unwrap().is_empty());
    }

    #[test]
    fn dsn_target_maps_mx() {
        let mut cfg = config("");
        assert_eq!(bounce::dsn_target(&cfg), "old");
        cfg.bounce.via = Some("mx".into());
        assert_eq!(bounce::dsn_target(&cfg), crate::queue::model::MX_TARGET);
    }

    const SPLIT: &str = r#"
[routing]
default = ["old"]
[[routing.rule]]
name = "wave-1"
recipients = ["carol@example.com", "dave@example.com"]
deliver = ["new"]
[[routing.rule]]
name = "pilot"
recipients = ["erin@example.com"]
deliver = ["old", "new"]
"#;

    #[tokio::test]
    async fn reroute_moves_only_pending_recipients() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        // Accepted under "everything to old; bob dual".
        let id = put(
            &q,
            "s@example.org",
            vec![
                leg(
                    "old",
                    &[
                        "bob@example.com",
                        "carol@example.com",
                        "dave@example.com",
                        "erin@example.com",
                        "zed@example.com",
                    ],
                ),
                leg("new", &["bob@example.com"]),
            ],
        )
        .await;
        // carol already delivered on old: never touched.
        q.update_leg(&id, LegId(0), |l| delivered(l, 1))
            .await
            .unwrap();
        let now = SystemTime::now();
        let r = crate::admin::ops::reroute(&q, &id, &router(SPLIT), now, false)
            .await
            .unwrap();
        let moved: Vec<(&str, Vec<String>, Vec<String>)> = r
            .moved
            .iter()
            .map(|m| (m.recipient.as_str(), m.from.clone(), m.to.clone()))
            .collect();
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            moved,
            vec![
                ("bob@example.com", v(&["new"]), v(&[])),
                ("dave@example.com", v(&["old"]), v(&["new"])),
                ("erin@example.com", v(&[]), v(&["new"])),
            ]
        );
        assert_eq!(r.unchanged, 1, "zed stays on old by default");
        assert!(r.unrouted.is_empty() && r.busy.is_empty());
        let rec = q.record(&id).unwrap();
        type Shown<'a> = Vec<(&'a str, Vec<(&'a str, &'a str, bool)>)>;
        let show: Shown = rec
            .legs
            .iter()
            .map(|l| {
                (
                    l.target.as_str(),
                    l.recipients
                        .iter()
                        .map(|r| (r.address.as_str(), r.rule.as_str(), r.state.is_pending()))
                        .collect(),
                )
            })
            .collect();
        // carol (delivered) untouched; bob left the new leg, whose slot now carries dave, erin.
        assert_eq!(
            show,
            vec![
                (
                    "old",
                    vec![
                        ("bob@example.com", "default", true),
                        ("carol@example.com", "default", false),
                        ("erin@example.com", "default", true),
                        ("zed@example.com", "default", true),
                    ]
                ),
                (
                    "new",
                    vec![
                        ("dave@example.com", "wave-1", true),
                        ("erin@example.com", "pilot", true)
                    ]
                ),
            ]
        );
        assert_eq!(rec.legs[1].state, crate::queue::model::LegState::Queued);
        assert_eq!(rec.legs[1].created, rec.legs[0].created);
        assert_eq!(due_of(&q, &id).len(), 2);
        // Again: nothing to do, no write.
        let r = crate::admin::ops::reroute(&q, &id, &router(SPLIT), now, false)
            .await
            .unwrap();
        assert!(r.moved.is_empty() && r.unchanged == 4, "{r:?}");
        assert_eq!(q.record(&id).unwrap(), rec);
        // Everyone to "new" now: old keeps only its delivered carol; new gets bob and zed.
        let r = crate::admin::ops::reroute_all(
            &q,
            &router("[routing]\ndefault = [\"new\"]\n"),
            now,
            false,
        )
        .await
        .unwrap();
        assert_eq!(r.len(), 1);
        let rec = q.record(&id).unwrap();
        assert_eq!(rec.legs[0].recipients.len(), 1);
        assert_eq!(rec.legs[0].state, crate::queue::model::LegState::Delivered);
        let new: Vec<&str> = rec.legs[1]
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(
            new,
            vec![
                "dave@example.com",
                "erin@example.com",
                "bob@example.com",
                "zed@example.com"
            ]
        );
        assert_eq!(due_of(&q, &id).len(), 1);
    }

    #[tokio::test]
    async fn reroute_reports_unrouted_and_busy_and_keeps_held() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        let id = put(
            &q,
            "s@example.org",
            vec![leg("old", &["carol@example.com", "nobody@example.com"])],
        )
        .await;
        let no_default = "[[routing.rule]]\nname = \"wave-1\"\nrecipients = [\"carol@example.com\"]\ndeliver = [\"new\"]\n";
        let now = SystemTime::now();
        // Live and due now: an attempt may be in flight, so nothing moves.
        let r = crate::admin::ops::reroute(&q, &id, &router(no_default), now, true)
            .await
            .unwrap();
        assert_eq!(r.busy, vec!["carol@example.com"]);
        assert_eq!(r.unrouted, vec!["nobody@example.com"]);
        assert!(r.moved.is_empty());
        // Held: not in flight, and the new leg stays held.
        q.hold(&id).await.unwrap();
        let r = crate::admin::ops::reroute(&q, &id, &router(no_default), now, true)
            .await
            .unwrap();
        assert_eq!(r.moved.len(), 1);
        assert_eq!(r.unrouted, vec!["nobody@example.com"]);
        let rec = q.record(&id).unwrap();
        assert_eq!(rec.legs.len(), 2);
        assert_eq!(rec.legs[0].recipients[0].address, "nobody@example.com");
        assert_eq!(rec.legs[1].target, "new");
        assert!(rec.legs.iter().all(|l| l.held));
        assert!(due_of(&q, &id).is_empty());
    }

    fn two_leg_record(id: &str, old: &str, new: &str, now: SystemTime) -> MessageRecord {
        MessageRecord::planned(
            QueueId(id.into()),
            env("s@example.org"),
            1,
            crate::queue::model::BodyLocation::Inline,
            vec![leg("old", &[old]), leg("new", &[new])],
            now,
        )
    }

    #[test]
    fn plan_keeps_leg_ids_and_leaves_a_busy_leg_alone() {
        let now = SystemTime::now();
        let rec = two_leg_record("0000000000000A", "a@example.com", "b@example.com", now);
        // Everyone to new; the new leg may be in flight, so a cannot join it: a fresh leg.
        let route = |_: &str| Some((vec!["new".to_string()], "r".to_string()));
        let busy = |l: &Leg| l.target == "new";
        let (out, r) = plan_reroute(&rec, route, busy, now);
        assert_eq!(r.moved.len(), 1);
        // Leg 0 (emptied) is dropped; the busy leg keeps its id and content.
        assert_eq!(out.legs.len(), 2);
        assert_eq!(out.legs[0], rec.legs[1]);
        assert_eq!(out.legs[1].id, crate::queue::model::LegId(2));
        assert_eq!(out.legs[1].target, "new");
        assert_eq!(out.legs[1].recipients[0].address, "a@example.com");
        assert_eq!(out.next_leg_id, 3);
    }

    #[test]
    fn a_recipient_held_on_its_leg_stays_held_where_it_goes() {
        let now = SystemTime::now();
        let mut rec = two_leg_record(
            "0000000000000B",
            "carol@example.com",
            "bob@example.com",
            now,
        );
        rec.legs[0].held = true;
        let route = |_: &str| Some((vec!["new".to_string()], "r".to_string()));
        let (out, r) = plan_reroute(&rec, route, |_: &Leg| false, now);
        assert_eq!(r.moved.len(), 1);
        assert_eq!(out.legs.len(), 2);
        // carol's old leg emptied and dropped; she goes to a new held leg; bob's leg untouched.
        assert_eq!(out.legs[0], rec.legs[1]);
        assert_eq!(out.legs[1].target, "new");
        assert!(out.legs[1].held);
        assert_eq!(out.legs[1].recipients[0].address, "carol@example.com");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        const TARGETS: [&str; 3] = ["old", "new", "third"];
        const ADDRS: [&str; 4] = ["a@x", "b@x", "c@x", "d@x"];

        fn state(k: u8) -> RcptState {
            match k % 4 {
                0 => RcptState::Queued,
                1 => RcptState::Deferred {
                    next: SystemTime::UNIX_EPOCH,
                    attempts: 1,
                    last_reply: "451".into(),
                },
                2 => RcptState::Delivered {
                    reply: "250".into(),
                },
                _ => RcptState::Failed {
                    reply: "550".into(),
                },
            }
        }

        /// (target index, held, busy, recipients as (address index, state kind)).
        type LegSpec = (usize, bool, bool, Vec<(usize, u8)>);

        fn record(spec: &[LegSpec]) -> MessageRecord {
            let now = SystemTime::UNIX_EPOCH;
            let legs: Vec<Leg> = spec
                .iter()
                .enumerate()
                .map(|(i, (t, held, _, rs))| {
                    let mut seen = HashSet::new();
                    let mut l = Leg::new(LegId(i as u16), leg(TARGETS[*t], &[]), now);
                    l.recipients = rs
                        .iter()
                        .filter(|(a, _)| seen.insert(*a))
                        .map(|(a, k)| Recipient {
                            address: ADDRS[*a].into(),
                            rule: "default".into(),
                            state: state(*k),
                        })
                        .collect();
                    l.held = *held;
                    l.refresh_state();
                    l
                })
                .collect();
            MessageRecord {
                id: QueueId("0000000000000C".into()),
                envelope: env("s@x"),
                size: 1,
                body: crate::queue::model::BodyLocation::Inline,
                next_leg_id: legs.len() as u16,
                legs,
                body_missing: false,
                seals: Default::default(),
            }
        }

        fn entries(rec: &MessageRecord, pending: bool) -> Vec<(String, String, RcptState)> {
            let mut v: Vec<_> = rec
                .legs
                .iter()
                .flat_map(|l| {
                    l.recipients
                        .iter()
                        .filter(move |r| r.state.is_pending() == pending)
                        .map(move |r| (r.address.clone(), l.target.clone(), r.state.clone()))
                })
                .collect();
            v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            v
        }

        proptest! {
            #[test]
            fn reroute_invariants(
                spec in prop::collection::vec(
                    (0usize..3, any::<bool>(), any::<bool>(),
                     prop::collection::vec((0usize..4, 0u8..4), 1..4)),
                    1..4),
                routes in prop::collection::vec(prop::option::of(prop::collection::btree_set(0usize..3, 1..3)), 4),
            ) {
                let rec = record(&spec);
                let busy_flags: Vec<bool> = spec.iter().map(|s| s.2).collect();
                let route = |a: &str| {
                    let i = ADDRS.iter().position(|x| *x == a)?;
                    routes[i].as_ref().map(|set| {
                        (set.iter().map(|t| TARGETS[*t].to_string()).collect::<Vec<_>>(), "r".to_string())
                    })
                };
                let busy_of = |l: &Leg| busy_flags[l.id.0 as usize];
                let now = SystemTime::UNIX_EPOCH;
                let (out, report) = plan_reroute(&rec, route, busy_of, now);
                // Delivered and failed entries are never touched.
                prop_assert_eq!(entries(&out, false), entries(&rec, false));
                // Busy legs keep their id and content.
                for (l, b) in rec.legs.iter().zip(&busy_flags) {
                    if *b {
                        prop_assert_eq!(out.leg(l.id), Some(l));
                    }
                }
                // Ids stay unique, and new legs never take an id the message used.
                let ids: HashSet<LegId> = out.legs.iter().map(|l| l.id).collect();
                prop_assert_eq!(ids.len(), out.legs.len());
                for l in &out.legs {
                    prop_assert!(rec.leg(l.id).is_some() || l.id.0 >= rec.next_leg_id);
                }
                let moved: HashSet<&str> = report.moved.iter().map(|m| m.recipient.as_str()).collect();
                for a in ADDRS {
                    let before: Vec<_> = entries(&rec, true).into_iter().filter(|e| e.0 == a).collect();
                    let after: Vec<_> = entries(&out, true).into_iter().filter(|e| e.0 == a).collect();
                    if !moved.contains(a) {
                        prop_assert_eq!(before, after, "{} not moved", a);
                        continue;
                    }
                    // Moved: pending only on routed targets, and every routed target carried.
                    let (targets, _) = route(a).unwrap();
                    for e in &after {
                        prop_assert!(targets.contains(&e.1));
                    }
                    for t in &targets {
                        let anywhere = out.legs.iter().any(|l| &l.target == t && l.recipients.iter().any(|r| r.address == a));
                        prop_assert!(anywhere, "{} not on {}", a, t);
                    }
                }
                // No empty leg is left behind by a reroute.
                for l in &out.legs {
                    prop_assert!(!l.recipients.is_empty());
                    prop_assert_eq!(l.state, l.derive_state());
                }
            }
        }
    }
}
