//! OpenMetrics text: arbitrary bytes never panic the parser, and every
//! exemplar it returns points at a series it returned.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_model::exposition::{parse, parse_openmetrics};

fuzz_target!(|data: &[u8]| {
    if let Ok(scrape) = parse_openmetrics(data, 1_000) {
        for exemplar in &scrape.exemplars {
            assert!(exemplar.series < scrape.series.len(), "exemplar points past the series");
        }
    }
    // Content-type dispatch on the same bytes must not panic either.
    let _ = parse(Some("application/openmetrics-text; version=1.0.0"), data, 1_000);
});
