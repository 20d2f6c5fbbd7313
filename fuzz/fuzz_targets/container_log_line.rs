//! Container log lines (CRI, Docker json-file, plain) and log file names:
//! arbitrary bytes never panic the parsers, and what they accept holds
//! together — CRI content is the tail of the line it came from, a timestamp
//! that parses is the one its own RFC 3339 spelling gives back.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tidewatch_collector::logline::{LineFormat, container_from_path, parse_cri, parse_docker, parse_rfc3339_nanos};

fuzz_target!(|data: &[u8]| {
    let format = LineFormat::detect(data);
    let _ = format.parse(data, 0);
    if let Ok(line) = parse_cri(data) {
        assert!(data.ends_with(&line.content), "CRI content is the line's tail");
        assert!(line.content.len() < data.len() || line.content.is_empty());
    }
    let _ = parse_docker(data);
    if let Some(ns) = parse_rfc3339_nanos(data) {
        let seconds = ns.div_euclid(1_000_000_000);
        let nanos = ns.rem_euclid(1_000_000_000);
        // Re-spell in UTC with nine digits: the same instant.
        if let Some(spelled) = utc_rfc3339(seconds, nanos) {
            assert_eq!(parse_rfc3339_nanos(spelled.as_bytes()), Some(ns), "{spelled}");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = container_from_path(Path::new(text));
    }
});

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` for years 0..=9999 (civil from days).
fn utc_rfc3339(seconds: i64, nanos: i64) -> Option<String> {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    ))
}
