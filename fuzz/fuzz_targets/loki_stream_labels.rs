//! Loki stream label strings: `parse_stream_labels` never panics on any text,
//! and a label set it accepts, written back with `format_stream_labels`,
//! parses to the same set.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_model::loki_push::{format_stream_labels, parse_stream_labels};

fuzz_target!(|data: &[u8]| {
    // Label strings reach the parser only as UTF-8 (the decoder refuses the rest).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(labels) = parse_stream_labels(text) else {
        return;
    };
    let written = format_stream_labels(&labels);
    let again = parse_stream_labels(&written)
        .unwrap_or_else(|e| panic!("{written:?} (written from {text:?}) does not parse: {e}"));
    assert_eq!(labels, again, "{text:?} was written as {written:?}");
});
