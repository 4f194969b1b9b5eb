//! Message ids: 48-bit millisecond timestamp and a 20-bit sequence, written as 14 characters of
//! Crockford base32 (fixed width, so text order is time order). Owns id generation and parsing;
//! never touches storage (the queue seeds the generator from the newest stored id at open).

use super::QueueId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Crockford base32 alphabet (no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in an id: 14 × 5 = 70 bits, the top two always zero.
pub const ID_LEN: usize = 14;
/// Bits of the per-millisecond sequence.
const SEQ_BITS: u32 = 20;
/// Largest raw value an id can carry (68 bits).
const MAX_RAW: u128 = (1u128 << 68) - 1;

/// Encode a raw 68-bit value (ms << 20 | seq) as 14 Crockford characters.
pub fn encode(raw: u128) -> String {
    let raw = raw & MAX_RAW;
    let mut out = [0u8; ID_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (ID_LEN - 1 - i);
        *slot = ALPHABET[((raw >> shift) & 31) as usize];
    }
    // The alphabet is ASCII, so this cannot fail; fall back to lossy just in case.
    String::from_utf8_lossy(&out).into_owned()
}

/// Value of one id character (case-insensitive, Crockford aliases O→0, I/L→1), if it is one.
fn digit(c: u8) -> Option<u128> {
    let c = match c.to_ascii_uppercase() {
        b'O' => b'0',
        b'I' | b'L' => b'1',
        c => c,
    };
    ALPHABET.iter().position(|&a| a == c).map(|v| v as u128)
}

/// Parse an id (case-insensitive, Crockford aliases O→0, I/L→1). `None` if it is not one.
pub fn decode(s: &str) -> Option<u128> {
    if s.len() != ID_LEN {
        return None;
    }
    let mut raw: u128 = 0;
    for c in s.bytes() {
        raw = (raw << 5) | digit(c)?;
    }
    if raw > MAX_RAW { None } else { Some(raw) }
}

/// Milliseconds since the Unix epoch encoded in an id.
pub fn timestamp_ms(raw: u128) -> u64 {
    (raw >> SEQ_BITS) as u64
}

/// Why a typed queue id is not one (the id is quoted with escapes: it may hold anything).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueIdError {
    #[error(
        "invalid queue id {id:?}: {ch:?} is not a queue id character \
         (Crockford base32: 0-9 and A-Z without U; I, L, O read as 1, 1, 0)"
    )]
    Character { id: String, ch: char },
    #[error("invalid queue id {id:?}: {len} characters, a queue id has {ID_LEN}")]
    Length { id: String, len: usize },
    #[error("invalid queue id {id:?}: out of range (a queue id starts with 0-7)")]
    Range { id: String },
}

impl QueueId {
    /// Parse an id as an operator types it (any case, Crockford aliases) into its canonical
    /// form, the one the queue generates and stores: 14 Crockford base32 characters, upper
    /// case, at most 68 bits (the first character 0-7).
    pub fn parse(s: &str) -> Result<QueueId, QueueIdError> {
        let len = s.chars().count();
        if len != ID_LEN {
            return Err(QueueIdError::Length { id: s.into(), len });
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !c.is_ascii() || digit(*c as u8).is_none())
        {
            return Err(QueueIdError::Character { id: s.into(), ch });
        }
        match decode(s) {
            Some(raw) => Ok(QueueId(encode(raw))),
            None => Err(QueueIdError::Range { id: s.into() }),
        }
    }
}

impl std::str::FromStr for QueueId {
    type Err = QueueIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueId::parse(s)
    }
}

/// Lock-free, strictly increasing id source. The state is the last raw value handed out; the
/// next one is `max(last + 1, now_ms << 20)`, so ids stay unique and ordered even when the
/// clock steps back or more than 2^20 ids are taken in one millisecond (the excess borrows
/// from the next millisecond).
#[derive(Debug, Default)]
pub struct IdGen {
    /// Last raw id handed out. A 68-bit id does not fit in 64 bits, but timestamps stay below
    /// 2^44 ms until the year 2527, so 44 ms bits + 20 sequence bits are stored and widened.
    last: AtomicU64,
}

impl IdGen {
    pub fn new() -> Self {
        Self::default()
    }

    /// Never hand out an id at or below `raw` (used with the newest stored id at open).
    pub fn observe(&self, raw: u128) {
        let raw = raw.min(u64::MAX as u128) as u64;
        self.last.fetch_max(raw, Ordering::SeqCst);
    }

    /// Next raw id for a clock reading of `now_ms`.
    pub fn next_raw_at(&self, now_ms: u64) -> u128 {
        let floor = now_ms.min((1u64 << 44) - 1) << SEQ_BITS;
        let mut cur = self.last.load(Ordering::SeqCst);
        loop {
            let next = floor.max(cur.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next as u128,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Next id as text, for the current time.
    pub fn next_id(&self) -> String {
        encode(self.next_raw_at(now_ms()))
    }
}

/// Current time in ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    crate::time::unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn fixed_width_and_alphabet() {
        let g = IdGen::new();
        let id = g.next_id();
        assert_eq!(id.len(), ID_LEN);
        assert!(id.bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(encode(0), "00000000000000");
        assert_eq!(decode("00000000000000"), Some(0));
        assert_eq!(decode("0000000000000"), None);
        assert_eq!(decode("0000000000000U"), None);
        assert_eq!(decode("zzzzzzzzzzzzzz"), None, "above 68 bits");
    }

    #[test]
    fn parse_canonicalises_and_names_the_bad_id() {
        let ok = |s: &str| QueueId::parse(s).map(|q| q.0);
        assert_eq!(ok("0000000000000o"), Ok("00000000000000".into()));
        assert_eq!(ok("0v5kq2h8m3a7ci"), Ok("0V5KQ2H8M3A7C1".into()));
        assert_eq!(ok("7ZZZZZZZZZZZZZ"), Ok("7ZZZZZZZZZZZZZ".into()), "68 bits");
        assert_eq!(
            "0v5kq2h8m3a7cl".parse::<QueueId>(),
            Ok(QueueId("0V5KQ2H8M3A7C1".into()))
        );
        let err = |s: &str| QueueId::parse(s).map_err(|e| e.to_string()).unwrap_err();
        assert!(matches!(
            QueueId::parse("0V5KQ2H8M3A7C"),
            Err(QueueIdError::Length { len: 13, .. })
        ));
        assert!(matches!(
            QueueId::parse("0000000000000U"),
            Err(QueueIdError::Character { ch: 'U', .. })
        ));
        assert!(matches!(
            QueueId::parse("8ZZZZZZZZZZZZZ"),
            Err(QueueIdError::Range { .. })
        ));
        assert!(matches!(
            QueueId::parse(""),
            Err(QueueIdError::Length { len: 0, .. })
        ));
        assert_eq!(
            err("bogus"),
            "invalid queue id \"bogus\": 5 characters, a queue id has 14"
        );
        assert!(matches!(
            QueueId::parse("0000000000000é"),
            Err(QueueIdError::Character { ch: 'é', .. })
        ));
        assert!(err(" 0000000000000").contains("' '"));
        // Control characters are shown escaped, never raw.
        assert!(!err("\x1b[2J000000000").contains('\x1b'));
    }

    #[test]
    fn timestamp_roundtrips() {
        let g = IdGen::new();
        let raw = g.next_raw_at(1_790_000_000_123);
        assert_eq!(timestamp_ms(raw), 1_790_000_000_123);
        assert_eq!(
            timestamp_ms(decode(&encode(raw)).unwrap()),
            1_790_000_000_123
        );
    }

    #[test]
    fn clock_going_back_keeps_order() {
        let g = IdGen::new();
        let a = g.next_raw_at(2_000_000);
        let b = g.next_raw_at(1_000_000);
        assert!(b > a);
        g.observe(a + 1000);
        assert!(g.next_raw_at(0) > a + 1000);
    }

    #[test]
    fn unique_under_concurrency() {
        let g = Arc::new(IdGen::new());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    let mut v = Vec::with_capacity(5000);
                    let mut last = String::new();
                    for _ in 0..5000 {
                        let id = g.next_id();
                        assert!(id > last, "monotonic within a thread");
                        last = id.clone();
                        v.push(id);
                    }
                    v
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id), "duplicate id");
            }
        }
        assert_eq!(all.len(), 40_000);
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(raw in 0u128..=MAX_RAW) {
            let s = encode(raw);
            prop_assert_eq!(s.len(), ID_LEN);
            prop_assert_eq!(decode(&s), Some(raw));
            prop_assert_eq!(decode(&s.to_ascii_lowercase()), Some(raw));
        }

        #[test]
        fn every_id_round_trips_through_parse(raw in 0u128..=MAX_RAW) {
            let s = encode(raw);
            prop_assert_eq!(QueueId::parse(&s), Ok(QueueId(s.clone())));
            prop_assert_eq!(QueueId::parse(&s.to_ascii_lowercase()), Ok(QueueId(s.clone())));
            // The generator's ids too, whatever the clock says.
            let g = IdGen::new();
            let id = encode(g.next_raw_at((raw >> SEQ_BITS) as u64));
            prop_assert_eq!(QueueId::parse(&id).map(|q| q.0), Ok(id));
        }

        #[test]
        fn parse_accepts_only_ids(s in "\\PC{0,20}") {
            match QueueId::parse(&s) {
                Ok(q) => {
                    prop_assert_eq!(decode(&s).map(encode), Some(q.0));
                }
                Err(_) => prop_assert_eq!(decode(&s), None),
            }
        }

        #[test]
        fn text_order_is_numeric_order(a in 0u128..=MAX_RAW, b in 0u128..=MAX_RAW) {
            prop_assert_eq!(encode(a).cmp(&encode(b)), a.cmp(&b));
        }

        #[test]
        fn monotonic_for_any_clock(clock in proptest::collection::vec(0u64..(1u64 << 44), 1..200)) {
            let g = IdGen::new();
            let mut last = None;
            for now in clock {
                let raw = g.next_raw_at(now);
                prop_assert!(timestamp_ms(raw) >= now);
                if let Some(l) = last { prop_assert!(raw > l); }
                last = Some(raw);
            }
        }
    }
}
