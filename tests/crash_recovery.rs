//! End to end: whatever got a 204 survives SIGKILL, flushes and clean shutdowns.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Api, Metric, Server, batch, metric, now_s_ms, series};
use serde_json::json;
use tidewatch_model::seam::{MetricMetadata, MetricType, SeriesSamples, WriteBatch};

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;

const SERIES: usize = 200;
const REQUESTS: usize = 300;
const TASKS: usize = 4;
/// Request `i` carries every series at `base + i * STEP_MS`.
const STEP_MS: i64 = 100;

fn crash_labels(s: usize) -> [(&'static str, String); 2] {
    [("job", "crash".to_string()), ("series", format!("{s:03}"))]
}

fn crash_request(base: i64, i: usize) -> WriteBatch {
    batch(
        (0..SERIES)
            .map(|s| {
                let labels = crash_labels(s);
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
                series(
                    "crash_metric",
                    &pairs,
                    &[(base + i as i64 * STEP_MS, (i * 1000 + s) as f64)],
                )
            })
            .collect(),
    )
}

/// What happened to each request.
#[derive(Debug, Default)]
struct Outcomes {
    acked: BTreeSet<usize>,
    /// HTTP answers other than 204 (a live server must accept every request).
    refused: Vec<(usize, u16, String)>,
    /// Transport errors: expected once the server is killed.
    failed: BTreeSet<usize>,
}

/// Checks that every sample of every acknowledged request is stored, and that
/// nothing stored is corrupt (each point is some request's exact sample).
fn check_crash_data(got: &BTreeMap<Metric, Vec<(i64, String)>>, base: i64, acked: &BTreeSet<usize>) {
    let mut missing = Vec::new();
    for s in 0..SERIES {
        let labels = crash_labels(s);
        let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let key = metric("crash_metric", &pairs);
        let points = got.get(&key).cloned().unwrap_or_default();
        let mut previous = i64::MIN;
        let mut present = BTreeSet::new();
        for (t, value) in &points {
            assert!(
                *t > previous,
                "series {s}: points out of order or duplicated at {t}: {points:?}"
            );
            previous = *t;
            let offset = t - base;
            assert!(
                offset >= 0 && offset % STEP_MS == 0 && ((offset / STEP_MS) as usize) < REQUESTS,
                "series {s}: a point at {t} that no request sent"
            );
            let i = (offset / STEP_MS) as usize;
            assert_eq!(
                value,
                &((i * 1000 + s) as f64).to_string(),
                "series {s}: value of request {i}"
            );
            present.insert(i);
        }
        for i in acked {
            if !present.contains(i) {
                missing.push((s, *i));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged samples lost, e.g. (series, request) {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    if !acked.is_empty() {
        assert_eq!(got.len(), SERIES, "series returned");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server.wait_ready().await;
    let api = server.api();
    let base = now_s_ms() - 2 * MINUTE;

    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (api, next, outcomes) = (api.clone(), next.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    break;
                }
                let body = tidewatch_model::remote_write::encode_v1(&crash_request(base, i));
                let sent = api
                    .client
                    .post(format!("{}/api/v1/write", api.base))
                    .header("Content-Type", common::CONTENT_TYPE_V1)
                    .header("Content-Encoding", "snappy")
                    .body(body)
                    .send()
                    .await;
                // Read the whole answer before recording it: a 204 counts only once complete.
                let answer = match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let written = response
                            .headers()
                            .get("X-Prometheus-Remote-Write-Samples-Written")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        response.text().await.map(|body| (status, written, body))
                    }
                    Err(e) => Err(e),
                };
                let mut outcomes = outcomes.lock().unwrap();
                match answer {
                    Ok((204, written, _)) => {
                        assert_eq!(written.as_deref(), Some("200"), "request {i}");
                        outcomes.acked.insert(i);
                    }
                    Ok((status, _, body)) => outcomes.refused.push((i, status, body)),
                    Err(_) => {
                        outcomes.failed.insert(i);
                    }
                }
            }
        }));
    }
    // Kill once about half the requests are acknowledged, while the others are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let acked = outcomes.lock().unwrap().acked.len();
        let done = next.load(Ordering::SeqCst) >= REQUESTS + TASKS;
        if acked >= REQUESTS / 2 || done {
            break;
        }
        assert!(Instant::now() < deadline, "only {acked} requests acknowledged in 30 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    for task in tasks {
        task.await.expect("sender task panicked");
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    assert!(
        outcomes.refused.is_empty(),
        "requests refused by a live server: {:?}",
        outcomes.refused
    );
    assert!(outcomes.acked.len() >= REQUESTS / 2, "acked {}", outcomes.acked.len());
    eprintln!(
        "crash test: {} acknowledged, {} failed in transport",
        outcomes.acked.len(),
        outcomes.failed.len()
    );

    // Restart on the same directory: every acknowledged sample is there.
    let mut server = Server::start(dir.path());
    let api = server.api();
    let end = base + REQUESTS as i64 * STEP_MS;
    let got = api.range_selector("crash_metric[1h]", end, None).await;
    check_crash_data(&got, base, &outcomes.acked);
    let listed = api.series(&["crash_metric"], None).await;
    assert_eq!(listed.len(), SERIES, "series after restart");
    // Instant query at the newest acknowledged request's time sees its values.
    let newest = *outcomes.acked.last().unwrap();
    let at = base + newest as i64 * STEP_MS;
    let instant = api.vector(r#"crash_metric{series="007"}"#, at, None).await;
    let key = metric("crash_metric", &[("job", "crash"), ("series", "007")]);
    assert_eq!(instant.get(&key), Some(&(at, ((newest * 1000 + 7) as f64).to_string())));

    // The recovered log keeps working: write more, kill again, recover again.
    let extra = crash_request(base, REQUESTS);
    api.write_ok(&extra, None).await;
    server.kill();
    let server = Server::start(dir.path());
    let api = server.api();
    let got = api.range_selector("crash_metric[1h]", end, None).await;
    // Request REQUESTS is at `end` exactly, past the checker's range: check it apart.
    let mut without_extra = got.clone();
    for (labels, points) in without_extra.iter_mut() {
        let last = points.pop();
        let s: usize = labels["series"].parse().unwrap();
        assert_eq!(
            last,
            Some((end, ((REQUESTS * 1000 + s) as f64).to_string())),
            "{labels:?}"
        );
    }
    check_crash_data(&without_extra, base, &outcomes.acked);
}

fn flush_batch(name: &str, count: usize, samples: &[(i64, f64)], metadata: Option<MetricMetadata>) -> WriteBatch {
    let mut out = batch(
        (0..count)
            .map(|s| series(name, &[("job", "flush"), ("s", &format!("{s:02}"))], samples))
            .collect(),
    );
    out.metadata.extend(metadata);
    out
}

fn expect_all(got: &BTreeMap<Metric, Vec<(i64, String)>>, name: &str, count: usize, samples: &[(i64, f64)]) {
    let mut sorted: Vec<(i64, f64)> = samples.to_vec();
    sorted.sort_by_key(|p| p.0);
    let expected_points: Vec<(i64, String)> = sorted.iter().map(|&(t, v)| (t, common::fmt_value(v))).collect();
    let expected: BTreeMap<Metric, Vec<(i64, String)>> = (0..count)
        .map(|s| {
            (
                metric(name, &[("job", "flush"), ("s", &format!("{s:02}"))]),
                expected_points.clone(),
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "{name}: series");
    for (labels, points) in &expected {
        assert_eq!(got.get(labels), Some(points), "{labels:?}");
    }
}

fn block_metas(data_dir: &std::path::Path) -> usize {
    let tenant_dir = data_dir.join("blocks").join("anonymous");
    let Ok(entries) = std::fs::read_dir(&tenant_dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("meta.json").is_file())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_and_wal_both_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms();
    let metadata = MetricMetadata {
        metric_family_name: "flush_metric".into(),
        metric_type: MetricType::Gauge,
        help: "Flushed, then killed.".into(),
        unit: "bytes".into(),
    };

    // Three hours of old samples, flushed into blocks.
    let old: Vec<(i64, f64)> = (0..=12).map(|k| (now - 3 * HOUR + k * 10 * MINUTE, k as f64)).collect();
    api.write_ok(&flush_batch("flush_metric", 50, &old, Some(metadata.clone())), None)
        .await;
    let reply = api.post("/api/v1/admin/flush").await;
    assert_eq!(reply.status, 204, "flush: {}", reply.body);
    assert!(block_metas(dir.path()) >= 1, "flush wrote no block with meta.json");
    // Readable from blocks right away.
    let got = api.range_selector("flush_metric[4h]", now, None).await;
    expect_all(&got, "flush_metric", 50, &old);

    // More samples into the WAL/head only: newer ones, ones between flushed
    // samples, and a series that never reached a block.
    let newer: Vec<(i64, f64)> = (0..6)
        .map(|k| (now - 30 * MINUTE + k * 5 * MINUTE, 100.0 + k as f64))
        .collect();
    let between: Vec<(i64, f64)> = vec![(now - 3 * HOUR + 5 * MINUTE, 0.5), (now - 2 * HOUR + 5 * MINUTE, 6.5)];
    let mut second: Vec<(i64, f64)> = newer.clone();
    second.extend(&between);
    api.write_ok(&flush_batch("flush_metric", 50, &second, None), None)
        .await;
    let fresh: Vec<(i64, f64)> = vec![(now - MINUTE, 7.0)];
    api.write_ok(&flush_batch("fresh_metric", 5, &fresh, None), None).await;
    // Special values and a staleness marker, half of them flushed, half only in the WAL.
    let special_start = now - 2 * HOUR - 30 * MINUTE;
    let special = |k: i64| special_start + k * MINUTE;
    api.write_ok(
        &batch(vec![series(
            "special_metric",
            &[("job", "special")],
            &[
                (special(0), f64::NAN),
                (special(1), f64::INFINITY),
                (special(2), tidewatch_model::stale_nan()),
            ],
        )]),
        None,
    )
    .await;

    // The first special samples go to a block, the rest stay in the WAL.
    let reply = api.post("/api/v1/admin/flush").await;
    assert_eq!(reply.status, 204, "flush: {}", reply.body);
    api.write_ok(
        &batch(vec![series(
            "special_metric",
            &[("job", "special")],
            &[
                (special(3), f64::NEG_INFINITY),
                (special(4), -0.5),
                (special(5), tidewatch_model::stale_nan()),
            ],
        )]),
        None,
    )
    .await;

    server.kill();
    let mut server = Server::start(dir.path());
    let api = server.api();

    let mut all: Vec<(i64, f64)> = old.clone();
    all.extend(&second);
    let check = |api: Api| {
        let all = all.clone();
        let fresh = fresh.clone();
        let metadata = metadata.clone();
        async move {
            let got = api.range_selector("flush_metric[4h]", now, None).await;
            expect_all(&got, "flush_metric", 50, &all);
            let got = api.range_selector("fresh_metric[4h]", now, None).await;
            expect_all(&got, "fresh_metric", 5, &fresh);
            // Instant query in the flushed range reads the block.
            let at = now - 3 * HOUR + 10 * MINUTE;
            let got = api.vector(r#"flush_metric{s="03"}"#, at, None).await;
            assert_eq!(
                got,
                BTreeMap::from([(
                    metric("flush_metric", &[("job", "flush"), ("s", "03")]),
                    (at, "1".to_string())
                )])
            );
            let listed: BTreeSet<Metric> = api.series(&[r#"{job="flush"}"#], None).await.into_iter().collect();
            assert_eq!(listed.len(), 55, "series listed: {listed:?}");
            let names = api.strings("/api/v1/label/__name__/values", &[], None).await;
            assert_eq!(names, ["flush_metric", "fresh_metric", "special_metric"]);
            // NaN, infinities and staleness markers survive blocks and the WAL bit for bit.
            let special_labels = metric("special_metric", &[("job", "special")]);
            let got = api.range_selector("special_metric[1h]", special(5), None).await;
            let expected = vec![
                (special(0), "NaN".to_string()),
                (special(1), "+Inf".to_string()),
                (special(3), "-Inf".to_string()),
                (special(4), "-0.5".to_string()),
            ];
            assert_eq!(got, BTreeMap::from([(special_labels.clone(), expected)]));
            let got = api.vector("special_metric", special(0) + SECOND, None).await;
            assert_eq!(
                got,
                BTreeMap::from([(special_labels.clone(), (special(0) + SECOND, "NaN".to_string()))])
            );
            // After a marker the series is stale, until the next real sample.
            assert!(api.vector("special_metric", special(2) + SECOND, None).await.is_empty());
            let got = api.vector("special_metric", special(3) + SECOND, None).await;
            assert_eq!(got.get(&special_labels).map(|p| p.1.as_str()), Some("-Inf"));
            assert!(api.vector("special_metric", special(5) + SECOND, None).await.is_empty());
            let data = api.get("/api/v1/metadata", &[], None).await.success_data();
            assert_eq!(
                data,
                json!({"flush_metric": [{"type": metadata.metric_type.as_str(), "help": metadata.help, "unit": metadata.unit}]})
            );
        }
    };
    check(api.clone()).await;

    // Flushing what was recovered from the WAL, then another crash, loses nothing either.
    let reply = api.post("/api/v1/admin/flush").await;
    assert_eq!(reply.status, 204, "flush after recovery: {}", reply.body);
    check(api.clone()).await;
    server.kill();
    let server = Server::start(dir.path());
    check(server.api()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clean_shutdown_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms();
    let samples: Vec<(i64, f64)> = (0..10)
        .map(|k| (now - 10 * MINUTE + k * MINUTE, k as f64 * 1.5))
        .collect();
    let mut first = batch(
        (0..20)
            .map(|s| series("term_metric", &[("job", "term"), ("s", &format!("{s:02}"))], &samples))
            .collect::<Vec<SeriesSamples>>(),
    );
    first.metadata.push(MetricMetadata {
        metric_family_name: "term_metric".into(),
        metric_type: MetricType::Counter,
        help: "Survives SIGTERM.".into(),
        unit: String::new(),
    });
    api.write_ok(&first, None).await;
    // The same request again (as a retrying sender would): metadata stays single.
    api.write_ok(&first, None).await;
    api.write_ok(&first, Some("other-tenant")).await;

    let status = server.terminate();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status:?}; stderr:\n{}",
        server.log()
    );

    let server = Server::start(dir.path());
    let api = server.api();
    let expected_points: Vec<(i64, String)> = samples.iter().map(|&(t, v)| (t, common::fmt_value(v))).collect();
    for tenant in [None, Some("other-tenant")] {
        let got = api.range_selector("term_metric[1h]", now, tenant).await;
        assert_eq!(got.len(), 20, "{tenant:?}");
        for (labels, points) in &got {
            assert_eq!(points, &expected_points, "{tenant:?} {labels:?}");
        }
        let listed = api.series(&["term_metric"], tenant).await;
        assert_eq!(listed.len(), 20, "{tenant:?}");
        let data = api.get("/api/v1/metadata", &[], tenant).await.success_data();
        assert_eq!(
            data,
            json!({"term_metric": [{"type": "counter", "help": "Survives SIGTERM.", "unit": ""}]}),
            "{tenant:?}"
        );
    }
}
