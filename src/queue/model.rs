//! The queue's data model: a message record (envelope, size, body location, legs) and its legs
//! with per-recipient state, as stored in the `messages` tree and returned by the CLI/admin API.
//! Pure data and state summaries; never does IO (encoding to bytes is here, storage is not).

use super::{Envelope, NewLeg, QueueId};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// Where a message body lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BodyLocation {
    /// In the `bodies` tree under the message id.
    Inline,
    /// A file `<state_dir>/spool/<file>`.
    Spool { file: String },
}

/// Delivery state of one recipient on one leg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RcptState {
    Queued,
    Deferred {
        next: SystemTime,
        attempts: u32,
        last_reply: String,
    },
    Delivered {
        reply: String,
    },
    Failed {
        reply: String,
    },
}

impl RcptState {
    /// Still to be delivered (queued or deferred).
    pub fn is_pending(&self) -> bool {
        matches!(self, RcptState::Queued | RcptState::Deferred { .. })
    }

    /// The last remote reply recorded for this recipient, if any.
    pub fn last_reply(&self) -> Option<&str> {
        match self {
            RcptState::Queued => None,
            RcptState::Deferred { last_reply, .. } => Some(last_reply),
            RcptState::Delivered { reply } | RcptState::Failed { reply } => Some(reply),
        }
    }
}

/// One recipient of a leg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address as the client gave it (rewriting for the target happens at delivery).
    pub address: String,
    /// The routing rule it matched (or `default`).
    pub rule: String,
    #[serde(flatten)]
    pub state: RcptState,
}

/// Summary state of a leg, derived from its recipients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegState {
    /// Every pending recipient is waiting for its first attempt.
    Queued,
    /// At least one pending recipient was deferred.
    Deferred,
    /// Every recipient delivered.
    Delivered,
    /// Every recipient failed permanently.
    Failed,
    /// Nothing pending; some delivered, some failed.
    Partial,
}

impl LegState {
    pub fn as_str(self) -> &'static str {
        match self {
            LegState::Queued => "queued",
            LegState::Deferred => "deferred",
            LegState::Delivered => "delivered",
            LegState::Failed => "failed",
            LegState::Partial => "partial",
        }
    }

    /// No further delivery attempts.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            LegState::Delivered | LegState::Failed | LegState::Partial
        )
    }
}

/// A leg's id within its message: assigned when the leg is planned (at acceptance, or by a
/// reroute that adds a leg), never reused within the message, so the scheduler and operator
/// actions address a leg the same way whatever happens to the other legs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LegId(pub u16);

impl LegId {
    /// Placeholder of a record stored before legs had ids; [`MessageRecord::decode`] replaces
    /// it by the leg's position.
    const UNASSIGNED: LegId = LegId(u16::MAX);

    fn unassigned() -> LegId {
        LegId::UNASSIGNED
    }
}

impl std::fmt::Display for LegId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One (message, target) pair with its own recipients and retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// Stable within the message (see [`LegId`]).
    #[serde(default = "LegId::unassigned")]
    pub id: LegId,
    pub target: String,
    pub recipients: Vec<Recipient>,
    /// Summary of the recipients' states (kept in step by [`Leg::refresh_state`]).
    pub state: LegState,
    /// Delivery attempts made for this leg.
    pub attempts: u32,
    /// When the scheduler should try it next (`None` once final). Mirrors the `due` index.
    pub next_attempt: Option<SystemTime>,
    pub created: SystemTime,
    /// Held legs are not scheduled until released.
    pub held: bool,
    /// A delay DSN was sent for this leg (at most one per leg).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delay_warned: bool,
}

impl Leg {
    /// A fresh leg `id` from the acceptance plan: every recipient queued, due now.
    pub fn new(id: LegId, plan: NewLeg, now: SystemTime) -> Leg {
        let NewLeg {
            target,
            rules,
            recipients,
        } = plan;
        let recipients = recipients
            .into_iter()
            .enumerate()
            .map(|(i, address)| Recipient {
                address,
                rule: rules
                    .get(i)
                    .or(rules.last())
                    .cloned()
                    .unwrap_or_else(|| "default".to_string()),
                state: RcptState::Queued,
            })
            .collect();
        let mut leg = Leg {
            id,
            target,
            recipients,
            state: LegState::Queued,
            attempts: 0,
            next_attempt: Some(now),
            created: now,
            held: false,
            delay_warned: false,
        };
        leg.refresh_state();
        leg
    }

    /// The summary state the recipients imply.
    pub fn derive_state(&self) -> LegState {
        let pending: Vec<&Recipient> = self
            .recipients
            .iter()
            .filter(|r| r.state.is_pending())
            .collect();
        if !pending.is_empty() {
            if pending
                .iter()
                .any(|r| matches!(r.state, RcptState::Deferred { .. }))
            {
                return LegState::Deferred;
            }
            return LegState::Queued;
        }
        let delivered = self
            .recipients
            .iter()
            .filter(|r| matches!(r.state, RcptState::Delivered { .. }))
            .count();
        if delivered == self.recipients.len() {
            LegState::Delivered
        } else if delivered == 0 {
            LegState::Failed
        } else {
            LegState::Partial
        }
    }

    /// Recompute `state`; a final leg has no next attempt.
    pub fn refresh_state(&mut self) {
        self.state = self.derive_state();
        if self.state.is_final() {
            self.next_attempt = None;
        }
    }

    /// The most recent reply worth showing (first deferred/failed reply, else any).
    pub fn last_reply(&self) -> Option<&str> {
        self.recipients
            .iter()
            .filter(|r| {
                matches!(
                    r.state,
                    RcptState::Deferred { .. } | RcptState::Failed { .. }
                )
            })
            .chain(self.recipients.iter())
            .find_map(|r| r.state.last_reply())
    }
}

/// The stored record of one message (`messages` tree value).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: QueueId,
    pub envelope: Envelope,
    /// Body size in bytes.
    pub size: u64,
    pub body: BodyLocation,
    pub legs: Vec<Leg>,
    /// The id the next leg planned for this message gets ([`LegId`]s are never reused).
    #[serde(default)]
    pub next_leg_id: u16,
    /// Set by recovery when the spool body is missing (should never happen).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_missing: bool,
    /// Header fields put on top of the copies delivered to a target (target name → the ARC
    /// set sealed for it at intake).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub seals: std::collections::BTreeMap<String, String>,
}

/// The rule name recorded on the recipients of a DSN cutover generated itself (never
/// rewritten, never bounced again).
pub const BOUNCE_RULE: &str = "bounce";

/// Reserved target name for legs delivered by MX lookup of the recipient's domain (DSNs to
/// senders). The delivery engine gives them a connection pool per recipient domain.
pub const MX_TARGET: &str = "@mx";

/// Where one recipient address stands across every leg that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcptFate {
    /// Some leg still has it pending.
    Pending,
    /// Final everywhere, delivered on every leg.
    Delivered,
    /// Final everywhere, failed on every leg: the sender gets a failure DSN.
    Failed,
    /// Final everywhere, delivered on some legs and failed on others (dual delivery with one
    /// bad leg): no DSN, an operator problem.
    Mixed,
}

impl MessageRecord {
    /// A new record whose legs are planned from `legs` (ids 0, 1, ...), every leg due `now`.
    pub fn planned(
        id: QueueId,
        envelope: Envelope,
        size: u64,
        body: BodyLocation,
        legs: Vec<NewLeg>,
        now: SystemTime,
    ) -> MessageRecord {
        let mut rec = MessageRecord {
            id,
            envelope,
            size,
            body,
            legs: Vec::with_capacity(legs.len()),
            next_leg_id: 0,
            body_missing: false,
            seals: Default::default(),
        };
        for plan in legs {
            let leg = rec.new_leg(plan, now);
            rec.legs.push(leg);
        }
        rec
    }

    /// A fresh leg for this message from `plan` under the next unused [`LegId`] (the caller
    /// places it in `legs`).
    pub fn new_leg(&mut self, plan: NewLeg, now: SystemTime) -> Leg {
        let id = LegId(self.next_leg_id);
        self.next_leg_id = self.next_leg_id.saturating_add(1);
        Leg::new(id, plan, now)
    }

    /// The leg with id `id`.
    pub fn leg(&self, id: LegId) -> Option<&Leg> {
        self.legs.iter().find(|l| l.id == id)
    }

    /// The leg with id `id`, mutable.
    pub fn leg_mut(&mut self, id: LegId) -> Option<&mut Leg> {
        self.legs.iter_mut().find(|l| l.id == id)
    }

    /// A record stored before legs had ids gets ids equal to the legs' positions (which is
    /// what its `due` entries name); `next_leg_id` is kept past every id in use.
    fn assign_missing_leg_ids(&mut self) {
        for (i, l) in self.legs.iter_mut().enumerate() {
            if l.id == LegId::UNASSIGNED {
                l.id = LegId(i as u16);
            }
        }
        let past_max = self.legs.iter().map(|l| l.id.0.saturating_add(1)).max();
        self.next_leg_id = self.next_leg_id.max(past_max.unwrap_or(0));
    }

    /// Nothing left to do: every leg is final. The queue removes a finished message in the
    /// transaction that finishes it.
    pub fn is_finished(&self) -> bool {
        self.legs.iter().all(|l| l.state.is_final())
    }

    /// Where `address` stands across every leg that carries it (`Pending` if none does).
    pub fn fate(&self, address: &str) -> RcptFate {
        let mut delivered = 0;
        let mut failed = 0;
        for r in self
            .legs
            .iter()
            .flat_map(|l| l.recipients.iter())
            .filter(|r| r.address == address)
        {
            match r.state {
                RcptState::Delivered { .. } => delivered += 1,
                RcptState::Failed { .. } => failed += 1,
                _ => return RcptFate::Pending,
            }
        }
        match (delivered, failed) {
            (0, 0) => RcptFate::Pending,
            (_, 0) => RcptFate::Delivered,
            (0, _) => RcptFate::Failed,
            _ => RcptFate::Mixed,
        }
    }

    /// Encode for storage (JSON; see the benchmark notes in `store.rs`).
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Decode a stored record (records written before legs had ids get them here).
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut rec: MessageRecord = serde_json::from_slice(bytes)?;
        rec.assign_missing_leg_ids();
        Ok(rec)
    }

    pub fn summary(&self) -> MessageSummary {
        MessageSummary {
            id: self.id.clone(),
            received_at: self.envelope.received_at,
            size: self.size,
            mail_from: self.envelope.mail_from.clone(),
            legs: self.legs.clone(),
            body_missing: self.body_missing,
        }
    }
}

/// One line of `queue list`: what `postqueue -p` shows, with the legs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageSummary {
    pub id: QueueId,
    pub received_at: SystemTime,
    pub size: u64,
    pub mail_from: String,
    pub legs: Vec<Leg>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_missing: bool,
}

/// `queue show`: the record plus the first header lines of the body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    #[serde(flatten)]
    pub record: MessageRecord,
    /// Up to [`HEADER_LINES`] lines of the header section.
    pub headers: Vec<String>,
}

/// How many header lines `queue show` includes.
pub const HEADER_LINES: usize = 20;

/// The first `max` lines of the header section of `body` (stops at the empty line).
pub fn header_lines(body: &[u8], max: usize) -> Vec<String> {
    crate::header::lines(crate::header::section(body))
        .take(max)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env() -> Envelope {
        Envelope {
            mail_from: "a@example.org".into(),
            helo: "client.example.org".into(),
            client_addr: "192.0.2.1:4567".parse().unwrap(),
            received_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_123),
            smtputf8: false,
            body_8bit: true,
        }
    }

    fn leg() -> Leg {
        Leg::new(
            LegId(0),
            NewLeg {
                target: "new".into(),
                rules: vec!["wave-1".into(), "pilot".into()],
                recipients: vec!["alice@example.com".into(), "bob@example.com".into()],
            },
            SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
        )
    }

    #[test]
    fn new_leg_is_queued_and_due() {
        let l = leg();
        assert_eq!(l.state, LegState::Queued);
        assert_eq!(l.recipients[1].rule, "pilot");
        assert_eq!(l.next_attempt, Some(l.created));
        assert!(!l.held);
    }

    #[test]
    fn state_summary() {
        let mut l = leg();
        l.recipients[0].state = RcptState::Deferred {
            next: SystemTime::UNIX_EPOCH,
            attempts: 1,
            last_reply: "451 4.3.0 try later".into(),
        };
        l.refresh_state();
        assert_eq!(l.state, LegState::Deferred);
        assert_eq!(l.last_reply(), Some("451 4.3.0 try later"));
        l.recipients[0].state = RcptState::Delivered {
            reply: "250 ok".into(),
        };
        l.refresh_state();
        assert_eq!(l.state, LegState::Queued);
        l.recipients[1].state = RcptState::Failed {
            reply: "550 5.1.1 unknown".into(),
        };
        l.refresh_state();
        assert_eq!(l.state, LegState::Partial);
        assert_eq!(l.next_attempt, None);
        assert_eq!(l.last_reply(), Some("550 5.1.1 unknown"));
        l.recipients[0].state = RcptState::Failed {
            reply: "550".into(),
        };
        assert_eq!(l.derive_state(), LegState::Failed);
    }

    #[test]
    fn record_roundtrips_through_json() {
        let mut l = leg();
        l.recipients[0].state = RcptState::Deferred {
            next: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_790_000_000_123_456_789),
            attempts: 3,
            last_reply: "421 busy".into(),
        };
        l.refresh_state();
        let r = MessageRecord {
            id: QueueId("0V5KQ2H8M3A7C0".into()),
            envelope: env(),
            size: 1234,
            body: BodyLocation::Spool {
                file: "0V5KQ2H8M3A7C0".into(),
            },
            legs: vec![
                l,
                Leg {
                    id: LegId(1),
                    ..leg()
                },
            ],
            next_leg_id: 2,
            body_missing: false,
            seals: Default::default(),
        };
        let bytes = r.encode().unwrap();
        let back = MessageRecord::decode(&bytes).unwrap();
        assert_eq!(back, r);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""state":"deferred""#), "{text}");
        assert!(!text.contains("body_missing"));
        let m = Message {
            record: r.clone(),
            headers: vec!["Subject: x".into()],
        };
        let back: Message = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    fn record(legs: Vec<Leg>) -> MessageRecord {
        MessageRecord {
            id: QueueId("0V5KQ2H8M3A7C0".into()),
            envelope: env(),
            size: 1,
            body: BodyLocation::Inline,
            next_leg_id: legs.len() as u16,
            legs,
            body_missing: false,
            seals: Default::default(),
        }
    }

    #[test]
    fn finished_and_fate_across_legs() {
        let done = |reply: &str| {
            if reply.starts_with('2') {
                RcptState::Delivered {
                    reply: reply.into(),
                }
            } else {
                RcptState::Failed {
                    reply: reply.into(),
                }
            }
        };
        let (mut a, mut b) = (leg(), leg());
        b.target = "old".into();
        let mut r = record(vec![a.clone(), b.clone()]);
        assert!(!r.is_finished());
        assert_eq!(r.fate("alice@example.com"), RcptFate::Pending);
        assert_eq!(r.fate("nobody@example.com"), RcptFate::Pending);
        // alice fails on one leg, still pending on the other: no decision yet.
        a.recipients[0].state = done("550 no");
        a.refresh_state();
        r.legs = vec![a.clone(), b.clone()];
        assert_eq!(r.fate("alice@example.com"), RcptFate::Pending);
        b.recipients[0].state = done("550 no");
        b.recipients[1].state = done("250 ok");
        a.recipients[1].state = done("550 no");
        a.refresh_state();
        b.refresh_state();
        r.legs = vec![a, b];
        assert!(r.is_finished());
        assert_eq!(r.fate("alice@example.com"), RcptFate::Failed);
        assert_eq!(r.fate("bob@example.com"), RcptFate::Mixed);
        let mut c = leg();
        for x in c.recipients.iter_mut() {
            x.state = done("250 ok");
        }
        c.refresh_state();
        r.legs = vec![c];
        assert_eq!(r.fate("bob@example.com"), RcptFate::Delivered);
        // A held, pending leg keeps the message unfinished.
        let mut h = leg();
        h.held = true;
        r.legs.push(h);
        assert!(!r.is_finished());
    }

    #[test]
    fn records_without_leg_ids_load_with_ids_equal_to_positions() {
        let mut r = record(vec![leg(), leg(), leg()]);
        r.legs[2].target = "old".into();
        let mut v = serde_json::to_value(&r).unwrap();
        for l in v["legs"].as_array_mut().unwrap() {
            l.as_object_mut().unwrap().remove("id");
        }
        v.as_object_mut().unwrap().remove("next_leg_id");
        let back = MessageRecord::decode(&serde_json::to_vec(&v).unwrap()).unwrap();
        let ids: Vec<LegId> = back.legs.iter().map(|l| l.id).collect();
        assert_eq!(ids, vec![LegId(0), LegId(1), LegId(2)]);
        assert_eq!(back.next_leg_id, 3);
        assert_eq!(back.leg(LegId(2)).unwrap().target, "old");
        // A new leg never reuses an id, even one whose leg is gone.
        let mut back = back;
        back.legs.pop();
        let plan = NewLeg {
            target: "new".into(),
            rules: vec![],
            recipients: vec!["c@example.com".into()],
        };
        assert_eq!(back.new_leg(plan, SystemTime::UNIX_EPOCH).id, LegId(3));
    }

    #[test]
    fn planned_records_number_their_legs() {
        let plan = |t: &str| NewLeg {
            target: t.into(),
            rules: vec!["default".into()],
            recipients: vec!["a@example.com".into()],
        };
        let r = MessageRecord::planned(
            QueueId("0V5KQ2H8M3A7C0".into()),
            env(),
            1,
            BodyLocation::Inline,
            vec![plan("old"), plan("new")],
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(r.legs[1].id, LegId(1));
        assert_eq!(r.next_leg_id, 2);
        assert_eq!(MessageRecord::decode(&r.encode().unwrap()).unwrap(), r);
    }

    #[test]
    fn header_lines_stop_at_body() {
        let body = b"From: a\r\nTo: b\r\n c\r\nSubject: s\r\n\r\nbody line\r\n";
        assert_eq!(
            header_lines(body, 20),
            vec!["From: a", "To: b", " c", "Subject: s"]
        );
        assert_eq!(header_lines(body, 2), vec!["From: a", "To: b"]);
        assert!(header_lines(b"", 20).is_empty());
    }
}
