//! Scrape parsing throughput on Prometheus' own benchmark page (237 metric
//! families, ~1,900 series), read from the conformance data in place. Absent
//! data: nothing is measured and the bench says so.

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidewatch_model::exposition::{parse_openmetrics, parse_text};

fn fixture(name: &str) -> Option<Vec<u8>> {
    let dir = match std::env::var_os("TIDEWATCH_CONFORMANCE_DIR") {
        Some(root) => PathBuf::from(root).join("exposition"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/exposition"),
    };
    let path = dir.join("prometheus-textparse").join(name);
    match std::fs::read(&path) {
        Ok(body) => Some(body),
        Err(e) => {
            eprintln!(
                "SKIPPED: {} not readable ({e}); set TIDEWATCH_CONFORMANCE_DIR",
                path.display()
            );
            None
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("exposition");
    if let Some(body) = fixture("alltypes.237mfs.prom.txt") {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("parse_text/237mfs", |b| b.iter(|| parse_text(&body, 0).unwrap()));
    }
    if let Some(body) = fixture("alltypes.5mfs.om.txt") {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("parse_openmetrics/5mfs", |b| {
            b.iter(|| parse_openmetrics(&body, 0).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
