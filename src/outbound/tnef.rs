//! Delivery-time TNEF → MIME conversion (`targets.NAME.convert_tnef`): reads the queued message,
//! converts its `winmail.dat` parts (`crate::convert`, deterministic, so an ARC seal computed at
//! intake over the converted copy still matches) and logs, with the queue id, what was
//! converted or why a part was kept as it was. Never changes the queued bytes: other legs and
//! retries start again from the original.

use crate::convert::{self, PartOutcome, TnefOptions};
use crate::queue::QueuedBody;
use crate::queue::model::MessageRecord;

/// The converted copy of `rec` for a target converting TNEF; `None` to send the queued bytes
/// (no TNEF part, nothing decodable, or the spool file unreadable: the send reports that).
pub async fn convert_for_delivery(
    rec: &MessageRecord,
    body: &QueuedBody,
    opts: TnefOptions,
) -> Option<Vec<u8>> {
    let bytes = match body {
        QueuedBody::Inline(v) => v.to_vec(),
        QueuedBody::Spool(p) => match tokio::fs::read(p).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(queue_id = %rec.id, error = %e, "TNEF conversion: spool file unreadable");
                return None;
            }
        },
    };
    if !convert::contains_tnef(&bytes) {
        return None;
    }
    let c = tokio::task::spawn_blocking(move || convert::convert_tnef(&bytes, opts))
        .await
        .ok()??;
    for p in &c.parts {
        match &p.outcome {
            PartOutcome::Converted {
                attachments,
                body,
                calendar,
            } => tracing::info!(
                queue_id = %rec.id,
                part = %p.name,
                attachments = ?attachments,
                body = body.as_deref().unwrap_or("none"),
                calendar,
                "TNEF part converted to MIME"
            ),
            PartOutcome::Kept { reason } => tracing::warn!(
                queue_id = %rec.id,
                part = %p.name,
                reason = %reason,
                "TNEF part kept as it was"
            ),
        }
    }
    c.changed().then_some(c.bytes)
}
