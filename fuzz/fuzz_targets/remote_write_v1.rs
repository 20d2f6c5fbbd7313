//! Remote write 1.0: arbitrary bytes never panic the decoders, and whatever
//! `decode_v1` accepts survives `encode_v1` → `decode` unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_fuzz::assert_same_series;
use tidewatch_model::remote_write::{DecodeLimits, Protocol, decode, decode_v1, encode_v1};

fuzz_target!(|data: &[u8]| {
    // The framed path (snappy, then protobuf) must reject garbage without panicking.
    let _ = decode(data, Protocol::V1, DecodeLimits::default());

    // The zero-copy decoder ingestion uses must never panic either, and must
    // agree with the prost decoder wherever both accept the input.
    let raw = tidewatch_model::raw_write::decode_v1_raw(data.to_vec());
    let Ok(batch) = decode_v1(data) else {
        return;
    };
    if let Ok(raw) = raw {
        let raw_batch = raw
            .to_batch()
            .expect("input prost accepts as UTF-8 is UTF-8 for the raw decoder too");
        assert_same_series(&batch, &raw_batch);
    }
    let again = decode(&encode_v1(&batch), Protocol::V1, DecodeLimits::default())
        .unwrap_or_else(|e| panic!("re-encoded 1.0 request does not decode: {e}\nbatch: {batch:?}"));
    assert_same_series(&batch, &again);
    // 1.0 carries metadata as its own list: it round-trips exactly.
    assert_eq!(batch.metadata, again.metadata, "metadata changed in the round trip");
});
