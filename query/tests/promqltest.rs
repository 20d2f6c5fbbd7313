//! Runs every Prometheus `promqltest` script in `../shared/conformance/promql/`
//! (or `$TIDEWATCH_PROMQLTEST_DIR`) against the engine.
//!
//! The statements that fail today are listed in `promqltest_known_failures.txt`
//! next to this file. The test fails when a statement fails that is not listed
//! (a regression) and when a listed one passes or is gone (so the list only
//! shrinks and always says exactly what is left). `TIDEWATCH_PROMQLTEST_BLESS=1`
//! rewrites the list from the current results instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tidewatch_query::promqltest::{Outcome, Report, run_script};

const KNOWN_FAILURES: &str = "tests/promqltest_known_failures.txt";

fn scripts_dir() -> PathBuf {
    match std::env::var_os("TIDEWATCH_PROMQLTEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/promql"),
    }
}

#[tokio::test]
async fn prometheus_promqltest_scripts() {
    let dir = scripts_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "promqltest: conformance scripts not found at {}; set TIDEWATCH_PROMQLTEST_DIR to run them",
            dir.display()
        );
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test scripts in {}", dir.display());
    let mut report = Report::default();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        report.statements.extend(run_script(&name, &text).await.statements);
    }
    println!("promqltest: {}", report.summary());
    // Positions in messages and Go string escapes come from finding the
    // parsed tree in the query text; every parseable expression must be found.
    let unlocated: Vec<String> = report
        .statements
        .iter()
        .filter(|s| tidewatch_query::engine::located_in_text(&s.expr) == Some(false))
        .map(|s| format!("{}:{}: {}", s.file, s.line, s.expr))
        .collect();
    assert!(
        unlocated.is_empty(),
        "expressions whose tree query_text does not find in their text:\n{}",
        unlocated.join("\n")
    );
    let failing: BTreeSet<String> = report
        .statements
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
        .map(|s| format!("{}:{}", s.file, s.line))
        .collect();
    let list_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(KNOWN_FAILURES);
    if std::env::var_os("TIDEWATCH_PROMQLTEST_BLESS").is_some() {
        let mut text = String::from(
            "# promqltest statements that fail today (file:line), kept exact by\n\
             # query/tests/promqltest.rs. Regenerate: TIDEWATCH_PROMQLTEST_BLESS=1 cargo test -p tidewatch-query --test promqltest\n",
        );
        for entry in &failing {
            text.push_str(entry);
            text.push('\n');
        }
        std::fs::write(&list_path, text).unwrap();
        return;
    }
    let known: BTreeSet<String> = std::fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let mut problems = Vec::new();
    for statement in &report.statements {
        let key = format!("{}:{}", statement.file, statement.line);
        if let Outcome::Failed(message) = &statement.outcome
            && !known.contains(&key)
        {
            problems.push(format!("NEW FAILURE {key}: {}\n    {message}", statement.expr));
        }
    }
    for key in known.difference(&failing) {
        problems.push(format!(
            "{key} passes (or is gone) now: remove it from {KNOWN_FAILURES}"
        ));
    }
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), report.summary());
}
