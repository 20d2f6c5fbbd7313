//! WAL records: `decode_record` never panics on arbitrary payloads (replay feeds
//! it whatever passed the frame checksum), and a decoded record re-encodes to a
//! payload that decodes to the same record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_storage::wal::{Record, RecordBuffer, decode_record};

/// `len: u32 LE | crc32c: u32 LE` precedes every payload in a [`RecordBuffer`].
const FRAME_HEADER_LEN: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some(record) = decode_record(data) else {
        return;
    };
    let mut buffer = RecordBuffer::default();
    match &record {
        // An empty samples, histograms or log entries record is valid on the
        // wire but never written.
        Record::Samples(samples) if samples.is_empty() => return,
        Record::Histograms(histograms) if histograms.is_empty() => return,
        Record::LogEntries(entries) if entries.is_empty() => return,
        other => buffer.record(other),
    }
    let framed = buffer.as_bytes();
    assert!(
        framed.len() >= FRAME_HEADER_LEN,
        "a record was written without its frame"
    );
    let len = u32::from_le_bytes(framed[0..4].try_into().unwrap()) as usize;
    let payload = &framed[FRAME_HEADER_LEN..];
    assert_eq!(len, payload.len(), "frame length does not match the payload");
    let again = decode_record(payload).unwrap_or_else(|| panic!("re-encoded record does not decode: {record:?}"));
    assert!(
        same_record(&record, &again),
        "record changed in the round trip: {record:?} became {again:?}"
    );
});

/// Equality with sample values compared bit for bit (NaN payloads must survive).
fn same_record(a: &Record, b: &Record) -> bool {
    match (a, b) {
        (Record::Samples(p), Record::Samples(q)) => {
            p.len() == q.len()
                && p.iter().zip(q).all(|(s, t)| {
                    s.series_ref == t.series_ref && s.timestamp == t.timestamp && s.value.to_bits() == t.value.to_bits()
                })
        }
        // Histograms hold floats in many places: compare their encodings,
        // which are exact (bit patterns) and canonical.
        (Record::Histograms(_), Record::Histograms(_)) => {
            let encode = |record: &Record| {
                let mut buffer = RecordBuffer::default();
                buffer.record(record);
                buffer.as_bytes().to_vec()
            };
            encode(a) == encode(b)
        }
        _ => a == b,
    }
}
