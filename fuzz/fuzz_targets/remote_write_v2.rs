//! Remote write 2.0: arbitrary bytes never panic the decoders, and whatever
//! `decode_v2` accepts survives `encode_v2` → `decode` with the same series.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_model::Sample;
use tidewatch_model::remote_write::{DecodeLimits, Protocol, decode, decode_v2, encode_v2};
use tidewatch_model::seam::WriteBatch;

fuzz_target!(|data: &[u8]| {
    // The framed path (snappy, then protobuf) must reject garbage without panicking.
    let _ = decode(data, Protocol::V2, DecodeLimits::default());

    // The zero-copy decoder ingestion uses must never panic either, and must
    // agree with the prost decoder wherever both accept the input.
    let raw = tidewatch_model::raw_write::decode_v2_raw(data.to_vec());
    let Ok(batch) = decode_v2(data) else {
        return;
    };
    if let Ok(raw) = raw {
        let raw_batch = raw
            .to_batch()
            .expect("input prost accepts as UTF-8 is UTF-8 for the raw decoder too");
        assert_same_series(&batch, &raw_batch);
    }
    let again = decode(&encode_v2(&batch), Protocol::V2, DecodeLimits::default())
        .unwrap_or_else(|e| panic!("re-encoded 2.0 request does not decode: {e}\nbatch: {batch:?}"));
    // Metadata is not compared: 2.0 attaches it per series, and a batch holding
    // several entries for one metric family re-encodes with the first of them.
    assert_same_series(&batch, &again);
});

fn assert_same_series(before: &WriteBatch, after: &WriteBatch) {
    assert_eq!(
        before.series.len(),
        after.series.len(),
        "series count changed in the round trip"
    );
    for (x, y) in before.series.iter().zip(&after.series) {
        assert_eq!(x.labels, y.labels, "labels changed in the round trip");
        assert_eq!(x.samples.len(), y.samples.len(), "sample count of {} changed", x.labels);
        for (s, t) in x.samples.iter().zip(&y.samples) {
            assert!(same_sample(s, t), "sample of {} changed: {s:?} became {t:?}", x.labels);
        }
    }
}

/// Bitwise, so NaN payloads (staleness markers) must survive; prost omits a
/// double equal to 0.0, so -0.0 legitimately comes back as 0.0.
fn same_sample(before: &Sample, after: &Sample) -> bool {
    before.timestamp == after.timestamp
        && (before.value.to_bits() == after.value.to_bits()
            || (before.value == 0.0 && after.value.to_bits() == 0.0f64.to_bits()))
}
