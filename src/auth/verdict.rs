//! What the authentication results of one message lead to under `[auth]`: accept, accept with
//! a quarantine header, or refuse (with which reply). Pure: facts in, decision out; the facts
//! come from `verify`, the reply is sent by the intake. It never looks anything up.

use crate::config::{Auth, DmarcAction};

/// One method's result, as RFC 8601 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::SoftFail => "softfail",
            Outcome::Neutral => "neutral",
            Outcome::None => "none",
            Outcome::TempError => "temperror",
            Outcome::PermError => "permerror",
        }
    }
}

/// The policy a DMARC record asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

/// What verification found out about one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// SPF of the MAIL FROM identity (of the HELO identity for a null sender).
    pub spf: Outcome,
    /// The best DKIM result over the signatures (`None` without any signature).
    pub dkim: Outcome,
    /// DMARC's result and the policy of the header From domain's record.
    pub dmarc: Outcome,
    pub dmarc_policy: DmarcPolicy,
    /// The header From domain (for messages and the quarantine header).
    pub from_domain: String,
    /// MAIL FROM or the header From uses one of `accept_domains`.
    pub own_domain: bool,
}

/// Why a message was refused or marked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Dmarc,
    Spoof,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Dmarc => "dmarc",
            Reason::Spoof => "spoof",
        }
    }
}

/// The decision for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Accept,
    /// Accept with this header line (CRLF-terminated) on top.
    Quarantine(String),
    /// Refuse at the end of DATA.
    Refuse {
        code: u16,
        esc: &'static str,
        text: String,
        reason: Reason,
    },
}

impl Decision {
    /// The label the acceptance line and the metrics use.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Accept => "accept",
            Decision::Quarantine(_) => "quarantine",
            Decision::Refuse { code, .. } if *code < 500 => "tempfail",
            Decision::Refuse { .. } => "reject",
        }
    }
}

/// Name of the header a DMARC quarantine adds.
pub const QUARANTINE_HEADER: &str = "X-Cutover-Quarantine";

/// Decide. Spoof protection first (it needs no record from the sender), then DMARC.
pub fn decide(auth: &Auth, f: &Facts) -> Decision {
    if auth.spoof_protection && f.own_domain && f.spf != Outcome::Pass && f.dkim != Outcome::Pass {
        // Neither passed; a lookup that could not finish is a reason to come back, not to
        // refuse for good.
        return if f.spf == Outcome::TempError || f.dkim == Outcome::TempError {
            Decision::Refuse {
                code: 451,
                esc: "4.7.5",
                text: "Sender authentication could not be completed, try again later".into(),
                reason: Reason::Spoof,
            }
        } else {
            Decision::Refuse {
                code: 550,
                esc: "5.7.1",
                text: "Message uses our own domain but passes neither SPF nor DKIM".into(),
                reason: Reason::Spoof,
            }
        };
    }
    if auth.dmarc == DmarcAction::Reject && f.dmarc == Outcome::Fail {
        match f.dmarc_policy {
            DmarcPolicy::Reject => {
                return Decision::Refuse {
                    code: 550,
                    esc: "5.7.1",
                    text: format!(
                        "Message rejected by the DMARC policy of {}",
                        printable(&f.from_domain)
                    ),
                    reason: Reason::Dmarc,
                };
            }
            DmarcPolicy::Quarantine => {
                return Decision::Quarantine(format!(
                    "{QUARANTINE_HEADER}: dmarc=fail policy.dmarc=quarantine header.from={}\r\n",
                    printable(&f.from_domain)
                ));
            }
            DmarcPolicy::None => {}
        }
    }
    Decision::Accept
}

/// A domain as it may appear in a reply or a header: printable ASCII without spaces, bounded.
fn printable(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, ';' | '(' | ')'))
        .take(253)
        .collect();
    if t.is_empty() { "unknown".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn auth(dmarc: DmarcAction, spoof: bool) -> Auth {
        Auth {
            dmarc,
            spoof_protection: spoof,
            ..Auth::default()
        }
    }

    fn facts() -> Facts {
        Facts {
            spf: Outcome::Pass,
            dkim: Outcome::None,
            dmarc: Outcome::Pass,
            dmarc_policy: DmarcPolicy::Reject,
            from_domain: "example.org".into(),
            own_domain: false,
        }
    }

    #[test]
    fn dmarc_reject_only_when_configured() {
        let f = Facts {
            spf: Outcome::Fail,
            dmarc: Outcome::Fail,
            ..facts()
        };
        assert_eq!(decide(&auth(DmarcAction::Off, false), &f), Decision::Accept);
        match decide(&auth(DmarcAction::Reject, false), &f) {
            Decision::Refuse {
                code, esc, reason, ..
            } => assert_eq!((code, esc, reason), (550, "5.7.1", Reason::Dmarc)),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn dmarc_quarantine_adds_a_header() {
        let f = Facts {
            dmarc: Outcome::Fail,
            dmarc_policy: DmarcPolicy::Quarantine,
            from_domain: "bad;(x) .org".into(),
            ..facts()
        };
        assert_eq!(
            decide(&auth(DmarcAction::Reject, false), &f),
            Decision::Quarantine(
                "X-Cutover-Quarantine: dmarc=fail policy.dmarc=quarantine header.from=badx.org\r\n"
                    .into()
            )
        );
        let none = Facts {
            dmarc_policy: DmarcPolicy::None,
            ..f
        };
        assert_eq!(
            decide(&auth(DmarcAction::Reject, false), &none),
            Decision::Accept
        );
    }

    #[test]
    fn spoofing_own_domain() {
        let f = Facts {
            spf: Outcome::Fail,
            dkim: Outcome::None,
            own_domain: true,
            ..facts()
        };
        assert_eq!(decide(&auth(DmarcAction::Off, false), &f), Decision::Accept);
        assert_eq!(decide(&auth(DmarcAction::Off, true), &f).label(), "reject");
        let temp = Facts {
            spf: Outcome::TempError,
            ..f.clone()
        };
        assert_eq!(
            decide(&auth(DmarcAction::Off, true), &temp).label(),
            "tempfail"
        );
        let dkim_ok = Facts {
            dkim: Outcome::Pass,
            ..f.clone()
        };
        assert_eq!(
            decide(&auth(DmarcAction::Off, true), &dkim_ok),
            Decision::Accept
        );
        let foreign = Facts {
            own_domain: false,
            ..f
        };
        assert_eq!(
            decide(&auth(DmarcAction::Off, true), &foreign),
            Decision::Accept
        );
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Pass),
            Just(Outcome::Fail),
            Just(Outcome::SoftFail),
            Just(Outcome::Neutral),
            Just(Outcome::None),
            Just(Outcome::TempError),
            Just(Outcome::PermError),
        ]
    }

    proptest! {
        /// With every policy off nothing is refused or marked, whatever the results; a pass of
        /// SPF or DKIM is never refused as spoofing; a refusal is 550 5.7.1 or 451 4.7.5.
        #[test]
        fn decisions_are_bounded(spf in outcome(), dkim in outcome(), dmarc in outcome(),
                                 own in any::<bool>(), pol in 0u8..3, on in any::<bool>()) {
            let f = Facts {
                spf, dkim, dmarc, own_domain: own,
                dmarc_policy: [DmarcPolicy::None, DmarcPolicy::Quarantine, DmarcPolicy::Reject][pol as usize],
                from_domain: "example.org".into(),
            };
            prop_assert_eq!(decide(&auth(DmarcAction::Off, false), &f), Decision::Accept);
            let d = decide(&auth(if on { DmarcAction::Reject } else { DmarcAction::Off }, true), &f);
            if let Decision::Refuse { code, esc, reason, .. } = &d {
                prop_assert!((*code, *esc) == (550, "5.7.1") || (*code, *esc) == (451, "4.7.5"));
                if *reason == Reason::Spoof {
                    prop_assert!(spf != Outcome::Pass && dkim != Outcome::Pass && own);
                } else {
                    prop_assert!(on && dmarc == Outcome::Fail);
                }
            }
        }
    }
}
