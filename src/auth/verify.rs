//! The IO edge of edge authentication: mail-auth's SPF (HELO and MAIL FROM), DKIM, ARC and
//! DMARC checks of one message over the gateway's resolver, within the message's time budget
//! (what does not finish in time is `temperror`, the session never stalls on DNS); then the
//! stamped message and the seals. The decision itself is `verdict`'s.

use super::verdict::{self, DmarcPolicy, Facts, Outcome};
use super::{AuthError, Decision, EdgeAuth, Processed};
use crate::config::Dns;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, MessageAuthenticator, SpfOutput, SpfResult,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// The SMTP session facts the checks need.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// MAIL FROM; empty for the null sender.
    pub mail_from: &'a str,
}

/// The authenticator over the `[dns]` resolver: one attempt per server within the budget, a
/// cache large enough for a busy MX's senders.
pub(super) fn authenticator(
    dns: &Dns,
    budget: Duration,
) -> Result<MessageAuthenticator, AuthError> {
    let resolver = crate::outbound::resolve::hickory_resolver(dns, |o| {
        o.timeout = budget.min(Duration::from_secs(3));
        o.attempts = 1;
        o.cache_size = 8192;
    })
    .map_err(|e| AuthError::Resolver(e.to_string()))?;
    Ok(MessageAuthenticator(resolver))
}

/// `fut`, or `fallback` once `deadline` has passed.
async fn within<T>(
    deadline: Instant,
    fut: impl Future<Output = T>,
    fallback: impl FnOnce() -> T,
) -> T {
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or_else(|_| fallback())
}

fn budget_error() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
        "time budget for this message exhausted".into(),
    ))
}

/// The domain of an address (after the last `@`), lowercased; the whole string without one.
fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@')
        .map_or(addr, |(_, d)| d)
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

/// What every check found.
struct Checks<'x> {
    spf_helo: SpfOutput,
    spf_mail: SpfOutput,
    dkim: Vec<DkimOutput<'x>>,
    arc: ArcOutput<'x>,
    dmarc: DmarcOutput,
}

impl EdgeAuth {
    /// Evaluate `raw` (the message as the client sent it), decide, and build what is stored:
    /// our fields, then `trace`, then `raw` without forged `Authentication-Results:`; and the
    /// ARC set of each of `targets` that seals.
    pub async fn process(
        &self,
        raw: &[u8],
        client: &Client<'_>,
        trace: &[u8],
        targets: &[&str],
        stats: &super::AuthStats,
    ) -> Processed {
        let Some(auth) = &self.authenticator else {
            return self.unevaluated(raw, trace);
        };
        let parsed = AuthenticatedMessage::parse(raw);
        let empty = AuthenticatedMessage::default();
        let msg = parsed.as_ref().unwrap_or(&empty);
        let checks = self.checks(auth, msg, client).await;
        let results = self.results(&checks, msg, client);
        let facts = self.facts(&checks, msg, client);
        let decision = verdict::decide(&self.settings, &facts);
        let summary = summary(&facts, &checks.arc);
        stats.count(
            [
                facts.spf,
                facts.dkim,
                facts.dmarc,
                dkim_outcome(checks.arc.result()),
            ],
            &decision,
        );
        if let Decision::Refuse { .. } = decision {
            return Processed {
                decision,
                message: Vec::new(),
                seals: BTreeMap::new(),
                summary,
            };
        }
        let mut message = Vec::with_capacity(raw.len() + trace.len() + 512);
        message.extend_from_slice(results.to_header().as_bytes());
        if let Decision::Quarantine(h) = &decision {
            message.extend_from_slice(h.as_bytes());
        }
        message.extend_from_slice(trace);
        for piece in super::headers::without(raw, &super::headers::forged(raw, &self.hostname)) {
            message.extend_from_slice(piece);
        }
        let seals = self.seal(&message, &results, checks.arc.result(), targets);
        Processed {
            decision,
            message,
            seals,
            summary,
        }
    }

    /// `auth.verify` off: the message with the trace fields on top, as without edge
    /// authentication.
    fn unevaluated(&self, raw: &[u8], trace: &[u8]) -> Processed {
        let mut message = trace.to_vec();
        message.extend_from_slice(raw);
        Processed {
            decision: Decision::Accept,
            message,
            seals: BTreeMap::new(),
            summary: String::new(),
        }
    }

    /// SPF (HELO, MAIL FROM), DKIM and ARC side by side, then DMARC, all by the deadline.
    async fn checks<'x>(
        &self,
        auth: &MessageAuthenticator,
        msg: &'x AuthenticatedMessage<'x>,
        c: &Client<'_>,
    ) -> Checks<'x> {
        let deadline = Instant::now() + self.settings.time_budget.0;
        let host = self.hostname.as_str();
        let helo_domain = domain_of(c.helo);
        let temp_spf = |d: &str| SpfOutput::new(d.to_string()).with_result(SpfResult::TempError);
        let spf_helo = within(
            deadline,
            auth.verify_spf(SpfParameters::verify_ehlo(c.ip, c.helo, host)),
            || temp_spf(&helo_domain),
        );
        let mail_domain = domain_of(c.mail_from);
        let spf_mail = async {
            if c.mail_from.is_empty() {
                None
            } else {
                let p = SpfParameters::verify_mail_from(c.ip, c.helo, host, c.mail_from);
                Some(within(deadline, auth.verify_spf(p), || temp_spf(&mail_domain)).await)
            }
        };
        let dkim = within(deadline, auth.verify_dkim(msg), || {
            vec![DkimOutput::temp_err(budget_error())]
        });
        let arc = within(deadline, auth.verify_arc(msg), || {
            ArcOutput::default().with_result(DkimResult::TempError(budget_error()))
        });
        let (spf_helo, spf_mail, dkim, arc) = tokio::join!(spf_helo, spf_mail, dkim, arc);
        let spf_mail = spf_mail.unwrap_or_else(|| spf_helo.clone());
        let envelope_domain = if c.mail_from.is_empty() {
            helo_domain
        } else {
            mail_domain
        };
        let from_domain = domain_of(msg.from());
        let dmarc = within(
            deadline,
            auth.verify_dmarc(DmarcParameters::new(
                msg,
                &dkim,
                &envelope_domain,
                &spf_mail,
            )),
            || {
                DmarcOutput::new(from_domain.clone())
                    .with_spf_result(DmarcResult::TempError(budget_error()))
                    .with_dkim_result(DmarcResult::TempError(budget_error()))
            },
        )
        .await;
        Checks {
            spf_helo,
            spf_mail,
            dkim,
            arc,
            dmarc,
        }
    }

    /// The `Authentication-Results:` of the checks.
    fn results<'h>(
        &'h self,
        k: &Checks<'_>,
        msg: &AuthenticatedMessage<'_>,
        c: &Client<'_>,
    ) -> AuthenticationResults<'h> {
        let mut r = AuthenticationResults::new(&self.hostname);
        if !k.dkim.is_empty() {
            r = r.with_dkim_results(&k.dkim, msg.from());
        }
        r.with_spf_ehlo_result(&k.spf_helo, c.ip, c.helo)
            .with_spf_mailfrom_result(&k.spf_mail, c.ip, c.mail_from, c.helo)
            .with_arc_result(&k.arc, c.ip)
            .with_dmarc_result(&k.dmarc)
    }

    fn facts(&self, k: &Checks<'_>, msg: &AuthenticatedMessage<'_>, c: &Client<'_>) -> Facts {
        let own = |d: &str| self.accept_domains.contains(d);
        Facts {
            spf: spf_outcome(k.spf_mail.result()),
            dkim: best_dkim(&k.dkim),
            dmarc: dmarc_outcome(&k.dmarc.result()),
            dmarc_policy: match k.dmarc.policy() {
                Policy::Reject => DmarcPolicy::Reject,
                Policy::Quarantine => DmarcPolicy::Quarantine,
                Policy::None | Policy::Unspecified => DmarcPolicy::None,
            },
            from_domain: domain_of(msg.from()),
            own_domain: (!c.mail_from.is_empty() && own(&domain_of(c.mail_from)))
                || msg.froms().iter().any(|f| own(&domain_of(f))),
        }
    }

    /// One ARC set per target that seals; a message that cannot be sealed goes unsealed (and
    /// the log says why), never refused.
    fn seal(
        &self,
        message: &[u8],
        results: &AuthenticationResults<'_>,
        chain: &DkimResult,
        targets: &[&str],
    ) -> BTreeMap<String, String> {
        let mut seals = BTreeMap::new();
        for t in targets {
            let Some(sealer) = self.sealers.get(*t) else {
                continue;
            };
            let converted = self
                .tnef
                .get(*t)
                .and_then(|o| crate::convert::convert_tnef(message, *o))
                .filter(|c| c.changed());
            let message = converted.as_ref().map_or(message, |c| &c.bytes[..]);
            match sealer.seal(message, results, chain) {
                Ok(set) => {
                    seals.insert(t.to_string(), set);
                }
                Err(e) => tracing::warn!(target = %t, error = %e, "message not ARC-sealed"),
            }
        }
        seals
    }
}

fn spf_outcome(r: SpfResult) -> Outcome {
    match r {
        SpfResult::Pass => Outcome::Pass,
        SpfResult::Fail => Outcome::Fail,
        SpfResult::SoftFail => Outcome::SoftFail,
        SpfResult::Neutral => Outcome::Neutral,
        SpfResult::TempError => Outcome::TempError,
        SpfResult::PermError => Outcome::PermError,
        SpfResult::None => Outcome::None,
    }
}

fn dkim_outcome(r: &DkimResult) -> Outcome {
    match r {
        DkimResult::Pass => Outcome::Pass,
        DkimResult::Neutral(_) => Outcome::Neutral,
        DkimResult::Fail(_) => Outcome::Fail,
        DkimResult::PermError(_) => Outcome::PermError,
        DkimResult::TempError(_) => Outcome::TempError,
        DkimResult::None => Outcome::None,
    }
}

fn dmarc_outcome(r: &DmarcResult) -> Outcome {
    match r {
        DmarcResult::Pass => Outcome::Pass,
        DmarcResult::Fail(_) => Outcome::Fail,
        DmarcResult::TempError(_) => Outcome::TempError,
        DmarcResult::PermError(_) => Outcome::PermError,
        DmarcResult::None => Outcome::None,
    }
}

/// The best result over the signatures: a pass, else a temporary error, else the first.
fn best_dkim(all: &[DkimOutput<'_>]) -> Outcome {
    let outcomes: Vec<Outcome> = all.iter().map(|o| dkim_outcome(o.result())).collect();
    [Outcome::Pass, Outcome::TempError]
        .into_iter()
        .find(|o| outcomes.contains(o))
        .or_else(|| outcomes.first().copied())
        .unwrap_or(Outcome::None)
}

fn summary(f: &Facts, arc: &ArcOutput<'_>) -> String {
    format!(
        "spf={} dkim={} dmarc={} arc={}",
        f.spf.as_str(),
        f.dkim.as_str(),
        f.dmarc.as_str(),
        dkim_outcome(arc.result()).as_str()
    )
}
