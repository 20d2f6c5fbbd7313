//! The LogQL engine over real storage answers exactly as over the
//! in-memory oracle: entries spread over flushed blocks (Parquet + Tantivy)
//! and the head, `|=` filters pushed down to the full-text index, parsers,
//! metric and log queries.

use std::sync::Arc;

use tidewatch_model::logs::{Direction, LogEntry, LogIngest, LogPush, LogStream, MemLogStore};
use tidewatch_model::{Labels, ManualClock, TenantId};
use tidewatch_query::logql::{LogQueryParams, LogQueryResult, evaluate, parse};
use tidewatch_storage::{FsyncPolicy, Storage, StorageConfig};

const NOW_MS: i64 = 1_767_225_600_000;
const NOW_NS: i64 = NOW_MS * 1_000_000;
const S: i64 = 1_000_000_000;

/// A trace id of 32 hexadecimal digits, as tracing libraries write them:
/// an id word, which the index keeps in its own list.
fn trace(round: i64, pod: i64, i: i64) -> String {
    let seed = (round * 1_000 + pod * 100 + i) as u64;
    let mix = |x: u64| x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29) ^ 0x5851_f42d_4c95_7f2d;
    format!("{:016x}{:016x}", mix(seed), mix(seed ^ 0xdead))
}

/// A small deterministic corpus: three formats, six pods, two namespaces,
/// a trace id on every line.
fn push(round: i64) -> LogPush {
    let mut streams = Vec::new();
    for pod in 0..6_i64 {
        let namespace = if pod % 2 == 0 { "shop" } else { "infra" };
        let mut entries = Vec::new();
        for i in 0..40_i64 {
            let t = NOW_NS - 3600 * S + round * 1800 * S + (i * 37 + pod * 11) * S;
            let level = ["info", "warn", "error"][((i + pod) % 3) as usize];
            let status = [200, 404, 500][((i * 7 + pod) % 3) as usize];
            let trace = trace(round, pod, i);
            let line = match pod % 3 {
                0 => format!(r#"{{"level":"{level}","status":{status},"path":"/api/{i}","trace":"{trace}"}}"#),
                1 => format!(
                    "level={level} status={status} took={}ms path=/api/{i} trace={trace}",
                    i * 13 % 700
                ),
                _ => format!("{} GET /api/{i} {status} trace={trace}", level.to_uppercase()),
            };
            entries.push(LogEntry::new(t, line));
        }
        streams.push(LogStream {
            labels: Labels::from_pairs([("namespace", namespace.to_string()), ("pod", format!("pod-{pod}"))]),
            entries,
        });
    }
    LogPush { streams }
}

#[tokio::test]
async fn storage_and_the_oracle_give_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let config = StorageConfig {
        fsync: FsyncPolicy::Never,
        ..StorageConfig::new(dir.path())
    };
    let storage: Arc<Storage> = Storage::open(config, Arc::new(clock)).await.unwrap();
    let oracle = MemLogStore::new();
    let tenant = TenantId::default_tenant();
    // The first round goes to blocks, the second stays in the head.
    storage.push(&tenant, push(0)).await.unwrap();
    oracle.push(&tenant, push(0)).await.unwrap();
    storage.flush_all().await.unwrap();
    storage.push(&tenant, push(1)).await.unwrap();
    oracle.push(&tenant, push(1)).await.unwrap();

    let start = NOW_NS - 3600 * S;
    let end = NOW_NS;
    let metric = LogQueryParams::range(start, end, 300 * S, Direction::Backward, 100);
    let logs = LogQueryParams::range(start, end, S, Direction::Forward, 25);
    // Trace ids of a flushed line and of a line in the head, whole and in
    // parts: a prefix, a middle, a suffix.
    let flushed = trace(0, 1, 7);
    let in_head = trace(1, 4, 22);
    let by_trace = format!(r#"count_over_time({{namespace=~".+"}} |= "{flushed}" [10m])"#);
    let by_head_trace = format!(r#"{{namespace=~".+"}} |= "trace={in_head}""#);
    let by_prefix = format!(r#"{{namespace=~".+"}} |= "{}""#, &flushed[..10]);
    let by_middle = format!(r#"count_over_time({{namespace=~".+"}} |= "{}" [10m])"#, &flushed[9..21]);
    let json_trace = trace(0, 0, 7);
    let by_suffix = format!(r##"{{pod="pod-0"}} |= "{}\"""##, &json_trace[20..]);
    let cases: [(&str, &LogQueryParams); 16] = [
        (&by_trace, &metric),
        (&by_head_trace, &logs),
        (&by_prefix, &logs),
        (&by_middle, &metric),
        (&by_suffix, &logs),
        (
            r#"count_over_time({namespace=~".+"} |~ "trace=[0-9a-f]{3}7" [10m])"#,
            &metric,
        ),
        (r#"count_over_time({namespace=~".+"} |= "/api/1" [10m])"#, &metric),
        (
            r#"sum by (namespace) (rate({namespace="shop"} |= "500" != "warn" [5m]))"#,
            &metric,
        ),
        (
            r#"sum by (level) (count_over_time({pod="pod-0"} | json | status >= 400 [15m]))"#,
            &metric,
        ),
        (
            r#"avg_over_time({pod="pod-1"} | logfmt | unwrap duration(took) [20m]) by (level)"#,
            &metric,
        ),
        (
            r#"topk(2, sum by (pod) (bytes_over_time({namespace=~".+"} |~ "ERROR|error" [30m])))"#,
            &metric,
        ),
        // Regexes hand their literals (`/api/`, `GET /api/`) to the index.
        (r#"count_over_time({namespace=~".+"} |~ "/api/[0-9]+" [10m])"#, &metric),
        (r#"{namespace=~".+"} |~ "(GET) /api/(1|2)""#, &logs),
        (
            r#"{namespace="infra"} |= "GET" | pattern "<level> <_> <path> <status>""#,
            &logs,
        ),
        (
            r#"{namespace=~".+"} |= "/api/2" | logfmt | line_format "{{.level}} {{.path}}""#,
            &logs,
        ),
        (
            r#"{pod="pod-0"} | json | level="error""#,
            &LogQueryParams::range(start, end, S, Direction::Backward, 10),
        ),
    ];
    for (query, params) in cases {
        let expr = parse(query).unwrap();
        let want = evaluate(&oracle, &tenant, &expr, params).await.unwrap();
        let got = evaluate(&*storage, &tenant, &expr, params).await.unwrap();
        let answered = match &want {
            LogQueryResult::Matrix(series) => !series.is_empty(),
            LogQueryResult::Streams(streams) => !streams.is_empty(),
            _ => false,
        };
        assert!(answered, "{query}: the corpus answers nothing");
        assert_eq!(got, want, "{query}");
    }
}
