//! The LogQL engine against a straightforward oracle on a generated corpus.
//!
//! A seeded generator writes Kubernetes-like logs — JSON, logfmt and plain
//! lines from many pods in a few namespaces, with levels, status codes and
//! latencies — into `MemLogStore`. Each query's answer is then recomputed
//! in the test by brute force from the generated records (which the test
//! knows field by field) and the two must agree exactly: line filters (the
//! pushed-down `|=` and the engine's own `!=`, `|~`), parsers with label
//! filters, `count_over_time` windows and `sum by`.

use std::collections::BTreeMap;

use tidewatch_model::logs::{Direction, LogEntry, LogIngest, LogPush, LogStream, MemLogStore};
use tidewatch_model::{Labels, TenantId};
use tidewatch_query::logql::{LogQueryParams, LogQueryResult, evaluate, parse};

const S: i64 = 1_000_000_000;
const BASE: i64 = 1_767_225_600 * S;
const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
const PATHS: [&str; 4] = ["/api/users", "/api/orders", "/healthz", "/metrics"];

/// splitmix64: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One generated entry with the fields its line was written from.
#[derive(Debug, Clone)]
struct Record {
    namespace: String,
    pod: String,
    format: &'static str,
    timestamp: i64,
    line: String,
    level: &'static str,
    status: u32,
    path: &'static str,
}

fn generate(seed: u64) -> Vec<Record> {
    let mut rng = Rng(seed);
    let mut records = Vec::new();
    for namespace in ["shop", "payments", "infra"] {
        for pod_index in 0..10 {
            let pod = format!("{namespace}-{pod_index:02}-{:05x}", rng.below(1 << 20));
            let format = ["json", "logfmt", "plain"][rng.below(3) as usize];
            let mut timestamp = BASE + rng.below(30) as i64 * S;
            let entries = 20 + rng.below(60);
            for _ in 0..entries {
                timestamp += (1 + rng.below(20)) as i64 * S + rng.below(1000) as i64;
                let level = LEVELS[rng.below(4) as usize];
                let status = [200, 201, 404, 500, 503][rng.below(5) as usize];
                let path = PATHS[rng.below(4) as usize];
                let latency = rng.below(900) + 1;
                let line = match format {
                    "json" => format!(
                        r#"{{"level":"{level}","msg":"request done","http":{{"status":{status},"path":"{path}"}},"latency_ms":{latency}}}"#
                    ),
                    "logfmt" => {
                        format!(r#"level={level} msg="request done" status={status} path={path} took={latency}ms"#)
                    }
                    _ => format!("{} {path} {status} {latency}ms", level.to_uppercase()),
                };
                records.push(Record {
                    namespace: namespace.to_string(),
                    pod: pod.clone(),
                    format,
                    timestamp,
                    line,
                    level,
                    status,
                    path,
                });
            }
        }
    }
    records
}

fn stream_labels(record: &Record) -> Labels {
    Labels::from_pairs([
        ("namespace", record.namespace.as_str()),
        ("pod", record.pod.as_str()),
        ("format", record.format),
        ("container", "app"),
    ])
}

async fn load(records: &[Record]) -> MemLogStore {
    let mut streams: BTreeMap<Labels, Vec<LogEntry>> = BTreeMap::new();
    for record in records {
        streams
            .entry(stream_labels(record))
            .or_default()
            .push(LogEntry::new(record.timestamp, record.line.clone()));
    }
    let store = MemLogStore::new();
    let push = LogPush {
        streams: streams
            .into_iter()
            .map(|(labels, entries)| LogStream { labels, entries })
            .collect(),
    };
    store.push(&TenantId::default_tenant(), push).await.unwrap();
    store
}

/// A range query's matrix as label text → values per step.
async fn matrix(store: &MemLogStore, query: &str, steps: &[i64]) -> BTreeMap<String, Vec<Option<f64>>> {
    let params = LogQueryParams::range(
        steps[0],
        steps[steps.len() - 1],
        steps[1] - steps[0],
        Direction::Backward,
        0,
    );
    let expr = parse(query).unwrap();
    let LogQueryResult::Matrix(series) = evaluate(store, &TenantId::default_tenant(), &expr, &params)
        .await
        .unwrap()
    else {
        panic!("{query}: not a matrix")
    };
    let mut out = BTreeMap::new();
    for s in series {
        let mut values = vec![None; steps.len()];
        for (t, v) in s.points {
            values[steps.iter().position(|&x| x == t).unwrap()] = Some(v);
        }
        out.insert(label_text(&s.labels), values);
    }
    out
}

fn label_text(labels: &Labels) -> String {
    let parts: Vec<String> = labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect();
    parts.join(",")
}

/// The oracle: counts per key in each `(T − range, T]` window, absent when zero.
fn oracle<'r>(
    records: &'r [Record],
    steps: &[i64],
    range: i64,
    keep: impl Fn(&Record) -> bool,
    key: impl Fn(&'r Record) -> String,
) -> BTreeMap<String, Vec<Option<f64>>> {
    let mut out: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for record in records.iter().filter(|r| keep(r)) {
        for (i, &t) in steps.iter().enumerate() {
            if t - range < record.timestamp && record.timestamp <= t {
                let slot = &mut out.entry(key(record)).or_insert_with(|| vec![None; steps.len()])[i];
                *slot = Some(slot.unwrap_or(0.0) + 1.0);
            }
        }
    }
    out
}

/// The engine's answer must equal the oracle's, and the oracle's must not be empty.
fn check(got: &BTreeMap<String, Vec<Option<f64>>>, want: &BTreeMap<String, Vec<Option<f64>>>, seed: u64, what: &str) {
    assert!(!want.is_empty(), "seed {seed}: {what}: the corpus selects nothing");
    assert_eq!(got, want, "seed {seed}: {what}");
}

fn stream_key(record: &Record) -> String {
    label_text(&stream_labels(record))
}

#[tokio::test]
async fn line_filters_and_counts_match_the_oracle() {
    for seed in [1_u64, 42, 4242] {
        let records = generate(seed);
        let store = load(&records).await;
        let steps: Vec<i64> = (0..20).map(|i| BASE + 60 * S + i * 45 * S).collect();
        let range = 2 * 60 * S;

        let got = matrix(&store, r#"count_over_time({container="app"} |= "/api/" [2m])"#, &steps).await;
        let want = oracle(&records, &steps, range, |r| r.line.contains("/api/"), stream_key);
        check(&got, &want, seed, "|= pushed down");

        let got = matrix(
            &store,
            r#"count_over_time({namespace=~"shop|infra"} != "healthz" |~ "50[03]" [2m])"#,
            &steps,
        )
        .await;
        let want = oracle(
            &records,
            &steps,
            range,
            |r| {
                (r.namespace == "shop" || r.namespace == "infra")
                    && !r.line.contains("healthz")
                    && (r.line.contains("500") || r.line.contains("503"))
            },
            stream_key,
        );
        check(&got, &want, seed, "!= and |~");

        let got = matrix(
            &store,
            r#"sum by (namespace) (count_over_time({container="app"}[2m]))"#,
            &steps,
        )
        .await;
        let want = oracle(
            &records,
            &steps,
            range,
            |_| true,
            |r| format!("namespace={}", r.namespace),
        );
        check(&got, &want, seed, "sum by namespace");

        let got = matrix(
            &store,
            r#"sum by (namespace, level) (count_over_time({format="json"} | json | level="error" and http_status >= 500 [2m]))"#,
            &steps,
        )
        .await;
        let want = oracle(
            &records,
            &steps,
            range,
            |r| r.format == "json" && r.level == "error" && r.status >= 500,
            |r| format!("level={},namespace={}", r.level, r.namespace),
        );
        check(&got, &want, seed, "json fields");

        let got = matrix(
            &store,
            r#"sum by (path) (count_over_time({format="logfmt"} |= "level=warn" | logfmt | took > 450ms [2m]))"#,
            &steps,
        )
        .await;
        let want = oracle(
            &records,
            &steps,
            range,
            |r| {
                if r.format != "logfmt" || r.level != "warn" {
                    return false;
                }
                let took: u64 = r
                    .line
                    .rsplit("took=")
                    .next()
                    .unwrap()
                    .trim_end_matches("ms")
                    .parse()
                    .unwrap();
                took > 450
            },
            |r| format!("path={}", r.path),
        );
        check(&got, &want, seed, "logfmt with a duration filter");
    }
}

#[tokio::test]
async fn log_queries_return_the_newest_matching_lines() {
    let records = generate(7);
    let store = load(&records).await;
    let start = BASE;
    let end = BASE + 3600 * S;
    let limit = 50;
    let expr = parse(r#"{namespace="payments"} |= "ERROR""#).unwrap();
    let params = LogQueryParams::range(start, end, S, Direction::Backward, limit);
    let LogQueryResult::Streams(streams) = evaluate(&store, &TenantId::default_tenant(), &expr, &params)
        .await
        .unwrap()
    else {
        panic!("not streams")
    };
    let mut got: Vec<(i64, String)> = streams
        .iter()
        .flat_map(|s| s.entries.iter().map(|e| (e.timestamp, e.line.clone())))
        .collect();
    got.sort();
    let mut want: Vec<(i64, String)> = records
        .iter()
        .filter(|r| r.namespace == "payments" && r.line.contains("ERROR") && r.timestamp < end)
        .map(|r| (r.timestamp, r.line.clone()))
        .collect();
    want.sort();
    let newest = want.split_off(want.len().saturating_sub(limit));
    assert_eq!(got, newest);
    for stream in &streams {
        assert!(
            stream.entries.windows(2).all(|w| w[0].timestamp >= w[1].timestamp),
            "backward streams are newest first"
        );
    }
}
