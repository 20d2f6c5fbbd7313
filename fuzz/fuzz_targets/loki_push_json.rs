//! Loki push, JSON: arbitrary bytes never panic `decode_push_json`, a push it
//! accepts travels through the protobuf form unchanged (both decoders build
//! the same model), and validating it never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_model::ManualClock;
use tidewatch_model::log_validate::{LogLimits, validate_push};
use tidewatch_model::loki_push::{decode_push_json, decode_push_protobuf, encode_push_protobuf};

/// 2026-01-01T00:00:00Z, so that some fuzzed timestamps are in the window.
const NOW_MS: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let Ok(push) = decode_push_json(data) else {
        return;
    };
    let again = decode_push_protobuf(&encode_push_protobuf(&push))
        .unwrap_or_else(|e| panic!("a JSON push does not survive protobuf: {e}\npush: {push:?}"));
    assert_eq!(push, again, "the push changed in the round trip");
    let _ = validate_push(push, &LogLimits::default(), &ManualClock::new(NOW_MS));
});
