//! Native histograms end to end: remote-written with both protocols to the
//! real binary, kept across a crash (WAL replay) and a flush into blocks, and
//! read back exactly from the data directory.

mod common;

use std::sync::Arc;

use common::{Server, batch, metric, now_s_ms};
use tidewatch_model::histogram::{Bucket, CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, HistogramSample};
use tidewatch_model::seam::{SeriesRead, SeriesSamples, TimeRange, WriteBatch};
use tidewatch_model::{Labels, Matcher, Sample, SystemClock, TenantId};
use tidewatch_storage::{Storage, StorageConfig};

const HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
const SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";

fn labels(name: &str) -> Labels {
    Labels::from_pairs([("__name__", name), ("job", "api")])
}

/// A counter histogram with whole counts: it travels in the integer wire form.
fn exponential(timestamp: i64, scale: f64) -> HistogramSample {
    HistogramSample {
        timestamp,
        histogram: FloatHistogram {
            counter_reset_hint: CounterResetHint::NotCounterReset,
            schema: 3,
            zero_threshold: 1e-128,
            zero_count: 2.0 * scale,
            count: 17.0 * scale,
            sum: 123.25 * scale,
            positive: vec![
                Bucket {
                    index: -2,
                    count: 1.0 * scale,
                },
                Bucket {
                    index: -1,
                    count: 4.0 * scale,
                },
                Bucket {
                    index: 5,
                    count: 3.0 * scale,
                },
            ],
            negative: vec![Bucket {
                index: 0,
                count: 7.0 * scale,
            }],
            custom_values: Arc::from(Vec::new()),
        },
    }
}

/// A histogram with fractional counts and custom bounds: the float wire form.
fn custom(timestamp: i64, extra: f64) -> HistogramSample {
    HistogramSample {
        timestamp,
        histogram: FloatHistogram {
            counter_reset_hint: CounterResetHint::Gauge,
            schema: CUSTOM_BUCKETS_SCHEMA,
            count: 4.5 + extra,
            sum: 0.75,
            positive: vec![
                Bucket { index: 0, count: 0.5 },
                Bucket {
                    index: 2,
                    count: 4.0 + extra,
                },
            ],
            custom_values: Arc::from(vec![0.1, 0.5, 2.5]),
            ..FloatHistogram::default()
        },
    }
}

fn same_histogram(a: &HistogramSample, b: &HistogramSample) -> bool {
    let (x, y) = (&a.histogram, &b.histogram);
    let same_buckets = |p: &[Bucket], q: &[Bucket]| {
        p.len() == q.len()
            && p.iter()
                .zip(q)
                .all(|(m, n)| m.index == n.index && m.count.to_bits() == n.count.to_bits())
    };
    a.timestamp == b.timestamp
        && x.counter_reset_hint == y.counter_reset_hint
        && x.schema == y.schema
        && x.zero_threshold.to_bits() == y.zero_threshold.to_bits()
        && x.zero_count.to_bits() == y.zero_count.to_bits()
        && x.count.to_bits() == y.count.to_bits()
        && x.sum.to_bits() == y.sum.to_bits()
        && same_buckets(&x.positive, &y.positive)
        && same_buckets(&x.negative, &y.negative)
        && *x.custom_values == *y.custom_values
}

fn assert_same_series(got: &[SeriesSamples], expected: &[SeriesSamples]) {
    assert_eq!(got.len(), expected.len(), "series: got {got:#?}");
    for (g, e) in got.iter().zip(expected) {
        assert_eq!(g.labels, e.labels);
        assert_eq!(g.samples.len(), e.samples.len(), "samples of {}", e.labels);
        assert!(
            g.samples.iter().zip(&e.samples).all(|(s, t)| s.same_as(t)),
            "samples of {}: got {:?}, expected {:?}",
            e.labels,
            g.samples,
            e.samples
        );
        assert_eq!(g.histograms.len(), e.histograms.len(), "histograms of {}", e.labels);
        for (h, f) in g.histograms.iter().zip(&e.histograms) {
            assert!(
                same_histogram(h, f),
                "histogram of {}: got {h:?}, expected {f:?}",
                e.labels
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn native_histograms_survive_restart_and_flush_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let t = now_s_ms() - 10 * 60_000;
    // 1.0: integer exponential histograms, and a series mixing floats and histograms.
    let via_v1 = batch(vec![
        SeriesSamples {
            labels: labels("rpc_latency_seconds"),
            samples: Vec::new(),
            histograms: vec![exponential(t, 1.0), exponential(t + 15_000, 2.0)],
            start_timestamps: Default::default(),
        },
        SeriesSamples {
            labels: labels("mixed_kinds"),
            samples: vec![Sample::new(t, 1.5), Sample::new(t + 30_000, 2.5)],
            histograms: vec![exponential(t + 15_000, 3.0)],
            start_timestamps: Default::default(),
        },
    ]);
    // 2.0: float histograms with custom buckets, ended by a staleness marker.
    let via_v2 = batch(vec![SeriesSamples {
        labels: labels("queue_wait_seconds"),
        samples: Vec::new(),
        histograms: vec![
            custom(t, 0.0),
            custom(t + 15_000, 0.25),
            HistogramSample {
                timestamp: t + 30_000,
                histogram: FloatHistogram::stale_marker(),
            },
        ],
        start_timestamps: Default::default(),
    }]);

    let mut server = Server::start(dir.path());
    let api = server.api();
    for (reply, sent) in [
        (api.write_v1(&via_v1, None).await, &via_v1),
        (api.write_v2(&via_v2, None).await, &via_v2),
    ] {
        assert_eq!(reply.status, 204, "write failed: {}", reply.body);
        let expected = sent.histogram_count().to_string();
        assert_eq!(reply.header(HISTOGRAMS_WRITTEN), Some(expected.as_str()));
        let expected = sent.sample_count().to_string();
        assert_eq!(reply.header(SAMPLES_WRITTEN), Some(expected.as_str()));
    }
    let names = [
        metric("mixed_kinds", &[("job", "api")]),
        metric("queue_wait_seconds", &[("job", "api")]),
        metric("rpc_latency_seconds", &[("job", "api")]),
    ];
    assert_eq!(api.series(&["{job=\"api\"}"], None).await, names);

    // A crash: everything acknowledged is in the WAL.
    server.kill();
    let mut server = Server::start(dir.path());
    server.wait_ready().await;
    let api = server.api();
    assert_eq!(api.series(&["{job=\"api\"}"], None).await, names);
    // PromQL reads them: statistics as floats, the histogram itself in
    // Prometheus' JSON shape, and the custom-bucket series gone stale.
    let at = t + 15_000;
    let stats = api
        .vector(
            "histogram_count(rpc_latency_seconds) + histogram_sum(rpc_latency_seconds)",
            at,
            None,
        )
        .await;
    assert_eq!(
        stats.values().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        ["280.5"],
        "count 34 + sum 246.5"
    );
    let reply = api.query("rpc_latency_seconds", Some(at), None).await;
    let result = &reply.success_data()["result"][0];
    assert_eq!(result["histogram"][1]["count"], "34", "{}", reply.body);
    assert_eq!(result["histogram"][1]["sum"], "246.5");
    // Zero bucket, one negative and three positive buckets are populated.
    assert_eq!(result["histogram"][1]["buckets"].as_array().map(Vec::len), Some(5));
    let stale = api.query("queue_wait_seconds", Some(t + 30_000), None).await;
    assert_eq!(stale.success_data()["result"], serde_json::json!([]), "{}", stale.body);
    // A float at the time of a stored histogram replaces it (last write wins).
    let replacement = batch(vec![SeriesSamples::floats(
        labels("mixed_kinds"),
        vec![Sample::new(t + 15_000, 9.0)],
    )]);
    api.write_ok(&replacement, None).await;
    let flush = api.post("/api/v1/admin/flush").await;
    assert_eq!(flush.status, 204, "flush: {}", flush.body);
    assert_eq!(server.terminate().code(), Some(0), "stderr:\n{}", server.log());

    let expected = {
        let mut all: Vec<SeriesSamples> = via_v1.series.into_iter().chain(via_v2.series).collect();
        all[1].histograms.clear();
        all[1].samples = vec![
            Sample::new(t, 1.5),
            Sample::new(t + 15_000, 9.0),
            Sample::new(t + 30_000, 2.5),
        ];
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        all
    };
    let storage = Storage::open(StorageConfig::new(dir.path()), Arc::new(SystemClock))
        .await
        .unwrap();
    assert!(storage.block_count() >= 1, "the flush wrote no block");
    assert_eq!(storage.head_totals().1, 0, "the flushed head is empty after restart");
    let tenant = TenantId::default_tenant();
    let got = storage
        .select(&tenant, &[Matcher::equal("job", "api")], TimeRange::ALL)
        .await
        .unwrap();
    assert_same_series(&got, &expected);
    // A range holding only part of a histogram series cuts it by time.
    let part = storage
        .select(
            &tenant,
            &[Matcher::equal("__name__", "queue_wait_seconds")],
            TimeRange::new(t + 1, t + 15_000),
        )
        .await
        .unwrap();
    assert_eq!(part.len(), 1);
    assert_eq!(part[0].histograms.len(), 1);
    assert!(same_histogram(&part[0].histograms[0], &custom(t + 15_000, 0.25)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_float_and_a_histogram_at_one_time_in_one_request_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = now_s_ms() - 60_000;
    let server = Server::start(dir.path());
    let api = server.api();
    let clash = WriteBatch {
        series: vec![SeriesSamples {
            labels: labels("clash"),
            samples: vec![Sample::new(t, 1.0)],
            histograms: vec![exponential(t, 1.0)],
            start_timestamps: Default::default(),
        }],
        metadata: Vec::new(),
    };
    let reply = api.write_v2(&clash, None).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains("clash{job=\"api\"}") && reply.body.contains("both a float sample and a native histogram"),
        "{}",
        reply.body
    );
    assert!(api.series(&["{__name__=\"clash\"}"], None).await.is_empty());
}
