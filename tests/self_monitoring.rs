//! End to end: `tidewatch up` ingests its own metrics and serves `/metrics`.

mod common;

use std::time::{Duration, Instant};

use common::{Server, batch, now_s_ms, series};

/// Parses the text exposition format: (series text, value) per sample line,
/// and checks every line is a comment or a sample.
fn samples_of(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        out.push((series.to_string(), value));
    }
    out
}

fn value_of(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("{series} not exposed"))
        .1
}

/// Polls an instant query until it answers something (at most 30 s: a
/// safety net against hangs, not a timing assertion).
async fn poll_vector(server: &Server, query: &str) -> std::collections::BTreeMap<common::Metric, (i64, String)> {
    let api = server.api();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = api.vector(query, common::now_ms(), None).await;
        if !got.is_empty() {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{query} not found within 30 s; stderr:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_ingests_its_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with("up", dir.path(), None);
    let api = server.api();

    // Self-monitoring writes through the ingest path; poll (bounded) until it shows up.
    let found = poll_vector(&server, r#"tidewatch_samples_appended_total{job="tidewatch"}"#).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let (labels, (_, value)) = found.into_iter().next().unwrap();
    assert_eq!(labels.get("job").map(String::as_str), Some("tidewatch"), "{labels:?}");
    assert_eq!(labels.get("instance"), Some(&server.address), "{labels:?}");
    let value: f64 = value.parse().expect("counter value is a number");
    assert!(value >= 0.0 && value.is_finite(), "{value}");
    // The gauge the README promises answers too, with its metadata.
    let head = api
        .vector(r#"tidewatch_head_series{job="tidewatch"}"#, common::now_ms(), None)
        .await;
    assert_eq!(head.len(), 1, "{head:?}");
    let data = api
        .get("/api/v1/metadata", &[("metric", "tidewatch_head_series")], None)
        .await
        .success_data();
    assert_eq!(data["tidewatch_head_series"][0]["type"], "gauge", "{data}");

    // /metrics: the text format.
    let reply = api.get("/metrics", &[], None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let content_type = reply.header("content-type").unwrap_or_default().to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(
        reply.body.contains("# TYPE tidewatch_head_series gauge\n"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("# HELP tidewatch_head_series "), "{}", reply.body);
    assert!(
        reply.body.contains("# TYPE tidewatch_samples_appended_total counter\n"),
        "{}",
        reply.body
    );
    let before = samples_of(&reply.body);
    let head_series = value_of(&before, "tidewatch_head_series");
    assert!(
        head_series >= 1.0,
        "the self-monitoring series are in the head: {head_series}"
    );

    // A remote write shows up in the counter: at least the samples we sent.
    let now = now_s_ms();
    let pushed = batch(
        (0..25)
            .map(|i| series("selfmon_probe", &[("i", &i.to_string())], &[(now, 1.0)]))
            .collect(),
    );
    api.write_ok(&pushed, None).await;
    let reply = api.get("/metrics", &[], None).await;
    let after = samples_of(&reply.body);
    let appended_before = value_of(&before, "tidewatch_samples_appended_total");
    let appended_after = value_of(&after, "tidewatch_samples_appended_total");
    assert!(
        appended_after >= appended_before + 25.0,
        "samples appended went from {appended_before} to {appended_after}"
    );
    assert!(value_of(&after, "tidewatch_head_series") >= head_series + 25.0);
    // Requests are counted by handler and code.
    assert!(
        after
            .iter()
            .any(|(s, v)| s.starts_with("tidewatch_http_requests_total{") && s.contains("/api/v1/write") && *v >= 1.0),
        "{}",
        reply.body
    );
}

/// `tidewatch up` runs a collector in process: the host's metrics from
/// `/proc` (node-exporter names, `job="node"`) and the collector's own
/// counters arrive within the first seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_collects_the_hosts_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with("up", dir.path(), None);
    for query in [
        r#"node_memory_MemTotal_bytes{job="node"}"#,
        r#"node_cpu_seconds_total{job="node",mode="idle"}"#,
        r#"up{job="node"}"#,
        r#"tidewatch_collector_batches_sent_total{job="tidewatch-collector",kind="metrics"}"#,
    ] {
        let found = poll_vector(&server, query).await;
        let (labels, (_, value)) = found.into_iter().next().unwrap();
        assert!(labels.contains_key("node"), "{query}: {labels:?}");
        let value: f64 = value.parse().unwrap();
        assert!(value.is_finite() && value >= 0.0, "{query}: {value}");
        if query.starts_with("node_memory") {
            assert!(value > 1e6, "a host has more than a megabyte of memory: {value}");
        }
        if query.starts_with("up") {
            assert_eq!(value, 1.0, "the node target scrapes");
        }
    }
}

/// A read of flushed samples decodes their block segments once: the same
/// query again is answered from the block cache, with the same answer, and
/// `/metrics` counts the hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_block_reads_come_from_the_block_cache() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms();
    let start = now - 3 * 3_600_000;
    let counter: Vec<(i64, f64)> = (0..240).map(|k| (start + k * 30_000, (k * k) as f64)).collect();
    api.write_ok(
        &batch(
            (0..40)
                .map(|i| series("cache_probe_total", &[("pod", &format!("p{i}"))], &counter))
                .collect(),
        ),
        None,
    )
    .await;
    let reply = api.post("/api/v1/admin/flush").await;
    assert_eq!(reply.status, 204, "flush: {}", reply.body);

    let figure = |body: &str, name: &str| value_of(&samples_of(body), name);
    let at = start + 100 * 30_000 + 7_000;
    let query = "sum(rate(cache_probe_total[5m]))";
    let first = api.vector(query, at, None).await;
    let before = api.get("/metrics", &[], None).await.body;
    let second = api.vector(query, at, None).await;
    let after = api.get("/metrics", &[], None).await.body;
    assert_eq!(first, second, "a cached read answers what the first read did");
    let (_, value) = first.values().next().expect("one sample");
    // d/dt k² per 30 s at k ≈ 100 is ~ 2k/30 per second, summed over 40 series.
    let value: f64 = value.parse().unwrap();
    assert!((value - 40.0 * 199.0 / 30.0).abs() < 40.0 * 0.5, "{value}");
    let hits = figure(&after, "tidewatch_block_cache_hits_total") - figure(&before, "tidewatch_block_cache_hits_total");
    let misses =
        figure(&after, "tidewatch_block_cache_misses_total") - figure(&before, "tidewatch_block_cache_misses_total");
    assert!(hits >= 40.0, "the second read found {hits} segments in the cache");
    assert_eq!(misses, 0.0, "the second read decoded {misses} segments again");
    assert!(figure(&after, "tidewatch_block_cache_bytes") > 0.0, "{after}");
}
