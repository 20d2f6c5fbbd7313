//! LogQL: the parser never panics on any input, and a query it accepts
//! prints as text that parses back to the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewatch_query::logql::parse;

fuzz_target!(|data: &[u8]| {
    // Queries arrive as URL parameters, i.e. text; other bytes are not a query.
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = parse(input) else {
        return;
    };
    let printed = expr.to_string();
    match parse(&printed) {
        Ok(again) => assert_eq!(
            again, expr,
            "input {input:?} printed as {printed:?} re-parses differently"
        ),
        Err(error) => panic!("input {input:?} printed as {printed:?}, which does not parse: {error}"),
    }
});
