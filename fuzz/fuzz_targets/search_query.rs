//! Full-text search queries (`q` of `/api/v1/logs/search`) against a line:
//! parsing never panics (a bad query is an error), the index query builds,
//! and a word or phrase found by substring search is found by comparing the
//! line's words too. Input: the query, a NUL byte, the line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_storage::logs::check_search_on_line;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (query, line) = text.split_once('\0').unwrap_or((text, "GET /api/v1/users 200 10.0.0.12"));
    let _ = check_search_on_line(query, line);
});
