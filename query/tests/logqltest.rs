//! Runs every Loki `logqltest` script in `$TIDEWATCH_LOGQLTEST_DIR` or
//! `../shared/conformance/loki/logqltest` (AGPL test data kept outside the
//! repository) through the LogQL engine; every statement must pass.
//!
//! When the directory is absent the test says so and passes.

use std::path::PathBuf;

use tidewatch_query::logqltest::{Outcome, Report, run_script};

const DIR_VAR: &str = "TIDEWATCH_LOGQLTEST_DIR";

fn scripts_dir() -> PathBuf {
    match std::env::var_os(DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/loki/logqltest"),
    }
}

#[tokio::test]
async fn loki_logqltest_scripts() {
    let dir = scripts_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "logqltest: conformance scripts not found at {}; set {DIR_VAR} to run them",
            dir.display()
        );
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "logqltest"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.logqltest scripts in {}", dir.display());
    let mut report = Report::default();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        report.statements.extend(run_script(&name, &text).await.statements);
    }
    println!("logqltest: {}", report.summary());
    let mut problems = Vec::new();
    for statement in &report.statements {
        match &statement.outcome {
            Outcome::Failed(message) => problems.push(format!(
                "FAIL {}:{}: {}\n     {message}",
                statement.file, statement.line, statement.expr
            )),
            Outcome::Skipped(reason) => problems.push(format!(
                "SKIP {}:{}: {}\n     {reason}",
                statement.file, statement.line, statement.expr
            )),
            Outcome::Passed => {}
        }
    }
    assert!(problems.is_empty(), "{}\n{}", problems.join("\n"), report.summary());
}
