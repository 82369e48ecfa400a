//! The headers a bridged record carries on the wire.
//!
//! The payload travels as the message body, byte for byte. Everything else a record has (its
//! origin, sequence number, timestamp and type id) travels in headers:
//!
//! | header                | value                                   |
//! |-----------------------|-----------------------------------------|
//! | `Nats-Msg-Id`         | `<host>/<queue>/<seq>` (JetStream de-dup) |
//! | `Chronicle-Host`      | source host id                          |
//! | `Chronicle-Queue`     | source queue name                       |
//! | `Chronicle-Seq`       | source sequence number (decimal)        |
//! | `Chronicle-Timestamp` | record timestamp, ns since the Unix epoch (decimal) |
//! | `Chronicle-Type`      | type id (decimal)                       |
//!
//! A batch (`--batch` above 1, the default) carries several records of one source in one
//! message: `Chronicle-Host`, `Chronicle-Queue`, `Chronicle-Envelope: batch-v1` and
//! `Nats-Msg-Id: <host>/<queue>/<first>-<last>` as headers, and the records (seq, timestamp,
//! type id, payload each) in the body, in the format of [`crate::envelope`]. [`decode_message`]
//! reads both forms.

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::envelope::{self, WireRecord};

/// JetStream's de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Source host id.
pub const HOST: &str = "Chronicle-Host";
/// Source queue name.
pub const QUEUE: &str = "Chronicle-Queue";
/// Source sequence number.
pub const SEQ: &str = "Chronicle-Seq";
/// Record timestamp (ns since the Unix epoch).
pub const TIMESTAMP: &str = "Chronicle-Timestamp";
/// Record type id.
pub const TYPE: &str = "Chronicle-Type";
/// Present (value [`envelope::HEADER_VALUE`]) when the body is a batch envelope.
pub const ENVELOPE: &str = "Chronicle-Envelope";

/// What a bridged record says about itself, besides its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// Source host id.
    pub host: String,
    /// Source queue name.
    pub queue: String,
    /// Sequence number in the source queue.
    pub seq: u64,
    /// Timestamp of the record (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// Application type id.
    pub type_id: u32,
}

impl RecordMeta {
    /// The key of the record's source: `<host>/<queue>`.
    pub fn source(&self) -> String {
        source_key(&self.host, &self.queue)
    }
}

/// `<host>/<queue>`: identifies one source queue across hosts.
pub fn source_key(host: &str, queue: &str) -> String {
    format!("{host}/{queue}")
}

/// The JetStream message id of a record: `<host>/<queue>/<seq>`.
pub fn msg_id(host: &str, queue: &str, seq: u64) -> String {
    format!("{host}/{queue}/{seq}")
}

/// Builds the headers of one record.
pub fn encode(host: &str, queue: &str, seq: u64, timestamp_ns: u64, type_id: u32) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, msg_id(host, queue, seq));
    h.insert(HOST, host);
    h.insert(QUEUE, queue);
    h.insert(SEQ, seq.to_string());
    h.insert(TIMESTAMP, timestamp_ns.to_string());
    h.insert(TYPE, type_id.to_string());
    h
}

/// The JetStream message id of a batch: `<host>/<queue>/<first>-<last>` (its source range).
pub fn batch_msg_id(host: &str, queue: &str, first: u64, last: u64) -> String {
    format!("{host}/{queue}/{first}-{last}")
}

/// Builds the headers of a batch envelope holding source records `first..=last`.
pub fn encode_batch(host: &str, queue: &str, first: u64, last: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(MSG_ID, batch_msg_id(host, queue, first, last));
    h.insert(HOST, host);
    h.insert(QUEUE, queue);
    h.insert(ENVELOPE, envelope::HEADER_VALUE);
    h
}

/// A message as the in-bridge reads it: its source (`<host>/<queue>`) and its records, in
/// increasing source sequence order (one for a one-record message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// `<host>/<queue>`.
    pub source: String,
    /// The records.
    pub records: Vec<WireRecord>,
}

/// Reads a message in either wire form (a batch envelope when the `Chronicle-Envelope` header
/// says so, otherwise one record with its fields in headers); says what is wrong otherwise.
pub fn decode_message(headers: Option<&HeaderMap>, body: &Bytes) -> Result<Decoded, String> {
    let h = headers.ok_or_else(|| "message has no headers".to_string())?;
    match h.get(ENVELOPE).map(|v| v.as_str()) {
        None => {
            let m = decode(Some(h))?;
            Ok(Decoded {
                source: m.source(),
                records: vec![WireRecord {
                    seq: m.seq,
                    timestamp_ns: m.timestamp_ns,
                    type_id: m.type_id,
                    payload: body.clone(),
                }],
            })
        }
        Some(v) if v == envelope::HEADER_VALUE => {
            let get = |name: &str| -> Result<&str, String> {
                h.get(name)
                    .map(|v| v.as_str())
                    .ok_or_else(|| format!("header {name} is missing"))
            };
            let source = source_key(get(HOST)?, get(QUEUE)?);
            let records = envelope::decode(body).map_err(|e| e.to_string())?;
            Ok(Decoded { source, records })
        }
        Some(v) => Err(format!(
            "header {ENVELOPE} is {v:?}; this build reads {:?}",
            envelope::HEADER_VALUE
        )),
    }
}

/// Reads the headers of one record; says which header is missing or malformed.
pub fn decode(headers: Option<&HeaderMap>) -> Result<RecordMeta, String> {
    let h = headers.ok_or_else(|| "message has no headers".to_string())?;
    let get = |name: &str| -> Result<&str, String> {
        h.get(name)
            .map(|v| v.as_str())
            .ok_or_else(|| format!("header {name} is missing"))
    };
    let num = |name: &str| -> Result<u64, String> {
        let v = get(name)?;
        v.parse::<u64>()
            .map_err(|_| format!("header {name} is not a number: {v:?}"))
    };
    let type_id = u32::try_from(num(TYPE)?).map_err(|_| format!("header {TYPE} exceeds u32"))?;
    Ok(RecordMeta {
        host: get(HOST)?.to_string(),
        queue: get(QUEUE)?.to_string(),
        seq: num(SEQ)?,
        timestamp_ns: num(TIMESTAMP)?,
        type_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = encode("hostA", "feed", 42, 1_700_000_000_000_000_001, 7);
        assert_eq!(h.get(MSG_ID).unwrap().as_str(), "hostA/feed/42");
        let m = decode(Some(&h)).unwrap();
        assert_eq!(
            m,
            RecordMeta {
                host: "hostA".into(),
                queue: "feed".into(),
                seq: 42,
                timestamp_ns: 1_700_000_000_000_000_001,
                type_id: 7
            }
        );
        assert_eq!(m.source(), "hostA/feed");
    }

    #[test]
    fn missing_and_malformed_headers_are_reported() {
        assert!(decode(None).unwrap_err().contains("no headers"));
        let mut h = encode("h", "q", 1, 2, 3);
        h.insert(SEQ, "x1");
        assert!(decode(Some(&h)).unwrap_err().contains("Chronicle-Seq"));
        let mut h = encode("h", "q", 1, 2, 3);
        h.insert(TYPE, (u64::from(u32::MAX) + 1).to_string());
        assert!(decode(Some(&h)).unwrap_err().contains("u32"));
    }

    #[test]
    fn both_wire_forms_decode() {
        let h = encode("h", "q", 9, 100, 3);
        let d = decode_message(Some(&h), &Bytes::from_static(b"pay")).unwrap();
        assert_eq!(d.source, "h/q");
        assert_eq!(d.records.len(), 1);
        assert_eq!((d.records[0].seq, d.records[0].type_id), (9, 3));
        assert_eq!(&d.records[0].payload[..], b"pay");

        let mut e = envelope::Encoder::new(64);
        e.push(4, 1, 2, b"x");
        e.push(5, 1, 2, b"yz");
        let h = encode_batch("h", "q", 4, 5);
        assert_eq!(h.get(MSG_ID).unwrap().as_str(), "h/q/4-5");
        let d = decode_message(Some(&h), &e.finish()).unwrap();
        assert_eq!(d.source, "h/q");
        assert_eq!(d.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [4, 5]);

        // An envelope header with a broken body, or an unknown envelope version.
        let err = decode_message(Some(&h), &Bytes::from_static(b"CHRB")).unwrap_err();
        assert!(err.contains("shorter"), "{err}");
        let mut h2 = h.clone();
        h2.insert(ENVELOPE, "batch-v9");
        assert!(
            decode_message(Some(&h2), &Bytes::new())
                .unwrap_err()
                .contains("batch-v9")
        );
    }
}
