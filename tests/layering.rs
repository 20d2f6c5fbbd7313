//! Dependencies point one way (DESIGN.md): this test reads the workspace's
//! `cargo metadata` and fails on any edge between our crates that is not allowed.

use std::collections::{BTreeMap, BTreeSet};

/// For each crate of ours, the crates of ours it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("tidewatch-model", &[]),
    ("tidewatch-storage", &["tidewatch-model"]),
    ("tidewatch-query", &["tidewatch-model"]),
    ("tidewatch-alertmanager", &["tidewatch-model", "tidewatch-query"]),
    ("tidewatch-collector", &["tidewatch-model"]),
    (
        "tidewatch-ui",
        &["tidewatch-model", "tidewatch-query", "tidewatch-alertmanager"],
    ),
    (
        "tidewatch",
        &[
            "tidewatch-model",
            "tidewatch-storage",
            "tidewatch-query",
            "tidewatch-alertmanager",
            "tidewatch-collector",
            "tidewatch-ui",
        ],
    ),
    (
        "tidewatch-benches",
        &["tidewatch-model", "tidewatch-storage", "tidewatch-query"],
    ),
];

#[test]
fn workspace_dependencies_point_one_way() {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let allowed: BTreeMap<&str, BTreeSet<&str>> =
        ALLOWED.iter().map(|(k, v)| (*k, v.iter().copied().collect())).collect();
    let packages = metadata["packages"].as_array().expect("packages");
    let ours: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(permitted) = allowed.get(name) else {
            violations.push(format!("{name} is not in the layering table of tests/layering.rs"));
            continue;
        };
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let dep = dependency["name"].as_str().unwrap_or_default();
            // Dev-dependencies may reach anywhere; normal and build edges may not.
            let is_dev = dependency["kind"].as_str() == Some("dev");
            if ours.contains(dep) && !is_dev && !permitted.contains(dep) {
                violations.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(
        ours.contains("tidewatch-model") && ours.contains("tidewatch-storage"),
        "workspace not found: {ours:?}"
    );
    assert!(violations.is_empty(), "forbidden dependency edges: {violations:#?}");
}
