//! The scrape parsers against other projects' test data, read in place from
//! `../shared/conformance/exposition/` (or `$TIDEWATCH_CONFORMANCE_DIR/exposition`):
//! the OpenMetrics 1.0 parser suite, Prometheus' textparse fixtures and
//! client_golang's accept/reject snippets. When the directory is absent each
//! test says so and passes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use tidewatch_model::exposition::{Scrape, parse_openmetrics, parse_text};
use tidewatch_model::seam::MetricType;

const SCRAPE_TIME: i64 = 1_700_000_000_000;

/// OpenMetrics suite cases marked `shouldParse: false` that we accept on
/// purpose, each with the reason. The test fails if one of them is rejected
/// (so the list cannot go stale) or if any other invalid case is accepted.
const OPENMETRICS_DEVIATIONS: &[(&str, &str)] = &[
    (
        "bad_histograms_3",
        "a histogram with negative bucket bounds and a _sum: client_golang exposes this \
         (Prometheus' fixture alltypes.5mfs.om.txt) and Prometheus ingests it",
    ),
    (
        "bad_counter_values_17",
        "a negative summary _sum: a summary of negative observations has one; client_golang \
         exposes it (alltypes.5mfs.om.txt) and Prometheus ingests it",
    ),
    (
        "bad_counter_values_19",
        "a negative quantile value: quantiles of negative observations are negative; \
         client_golang exposes them (alltypes.5mfs.om.txt) and Prometheus ingests them",
    ),
];

/// client_golang reject snippets that Prometheus' scrape parser — which we
/// follow for the text format — accepts, with the reason.
const TEXT_ACCEPTED_REJECTS: &[(&str, &str)] = &[
    ("from_test_parse_error_0", "no final newline: Prometheus appends one"),
    (
        "from_test_parse_error_1",
        "`\\t` in a label value is kept literally, as Prometheus does",
    ),
    (
        "from_test_parse_error_2",
        "a raw newline inside a quoted label value is part of the value in Prometheus' lexer",
    ),
    (
        "from_test_parse_error_7",
        "a non-numeric quantile is kept as is; Prometheus only normalises numbers",
    ),
    (
        "from_test_parse_error_12",
        "a second # HELP for one name: Prometheus keeps the last",
    ),
    (
        "from_test_parse_error_13",
        "a second # TYPE for one name: Prometheus keeps the last",
    ),
    (
        "from_test_parse_error_14",
        "# TYPE after the samples: Prometheus applies it from there on",
    ),
    (
        "from_test_parse_error_19",
        "a non-numeric le is kept as is; Prometheus only normalises numbers",
    ),
];

/// client_golang accept snippets that Prometheus' scrape parser rejects.
const TEXT_REJECTED_ACCEPTS: &[(&str, &str)] = &[(
    "from_test_parse_3",
    "`# HELP ` with no name: Prometheus' lexer wants a metric name after `HELP ` and fails",
)];

fn exposition_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("TIDEWATCH_CONFORMANCE_DIR") {
        Some(root) => PathBuf::from(root).join("exposition"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/exposition"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: exposition conformance data not found at {} \
             (set TIDEWATCH_CONFORMANCE_DIR to the conformance directory)",
            dir.display()
        );
        None
    }
}

fn sorted_dir(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    entries
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn openmetrics_parser_suite() {
    let Some(dir) = exposition_dir() else { return };
    let suite = dir.join("openmetrics-parsers");
    let mut failures = Vec::new();
    let (mut valid, mut invalid, mut deviations_seen) = (0, 0, BTreeSet::new());
    for case in sorted_dir(&suite) {
        let test_json = case.join("test.json");
        if !test_json.is_file() {
            continue;
        }
        let name = file_name(&case);
        let spec = fs::read_to_string(&test_json).unwrap();
        let should_parse = spec.replace(' ', "").contains("\"shouldParse\":true");
        assert!(
            should_parse || spec.replace(' ', "").contains("\"shouldParse\":false"),
            "{name}: test.json without shouldParse"
        );
        let body = fs::read(case.join("metrics")).unwrap();
        let result = parse_openmetrics(&body, SCRAPE_TIME);
        if let (Err(e), Some(_)) = (&result, std::env::var_os("TIDEWATCH_EXPOSITION_VERBOSE")) {
            eprintln!("{name}: {e}");
        }
        let deviation = OPENMETRICS_DEVIATIONS.iter().any(|(case, _)| *case == name);
        match (should_parse, &result, deviation) {
            (true, Ok(_), _) => valid += 1,
            (true, Err(e), _) => failures.push(format!("{name}: valid case rejected: {e}")),
            (false, Err(_), false) => invalid += 1,
            (false, Err(e), true) => failures.push(format!("{name}: listed as accepted but rejected: {e}")),
            (false, Ok(_), true) => {
                deviations_seen.insert(name.clone());
            }
            (false, Ok(scrape), false) => failures.push(format!(
                "{name}: invalid case accepted ({} series)",
                scrape.series.len()
            )),
        }
    }
    eprintln!(
        "openmetrics suite: {valid} valid cases parsed, {invalid} invalid cases rejected, \
         {} accepted on purpose ({deviations_seen:?})",
        deviations_seen.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(valid, 44, "the suite has 44 valid cases");
    assert_eq!(invalid + deviations_seen.len(), 167, "the suite has 167 invalid cases");
}

fn read(dir: &Path, path: &str) -> Vec<u8> {
    fs::read(dir.join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn names(scrape: &Scrape) -> BTreeSet<String> {
    scrape
        .series
        .iter()
        .map(|s| s.labels.metric_name().unwrap().to_owned())
        .collect()
}

/// Sample lines of a text page: neither comments nor blank.
fn sample_lines(body: &[u8]) -> usize {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count()
}

#[test]
fn openmetrics_suite_values_come_out_right() {
    let Some(dir) = exposition_dir() else { return };
    let suite = dir.join("openmetrics-parsers");
    let one = |case: &str| parse_openmetrics(&read(&suite, &format!("{case}/metrics")), SCRAPE_TIME).unwrap();

    let counter = one("counter_unit");
    assert_eq!(counter.metadata.len(), 1);
    assert_eq!(counter.metadata[0].metric_family_name, "cc_seconds");
    assert_eq!(counter.metadata[0].metric_type, MetricType::Counter);
    assert_eq!(counter.metadata[0].unit, "seconds");
    assert_eq!(counter.metadata[0].help, "A counter");
    assert_eq!(
        names(&counter),
        BTreeSet::from(["cc_seconds_total".into(), "cc_seconds_created".into()])
    );
    assert_eq!(counter.series[1].samples[0].value, 123.456);

    let escaping = one("escaping");
    assert_eq!(escaping.metadata[0].help, "he\n\\l\\tp");
    let values: Vec<&str> = escaping.series.iter().map(|s| s.labels.get("foo").unwrap()).collect();
    assert_eq!(values, ["b\"a\nr", "b\\a\\z", "b\"a\nr # ", "b\\a\\z # "]);

    let timestamps = one("timestamps");
    let ts: Vec<i64> = timestamps.series.iter().map(|s| s.samples[0].timestamp).collect();
    assert_eq!(ts, [0, 0, 1100, i64::MAX, 1_500_000, 1_234_567_890_000]);

    let repeated = one("duplicate_timestamps_0");
    assert_eq!(repeated.series.len(), 2, "points of one series share an entry");
    assert_eq!(repeated.series[0].samples.len(), 3);

    let histogram = one("histogram_noncanonical");
    let bounds: Vec<&str> = histogram.series.iter().filter_map(|s| s.labels.get("le")).collect();
    assert_eq!(
        bounds,
        [
            "0.0", "1e-11", "1e-10", "0.0001", "0.00011", "0.0011", "0.011", "1.0", "100000.0", "1e+10", "1e+11",
            "+Inf"
        ]
    );

    let exemplars = one("histogram_exemplars");
    assert_eq!(exemplars.exemplars.len(), 3);
    assert_eq!(exemplars.exemplars[2].series, 2);
    assert_eq!(exemplars.exemplars[2].value, 4.0);
    assert_eq!(exemplars.exemplars[2].timestamp, Some(123_000));
    assert_eq!(exemplars.exemplars[0].labels.get("a"), Some("b"));

    let stateset = one("simple_stateset");
    assert_eq!(stateset.metadata[0].metric_type, MetricType::StateSet);
    assert_eq!(stateset.series[1].labels.get("a"), Some("foo"));

    let nan = one("nan");
    assert!(nan.series[0].samples[0].value.is_nan());
    assert!(!tidewatch_model::is_stale_nan(nan.series[0].samples[0].value));
    assert_eq!(nan.series[0].samples[0].timestamp, SCRAPE_TIME);

    let empty = one("empty_label");
    assert_eq!(empty.series.len(), 2);
    assert_eq!(empty.series[1].labels.len(), 1, "an empty label value is no label");
}

#[test]
fn prometheus_textparse_fixtures() {
    let Some(dir) = exposition_dir() else { return };
    let fixtures = dir.join("prometheus-textparse");

    let body = read(&fixtures, "alltypes.237mfs.prom.txt");
    let page = parse_text(&body, SCRAPE_TIME).unwrap();
    assert_eq!(page.metadata.len(), 237);
    assert!(page.metadata.iter().all(|m| !m.help.is_empty()));
    assert_eq!(page.sample_count(), sample_lines(&body));
    assert_eq!(page.sample_count(), 1857);
    assert_eq!(page.series.len(), 1857, "no series repeats on the page");
    let bucket = page
        .series
        .iter()
        .find(|s| s.labels.get("le").is_some())
        .expect("the page has classic histograms");
    let le = bucket.labels.get("le").unwrap();
    assert!(
        le.contains('.') || le.contains('e') || le.ends_with("Inf"),
        "le {le:?} normalised"
    );

    let nometa = parse_text(&read(&fixtures, "alltypes.237mfs.nometa.prom.txt"), SCRAPE_TIME).unwrap();
    assert!(nometa.metadata.is_empty());
    assert_eq!(nometa.sample_count(), 1857);
    // Without # TYPE nothing says what `le` means, so Prometheus keeps it as
    // written; otherwise the two pages hold the same series.
    let same_page: Vec<_> = page
        .series
        .iter()
        .filter(|s| s.labels.get("le").is_none() && s.labels.get("quantile").is_none())
        .collect();
    let same_nometa: Vec<_> = nometa
        .series
        .iter()
        .filter(|s| s.labels.get("le").is_none() && s.labels.get("quantile").is_none())
        .collect();
    assert_eq!(same_page, same_nometa);

    let promtool = parse_text(&read(&fixtures, "promtool-metrics-test.prom"), SCRAPE_TIME).unwrap();
    assert_eq!(promtool.series.len(), 27);
    let count = |name: &str| {
        promtool
            .series
            .iter()
            .filter(|s| {
                let metric = s.labels.metric_name().unwrap();
                metric == name
                    || metric
                        .strip_prefix(name)
                        .is_some_and(|rest| ["_bucket", "_sum", "_count"].contains(&rest))
            })
            .count()
    };
    assert_eq!(count("prometheus_tsdb_compaction_chunk_size_bytes"), 15);
    assert_eq!(count("go_gc_duration_seconds"), 7);
    assert_eq!(count("net_conntrack_dialer_conn_attempted_total"), 4);
    assert_eq!(count("go_info"), 1);
    let quantiles: Vec<&str> = promtool
        .series
        .iter()
        .filter_map(|s| s.labels.get("quantile"))
        .collect();
    assert_eq!(quantiles, ["0.0", "0.25", "0.5", "0.75", "1.0"]);

    let om = parse_openmetrics(&read(&fixtures, "alltypes.5mfs.om.txt"), SCRAPE_TIME).unwrap();
    assert_eq!(om.metadata.len(), 5);
    assert_eq!(om.sample_count(), 53);
    assert_eq!(om.exemplars.len(), 6);
    let histogram = om
        .metadata
        .iter()
        .find(|m| m.metric_family_name == "rpc_durations_histogram_seconds")
        .unwrap();
    assert_eq!(histogram.metric_type, MetricType::Histogram);
    assert!(names(&om).contains("promhttp_metric_handler_errors_created"));

    let one = parse_openmetrics(&read(&fixtures, "1histogram.om.txt"), SCRAPE_TIME).unwrap();
    assert_eq!(one.metadata.len(), 1);
    assert_eq!(one.sample_count(), 42);
}

#[test]
fn client_golang_text_vectors() {
    let Some(dir) = exposition_dir() else { return };
    let expfmt = dir.join("prometheus-common-expfmt");

    let body = read(&expfmt, "testdata/text");
    let page = parse_text(&body, SCRAPE_TIME).unwrap();
    assert_eq!(
        page.metadata
            .iter()
            .filter(|m| m.metric_type != MetricType::Unknown || !m.help.is_empty())
            .count(),
        37
    );
    assert_eq!(page.sample_count(), 248);

    let mut failures = Vec::new();
    for path in sorted_dir(&expfmt.join("parse-ok")) {
        let name = file_name(&path);
        let result = parse_text(&fs::read(&path).unwrap(), SCRAPE_TIME);
        let expected_reject = TEXT_REJECTED_ACCEPTS.iter().any(|(case, _)| *case == name);
        match (result, expected_reject) {
            (Ok(_), false) | (Err(_), true) => {}
            (Err(e), false) => failures.push(format!("{name}: rejected: {e}")),
            (Ok(_), true) => failures.push(format!("{name}: listed as rejected but accepted")),
        }
    }
    for path in sorted_dir(&expfmt.join("parse-error")) {
        let name = file_name(&path);
        let result = parse_text(&fs::read(&path).unwrap(), SCRAPE_TIME);
        let expected_accept = TEXT_ACCEPTED_REJECTS.iter().any(|(case, _)| *case == name);
        match (result, expected_accept) {
            (Err(_), false) | (Ok(_), true) => {}
            (Ok(_), false) => failures.push(format!("{name}: accepted")),
            (Err(e), true) => failures.push(format!("{name}: listed as accepted but rejected: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
