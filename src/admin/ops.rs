//! Operator actions composed above the queue, as KumoMTA's admin handlers compose over its queue
//! manager: a delete with bounce (the queue's removal transaction, staging the DSN that `bounce`
//! builds from the configuration) and a reroute under the routing in force. The queue knows
//! neither bounces nor routing; this module joins them. Never touches the store directly.

use crate::bounce::{self, DsnKind, DsnRecipient};
use crate::config::Config;
use crate::queue::model::{BOUNCE_RULE, Leg, MessageRecord, Recipient};
use crate::queue::ops::{Deleted, Rerouted};
use crate::queue::store::Staged;
use crate::queue::{Queue, QueueError, QueueId};
use crate::routing::Router;
use std::time::SystemTime;

/// The reason given in a DSN for a message deleted with `--bounce`.
pub const DELETED_REASON: &str = "deleted by the administrator";

/// The address `r` is (or would be) given to `l`'s target, for a DSN.
fn final_rcpt(cfg: &Config, l: &Leg, r: &Recipient) -> String {
    crate::routing::final_rcpt_stored(
        &r.address,
        cfg.targets
            .get(&l.target)
            .and_then(|t| t.rcpt_domain.as_deref()),
        &cfg.gateway.accept_domains,
        r.rule == BOUNCE_RULE,
    )
}

/// The failure DSN for the recipients of `rec` that a deletion leaves undelivered.
fn deletion_dsn(
    cfg: &Config,
    dsn_id: &QueueId,
    headers: &[u8],
    rec: &MessageRecord,
    pending: &[(&Leg, &Recipient)],
    now: SystemTime,
) -> Vec<Staged> {
    let recipients: Vec<DsnRecipient> = pending
        .iter()
        .map(|(l, r)| DsnRecipient {
            original: r.address.clone(),
            final_rcpt: final_rcpt(cfg, l, r),
            target: l.target.clone(),
            remote_mta: None,
            diagnostic: match r.state.last_reply() {
                Some(last) => format!("{DELETED_REASON}; last reply: {last}"),
                None => DELETED_REASON.to_string(),
            },
            last_attempt: Some(now),
        })
        .collect();
    bounce::stage(
        dsn_id.clone(),
        cfg,
        rec,
        DsnKind::Failure,
        &recipients,
        headers,
        now,
    )
    .into_iter()
    .collect()
}

/// Delete `id`; with `bounce = Some(config)`, queue a failure DSN ("deleted by the
/// administrator") to the sender for the recipients not delivered anywhere (none for a `<>`
/// sender) in the same transaction. `live`: see [`Queue::delete`].
pub async fn delete(
    queue: &Queue,
    id: &QueueId,
    bounce: Option<&Config>,
    now: SystemTime,
    live: bool,
) -> Result<Deleted, QueueError> {
    let Some(cfg) = bounce else {
        return queue.delete(id, None, now, live).await;
    };
    let headers = bounce::original_headers(queue, id).await;
    let dsn_id = queue.next_id();
    let build = |rec: &MessageRecord, pending: &[(&Leg, &Recipient)]| {
        deletion_dsn(cfg, &dsn_id, &headers, rec, pending, now)
    };
    queue.delete(id, Some(&build), now, live).await
}

/// [`Queue::reroute`] under `router` at `now`.
pub async fn reroute(
    queue: &Queue,
    id: &QueueId,
    router: &Router,
    now: SystemTime,
    live: bool,
) -> Result<Rerouted, QueueError> {
    let route = |a: &str| router.route(a, now).map(|r| (r.targets, r.rule));
    queue.reroute(id, &route, now, live).await
}

/// [`Queue::reroute_all`] under `router` at `now`.
pub async fn reroute_all(
    queue: &Queue,
    router: &Router,
    now: SystemTime,
    live: bool,
) -> Result<Vec<Rerouted>, QueueError> {
    let route = |a: &str| router.route(a, now).map(|r| (r.targets, r.rule));
    queue.reroute_all(&route, now, live).await
}
