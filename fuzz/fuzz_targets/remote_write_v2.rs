//! Remote write 2.0: arbitrary bytes never panic the decoders, and whatever
//! `decode_v2` accepts survives `encode_v2` → `decode` with the same series.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_fuzz::assert_same_series;
use tidewatch_model::remote_write::{DecodeLimits, Protocol, decode, decode_v2, encode_v2};

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
