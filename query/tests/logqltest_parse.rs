//! Every query in Loki's `logqltest` conformance scripts must parse, and
//! print back to text that parses to the same tree.
//!
//! The scripts are AGPL test data kept outside the repository: they are read
//! from `$TIDEWATCH_LOGQLTEST_DIR` or `../shared/conformance/loki/logqltest`
//! next to the workspace, and the test says so and passes when neither exists.
//! Queries under `expect fail` may fail to parse (most of them fail at
//! evaluation in Loki, some at parsing); when one fails here, the message the
//! script expects must be in ours.

use std::fs;
use std::path::PathBuf;

use tidewatch_query::logql::parse;
use tidewatch_query::logqltest::script_queries;

const DIR_VAR: &str = "TIDEWATCH_LOGQLTEST_DIR";

fn scripts_dir() -> Option<PathBuf> {
    let dir = match std::env::var(DIR_VAR) {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/loki/logqltest"),
    };
    dir.is_dir().then_some(dir)
}

struct Eval {
    location: String,
    query: String,
    expect_fail: bool,
    fail_message: Option<String>,
}

fn read_evals(dir: &PathBuf) -> Vec<Eval> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read the logqltest directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "logqltest"))
        .collect();
    files.sort();
    let mut evals = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("read a logqltest script");
        let name = file.file_name().unwrap_or_default().to_string_lossy().to_string();
        for query in script_queries(&text) {
            evals.push(Eval {
                location: format!("{name}:{}", query.line),
                query: query.query,
                expect_fail: query.expect_fail.is_some(),
                fail_message: query.expect_fail.flatten(),
            });
        }
    }
    evals
}

#[test]
fn every_logqltest_query_parses_and_round_trips() {
    let Some(dir) = scripts_dir() else {
        println!(
            "SKIPPED: no logqltest scripts (set {DIR_VAR} or provide ../shared/conformance/loki/logqltest next to the workspace)"
        );
        return;
    };
    let evals = read_evals(&dir);
    assert!(!evals.is_empty(), "no eval statements in {}", dir.display());
    let mut problems = Vec::new();
    let (mut parsed, mut failing_expected, mut rejected_expected) = (0, 0, 0);
    let mut parse_time_failures = Vec::new();
    for eval in &evals {
        match parse(&eval.query) {
            Ok(expr) => {
                parsed += 1;
                if eval.expect_fail {
                    failing_expected += 1;
                }
                let printed = expr.to_string();
                match parse(&printed) {
                    Ok(again) if again == expr => {}
                    Ok(again) => problems.push(format!(
                        "{}: `{}` prints as `{printed}`, which parses to a different tree: {again:?}",
                        eval.location, eval.query
                    )),
                    Err(error) => problems.push(format!(
                        "{}: `{}` prints as `{printed}`, which does not parse: {error}",
                        eval.location, eval.query
                    )),
                }
            }
            Err(error) if eval.expect_fail => {
                rejected_expected += 1;
                parse_time_failures.push(format!("{}: {} -> {error}", eval.location, eval.query));
                if let Some(expected) = &eval.fail_message
                    && !error.to_string().contains(expected.as_str())
                {
                    problems.push(format!(
                        "{}: `{}` fails to parse with `{error}`, the script expects `{expected}`",
                        eval.location, eval.query
                    ));
                }
            }
            Err(error) => problems.push(format!("{}: `{}` does not parse: {error}", eval.location, eval.query)),
        }
    }
    println!(
        "logqltest: {} eval queries from {}: {parsed} parse ({failing_expected} of them `expect fail`, which Loki fails at evaluation), {rejected_expected} `expect fail` queries are rejected by the parser",
        evals.len(),
        dir.display()
    );
    for line in &parse_time_failures {
        println!("  rejected at parse time: {line}");
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
