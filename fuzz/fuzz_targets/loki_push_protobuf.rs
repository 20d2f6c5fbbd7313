//! Loki push, protobuf: arbitrary bytes never panic the snappy-framed or the
//! raw decoder, a push the decoder accepts survives `encode_push_protobuf` →
//! `decode_push_protobuf` unchanged, and validating it never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_model::ManualClock;
use tidewatch_model::log_validate::{LogLimits, validate_push};
use tidewatch_model::loki_push::{decode_push_protobuf, decode_push_request, encode_push_protobuf};

/// 2026-01-01T00:00:00Z, so that some fuzzed timestamps are in the window.
const NOW_MS: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    // The framed path (snappy, then protobuf) must reject garbage without panicking.
    let _ = decode_push_protobuf(data);

    let Ok(push) = decode_push_request(data) else {
        return;
    };
    let again = decode_push_protobuf(&encode_push_protobuf(&push))
        .unwrap_or_else(|e| panic!("re-encoded push does not decode: {e}\npush: {push:?}"));
    assert_eq!(push, again, "the push changed in the round trip");
    let _ = validate_push(push, &LogLimits::default(), &ManualClock::new(NOW_MS));
});
