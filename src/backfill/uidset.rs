//! UID sets on the wire: the compact encoding (`1:5,7,9:12`) and the split of a UID list into
//! commands that each stay under a command-line length limit (servers refuse long lines:
//! Dovecot's `imap_max_line_length`, Cyrus' and Courier's own limits; RFC 7162 §4 recommends
//! clients keep lines at or under 8192 octets) as well as under a UID count.
//! Pure: never does IO, never decides which UIDs to send.

/// Upper bound of a whole UID command line (tag, command, UID set, items, CRLF), below the
/// 8192 octets RFC 7162 §4 recommends.
pub const MAX_COMMAND_LINE: usize = 8000;

/// Room kept for the tag, the command name (`UID FETCH`, `UID SEARCH UID`...), spaces and CRLF.
const COMMAND_OVERHEAD: usize = 64;

/// The longest one-range set (`4294967295:4294967295`): a chunk always holds at least one range.
const MIN_SET_LEN: usize = 21;

/// A compact UID set (`1:5,7,9:12`) for sorted, deduplicated UIDs.
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    for (start, end) in runs(uids) {
        if !out.is_empty() {
            out.push(',');
        }
        push_range(&mut out, start, end);
    }
    out
}

/// The octets left for the UID set of a command whose other arguments (items, flags, search
/// criteria) take `rest` octets, under [`MAX_COMMAND_LINE`]; never below one range.
pub fn set_budget(rest: usize) -> usize {
    MAX_COMMAND_LINE
        .saturating_sub(rest + COMMAND_OVERHEAD)
        .max(MIN_SET_LEN)
}

/// One command's share of a UID list: the UIDs (a contiguous slice of the input) and their
/// encoded set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub uids: &'a [u32],
    pub set: String,
}

/// Split sorted, deduplicated `uids` into consecutive chunks, in order, each of at most
/// `max_uids` UIDs (at least 1) and an encoded set of at most `max_set_len` octets (at least
/// one range always fits, see [`set_budget`]). Ranges stay compressed; every UID lands in
/// exactly one chunk.
pub fn chunks(uids: &[u32], max_uids: usize, max_set_len: usize) -> Vec<Chunk<'_>> {
    let max_uids = max_uids.max(1);
    let max_set_len = max_set_len.max(MIN_SET_LEN);
    let mut out = Vec::new();
    let (mut begin, mut len) = (0usize, 0usize);
    let mut i = 0;
    while i < uids.len() {
        let (start, mut end) = run_at(uids, i);
        // Cap the run so the chunk holds no more than `max_uids` UIDs.
        let room = max_uids - (i - begin);
        if (end - start) as usize >= room {
            end = start + (room as u32 - 1);
        }
        let add = range_len(start, end) + usize::from(len > 0);
        if len > 0 && len + add > max_set_len {
            out.push(chunk(uids, begin, i));
            (begin, len) = (i, 0);
            continue;
        }
        len += add;
        i += (end - start) as usize + 1;
        if i - begin == max_uids {
            out.push(chunk(uids, begin, i));
            (begin, len) = (i, 0);
        }
    }
    if begin < uids.len() {
        out.push(chunk(uids, begin, uids.len()));
    }
    out
}

fn chunk(uids: &[u32], from: usize, to: usize) -> Chunk<'_> {
    let uids = &uids[from..to];
    Chunk {
        uids,
        set: uid_set(uids),
    }
}

/// The run of consecutive UIDs starting at position `i`: (first, last).
fn run_at(uids: &[u32], i: usize) -> (u32, u32) {
    let start = uids[i];
    let mut end = start;
    for &u in &uids[i + 1..] {
        if end.checked_add(1) != Some(u) {
            break;
        }
        end = u;
    }
    (start, end)
}

/// The runs of consecutive UIDs, in order.
fn runs(uids: &[u32]) -> impl Iterator<Item = (u32, u32)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        (i < uids.len()).then(|| {
            let r = run_at(uids, i);
            i += (r.1 - r.0) as usize + 1;
            r
        })
    })
}

fn push_range(out: &mut String, start: u32, end: u32) {
    if start == end {
        out.push_str(&start.to_string());
    } else {
        out.push_str(&format!("{start}:{end}"));
    }
}

/// Encoded length of one range (`7` or `9:12`).
fn range_len(start: u32, end: u32) -> usize {
    let digits = |n: u32| n.checked_ilog10().unwrap_or(0) as usize + 1;
    if start == end {
        digits(start)
    } else {
        digits(start) + 1 + digits(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[4]), "4");
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[u32::MAX - 1, u32::MAX]), "4294967294:4294967295");
    }

    #[test]
    fn dense_ranges_stay_one_command() {
        let uids: Vec<u32> = (1..=1500).collect();
        let c = chunks(&uids, 2000, 100);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].set, "1:1500");
    }

    #[test]
    fn count_cap_splits_a_range() {
        let uids: Vec<u32> = (1..=5000).collect();
        let sets: Vec<String> = chunks(&uids, 2000, 8000)
            .into_iter()
            .map(|c| c.set)
            .collect();
        assert_eq!(sets, ["1:2000", "2001:4000", "4001:5000"]);
    }

    #[test]
    fn sparse_uids_split_by_length() {
        // Every other message expunged: 2000 UIDs would be ~9.4 KB in one set.
        let uids: Vec<u32> = (1..=4000).step_by(2).collect();
        let c = chunks(&uids, 2000, set_budget(100));
        assert!(c.len() >= 2, "{}", c.len());
        assert!(c.iter().all(|c| c.set.len() <= set_budget(100)));
        assert_eq!(c.iter().map(|c| c.uids.len()).sum::<usize>(), 2000);
        assert_eq!(chunks(&[7, 9], 1, 100)[0].set, "7");
    }

    #[test]
    fn budgets() {
        assert_eq!(set_budget(0), MAX_COMMAND_LINE - COMMAND_OVERHEAD);
        assert_eq!(set_budget(1 << 20), MIN_SET_LEN);
        assert!(chunks(&[], 10, 10).is_empty());
    }

    proptest! {
        #[test]
        fn chunks_cover_every_uid_once_in_order(
            set in proptest::collection::btree_set(
                prop_oneof![1u32..300, 1u32..100_000, (u32::MAX - 50)..=u32::MAX], 0..600),
            max_uids in 1usize..300,
            max_len in 0usize..200,
        ) {
            let uids: Vec<u32> = set.into_iter().collect();
            let c = chunks(&uids, max_uids, max_len);
            let joined: Vec<u32> = c.iter().flat_map(|c| c.uids.iter().copied()).collect();
            prop_assert_eq!(&joined, &uids);
            for ch in &c {
                prop_assert!(!ch.uids.is_empty());
                prop_assert!(ch.uids.len() <= max_uids);
                prop_assert!(ch.set.len() <= max_len.max(MIN_SET_LEN), "{} > {}", ch.set.len(), max_len);
                prop_assert_eq!(&ch.set, &uid_set(ch.uids));
                prop_assert_eq!(ch.set.len(), runs(ch.uids).map(|(s, e)| range_len(s, e)).sum::<usize>()
                    + runs(ch.uids).count() - 1);
            }
        }
    }
}
