//! Compressed RTF ([MS-OXRTFCP]): the `PR_RTF_COMPRESSED` body of a TNEF message, either
//! "LZFu" (an LZ77 variant over a 4096-byte ring dictionary pre-filled with common RTF words)
//! or "MELA" (stored). Owns the decompression and the format's CRC; written from the
//! specification. Pure: bytes in, bytes out. It must never allocate more than the bound
//! [`check_sizes`] allows (64 MiB, and at most 32 times the compressed size), never panic, and
//! never read past its input.

/// "LZFu": compressed contents.
const COMPRESSED: u32 = 0x7546_5A4C;
/// "MELA": stored (uncompressed) contents.
const UNCOMPRESSED: u32 = 0x414C_454D;
/// Largest raw size accepted.
pub const MAX_RAW: usize = 64 << 20;
/// Largest accepted ratio of raw size to compressed size.
pub const MAX_RATIO: usize = 32;
/// The dictionary's initial contents (MS-OXRTFCP 3.1.3.1): 207 bytes of common RTF.
const PRELOAD: &[u8] = b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx";
const DICT: usize = 4096;

/// Why a compressed RTF stream was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtfError {
    #[error("compressed RTF shorter than its 16-byte header")]
    Short,
    #[error("compressed RTF of unknown type {0:#010x}")]
    UnknownType(u32),
    #[error("compressed RTF declares {raw} bytes from {comp} (limit 64 MiB and 32x)")]
    TooLarge { raw: usize, comp: usize },
    #[error("compressed RTF truncated (declares {declared} bytes, has {have})")]
    Truncated { declared: usize, have: usize },
    #[error("compressed RTF CRC mismatch")]
    Crc,
    #[error("compressed RTF ends without its end marker")]
    NoEnd,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The memory bound: a declared raw size over 64 MiB or over 32 times the compressed size
/// (plus the header) is refused before anything is allocated.
pub fn check_sizes(raw: usize, comp: usize) -> Result<(), RtfError> {
    if raw > MAX_RAW || raw > comp.saturating_add(16).saturating_mul(MAX_RATIO) {
        return Err(RtfError::TooLarge { raw, comp });
    }
    Ok(())
}

/// The CRC of MS-OXRTFCP 3.1.3.2: CRC-32 (reflected polynomial 0xEDB88320) started at 0 and
/// not inverted at the end.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        let mut c = (crc ^ b as u32) & 0xFF;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
        crc = c ^ (crc >> 8);
    }
    crc
}

/// Decompress a `PR_RTF_COMPRESSED` value into the RTF text.
pub fn decompress(input: &[u8]) -> Result<Vec<u8>, RtfError> {
    if input.len() < 16 {
        return Err(RtfError::Short);
    }
    let comp_size = le32(input, 0) as usize;
    let raw_size = le32(input, 4) as usize;
    let kind = le32(input, 8);
    let crc = le32(input, 12);
    // COMPSIZE counts the 12 header bytes after itself.
    let contents_len = comp_size.saturating_sub(12);
    let have = input.len() - 16;
    if comp_size < 12 || contents_len > have {
        return Err(RtfError::Truncated {
            declared: contents_len,
            have,
        });
    }
    let contents = &input[16..16 + contents_len];
    check_sizes(raw_size, contents_len)?;
    match kind {
        UNCOMPRESSED => {
            let n = raw_size.min(contents.len());
            Ok(contents[..n].to_vec())
        }
        COMPRESSED => {
            if crc32(contents) != crc {
                return Err(RtfError::Crc);
            }
            lzfu(contents, raw_size)
        }
        other => Err(RtfError::UnknownType(other)),
    }
}

/// The LZFu loop (MS-OXRTFCP 2.1.3.1.4): a control byte gives, low bit first, for each of the
/// next 8 tokens whether it is a literal byte (0) or a 2-byte big-endian dictionary reference
/// (1: 12-bit offset, 4-bit length - 2). A reference to the current write position ends the
/// stream. Output stops at `raw_size`.
fn lzfu(contents: &[u8], raw_size: usize) -> Result<Vec<u8>, RtfError> {
    let mut dict = [0u8; DICT];
    dict[..PRELOAD.len()].copy_from_slice(PRELOAD);
    let mut write = PRELOAD.len();
    let mut out = Vec::with_capacity(raw_size);
    let mut pos = 0;
    while pos < contents.len() {
        let control = contents[pos];
        pos += 1;
        for bit in 0..8 {
            if control & (1 << bit) == 0 {
                let Some(&b) = contents.get(pos) else {
                    return Err(RtfError::NoEnd);
                };
                pos += 1;
                push(&mut out, &mut dict, &mut write, b, raw_size);
                continue;
            }
            let (Some(&hi), Some(&lo)) = (contents.get(pos), contents.get(pos + 1)) else {
                return Err(RtfError::NoEnd);
            };
            pos += 2;
            let word = u16::from_be_bytes([hi, lo]) as usize;
            let offset = word >> 4;
            let len = (word & 0xF) + 2;
            if offset == write {
                return Ok(out);
            }
            for i in 0..len {
                let b = dict[(offset + i) % DICT];
                push(&mut out, &mut dict, &mut write, b, raw_size);
            }
        }
    }
    Err(RtfError::NoEnd)
}

fn push(out: &mut Vec<u8>, dict: &mut [u8; DICT], write: &mut usize, b: u8, raw_size: usize) {
    dict[*write] = b;
    *write = (*write + 1) % DICT;
    if out.len() < raw_size {
        out.push(b);
    }
}

/// A stored ("MELA") stream holding `rtf`, for tests and callers that build TNEF.
pub fn store(rtf: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rtf.len() + 16);
    v.extend_from_slice(&((rtf.len() + 12) as u32).to_le_bytes());
    v.extend_from_slice(&(rtf.len() as u32).to_le_bytes());
    v.extend_from_slice(&UNCOMPRESSED.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(rtf);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MS-OXRTFCP 3.1.1, example 1: a simple compressed stream.
    const EX1: &[u8] = &[
        0x2d, 0x00, 0x00, 0x00, 0x2b, 0x00, 0x00, 0x00, 0x4c, 0x5a, 0x46, 0x75, 0xf1, 0xc5, 0xc7,
        0xa7, 0x03, 0x00, 0x0a, 0x00, 0x72, 0x63, 0x70, 0x67, 0x31, 0x32, 0x35, 0x42, 0x32, 0x0a,
        0xf3, 0x20, 0x68, 0x65, 0x6c, 0x09, 0x00, 0x20, 0x62, 0x77, 0x05, 0xb0, 0x6c, 0x64, 0x7d,
        0x0a, 0x80, 0x0f, 0xa0,
    ];
    /// MS-OXRTFCP 3.1.2, example 2: a reference that overlaps the bytes it produces.
    const EX2: &[u8] = &[
        0x1a, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x4c, 0x5a, 0x46, 0x75, 0xe2, 0xd4, 0x4b,
        0x51, 0x41, 0x00, 0x04, 0x20, 0x57, 0x58, 0x59, 0x5a, 0x0d, 0x6e, 0x7d, 0x01, 0x0e, 0xb0,
    ];

    #[test]
    fn spec_example_1() {
        assert_eq!(
            decompress(EX1).unwrap(),
            b"{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n"
        );
    }

    #[test]
    fn spec_example_2_overlapping_reference() {
        assert_eq!(decompress(EX2).unwrap(), b"{\\rtf1 WXYZWXYZWXYZWXYZWXYZ}");
    }

    #[test]
    fn crc_of_spec_example() {
        assert_eq!(crc32(&EX1[16..]), 0xa7c7c5f1);
    }

    #[test]
    fn bad_crc_and_truncation_are_refused() {
        let mut bad = EX1.to_vec();
        bad[20] ^= 1;
        assert_eq!(decompress(&bad), Err(RtfError::Crc));
        assert!(matches!(
            decompress(&EX1[..30]),
            Err(RtfError::Truncated { .. })
        ));
        assert_eq!(decompress(&EX1[..10]), Err(RtfError::Short));
    }

    #[test]
    fn size_bounds() {
        let mut big = EX1.to_vec();
        big[4..8].copy_from_slice(&(65u32 << 20).to_le_bytes());
        assert!(matches!(decompress(&big), Err(RtfError::TooLarge { .. })));
        // 33x the compressed size (with header) is refused, 32x is not.
        assert!(check_sizes(32 * (100 + 16), 100).is_ok());
        assert!(check_sizes(32 * (100 + 16) + 1, 100).is_err());
    }

    #[test]
    fn stored_round_trip() {
        let rtf = b"{\\rtf1 plain}";
        assert_eq!(decompress(&store(rtf)).unwrap(), rtf);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(out) = decompress(&bytes) {
                prop_assert!(out.len() <= bytes.len().max(16) * MAX_RATIO + MAX_RATIO * 16);
            }
        }

        #[test]
        fn valid_header_random_body(body in proptest::collection::vec(any::<u8>(), 0..300), raw in 0u32..5000) {
            let mut v = ((body.len() + 12) as u32).to_le_bytes().to_vec();
            v.extend_from_slice(&raw.to_le_bytes());
            v.extend_from_slice(&COMPRESSED.to_le_bytes());
            v.extend_from_slice(&crc32(&body).to_le_bytes());
            v.extend_from_slice(&body);
            if let Ok(out) = decompress(&v) {
                prop_assert!(out.len() <= raw as usize);
            }
        }
    }
}
