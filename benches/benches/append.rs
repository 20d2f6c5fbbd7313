//! `Storage::append` in steady state: 2,000-series batches of series the head
//! already holds (10,000 in all), each with a new timestamp.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tidewatch_benches::{Cluster, now_ms, sized};
use tidewatch_model::{SystemClock, TenantId};
use tidewatch_storage::{FsyncPolicy, Storage, StorageConfig};

const SCRAPE_INTERVAL_MS: i64 = 15_000;
const DAY_MS: i64 = 24 * 3_600_000;

fn append(c: &mut Criterion) {
    let head_series = sized(10_000, 1_000);
    let batch_series = sized(2_000, 200);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = StorageConfig {
        fsync: FsyncPolicy::Never,
        ..StorageConfig::new(dir.path())
    };
    let storage = runtime
        .block_on(Storage::open(config, Arc::new(SystemClock)))
        .expect("storage opens");
    let tenant = TenantId::parse("bench").expect("tenant id");

    // Samples must be within the last 7 days: start 6 days back and advance one
    // scrape interval per batch of a slice; that leaves ~35,000 batches per slice.
    let mut cluster = Cluster::new(head_series, 42);
    let start = now_ms() - 6 * DAY_MS;
    let slices: Vec<std::ops::Range<usize>> = (0..head_series)
        .step_by(batch_series)
        .map(|s| s..(s + batch_series).min(head_series))
        .collect();
    let mut scrapes = vec![0i64; slices.len()];
    let mut next_batch = |cluster: &mut Cluster, turn: usize| {
        let slice = turn % slices.len();
        scrapes[slice] += 1;
        let timestamp = start + scrapes[slice] * SCRAPE_INTERVAL_MS;
        assert!(timestamp < now_ms(), "ran out of timestamps within the accepted window");
        cluster.scrape(slices[slice].clone(), timestamp)
    };
    // Fill the head: every series exists and has a few samples.
    let mut turn = 0;
    for _ in 0..3 {
        for _ in 0..slices.len() {
            let batch = next_batch(&mut cluster, turn);
            runtime
                .block_on(storage.append(&tenant, batch))
                .expect("warm-up append");
            turn += 1;
        }
    }
    assert_eq!(storage.head_totals().0, head_series as u64);

    let mut group = c.benchmark_group("storage_append");
    group.throughput(Throughput::Elements(batch_series as u64));
    group.bench_function(format!("{batch_series}_series_into_{head_series}"), |b| {
        b.iter_batched(
            || {
                let batch = next_batch(&mut cluster, turn);
                turn += 1;
                batch
            },
            |batch| runtime.block_on(storage.append(&tenant, batch)).expect("append"),
            BatchSize::PerIteration,
        )
    });
    group.finish();
    let (series, samples) = storage.head_totals();
    eprintln!(
        "storage_append: head holds {series} series, {samples} samples; WAL {} bytes",
        storage.wal_disk_size()
    );
}

criterion_group!(benches, append);
criterion_main!(benches);
