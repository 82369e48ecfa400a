//! The batch envelope: several records of one source queue in one JetStream message.
//!
//! The message's headers say where the batch comes from and that the body is an envelope
//! (`Chronicle-Host`, `Chronicle-Queue`, `Chronicle-Envelope: batch-v1`, and
//! `Nats-Msg-Id: <host>/<queue>/<first>-<last>`, the source range, so that a re-sent batch is
//! dropped by JetStream's duplicate window). The body, all integers little-endian:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "CHRB"
//! 4       2     version (1)
//! 6       2     flags: 0, or FLAG_LZ4 (1); any other bit is refused
//! 8       4     record count N (>= 1)
//! 12      ...   N records, each:
//!                 seq u64 | timestamp_ns u64 | type_id u32 | payload_len u32 | payload
//!               or, with FLAG_LZ4, those records as one LZ4 block:
//!                 uncompressed length u32 | LZ4 block (lz4_flex `block` format)
//! ```
//! Records are in strictly increasing source sequence order. Nothing follows the last record.
//! A compressed envelope is sent only when it is smaller; its uncompressed length may not
//! exceed [`MAX_UNCOMPRESSED`] (a small message cannot make the reader allocate gigabytes).
//! [`decode`] is the only parser of this format; [`Encoder`] the only writer. A body that does
//! not follow it is refused with an [`EnvelopeError`] saying where it goes wrong (never a panic).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Value of the `Chronicle-Envelope` header of a message whose body is a batch envelope.
pub const HEADER_VALUE: &str = "batch-v1";
/// First four bytes of an envelope.
pub const MAGIC: [u8; 4] = *b"CHRB";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 12;
/// Bytes of a record before its payload.
pub const RECORD_HEADER_LEN: usize = 24;
/// Flag: the records are one LZ4 block, preceded by their uncompressed length.
pub const FLAG_LZ4: u16 = 1;
/// Largest uncompressed record section a compressed envelope may announce.
pub const MAX_UNCOMPRESSED: usize = 64 << 20;

/// One record carried in an envelope (or in a one-record message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    /// Sequence number in the source queue.
    pub seq: u64,
    /// Timestamp of the record (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// Application type id.
    pub type_id: u32,
    /// The payload (a slice of the message body: no copy).
    pub payload: Bytes,
}

/// Why a body is not a usable envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Shorter than the envelope header.
    TooShort {
        /// Bytes in the body.
        len: usize,
    },
    /// The first four bytes are not `CHRB`.
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion {
        /// The version found.
        version: u16,
    },
    /// Flags this build does not understand.
    UnsupportedFlags {
        /// The flags found.
        flags: u16,
    },
    /// The header announces no record.
    Empty,
    /// A record (header or payload) runs past the end of the body.
    Truncated {
        /// Index of the record.
        record: u32,
        /// Offset in the body where it starts.
        offset: usize,
    },
    /// A record's sequence number is not above the previous one's.
    NotIncreasing {
        /// Index of the record.
        record: u32,
        /// Its sequence number.
        seq: u64,
        /// The previous record's sequence number.
        previous: u64,
    },
    /// Bytes follow the last announced record.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A compressed envelope announces more than [`MAX_UNCOMPRESSED`] bytes of records.
    TooLarge {
        /// The announced uncompressed length.
        len: usize,
    },
    /// A compressed envelope's LZ4 block does not decompress.
    Decompress {
        /// What the decompressor said.
        detail: String,
    },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::TooShort { len } => write!(
                f,
                "envelope of {len} bytes is shorter than its {HEADER_LEN}-byte header"
            ),
            EnvelopeError::BadMagic => write!(f, "envelope does not start with \"CHRB\""),
            EnvelopeError::UnsupportedVersion { version } => write!(
                f,
                "envelope version {version} (this build reads version {VERSION})"
            ),
            EnvelopeError::UnsupportedFlags { flags } => {
                write!(f, "envelope flags {flags:#06x} are not understood")
            }
            EnvelopeError::Empty => write!(f, "envelope announces no record"),
            EnvelopeError::Truncated { record, offset } => write!(
                f,
                "envelope record {record} (at byte {offset}) runs past the end of the message"
            ),
            EnvelopeError::NotIncreasing {
                record,
                seq,
                previous,
            } => write!(
                f,
                "envelope record {record} has seq {seq}, not above the previous record's {previous}"
            ),
            EnvelopeError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes follow the envelope's last record")
            }
            EnvelopeError::TooLarge { len } => write!(
                f,
                "compressed envelope announces {len} bytes of records (at most {MAX_UNCOMPRESSED})"
            ),
            EnvelopeError::Decompress { detail } => {
                write!(f, "compressed envelope does not decompress: {detail}")
            }
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// Builds one envelope, record by record.
#[derive(Debug)]
pub struct Encoder {
    buf: BytesMut,
    count: u32,
    first: u64,
    last: u64,
    first_timestamp_ns: u64,
}

impl Encoder {
    /// An empty envelope with room for about `capacity` bytes.
    pub fn new(capacity: usize) -> Encoder {
        let mut buf = BytesMut::with_capacity(capacity.max(HEADER_LEN));
        buf.put_slice(&MAGIC);
        buf.put_u16_le(VERSION);
        buf.put_u16_le(0);
        buf.put_u32_le(0);
        Encoder {
            buf,
            count: 0,
            first: 0,
            last: 0,
            first_timestamp_ns: 0,
        }
    }

    /// Adds a record; its seq must be above the previous one's (the caller reads a queue in
    /// order). Returns false, adding nothing, if it is not, or the count would overflow.
    pub fn push(&mut self, seq: u64, timestamp_ns: u64, type_id: u32, payload: &[u8]) -> bool {
        let Ok(len) = u32::try_from(payload.len()) else {
            return false;
        };
        if (self.count > 0 && seq <= self.last) || self.count == u32::MAX {
            return false;
        }
        if self.count == 0 {
            self.first = seq;
            self.first_timestamp_ns = timestamp_ns;
        }
        self.last = seq;
        self.count += 1;
        self.buf.reserve(RECORD_HEADER_LEN + payload.len());
        self.buf.put_u64_le(seq);
        self.buf.put_u64_le(timestamp_ns);
        self.buf.put_u32_le(type_id);
        self.buf.put_u32_le(len);
        self.buf.put_slice(payload);
        true
    }

    /// Records added so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of the envelope so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Source sequence numbers of the first and last record (meaningless when empty).
    pub fn range(&self) -> (u64, u64) {
        (self.first, self.last)
    }

    /// Timestamp of the first record (0 when empty).
    pub fn first_timestamp_ns(&self) -> u64 {
        self.first_timestamp_ns
    }

    /// The finished envelope.
    pub fn finish(mut self) -> Bytes {
        if let Some(c) = self.buf.get_mut(8..12) {
            c.copy_from_slice(&self.count.to_le_bytes());
        }
        self.buf.freeze()
    }

    /// The finished envelope with its records LZ4-compressed ([`FLAG_LZ4`]), or uncompressed
    /// when compression does not make it smaller.
    pub fn finish_lz4(self) -> Bytes {
        let count = self.count;
        let plain = self.finish();
        let Some(records) = plain.get(HEADER_LEN..) else {
            return plain;
        };
        let packed = lz4_flex::block::compress_prepend_size(records);
        if packed.len() >= records.len() {
            return plain;
        }
        let mut buf = BytesMut::with_capacity(HEADER_LEN + packed.len());
        buf.put_slice(&MAGIC);
        buf.put_u16_le(VERSION);
        buf.put_u16_le(FLAG_LZ4);
        buf.put_u32_le(count);
        buf.put_slice(&packed);
        buf.freeze()
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses an envelope. The payloads of the returned records are slices of `body`.
pub fn decode(body: &Bytes) -> Result<Vec<WireRecord>, EnvelopeError> {
    let b: &[u8] = body;
    if b.len() < HEADER_LEN {
        return Err(EnvelopeError::TooShort { len: b.len() });
    }
    if b.get(0..4) != Some(&MAGIC[..]) {
        return Err(EnvelopeError::BadMagic);
    }
    let version = u16_at(b, 4).unwrap_or(0);
    if version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion { version });
    }
    let flags = u16_at(b, 6).unwrap_or(0);
    if flags & !FLAG_LZ4 != 0 {
        return Err(EnvelopeError::UnsupportedFlags { flags });
    }
    let count = u32_at(b, 8).unwrap_or(0);
    if count == 0 {
        return Err(EnvelopeError::Empty);
    }
    if flags & FLAG_LZ4 == 0 {
        return records(body.slice(HEADER_LEN..), count);
    }
    let packed = b.get(HEADER_LEN..).unwrap_or_default();
    let len = u32_at(packed, 0).ok_or(EnvelopeError::TooShort { len: b.len() })? as usize;
    if len > MAX_UNCOMPRESSED {
        return Err(EnvelopeError::TooLarge { len });
    }
    let plain = lz4_flex::block::decompress_size_prepended(packed).map_err(|e| {
        EnvelopeError::Decompress {
            detail: e.to_string(),
        }
    })?;
    records(Bytes::from(plain), count)
}

/// Parses `count` records filling `section` exactly (offsets in errors count the envelope's
/// header, as if the section followed it).
fn records(section: Bytes, count: u32) -> Result<Vec<WireRecord>, EnvelopeError> {
    let b: &[u8] = &section;
    // Every record takes at least its header: a count the body cannot hold is refused before
    // anything is allocated for it.
    let room = b.len() / RECORD_HEADER_LEN;
    let mut out = Vec::with_capacity((count as usize).min(room));
    let mut at = 0;
    let mut previous: Option<u64> = None;
    for record in 0..count {
        let truncated = EnvelopeError::Truncated {
            record,
            offset: HEADER_LEN + at,
        };
        let (Some(seq), Some(timestamp_ns), Some(type_id), Some(len)) = (
            u64_at(b, at),
            u64_at(b, at + 8),
            u32_at(b, at + 16),
            u32_at(b, at + 20),
        ) else {
            return Err(truncated);
        };
        let start = at + RECORD_HEADER_LEN;
        let Some(end) = start.checked_add(len as usize).filter(|&e| e <= b.len()) else {
            return Err(truncated);
        };
        if let Some(previous) = previous {
            if seq <= previous {
                return Err(EnvelopeError::NotIncreasing {
                    record,
                    seq,
                    previous,
                });
            }
        }
        previous = Some(seq);
        out.push(WireRecord {
            seq,
            timestamp_ns,
            type_id,
            payload: section.slice(start..end),
        });
        at = end;
    }
    if at != b.len() {
        return Err(EnvelopeError::TrailingBytes {
            extra: b.len() - at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bytes {
        let mut e = Encoder::new(256);
        assert!(e.push(10, 1_000, 7, b"hello"));
        assert!(e.push(11, 1_001, 8, b""));
        assert!(e.push(13, 1_002, 9, &[0xAB; 40]));
        assert_eq!(e.count(), 3);
        assert_eq!(e.range(), (10, 13));
        assert_eq!(e.first_timestamp_ns(), 1_000);
        e.finish()
    }

    #[test]
    fn round_trip() {
        let body = sample();
        assert_eq!(body.len(), HEADER_LEN + 3 * RECORD_HEADER_LEN + 5 + 40);
        let recs = decode(&body).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(
            recs[0],
            WireRecord {
                seq: 10,
                timestamp_ns: 1_000,
                type_id: 7,
                payload: Bytes::from_static(b"hello")
            }
        );
        assert!(recs[1].payload.is_empty());
        assert_eq!(recs[2].seq, 13);
        assert_eq!(&recs[2].payload[..], &[0xAB; 40][..]);
    }

    #[test]
    fn the_encoder_refuses_a_seq_that_does_not_increase() {
        let mut e = Encoder::new(64);
        assert!(e.push(5, 0, 0, b"a"));
        assert!(!e.push(5, 0, 0, b"b"));
        assert!(!e.push(4, 0, 0, b"b"));
        assert_eq!(e.count(), 1);
        assert_eq!(decode(&e.finish()).unwrap().len(), 1);
    }

    #[test]
    fn every_malformation_is_a_typed_error() {
        let good = sample().to_vec();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            decode(&Bytes::from(v))
        };
        assert_eq!(
            decode(&Bytes::from_static(b"CHR")),
            Err(EnvelopeError::TooShort { len: 3 })
        );
        assert_eq!(with(&|v| v[0] = b'X'), Err(EnvelopeError::BadMagic));
        assert_eq!(
            with(&|v| v[4] = 2),
            Err(EnvelopeError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(
            with(&|v| v[6] = 2),
            Err(EnvelopeError::UnsupportedFlags { flags: 2 })
        );
        // The LZ4 flag on records that are not an LZ4 block.
        assert!(matches!(
            with(&|v| v[6] = 1),
            Err(EnvelopeError::Decompress { .. } | EnvelopeError::TooLarge { .. })
        ));
        assert_eq!(
            with(&|v| v[8..12].copy_from_slice(&0u32.to_le_bytes())),
            Err(EnvelopeError::Empty)
        );
        // One record more than the body holds.
        assert_eq!(
            with(&|v| v[8..12].copy_from_slice(&4u32.to_le_bytes())),
            Err(EnvelopeError::Truncated {
                record: 3,
                offset: good.len()
            })
        );
        // A count of u32::MAX allocates nothing big and is refused.
        assert!(matches!(
            with(&|v| v[8..12].copy_from_slice(&u32::MAX.to_le_bytes())),
            Err(EnvelopeError::Truncated { record: 3, .. })
        ));
        // A payload length past the end.
        let len_at = HEADER_LEN + 20;
        assert_eq!(
            with(&|v| v[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes())),
            Err(EnvelopeError::Truncated {
                record: 0,
                offset: HEADER_LEN
            })
        );
        // Cut in the middle of the last payload.
        assert!(matches!(
            with(&|v| v.truncate(v.len() - 1)),
            Err(EnvelopeError::Truncated { record: 2, .. })
        ));
        assert_eq!(
            with(&|v| v.extend_from_slice(b"xy")),
            Err(EnvelopeError::TrailingBytes { extra: 2 })
        );
        // Second record's seq rewritten below the first.
        let seq1 = HEADER_LEN + RECORD_HEADER_LEN + 5;
        assert_eq!(
            with(&|v| v[seq1..seq1 + 8].copy_from_slice(&3u64.to_le_bytes())),
            Err(EnvelopeError::NotIncreasing {
                record: 1,
                seq: 3,
                previous: 10
            })
        );
    }

    fn compressible() -> Encoder {
        let mut e = Encoder::new(1 << 16);
        for i in 0..200u64 {
            assert!(e.push(i, 1_000 + i, 3, &[(i % 3) as u8; 64]));
        }
        e
    }

    #[test]
    fn lz4_round_trip_and_fallback() {
        let plain = decode(&compressible().finish()).unwrap();
        let packed = compressible().finish_lz4();
        assert_eq!(u16::from_le_bytes([packed[6], packed[7]]), FLAG_LZ4);
        assert!(packed.len() < compressible().len() / 4, "{}", packed.len());
        assert_eq!(decode(&packed).unwrap(), plain);
        // Incompressible records go uncompressed.
        let noise: Vec<u8> = (0..64u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let mut e = Encoder::new(256);
        e.push(
            0x0123_4567_89AB_CDEF,
            0xFEDC_BA98_7654_3210,
            0x5A5A_1234,
            &noise,
        );
        let body = e.finish_lz4();
        assert_eq!(u16::from_le_bytes([body[6], body[7]]), 0);
        assert_eq!(decode(&body).unwrap().len(), 1);
    }

    #[test]
    fn a_compressed_envelope_cannot_announce_a_huge_size() {
        let mut v = compressible().finish_lz4().to_vec();
        v[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&Bytes::from(v)),
            Err(EnvelopeError::TooLarge {
                len: u32::MAX as usize
            })
        );
        // Cut short, or corrupted: typed errors, no panic.
        let good = compressible().finish_lz4().to_vec();
        for cut in HEADER_LEN..good.len() {
            assert!(decode(&Bytes::copy_from_slice(&good[..cut])).is_err());
        }
        for i in HEADER_LEN + 4..good.len() {
            let mut v = good.clone();
            v[i] ^= 0xff;
            let _ = decode(&Bytes::from(v));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep: every prefix and single-byte corruption of a valid body.
        let good = sample().to_vec();
        for cut in 0..good.len() {
            let _ = decode(&Bytes::copy_from_slice(&good[..cut]));
        }
        for i in 0..good.len() {
            for x in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let mut v = good.clone();
                v[i] ^= x;
                let _ = decode(&Bytes::from(v));
            }
        }
        // Random multi-byte damage to plain and compressed bodies (xorshift, fixed seed); a
        // body that still decodes holds at least one record, in increasing seq order.
        let bodies = [
            good,
            compressible().finish().to_vec(),
            compressible().finish_lz4().to_vec(),
        ];
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..20_000 {
            let mut v = bodies[(next() % 3) as usize].clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() as usize) % v.len();
                v[i] = next() as u8;
            }
            if next() % 4 == 0 {
                v.truncate((next() as usize) % (v.len() + 1));
            }
            let body = Bytes::from(v);
            if let Ok(recs) = decode(&body) {
                assert!(!recs.is_empty());
                assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
            }
        }
    }
}
