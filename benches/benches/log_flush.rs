//! A log flush: a head of Kubernetes-like lines written as a block — the
//! lines into Parquet and every word into the Tantivy full-text index. Log
//! ingest with the index is bounded by this step (BENCHMARKS.md, "Logs").

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tidewatch_benches::{XorShift64, sized};
use tidewatch_model::logs::{LogEntry, LogIngest, LogPush, LogStream};
use tidewatch_model::{Labels, SystemClock, TenantId};
use tidewatch_storage::{FsyncPolicy, Storage, StorageConfig};

const STREAMS: usize = 100;
const LINES_PER_PUSH: usize = 10_000;

/// One line of the shapes the log load generator sends: a JSON access log,
/// a logfmt line or a plain access log, with ids, addresses and durations
/// that vary from line to line as real ones do.
fn line(rng: &mut XorShift64, ts_ms: i64) -> String {
    const PATHS: [&str; 5] = [
        "/api/v1/users",
        "/api/v1/orders",
        "/healthz",
        "/metrics",
        "/api/v1/cart",
    ];
    const METHODS: [&str; 3] = ["GET", "POST", "PUT"];
    let path = PATHS[rng.below(PATHS.len() as u64) as usize];
    let method = METHODS[rng.below(METHODS.len() as u64) as usize];
    let status = [200, 200, 200, 201, 404, 500][rng.below(6) as usize];
    let ip = format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.below(256));
    let id = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
    match rng.below(3) {
        0 => format!(
            r#"{{"ts":{ts_ms},"level":"info","method":"{method}","path":"{path}","status":{status},"duration_ms":{},"client_ip":"{ip}","trace_id":"{id}"}}"#,
            rng.below(2_000)
        ),
        1 => format!(
            r#"ts={ts_ms} level=info caller=server.go:{} msg="request served" method={method} path={path} status={status} duration={}ms request_id={id}"#,
            rng.below(400),
            rng.below(2_000)
        ),
        _ => format!(
            r#"{ip} - - [{ts_ms}] "{method} {path} HTTP/1.1" {status} {} "-" "kube-probe/1.29""#,
            rng.below(20_000)
        ),
    }
}

/// `lines` entries spread over the streams, one push per `LINES_PER_PUSH`,
/// all in the last half hour (inside the default limits' window).
fn pushes(lines: usize) -> Vec<LogPush> {
    let mut rng = XorShift64::new(17);
    let labels: Vec<Labels> = (0..STREAMS)
        .map(|i| {
            Labels::from_pairs([
                ("namespace", format!("ns-{}", i % 10)),
                ("pod", format!("app-{i}")),
                ("container", "app".to_string()),
            ])
        })
        .collect();
    let start_ns = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i64)
        - 30 * 60 * 1_000_000_000;
    let mut out = Vec::new();
    for first in (0..lines).step_by(LINES_PER_PUSH) {
        let mut streams: Vec<LogStream> = labels
            .iter()
            .map(|labels| LogStream {
                labels: labels.clone(),
                entries: Vec::new(),
            })
            .collect();
        for n in first..(first + LINES_PER_PUSH).min(lines) {
            let timestamp = start_ns + n as i64 * 1_000_000;
            let text = line(&mut rng, timestamp / 1_000_000);
            streams[n % STREAMS].entries.push(LogEntry::new(timestamp, text));
        }
        out.push(LogPush { streams });
    }
    out
}

fn log_flush(c: &mut Criterion) {
    let lines = sized(200_000, 5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pushes = pushes(lines);
    let raw: usize = pushes
        .iter()
        .flat_map(|p| &p.streams)
        .flat_map(|s| &s.entries)
        .map(|e| e.line.len())
        .sum();
    let tenant = TenantId::parse("bench").expect("tenant id");

    let mut group = c.benchmark_group("log_flush");
    group.sample_size(10);
    group.throughput(Throughput::Elements(lines as u64));
    group.bench_function(format!("{lines}_lines_{STREAMS}_streams_{}_mb", raw >> 20), |b| {
        b.iter_batched(
            // Untimed: a fresh store whose log head holds the lines.
            || {
                let dir = tempfile::tempdir().expect("temporary directory");
                let config = StorageConfig {
                    fsync: FsyncPolicy::Never,
                    ..StorageConfig::new(dir.path())
                };
                let storage = runtime.block_on(async {
                    let storage = Storage::open(config, Arc::new(SystemClock))
                        .await
                        .expect("storage opens");
                    for push in pushes.clone() {
                        storage.push(&tenant, push).await.expect("push accepted");
                    }
                    storage
                });
                (dir, storage)
            },
            |(dir, storage)| {
                runtime.block_on(storage.flush_all()).expect("flush succeeds");
                assert!(storage.log_block_count() > 0, "the flush wrote a block");
                (dir, storage)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, log_flush);
criterion_main!(benches);
