//! Alerts without Prometheus (issue 12 item 5): the `[[alert]]` rules evaluated every
//! `[alerting] interval` over a snapshot of what the gateway knows (unreachable targets, the
//! oldest deferred leg, the DSN rate, backfill reports, waves), with notices to a webhook and/or
//! by mail through the queue, de-duplicated, and a resolve notice when a condition clears. The
//! last [`RECENT`] events are kept in memory for the status page and `GET /api/alerts`.
//! [`rules`] decides (pure); [`facts`] reads; [`delivery`] sends. Downstream of queue, outbound
//! and backfill: nothing there may depend on this module, and it never changes their state
//! (it only adds alert mails to the queue).

pub mod delivery;
pub mod facts;
pub mod rules;

use crate::config::Config;
use crate::outbound::scheduler::Scheduler;
use crate::queue::Queue;
use crate::routing::Router;
use delivery::{Notice, Outbox, Status};
use rules::{Transition, WaveFact};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Alert events kept for [`Alerts::recent`].
pub const RECENT: usize = 50;

/// The waves' facts at an instant under a configuration (the gateway's hook into the waves
/// module; see [`rules::WaveFact`]).
pub type WaveSource = Arc<dyn Fn(&Config, SystemTime) -> Vec<WaveFact> + Send + Sync>;

/// A notice as recorded for the status page.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AlertEvent {
    /// RFC 3339.
    pub at: String,
    pub at_unix: u64,
    /// The rule's name.
    pub alert: String,
    /// The rule's `when`.
    pub condition: String,
    pub status: Status,
    pub text: String,
    pub details: serde_json::Value,
}

/// The running alerts: what the status page reads.
#[derive(Default)]
pub struct Alerts {
    recent: Mutex<VecDeque<AlertEvent>>,
}

impl Alerts {
    /// The last [`RECENT`] events, newest first.
    pub fn recent(&self) -> Vec<AlertEvent> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().rev().cloned().collect()
    }

    fn record(&self, e: AlertEvent) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.push_back(e);
        while r.len() > RECENT {
            r.pop_front();
        }
    }
}

/// What the alerts task reads.
pub struct Inputs {
    pub queue: Queue,
    /// The configuration in force (rules and interval are re-read every tick: reloads apply).
    pub config: watch::Receiver<Arc<Config>>,
    /// The routing table in force (alert mails are routed with it).
    pub routes: watch::Receiver<Arc<Router>>,
    /// The delivery engine, when it runs in this process.
    pub scheduler: Option<Arc<Scheduler>>,
    /// HOOK: the waves module's facts (`None`: `wave_not_converged` rules stay quiet).
    pub waves: Option<WaveSource>,
}

/// Start evaluating the rules every `[alerting] interval` until `stop` turns true.
pub fn spawn(inputs: Inputs, stop: watch::Receiver<bool>) -> (Arc<Alerts>, JoinHandle<()>) {
    let alerts = Arc::new(Alerts::default());
    let outbox = Outbox::start(delivery::Worker {
        queue: inputs.queue.clone(),
        config: inputs.config.clone(),
        routes: inputs.routes,
        retries: delivery::WEBHOOK_RETRIES.to_vec(),
    });
    let sources = facts::Sources {
        queue: inputs.queue,
        scheduler: inputs.scheduler,
        waves: inputs.waves,
    };
    let task = tokio::spawn(run(alerts.clone(), sources, inputs.config, outbox, stop));
    (alerts, task)
}

async fn run(
    alerts: Arc<Alerts>,
    src: facts::Sources,
    config: watch::Receiver<Arc<Config>>,
    outbox: Outbox,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = rules::State::new(SystemTime::now(), facts::dsn_failures(&src));
    loop {
        let interval = config.borrow().alerting.interval.0;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let cfg = config.borrow().clone();
        if cfg.alert.is_empty() {
            continue;
        }
        let snap = facts::gather(&src, &cfg, SystemTime::now()).await;
        for t in rules::evaluate(&cfg.alert, &snap, &mut state) {
            if let Some((event, notice)) = notice(&cfg, &snap, t) {
                tracing::warn!(alert = %event.alert, status = event.status.as_str(), text = %event.text, "alert");
                alerts.record(event);
                outbox.send(notice);
            }
        }
    }
}

/// The event and the notice of a transition (`None` when its rule is gone).
fn notice(cfg: &Config, snap: &rules::Snapshot, t: Transition) -> Option<(AlertEvent, Notice)> {
    let (rule, status, text, details) = match t {
        Transition::Fire {
            rule,
            text,
            details,
        } => (rule, Status::Firing, text, details),
        Transition::Resolve {
            rule,
            text,
            details,
        } => (rule, Status::Resolved, text, details),
    };
    let r = cfg.alert.iter().find(|r| r.name == rule)?;
    let event = AlertEvent {
        at: crate::time::rfc3339(snap.now),
        at_unix: crate::time::unix_secs(snap.now),
        alert: rule.clone(),
        condition: r.when.as_str().to_string(),
        status,
        text: text.clone(),
        details: details.clone(),
    };
    let notice = Notice {
        alert: rule,
        status,
        text,
        details,
        webhook: r
            .webhook
            .as_deref()
            .and_then(|w| crate::config::webhook_url(w).ok()),
        email: r.email.clone(),
    };
    Some((event, notice))
}
