//! The multiplicity decision (DESIGN.md §3): given the source messages of a folder and the
//! destination messages of its counterpart, each described by fingerprint, RFC822.SIZE and
//! INTERNALDATE, decide which source messages still need a copy; then let ledger credits
//! (deliveries cutover made to the destination mailbox) excuse copies anywhere in the mailbox.
//! Pure: no IO, no clocks.
//!
//! Pairing inside one fingerprint group: source messages already handled by an earlier pass
//! (`done`) claim destination messages first; equal RFC822.SIZE pairs before unequal, and among
//! candidates the closest INTERNALDATE wins. An unpaired `done` message is reported as missing
//! but never re-copied (the user may have deleted it on the destination); an unpaired new
//! message is copied unless a credit excuses it.

use crate::fingerprint::FpKey;
use std::collections::HashMap;

/// A source message.
#[derive(Clone, Debug)]
pub struct SrcMsg {
    pub uid: u32,
    pub fp: FpKey,
    pub size: u32,
    /// INTERNALDATE, seconds since the epoch.
    pub date: i64,
    /// Handled by an earlier pass (UID at or below the folder's watermark).
    pub done: bool,
}

/// A destination message.
#[derive(Clone, Debug)]
pub struct DstMsg {
    pub uid: u32,
    pub fp: FpKey,
    pub size: u32,
    pub date: i64,
    /// Carries cutover's delivery stamp (`X-Cutover-Loop`): a dual-delivered copy.
    pub stamped: bool,
}

/// What happens to one source message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A destination message in the counterpart folder is its copy.
    Present,
    /// A ledger credit (a delivery by cutover somewhere in the mailbox) stands for it.
    Ledger,
    /// Needs a copy.
    Copy,
    /// Handled by an earlier pass but no copy is left on the destination (reported only).
    Missing,
    /// Not copied by policy (a provider's size limit, a Gmail label copied elsewhere): the
    /// reason is in the folder report, per message.
    Skip,
}

/// The pairing of one folder.
#[derive(Clone, Debug, Default)]
pub struct FolderDecision {
    /// Per source message (same order as the input), its verdict.
    pub verdicts: Vec<Verdict>,
    /// Fingerprints of stamped destination messages paired in this folder (consume credits first).
    pub stamped_pairs: Vec<FpKey>,
    /// (source UID, destination UID) of every pair (for flag synchronisation).
    pub pairs: Vec<(u32, u32)>,
}

impl FolderDecision {
    pub fn count(&self, v: Verdict) -> usize {
        self.verdicts.iter().filter(|x| **x == v).count()
    }
}

/// Pair the source messages of a folder with the destination messages of its counterpart.
pub fn decide(src: &[SrcMsg], dst: &[DstMsg]) -> FolderDecision {
    let mut by_fp: HashMap<FpKey, Vec<usize>> = HashMap::new();
    for (i, d) in dst.iter().enumerate() {
        by_fp.entry(d.fp).or_default().push(i);
    }
    let mut src_groups: HashMap<FpKey, Vec<usize>> = HashMap::new();
    for (i, s) in src.iter().enumerate() {
        src_groups.entry(s.fp).or_default().push(i);
    }
    let mut verdicts = vec![Verdict::Copy; src.len()];
    let mut stamped_pairs = Vec::new();
    let mut pairs = Vec::new();
    let mut used = vec![false; dst.len()];
    for (fp, mut members) in src_groups {
        // done first, then by UID.
        members.sort_by_key(|&i| (!src[i].done, src[i].uid));
        let cands = by_fp.get(&fp).cloned().unwrap_or_default();
        let mut paired = vec![false; members.len()];
        for exact in [true, false] {
            for (k, &si) in members.iter().enumerate() {
                if paired[k] {
                    continue;
                }
                let s = &src[si];
                let best = cands
                    .iter()
                    .copied()
                    .filter(|&di| !used[di] && (!exact || dst[di].size == s.size))
                    .min_by_key(|&di| ((dst[di].date - s.date).abs(), dst[di].uid));
                if let Some(di) = best {
                    used[di] = true;
                    paired[k] = true;
                    verdicts[si] = Verdict::Present;
                    pairs.push((s.uid, dst[di].uid));
                    if dst[di].stamped {
                        stamped_pairs.push(dst[di].fp);
                    }
                }
            }
        }
        for (k, &si) in members.iter().enumerate() {
            if !paired[k] {
                verdicts[si] = if src[si].done {
                    Verdict::Missing
                } else {
                    Verdict::Copy
                };
            }
        }
    }
    pairs.sort_unstable();
    FolderDecision {
        verdicts,
        stamped_pairs,
        pairs,
    }
}

/// Apply ledger credits of one mailbox to the folder decisions: first every stamped same-folder
/// pair consumes one credit of its fingerprint, then each source message still marked `Copy`
/// (or `Missing`) consumes one remaining credit (folders in the given order) and becomes `Ledger`.
/// `credits` holds the remaining counts afterwards.
pub fn apply_credits(
    credits: &mut HashMap<FpKey, usize>,
    folders: &mut [(&[SrcMsg], &mut FolderDecision)],
) {
    for (_, d) in folders.iter() {
        for fp in &d.stamped_pairs {
            if let Some(n) = credits.get_mut(fp) {
                *n = n.saturating_sub(1);
            }
        }
    }
    for (src, d) in folders.iter_mut() {
        for (i, v) in d.verdicts.iter_mut().enumerate() {
            if *v != Verdict::Copy && *v != Verdict::Missing {
                continue;
            }
            if let Some(n) = src.get(i).and_then(|s| credits.get_mut(&s.fp))
                && *n > 0
            {
                *n -= 1;
                *v = Verdict::Ledger;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fp(s: &str) -> FpKey {
        crate::fingerprint::Fingerprint(s.to_string()).key()
    }
    fn s(uid: u32, f: &str, size: u32, date: i64, done: bool) -> SrcMsg {
        SrcMsg {
            uid,
            fp: fp(f),
            size,
            date,
            done,
        }
    }
    fn d(uid: u32, f: &str, size: u32, date: i64) -> DstMsg {
        DstMsg {
            uid,
            fp: fp(f),
            size,
            date,
            stamped: false,
        }
    }

    #[test]
    fn multiplicity() {
        // Two identical copies on the source, one on the destination: copy exactly one.
        let src = [
            s(1, "a", 10, 0, false),
            s(2, "a", 10, 0, false),
            s(3, "b", 5, 0, false),
        ];
        let dst = [d(1, "a", 10, 0)];
        let dec = decide(&src, &dst);
        assert_eq!(dec.count(Verdict::Copy), 2);
        assert_eq!(dec.count(Verdict::Present), 1);
        assert_eq!(dec.verdicts[2], Verdict::Copy);
    }

    #[test]
    fn same_message_id_different_bytes_pairs_by_size() {
        // A mailing-list copy (1200 bytes) and the direct copy (1000): destination has the direct one.
        let src = [s(1, "m", 1200, 50, false), s(2, "m", 1000, 100, false)];
        let dst = [d(7, "m", 1000, 0)];
        let dec = decide(&src, &dst);
        assert_eq!(dec.verdicts, vec![Verdict::Copy, Verdict::Present]);
    }

    #[test]
    fn done_messages_claim_first_and_are_never_recopied() {
        let src = [s(1, "a", 10, 0, true), s(2, "a", 10, 0, false)];
        let dst = [d(1, "a", 10, 0)];
        let dec = decide(&src, &dst);
        assert_eq!(dec.verdicts, vec![Verdict::Present, Verdict::Copy]);
        let dec = decide(&src, &[]);
        assert_eq!(dec.verdicts, vec![Verdict::Missing, Verdict::Copy]);
    }

    #[test]
    fn credits_same_folder_first() {
        // Delivered once (stamped in INBOX); the user kept it in INBOX on the source and also
        // filed a copy into Archive: the INBOX pair consumes the credit, Archive gets a copy.
        let inbox_src = [s(1, "x", 10, 0, false)];
        let mut stamped = d(1, "x", 10, 0);
        stamped.stamped = true;
        let mut inbox = decide(&inbox_src, &[stamped]);
        let archive_src = [s(1, "x", 10, 0, false)];
        let mut archive = decide(&archive_src, &[]);
        let mut credits = HashMap::from([(fp("x"), 1usize)]);
        apply_credits(
            &mut credits,
            &mut [(&inbox_src, &mut inbox), (&archive_src, &mut archive)],
        );
        assert_eq!(inbox.verdicts, vec![Verdict::Present]);
        assert_eq!(archive.verdicts, vec![Verdict::Copy]);
        // Moved instead: only in Archive on the source: the credit excuses it.
        let mut inbox = decide(&[], &[]);
        let mut archive = decide(&archive_src, &[]);
        let mut credits = HashMap::from([(fp("x"), 1usize)]);
        apply_credits(
            &mut credits,
            &mut [(&[], &mut inbox), (&archive_src, &mut archive)],
        );
        assert_eq!(archive.verdicts, vec![Verdict::Ledger]);
        assert_eq!(credits[&fp("x")], 0);
    }

    proptest! {
        /// After copying every `Copy` message, each fingerprint has at least as many destination
        /// messages as source messages, and no more copies than needed were made.
        #[test]
        fn converges_without_duplicates(
            src in proptest::collection::vec((0u8..5, 0u32..3), 0..30),
            dst in proptest::collection::vec((0u8..5, 0u32..3), 0..30),
        ) {
            let src: Vec<SrcMsg> = src.iter().enumerate()
                .map(|(i, (f, sz))| s(i as u32 + 1, &f.to_string(), *sz, 0, false)).collect();
            let dstm: Vec<DstMsg> = dst.iter().enumerate()
                .map(|(i, (f, sz))| d(i as u32 + 1, &f.to_string(), *sz, 0)).collect();
            let dec = decide(&src, &dstm);
            for f in 0u8..5 {
                let f = f.to_string();
                let sc = src.iter().filter(|m| m.fp == fp(&f)).count();
                let dc = dstm.iter().filter(|m| m.fp == fp(&f)).count();
                let copies = src.iter().zip(&dec.verdicts)
                    .filter(|(m, v)| m.fp == fp(&f) && **v == Verdict::Copy).count();
                prop_assert_eq!(copies, sc.saturating_sub(dc));
            }
        }
    }
}
