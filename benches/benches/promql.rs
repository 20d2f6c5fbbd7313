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

fn promql(c: &mut Criterion) {
    let series = sized(10_000, 500);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
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
    let end = START + (SAMPLES as i64 - 1) * INTERVAL_MS;
    let range = EvalRange {
        start: START + 5 * 60_000,
        end,
        step: 60_000,
        lookback: DEFAULT_LOOKBACK_MS,
    };
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
    let mut group = c.benchmark_group("promql_range_1h_step_1m");
    group.throughput(Throughput::Elements(series as u64));
    for (name, query) in queries {
        let expr = engine::parse(query).expect("query parses");
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(engine::evaluate(&store, &tenant, &expr, range, QueryLimits::default()))
                    .expect("query evaluates")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, promql);
criterion_main!(benches);
