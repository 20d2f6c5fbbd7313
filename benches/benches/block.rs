//! Blocks: encoding 10,000 series × 480 samples (2 h at 15 s, one head
//! window) to Parquet, and reading a block back by matcher, by series id, and
//! the last five minutes of every series (what an instant `rate(…[5m])` reads).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use tidewatch_benches::{Cluster, now_ms, sized};
use tidewatch_model::Matcher;
use tidewatch_model::seam::TimeRange;
use tidewatch_storage::SegmentCache;
use tidewatch_storage::block::{Block, Via, Wanted, encode_block, slice_ms_for_window, write_block};

const SAMPLES_PER_SERIES: usize = 480;
const SCRAPE_INTERVAL_MS: i64 = 15_000;
/// A head window: the data fills the last whole one, so the last five
/// minutes lie in one slice whatever the time of the run.
const WINDOW_MS: i64 = 2 * 3_600_000;
/// Slices of a block cut from a 2 h head window, as the server writes them.
const SLICE_MS: i64 = slice_ms_for_window(WINDOW_MS);

fn block(c: &mut Criterion) {
    let series_count = sized(10_000, 1_000);
    let mut cluster = Cluster::new(series_count, 9);
    let series = cluster.history(
        WINDOW_MS * (now_ms() / WINDOW_MS - 1),
        SCRAPE_INTERVAL_MS,
        SAMPLES_PER_SERIES,
    );
    let samples = (series_count * SAMPLES_PER_SERIES) as u64;

    let encoded = encode_block(&series, 1, Vec::new(), SLICE_MS).expect("block encodes");
    let bytes = encoded.series.len() + encoded.samples.len();
    eprintln!(
        "block: {series_count} series x {SAMPLES_PER_SERIES} samples -> series.parquet {} bytes, \
         samples.parquet {} bytes, {:.3} bytes/sample ({:.3} for samples.parquet alone)",
        encoded.series.len(),
        encoded.samples.len(),
        bytes as f64 / samples as f64,
        encoded.samples.len() as f64 / samples as f64,
    );

    let mut group = c.benchmark_group("block_encode");
    group.sample_size(10);
    group.throughput(Throughput::Elements(samples));
    group.bench_function(format!("{series_count}x{SAMPLES_PER_SERIES}"), |b| {
        b.iter(|| encode_block(black_box(&series), 1, Vec::new(), SLICE_MS).expect("block encodes"))
    });
    group.finish();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = StorePath::from("bench");
    let meta = runtime
        .block_on(write_block(&store, &prefix, encoded))
        .expect("block written");
    let dir = prefix.clone().join(meta.ulid.as_str());
    let block = runtime
        .block_on(Block::open(store.clone(), dir.clone()))
        .expect("block opens");

    let matchers = [Matcher::equal("namespace", "team-1")];
    let selected = runtime
        .block_on(block.select(&matchers, TimeRange::ALL))
        .expect("select");
    let selected_samples: usize = selected.iter().map(|s| s.samples.len()).sum();
    assert!(!selected.is_empty());
    // 100 series spread evenly over the block, ascending as read_samples wants.
    let ids: Vec<u32> = (0..100u32).map(|i| i * (block.series_count() as u32 / 100)).collect();

    let mut group = c.benchmark_group("block_read");
    group.throughput(Throughput::Elements(series_count as u64));
    group.bench_function("open", |b| {
        b.iter(|| {
            runtime
                .block_on(Block::open(store.clone(), dir.clone()))
                .expect("block opens")
        })
    });
    group.throughput(Throughput::Elements(selected_samples as u64));
    group.bench_function(format!("select_namespace_{}_series", selected.len()), |b| {
        b.iter(|| {
            runtime
                .block_on(block.select(black_box(&matchers), TimeRange::ALL))
                .expect("select")
        })
    });
    group.throughput(Throughput::Elements((ids.len() * SAMPLES_PER_SERIES) as u64));
    group.bench_function("read_samples_100_series", |b| {
        b.iter(|| {
            runtime
                .block_on(block.read_samples(black_box(&ids)))
                .expect("read_samples")
        })
    });
    let all: Vec<u32> = (0..block.series_count() as u32).collect();
    let last_five_minutes = TimeRange::new(block.meta().max_time - 300_000, block.meta().max_time);
    group.throughput(Throughput::Elements(all.len() as u64));
    group.bench_function("read_last_5m_all_series", |b| {
        b.iter(|| {
            runtime
                .block_on(block.read_samples_in(black_box(&all), last_five_minutes))
                .expect("read_samples_in")
        })
    });
    // The same read again through a warm segment cache: what an instant
    // query or a rule repeating over flushed data costs.
    let cache = SegmentCache::new(256 << 20);
    let mut cached = runtime
        .block_on(Block::open(store.clone(), dir.clone()))
        .expect("block opens");
    cached.use_cache(&cache);
    let cached = Arc::new(cached);
    let read_cached = || {
        runtime
            .block_on(cached.read_in_parallel(black_box(&all), last_five_minutes, Wanted::All, usize::MAX, Via::Cache))
            .expect("cached read")
    };
    read_cached();
    group.bench_function("read_last_5m_all_series_cached", |b| b.iter(read_cached));
    assert!(cache.hits() > 0, "the cached bench read from the cache");
    group.finish();
}

criterion_group!(benches, block);
criterion_main!(benches);
