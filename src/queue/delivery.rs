//! Queue operations for the delivery engine: read the due index, apply the result of an
//! attempt to one leg (record, due entries, the DSNs it causes and the removal of a finished
//! message in one transaction, durable before anything relies on it), and the start-up sweep.
//! Never does network IO and never decides what an outcome means.

use super::model::{Leg, LegId, MessageRecord};
use super::store::{Change, Rewritten, Staged};
use super::{Queue, QueueError, QueueId};
use std::time::SystemTime;

impl Queue {
    /// Resolves when new due entries may exist (a commit or an operator action).
    pub async fn due_changed(&self) {
        self.inner.due_notify.notified().await;
    }

    /// Wake the scheduler.
    pub fn notify_due(&self) {
        self.inner.due_notify.notify_one();
    }

    /// Apply `f` to the leg with id `leg` of `id`; then `stage(leg before, record after)` may return new
    /// messages (DSNs) to insert. All in one transaction with the due entries, and a message
    /// that is finished afterwards ([`MessageRecord::is_finished`]) is removed in it too: a
    /// crash can never keep the update and lose the DSN. Returns once durable. `f` and `stage`
    /// may run more than once (transaction retries): they must be pure functions of their
    /// arguments. Returns (leg before, result); `result.record` shows the final state even
    /// when the message was removed.
    pub async fn update_leg_staged<F, S>(
        &self,
        id: &QueueId,
        leg: LegId,
        f: F,
        stage: S,
    ) -> Result<(Leg, Rewritten<()>), QueueError>
    where
        F: Fn(&mut Leg),
        S: Fn(&Leg, &MessageRecord) -> Vec<Staged>,
    {
        let out = self
            .rewrite(id, |rec| {
                let Some(l) = rec.leg_mut(leg) else {
                    return Err(QueueError::NotFound(format!("{id} leg {leg}")));
                };
                let before = l.clone();
                f(l);
                l.refresh_state();
                let add = stage(&before, rec);
                Ok(Change {
                    value: before,
                    remove: rec.is_finished(),
                    add,
                })
            })
            .await?;
        let Rewritten {
            value,
            record,
            removed,
            added,
        } = out;
        Ok((
            value,
            Rewritten {
                value: (),
                record,
                removed,
                added,
            },
        ))
    }

    /// [`Queue::update_leg_staged`] without new messages. Returns (leg before, record after).
    pub async fn update_leg<F>(
        &self,
        id: &QueueId,
        leg: LegId,
        f: F,
    ) -> Result<(Leg, MessageRecord), QueueError>
    where
        F: Fn(&mut Leg),
    {
        let (before, out) = self
            .update_leg_staged(id, leg, f, |_, _| Vec::new())
            .await?;
        Ok((before, out.record))
    }

    /// Apply `f` to every leg of `id` (operator actions: hold, release, retry now).
    pub async fn update_legs<F>(&self, id: &QueueId, f: F) -> Result<MessageRecord, QueueError>
    where
        F: Fn(&mut Leg),
    {
        let out = self
            .rewrite(id, |rec| {
                for l in rec.legs.iter_mut() {
                    f(l);
                    l.refresh_state();
                }
                Ok(Change::keep(()))
            })
            .await?;
        self.notify_due();
        Ok(out.record)
    }

    /// Remove a message for good (record, inline body, due entries, spool file), durably; a
    /// message that is already gone is not an error.
    pub async fn remove_message(&self, id: &QueueId) -> Result<(), QueueError> {
        match self.remove(id).await {
            Err(QueueError::NotFound(_)) => Ok(()),
            r => r,
        }
    }

    /// Ids of finished messages ([`MessageRecord::is_finished`]) still stored: none are left
    /// behind by the delivery engine (a finished message is removed in the transaction that
    /// finishes it, with its DSNs), but a store written by an older version may hold some.
    /// Scans every record: call at start only.
    pub fn finished_messages(&self) -> Result<Vec<QueueId>, QueueError> {
        let mut out = Vec::new();
        for rec in self.inner.store.records() {
            let rec = rec?;
            if rec.is_finished() {
                out.push(rec.id);
            }
        }
        Ok(out)
    }
}

/// A new message for [`Queue::update_leg_staged`]: an inline body (a DSN is small) under a
/// fresh id, its legs due now.
pub fn stage_message(
    id: QueueId,
    envelope: super::Envelope,
    legs: Vec<super::NewLeg>,
    body: Vec<u8>,
    now: SystemTime,
) -> Staged {
    let size = body.len() as u64;
    let location = super::model::BodyLocation::Inline;
    Staged {
        rec: MessageRecord::planned(id, envelope, size, location, legs, now),
        inline_body: Some(body),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn staged_message_is_inline_and_due() {
        let now = std::time::SystemTime::now();
        let s = super::stage_message(
            super::super::QueueId("00000000000001".into()),
            super::super::Envelope {
                mail_from: String::new(),
                helo: "h".into(),
                client_addr: "127.0.0.1:0".parse().unwrap(),
                received_at: now,
                smtputf8: false,
                body_8bit: false,
            },
            vec![super::super::NewLeg {
                target: "old".into(),
                rules: vec!["bounce".into()],
                recipients: vec!["a@example.org".into()],
            }],
            b"x".to_vec(),
            now,
        );
        assert_eq!(s.rec.size, 1);
        assert_eq!(crate::queue::store::due_keys(&s.rec).len(), 1);
    }
}
