//! The PromQL engine's hot operators over in-memory data: a range function
//! feeding an aggregation, a binary operation between two selections, and an
//! instant-vector selector over every series.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidewatch_benches::{Cluster, sized};
use tidewatch_model::TenantId;
use tidewatch_model::raw_write::RawWriteBatch;
use tidewatch_model::seam::{Ingest, MemSeriesStore, WriteBatch};
use tidewatch_query::engine::{self, DEFAULT_LOOKBACK_MS, EvalRange, QueryLimits};

const INTERVAL_MS: i64 = 15_000;
/// One hour of scrapes.
const SAMPLES: usize = 240;
const START: i64 = 1_767_225_600_000;

/// The range every query runs over: the hour after the first 5 minutes, 1 m steps.
fn hour_range() -> EvalRange {
    EvalRange {
        start: START + 5 * 60_000,
        end: START + (SAMPLES as i64 - 1) * INTERVAL_MS,
        step: 60_000,
        lookback: DEFAULT_LOOKBACK_MS,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Benchmarks each `(name, query)` over [`hour_range`] as one criterion group.
fn bench_queries(
    c: &mut Criterion,
    group_name: &str,
    series: usize,
    runtime: &tokio::runtime::Runtime,
    store: &MemSeriesStore,
    queries: &[(&str, &str)],
) {
    let tenant = TenantId::default_tenant();
    let range = hour_range();
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Elements(series as u64));
    for (name, query) in queries {
        let parsed = engine::parse(query).expect("query parses");
        group.bench_function(*name, |b| {
            b.iter(|| {
                runtime
                    .block_on(engine::evaluate(store, &tenant, &parsed, range, QueryLimits::default()))
                    .expect("query evaluates")
            })
        });
    }
    group.finish();
}

fn promql(c: &mut Criterion) {
    let series = sized(10_000, 500);
    let runtime = runtime();
    let store = MemSeriesStore::new();
    let tenant = TenantId::default_tenant();
    let history = Cluster::new(series, 7).history(START, INTERVAL_MS, SAMPLES);
    let batch = WriteBatch {
        series: history,
        metadata: Vec::new(),
    };
    runtime
        .block_on(store.ingest(&tenant, RawWriteBatch::from_batch(&batch)))
        .expect("ingest");
    let queries = [
        (
            "sum_rate",
            "sum by (namespace) (rate(container_cpu_usage_seconds_total[5m]))",
        ),
        (
            "ratio_on_pod",
            "container_memory_working_set_bytes / on(namespace, pod, container) container_memory_rss",
        ),
        ("count_all", "count by (__name__) ({__name__=~\".+\"})"),
    ];
    bench_queries(c, "promql_range_1h_step_1m", series, &runtime, &store, &queries);
}

/// Native histograms: 1,000 counter histograms (schema 3, ~40 populated
/// buckets each, growing every scrape), 1 h at 15 s, through the functions
/// a dashboard runs on them.
fn native_histograms(c: &mut Criterion) {
    use std::sync::Arc;
    use tidewatch_model::histogram::{Bucket, FloatHistogram, HistogramSample};
    use tidewatch_model::{Labels, seam::SeriesSamples};

    let runtime = runtime();
    let store = MemSeriesStore::new();
    let tenant = TenantId::default_tenant();
    let series_count = 1_000;
    let series: Vec<SeriesSamples> = (0..series_count)
        .map(|i| {
            let labels = Labels::from_pairs([
                ("__name__", "rpc_duration_seconds".to_string()),
                ("service", format!("svc-{}", i % 20)),
                ("pod", format!("pod-{i}")),
            ]);
            let histograms = (0..SAMPLES)
                .map(|step| {
                    let grown = (step + 1) as f64;
                    let positive: Vec<Bucket> = (0..40)
                        .map(|b| Bucket {
                            index: b - 10,
                            count: grown * f64::from((b * 7 + i) % 5 + 1),
                        })
                        .collect();
                    let count = positive.iter().map(|b| b.count).sum::<f64>() + grown;
                    HistogramSample {
                        timestamp: START + step as i64 * INTERVAL_MS,
                        histogram: FloatHistogram {
                            schema: 3,
                            zero_threshold: 1e-128,
                            zero_count: grown,
                            count,
                            sum: count * 0.25,
                            positive,
                            custom_values: Arc::from(Vec::new()),
                            ..FloatHistogram::default()
                        },
                    }
                })
                .collect();
            SeriesSamples {
                labels,
                samples: Vec::new(),
                histograms,
                start_timestamps: Default::default(),
            }
        })
        .collect();
    store.insert(&tenant, series);
    let queries = [
        (
            "quantile_sum_rate",
            "histogram_quantile(0.99, sum by (service) (rate(rpc_duration_seconds[5m])))",
        ),
        ("count_rate", "histogram_count(rate(rpc_duration_seconds[5m]))"),
    ];
    bench_queries(
        c,
        "promql_native_histograms_1h_step_1m",
        series_count as usize,
        &runtime,
        &store,
        &queries,
    );
}

criterion_group!(benches, promql, native_histograms);
criterion_main!(benches);
