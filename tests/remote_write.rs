//! End to end: remote write 1.0 and 2.0 into the real binary, read back through
//! the Prometheus HTTP API.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Api, CONTENT_TYPE_V1, CONTENT_TYPE_V2, Metric, Server, batch, fmt_value, metric, now_s_ms, series};
use prost::Message;
use serde_json::json;
use tidewatch_model::remote_write::{v1, v2};
use tidewatch_model::seam::{MetricMetadata, MetricType};

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).expect("snappy compression")
}

fn points(list: &[(i64, &str)]) -> Vec<(i64, String)> {
    list.iter().map(|&(t, v)| (t, v.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_and_v2_batches_read_back_through_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.api();
    let t0 = now_s_ms() - 2 * MINUTE;

    // Remote write 1.0, with metadata and special float values.
    let mut rw1 = batch(vec![
        series(
            "rw1_temperature",
            &[("job", "api"), ("instance", "i1")],
            &[(t0, 1.0), (t0 + 15 * SECOND, 2.5), (t0 + 30 * SECOND, 3.25)],
        ),
        series(
            "rw1_special",
            &[("job", "api"), ("kind", "nan")],
            &[(t0, 1.0), (t0 + 30 * SECOND, f64::NAN)],
        ),
        series(
            "rw1_special",
            &[("job", "api"), ("kind", "inf")],
            &[(t0 + 30 * SECOND, f64::INFINITY)],
        ),
        // Ends with a staleness marker: gone from instant queries after it.
        series(
            "rw1_stale",
            &[("job", "api")],
            &[(t0, 5.0), (t0 + 15 * SECOND, tidewatch_model::stale_nan())],
        ),
    ]);
    rw1.metadata.push(MetricMetadata {
        metric_family_name: "rw1_temperature".into(),
        metric_type: MetricType::Gauge,
        help: "Temperature of the thing.".into(),
        unit: "celsius".into(),
    });
    let reply = api.write_v1(&rw1, None).await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(reply.header("X-Prometheus-Remote-Write-Samples-Written"), Some("8"));
    assert_eq!(reply.header("X-Prometheus-Remote-Write-Histograms-Written"), Some("0"));
    assert_eq!(reply.header("X-Prometheus-Remote-Write-Exemplars-Written"), Some("0"));

    // Remote write 2.0, different series, metadata carried per series.
    let mut rw2 = batch(vec![
        series(
            "rw2_requests_total",
            &[("job", "web"), ("code", "200")],
            &[(t0, 10.0), (t0 + 15 * SECOND, 20.0), (t0 + 30 * SECOND, 30.0)],
        ),
        series(
            "rw2_requests_total",
            &[("job", "web"), ("code", "500")],
            &[(t0 + 30 * SECOND, f64::NEG_INFINITY)],
        ),
    ]);
    rw2.metadata.push(MetricMetadata {
        metric_family_name: "rw2_requests_total".into(),
        metric_type: MetricType::Counter,
        help: "Requests served.".into(),
        unit: "requests".into(),
    });
    let reply = api.write_v2(&rw2, None).await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(reply.header("X-Prometheus-Remote-Write-Samples-Written"), Some("4"));
    assert_eq!(reply.header("X-Prometheus-Remote-Write-Histograms-Written"), Some("0"));
    assert_eq!(reply.header("X-Prometheus-Remote-Write-Exemplars-Written"), Some("0"));

    let temperature = metric("rw1_temperature", &[("job", "api"), ("instance", "i1")]);
    let special_nan = metric("rw1_special", &[("job", "api"), ("kind", "nan")]);
    let special_inf = metric("rw1_special", &[("job", "api"), ("kind", "inf")]);
    let ok_200 = metric("rw2_requests_total", &[("job", "web"), ("code", "200")]);
    let err_500 = metric("rw2_requests_total", &[("job", "web"), ("code", "500")]);
    let stale = metric("rw1_stale", &[("job", "api")]);

    // Instant query: newest sample at or before the time, exact value strings.
    let at = t0 + 30 * SECOND;
    let got = api.vector(r#"{job=~"api|web"}"#, at, None).await;
    let expected: BTreeMap<Metric, (i64, String)> = [
        (temperature.clone(), (at, "3.25".to_string())),
        (special_nan.clone(), (at, "NaN".to_string())),
        (special_inf.clone(), (at, "+Inf".to_string())),
        (ok_200.clone(), (at, "30".to_string())),
        (err_500.clone(), (at, "-Inf".to_string())),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, expected);

    // Between samples: the earlier sample, stamped with the query time.
    let got = api.vector("rw1_temperature", t0 + 20 * SECOND, None).await;
    assert_eq!(
        got,
        BTreeMap::from([(temperature.clone(), (t0 + 20 * SECOND, "2.5".to_string()))])
    );
    // Before the first sample: nothing.
    assert!(api.vector("rw1_temperature", t0 - 1, None).await.is_empty());
    // The 5 m lookback is left-open: (t - 5m, t].
    let got = api.vector("rw1_temperature", at + 5 * MINUTE - 1, None).await;
    assert_eq!(got.get(&temperature).map(|p| p.1.as_str()), Some("3.25"));
    assert!(api.vector("rw1_temperature", at + 5 * MINUTE, None).await.is_empty());
    // Staleness: the marker ends the series for instant queries; range selectors drop it.
    let got = api.vector("rw1_stale", t0 + 10 * SECOND, None).await;
    assert_eq!(
        got,
        BTreeMap::from([(stale.clone(), (t0 + 10 * SECOND, "5".to_string()))])
    );
    assert!(api.vector("rw1_stale", t0 + 15 * SECOND, None).await.is_empty());
    assert!(api.vector("rw1_stale", t0 + 20 * SECOND, None).await.is_empty());
    let got = api.range_selector("rw1_stale[1m]", t0 + 20 * SECOND, None).await;
    assert_eq!(got, BTreeMap::from([(stale.clone(), points(&[(t0, "5")]))]));
    // Matchers on labels from both protocols.
    let got = api.vector(r#"rw2_requests_total{code="200"}"#, at, None).await;
    assert_eq!(got, BTreeMap::from([(ok_200.clone(), (at, "30".to_string()))]));

    // Range query: one point per step, carrying the last sample forward.
    let reply = api.query_range("rw1_temperature", t0, t0 + 60 * SECOND, "15s").await;
    let got = Api::matrix_of(&reply);
    let expected_temperature = points(&[
        (t0, "1"),
        (t0 + 15 * SECOND, "2.5"),
        (t0 + 30 * SECOND, "3.25"),
        (t0 + 45 * SECOND, "3.25"),
        (t0 + 60 * SECOND, "3.25"),
    ]);
    assert_eq!(got, BTreeMap::from([(temperature.clone(), expected_temperature)]));
    let reply = api
        .query_range("rw2_requests_total", t0 - 10 * SECOND, t0 + 40 * SECOND, "10")
        .await;
    let got = Api::matrix_of(&reply);
    let expected = BTreeMap::from([
        (
            ok_200.clone(),
            points(&[
                (t0, "10"),
                (t0 + 10 * SECOND, "10"),
                (t0 + 20 * SECOND, "20"),
                (t0 + 30 * SECOND, "30"),
                (t0 + 40 * SECOND, "30"),
            ]),
        ),
        (
            err_500.clone(),
            points(&[(t0 + 30 * SECOND, "-Inf"), (t0 + 40 * SECOND, "-Inf")]),
        ),
    ]);
    assert_eq!(got, expected);
    let reply = api
        .query_range("rw1_special", t0 + 30 * SECOND, t0 + 30 * SECOND, "1m")
        .await;
    let got = Api::matrix_of(&reply);
    assert_eq!(
        got,
        BTreeMap::from([
            (special_inf.clone(), points(&[(t0 + 30 * SECOND, "+Inf")])),
            (special_nan.clone(), points(&[(t0 + 30 * SECOND, "NaN")])),
        ])
    );

    // Range selectors return raw samples in a left-open window.
    let got = api.range_selector("rw1_temperature[1m]", at, None).await;
    assert_eq!(
        got,
        BTreeMap::from([(
            temperature.clone(),
            points(&[(t0, "1"), (t0 + 15 * SECOND, "2.5"), (t0 + 30 * SECOND, "3.25")])
        )])
    );
    let got = api.range_selector("rw1_temperature[30s]", at, None).await;
    assert_eq!(
        got,
        BTreeMap::from([(
            temperature.clone(),
            points(&[(t0 + 15 * SECOND, "2.5"), (t0 + 30 * SECOND, "3.25")])
        )])
    );

    // /api/v1/series: union of several match[].
    let got: BTreeSet<Metric> = api
        .series(&["rw1_temperature", r#"{job="web"}"#], None)
        .await
        .into_iter()
        .collect();
    let expected: BTreeSet<Metric> = [temperature.clone(), ok_200.clone(), err_500.clone()].into();
    assert_eq!(got, expected);
    let got: BTreeSet<Metric> = api
        .series(&[r#"{__name__=~"rw1_.*"}"#], None)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        got,
        [
            temperature.clone(),
            special_nan.clone(),
            special_inf.clone(),
            stale.clone()
        ]
        .into()
    );
    let reply = api.get("/api/v1/series", &[], None).await;
    let message = reply.api_error(400, "bad_data");
    assert!(message.contains("match[]"), "{message}");

    // Label names and values.
    let names = api.strings("/api/v1/labels", &[], None).await;
    assert_eq!(names, ["__name__", "code", "instance", "job", "kind"]);
    let names = api
        .strings("/api/v1/labels", &[("match[]", "rw2_requests_total")], None)
        .await;
    assert_eq!(names, ["__name__", "code", "job"]);
    let values = api.strings("/api/v1/label/job/values", &[], None).await;
    assert_eq!(values, ["api", "web"]);
    let values = api.strings("/api/v1/label/__name__/values", &[], None).await;
    assert_eq!(
        values,
        ["rw1_special", "rw1_stale", "rw1_temperature", "rw2_requests_total"]
    );
    let values = api
        .strings("/api/v1/label/kind/values", &[("match[]", "rw1_special")], None)
        .await;
    assert_eq!(values, ["inf", "nan"]);
    let values = api
        .strings("/api/v1/label/code/values", &[("match[]", r#"{job="api"}"#)], None)
        .await;
    assert!(values.is_empty(), "{values:?}");

    // Metadata from both protocols, once per family.
    let data = api.get("/api/v1/metadata", &[], None).await.success_data();
    assert_eq!(
        data,
        json!({
            "rw1_temperature": [{"type": "gauge", "help": "Temperature of the thing.", "unit": "celsius"}],
            "rw2_requests_total": [{"type": "counter", "help": "Requests served.", "unit": "requests"}],
        })
    );
    let data = api
        .get("/api/v1/metadata", &[("metric", "rw2_requests_total")], None)
        .await
        .success_data();
    assert_eq!(
        data,
        json!({"rw2_requests_total": [{"type": "counter", "help": "Requests served.", "unit": "requests"}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_samples_a_day_older_are_stored_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms();
    let name = "ooo_metric";
    let labels = [("job", "ooo")];
    let expected_metric = metric(name, &labels);

    api.write_ok(
        &batch(vec![series(
            name,
            &labels,
            &[(now - 20 * SECOND, 3.0), (now - 10 * SECOND, 4.0)],
        )]),
        None,
    )
    .await;
    // A day older than what the series already holds.
    api.write_ok(
        &batch(vec![series(
            name,
            &labels,
            &[(now - DAY - 10 * SECOND, 1.0), (now - DAY, 2.0)],
        )]),
        None,
    )
    .await;
    // In between both, and between the two newest samples, through 2.0 this time.
    let reply = api
        .write_v2(
            &batch(vec![series(
                name,
                &labels,
                &[(now - 12 * HOUR, 2.5), (now - 15 * SECOND, 3.5)],
            )]),
            None,
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);

    let got = api.range_selector("ooo_metric[25h]", now, None).await;
    let expected = points(&[
        (now - DAY - 10 * SECOND, "1"),
        (now - DAY, "2"),
        (now - 12 * HOUR, "2.5"),
        (now - 20 * SECOND, "3"),
        (now - 15 * SECOND, "3.5"),
        (now - 10 * SECOND, "4"),
    ]);
    assert_eq!(got, BTreeMap::from([(expected_metric.clone(), expected)]));

    // Instant queries in the old window see the old samples.
    let got = api.vector(name, now - DAY + SECOND, None).await;
    assert_eq!(
        got,
        BTreeMap::from([(expected_metric.clone(), (now - DAY + SECOND, "2".to_string()))])
    );
    let got = api.vector(name, now - 12 * HOUR + MINUTE, None).await;
    assert_eq!(got.get(&expected_metric).map(|p| p.1.as_str()), Some("2.5"));
    let reply = api.query_range(name, now - DAY - 10 * SECOND, now - DAY, "5s").await;
    assert_eq!(
        Api::matrix_of(&reply),
        BTreeMap::from([(
            expected_metric.clone(),
            points(&[
                (now - DAY - 10 * SECOND, "1"),
                (now - DAY - 5 * SECOND, "1"),
                (now - DAY, "2")
            ])
        )])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_series_in_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms() - SECOND;
    const N: usize = 10_000;

    for (name, v2) in [("big_v1", false), ("big_v2", true)] {
        let big = batch(
            (0..N)
                .map(|i| series(name, &[("job", "big"), ("idx", &format!("{i:05}"))], &[(now, i as f64)]))
                .collect(),
        );
        let reply = if v2 {
            api.write_v2(&big, None).await
        } else {
            api.write_v1(&big, None).await
        };
        assert_eq!(reply.status, 204, "{name}: {}", reply.body);
        assert_eq!(reply.header("X-Prometheus-Remote-Write-Samples-Written"), Some("10000"));

        let listed = api.series(&[name], None).await;
        assert_eq!(listed.len(), N, "{name}: series listed");
        let got = api.vector(name, now, None).await;
        assert_eq!(got.len(), N, "{name}: series answered");
        for (labels, (time, value)) in &got {
            let idx: usize = labels["idx"].parse().unwrap();
            assert_eq!(
                (*time, value.as_str()),
                (now, fmt_value(idx as f64).as_str()),
                "{labels:?}"
            );
            assert_eq!(labels.len(), 3, "{labels:?}");
        }
    }
    let values = api.strings("/api/v1/label/idx/values", &[], None).await;
    assert_eq!(values.len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms() - SECOND;

    let mut for_a = batch(vec![series("tenant_metric", &[("job", "a")], &[(now, 1.0)])]);
    for_a.metadata.push(MetricMetadata {
        metric_family_name: "tenant_metric".into(),
        metric_type: MetricType::Gauge,
        help: "Only tenant a sees this.".into(),
        unit: String::new(),
    });
    api.write_ok(&for_a, Some("a")).await;
    let reply = api
        .write_v2(
            &batch(vec![series("only_in_c", &[("job", "c")], &[(now, 3.0)])]),
            Some("team-c_1"),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);

    // Tenant a sees its data.
    let got = api.vector("tenant_metric", now, Some("a")).await;
    assert_eq!(
        got,
        BTreeMap::from([(metric("tenant_metric", &[("job", "a")]), (now, "1".to_string()))])
    );
    assert_eq!(api.strings("/api/v1/label/job/values", &[], Some("a")).await, ["a"]);

    // Tenant b and the default tenant see nothing of it, on any endpoint.
    for tenant in [Some("b"), None] {
        assert!(api.vector("tenant_metric", now, tenant).await.is_empty(), "{tenant:?}");
        assert!(api.vector(r#"{job=~".+"}"#, now, tenant).await.is_empty(), "{tenant:?}");
        assert!(
            api.range_selector("tenant_metric[1h]", now, tenant).await.is_empty(),
            "{tenant:?}"
        );
        assert!(api.series(&["tenant_metric"], tenant).await.is_empty(), "{tenant:?}");
        assert!(
            api.strings("/api/v1/labels", &[], tenant).await.is_empty(),
            "{tenant:?}"
        );
        assert!(
            api.strings("/api/v1/label/job/values", &[], tenant).await.is_empty(),
            "{tenant:?}"
        );
        let metadata = api.get("/api/v1/metadata", &[], tenant).await.success_data();
        assert_eq!(metadata, json!({}), "{tenant:?}");
    }

    // Data of b stays in b; a does not see it.
    api.write_ok(
        &batch(vec![series("tenant_metric", &[("job", "b")], &[(now, 2.0)])]),
        Some("b"),
    )
    .await;
    let got = api.vector("tenant_metric", now, Some("b")).await;
    assert_eq!(
        got,
        BTreeMap::from([(metric("tenant_metric", &[("job", "b")]), (now, "2".to_string()))])
    );
    let got = api.vector("tenant_metric", now, Some("a")).await;
    assert_eq!(
        got,
        BTreeMap::from([(metric("tenant_metric", &[("job", "a")]), (now, "1".to_string()))])
    );
    assert!(api.vector("only_in_c", now, Some("a")).await.is_empty());
    assert_eq!(api.vector("only_in_c", now, Some("team-c_1")).await.len(), 1);
    let metadata = api.get("/api/v1/metadata", &[], Some("b")).await.success_data();
    assert_eq!(metadata, json!({}));

    // An invalid tenant id is refused, for writes and reads.
    let reply = api
        .write_v1(
            &batch(vec![series("tenant_metric", &[("job", "x")], &[(now, 9.0)])]),
            Some("../x"),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains("../x") && reply.body.contains("tenant"),
        "{}",
        reply.body
    );
    let message = api
        .query("tenant_metric", Some(now), Some("../x"))
        .await
        .api_error(400, "bad_data");
    assert!(message.contains("../x"), "{message}");
    let message = api
        .get("/api/v1/series", &[("match[]", "tenant_metric")], Some(".."))
        .await
        .api_error(400, "bad_data");
    assert!(message.contains("tenant"), "{message}");
    // Nothing was created outside the tenant directories (`<data>/wal/../x` is `<data>/x`).
    assert!(!dir.path().join("x").exists());
    api.assert_ready().await;
}

/// One request that must be refused: status and a piece of the message.
struct BadRequest {
    what: &'static str,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    content_encoding: Option<&'static str>,
    status: u16,
    message: &'static [&'static str],
}

fn v1_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| v1::Sample { value, timestamp })
            .collect(),
        exemplars: Vec::new(),
        histograms: Vec::new(),
    }
}

fn v1_body(timeseries: Vec<v1::TimeSeries>) -> Vec<u8> {
    snappy(
        &v1::WriteRequest {
            timeseries,
            metadata: Vec::new(),
        }
        .encode_to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_invalid_writes_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms() - SECOND;
    let good = batch(vec![series("good_metric", &[("job", "ok")], &[(now, 42.0)])]);
    api.write_ok(&good, None).await;

    let garbage_proto = vec![0xff_u8; 24];
    // A histogram whose spans promise two buckets but which sends one count.
    let mut histogram = v1_series(&[("__name__", "bad_histogram"), ("job", "x")], &[]);
    histogram.histograms.push(v1::Histogram {
        count: Some(v1::histogram::Count::CountInt(1)),
        positive_spans: vec![v1::BucketSpan { offset: 0, length: 2 }],
        positive_deltas: vec![1],
        timestamp: now,
        ..Default::default()
    });
    // A histogram whose count is below the sum of its buckets.
    let mut low_count = v1_series(&[("__name__", "low_count_histogram"), ("job", "x")], &[]);
    low_count.histograms.push(v1::Histogram {
        count: Some(v1::histogram::Count::CountInt(1)),
        positive_spans: vec![v1::BucketSpan { offset: 0, length: 1 }],
        positive_deltas: vec![5],
        timestamp: now,
        ..Default::default()
    });
    let mut exemplar = v1_series(&[("__name__", "bad_exemplar"), ("job", "x")], &[(now, 1.0)]);
    exemplar.exemplars.push(vec![9, 9, 9]);
    let v2_bad_ref = snappy(
        &v2::Request {
            symbols: vec![String::new(), "__name__".into(), "bad_symbols".into()],
            timeseries: vec![v2::TimeSeries {
                labels_refs: vec![1, 99],
                samples: vec![v2::Sample {
                    value: 1.0,
                    timestamp: now,
                    start_timestamp: 0,
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec(),
    );

    let cases = vec![
        BadRequest {
            what: "body that is not snappy",
            body: b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xffthis is not snappy".to_vec(),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["snappy"],
        },
        BadRequest {
            what: "snappy of garbage (1.0)",
            body: snappy(&garbage_proto),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["protobuf"],
        },
        BadRequest {
            what: "snappy of garbage (2.0)",
            body: snappy(&garbage_proto),
            content_type: Some(CONTENT_TYPE_V2),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["protobuf"],
        },
        BadRequest {
            what: "JSON content type",
            body: tidewatch_model::remote_write::encode_v1(&good),
            content_type: Some("application/json"),
            content_encoding: Some("snappy"),
            status: 415,
            message: &["content type", "application/json"],
        },
        BadRequest {
            what: "unknown proto parameter",
            body: tidewatch_model::remote_write::encode_v1(&good),
            content_type: Some("application/x-protobuf;proto=io.example.Other"),
            content_encoding: Some("snappy"),
            status: 415,
            message: &["io.example.Other"],
        },
        BadRequest {
            what: "gzip encoding",
            body: tidewatch_model::remote_write::encode_v1(&good),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("gzip"),
            status: 415,
            message: &["encoding", "gzip"],
        },
        BadRequest {
            what: "series without __name__",
            body: v1_body(vec![v1_series(&[("job", "nameless")], &[(now, 1.0)])]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["__name__", "nameless"],
        },
        BadRequest {
            what: "invalid label name",
            body: v1_body(vec![v1_series(
                &[("__name__", "bad_label_metric"), ("bad-name", "x")],
                &[(now, 1.0)],
            )]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["bad-name", "bad_label_metric"],
        },
        BadRequest {
            what: "invalid metric name",
            body: v1_body(vec![v1_series(&[("__name__", "0bad metric")], &[(now, 1.0)])]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["metric name", "0bad metric"],
        },
        BadRequest {
            what: "duplicate label names",
            body: v1_body(vec![v1_series(
                &[("__name__", "bad_duplicate"), ("dup", "1"), ("dup", "2")],
                &[(now, 1.0)],
            )]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["duplicate", "dup", "bad_duplicate"],
        },
        BadRequest {
            what: "sample 8 days old",
            body: v1_body(vec![v1_series(
                &[("__name__", "bad_too_old"), ("job", "x")],
                &[(now - 8 * DAY, 1.0)],
            )]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["too old", "bad_too_old"],
        },
        BadRequest {
            what: "sample an hour in the future",
            body: v1_body(vec![v1_series(
                &[("__name__", "bad_future"), ("job", "x")],
                &[(now + HOUR, 1.0)],
            )]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["future", "bad_future"],
        },
        BadRequest {
            what: "native histogram with more spans than buckets",
            body: v1_body(vec![histogram]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["histogram", "bad_histogram", "2 buckets"],
        },
        BadRequest {
            what: "native histogram with a count below its buckets",
            body: v1_body(vec![low_count]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["histogram", "low_count_histogram", "lower than the sum of its buckets"],
        },
        BadRequest {
            what: "exemplar",
            body: v1_body(vec![exemplar]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["exemplar", "bad_exemplar"],
        },
        BadRequest {
            what: "2.0 symbol reference out of range",
            body: v2_bad_ref,
            content_type: Some(CONTENT_TYPE_V2),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["symbol", "99"],
        },
        BadRequest {
            what: "a valid series next to an invalid one: nothing of the batch is stored",
            body: v1_body(vec![
                v1_series(&[("__name__", "bad_partner"), ("job", "x")], &[(now, 7.0)]),
                v1_series(&[("__name__", "bad_partner"), ("bad-name", "y")], &[(now, 8.0)]),
            ]),
            content_type: Some(CONTENT_TYPE_V1),
            content_encoding: Some("snappy"),
            status: 400,
            message: &["bad-name"],
        },
    ];

    for case in cases {
        let reply = api
            .write_raw(case.body, case.content_type, case.content_encoding, None)
            .await;
        assert_eq!(reply.status, case.status, "{}: {}", case.what, reply.body);
        for needle in case.message {
            assert!(
                reply.body.contains(needle),
                "{}: message {:?} does not mention {needle:?}",
                case.what,
                reply.body
            );
        }
        assert!(
            reply.header("X-Prometheus-Remote-Write-Samples-Written").is_none(),
            "{}: a refused request claims samples written",
            case.what
        );
        // The server survives and keeps what it had.
        api.assert_ready().await;
        let got = api.vector("good_metric", now, None).await;
        assert_eq!(
            got,
            BTreeMap::from([(metric("good_metric", &[("job", "ok")]), (now, "42".to_string()))]),
            "after {}",
            case.what
        );
    }

    // Nothing of any refused request was stored.
    assert_eq!(
        api.strings("/api/v1/label/__name__/values", &[], None).await,
        ["good_metric"]
    );
    assert_eq!(api.strings("/api/v1/labels", &[], None).await, ["__name__", "job"]);
    assert!(
        api.range_selector(r#"{__name__=~"bad_.*"}[1h]"#, now, None)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_api_errors_follow_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms();

    // Unparseable PromQL: 400 bad_data carrying the parser's message.
    let reply = api.query("up{job=", Some(now), None).await;
    let message = reply.api_error(400, "bad_data");
    assert!(message.starts_with("invalid parameter \"query\": "), "{message}");
    assert!(message.contains("inside braces"), "{message}");
    let reply = api.query("rate(up[5m]", Some(now), None).await;
    let message = reply.api_error(400, "bad_data");
    assert!(message.starts_with("invalid parameter \"query\": "), "{message}");
    assert!(message.contains("parenthesis"), "{message}");
    // A query string that is missing altogether.
    let message = api.get("/api/v1/query", &[], None).await.api_error(400, "bad_data");
    assert!(message.contains("query"), "{message}");

    // The engine over the real storage, before and after the head goes into
    // blocks: aggregation, a range function, and Prometheus' matching error.
    const SECOND: i64 = 1000;
    let t0 = now - 120 * SECOND;
    api.write_ok(
        &batch(vec![
            series(
                "engine_x_total",
                &[("job", "a")],
                &[(t0, 0.0), (t0 + 60 * SECOND, 60.0)],
            ),
            series(
                "engine_x_total",
                &[("job", "b")],
                &[(t0, 10.0), (t0 + 60 * SECOND, 40.0)],
            ),
        ]),
        None,
    )
    .await;
    for phase in ["head", "blocks"] {
        let sum = api.vector("sum(engine_x_total)", now, None).await;
        assert_eq!(
            sum.values().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
            ["100"],
            "{phase}"
        );
        let reply = api.query_range("sum by (job) (rate(engine_x_total[5m]))", now - 60 * SECOND, now, "30");
        let matrix = Api::matrix_of(&reply.await);
        assert_eq!(matrix.len(), 2, "{phase}: {matrix:?}");
        let message = api
            .query("engine_x_total + on() engine_x_total", Some(now), None)
            .await
            .api_error(422, "execution");
        assert!(
            message.contains("many-to-many matching not allowed"),
            "{phase}: {message}"
        );
        assert_eq!(api.post("/api/v1/admin/flush").await.status, 204);
    }

    // Literals do evaluate.
    let data = api.query("1.5", Some(now), None).await.success_data();
    assert_eq!(data["resultType"], "scalar");
    assert_eq!(common::parse_point(&data["result"]), (now, "1.5".to_string()));
    let data = api.query(r#""hello""#, Some(now), None).await.success_data();
    assert_eq!(data["resultType"], "string");
    assert_eq!(common::parse_point(&data["result"]), (now, "hello".to_string()));

    // query_range parameter checks.
    let range = |start: &'static str, end: &'static str, step: Option<&'static str>| {
        let mut params = vec![("query", "up"), ("start", start), ("end", end)];
        if let Some(step) = step {
            params.push(("step", step));
        }
        params
    };
    let message = api
        .get("/api/v1/query_range", &range("200", "100", Some("15")), None)
        .await
        .api_error(400, "bad_data");
    assert!(message.contains("end"), "{message}");
    for step in ["0", "-15", "0s"] {
        let message = api
            .get("/api/v1/query_range", &range("100", "200", Some(step)), None)
            .await
            .api_error(400, "bad_data");
        assert!(message.contains("step"), "step={step}: {message}");
    }
    let message = api
        .get("/api/v1/query_range", &range("100", "200", None), None)
        .await
        .api_error(400, "bad_data");
    assert!(message.contains("step"), "{message}");
    let message = api
        .get("/api/v1/query_range", &range("100", "200", Some("fortnight")), None)
        .await
        .api_error(400, "bad_data");
    assert!(message.contains("step") && message.contains("fortnight"), "{message}");
    let message = api
        .get(
            "/api/v1/query_range",
            &[("query", "up"), ("end", "200"), ("step", "15")],
            None,
        )
        .await
        .api_error(400, "bad_data");
    assert!(message.contains("start"), "{message}");

    // Unparseable time.
    let message = api
        .get("/api/v1/query", &[("query", "up"), ("time", "notatime")], None)
        .await
        .api_error(400, "bad_data");
    assert!(
        message.contains("\"time\"") && message.contains("notatime"),
        "{message}"
    );
    let message = api
        .get("/api/v1/series", &[("match[]", "up"), ("start", "notatime")], None)
        .await
        .api_error(400, "bad_data");
    assert!(
        message.contains("\"start\"") && message.contains("notatime"),
        "{message}"
    );
    // RFC 3339 times are accepted.
    let data = api
        .get(
            "/api/v1/query",
            &[("query", "2"), ("time", "2015-07-01T20:10:51.781Z")],
            None,
        )
        .await
        .success_data();
    assert_eq!(
        common::parse_point(&data["result"]),
        (1_435_781_451_781, "2".to_string())
    );

    api.assert_ready().await;
    // Content type of an error body is JSON.
    let reply = api.query("sum(x)", Some(now), None).await;
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn label_names_and_values_honour_start_and_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let api = server.api();
    let now = now_s_ms() - MINUTE;
    api.write_ok(&batch(vec![series("windowed", &[("job", "w")], &[(now, 1.0)])]), None)
        .await;
    let around = [
        ("start", common::seconds(now - MINUTE)),
        ("end", common::seconds(now + MINUTE)),
    ];
    let around: Vec<(&str, &str)> = around.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // A window an hour before the only sample, and one in 1970.
    let hour_before = [
        ("start", common::seconds(now - 2 * HOUR)),
        ("end", common::seconds(now - HOUR)),
    ];
    let hour_before: Vec<(&str, &str)> = hour_before.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let epoch = vec![("start", "1000"), ("end", "2000")];

    assert_eq!(api.strings("/api/v1/labels", &around, None).await, ["__name__", "job"]);
    assert_eq!(api.strings("/api/v1/label/job/values", &around, None).await, ["w"]);
    for window in [&hour_before, &epoch] {
        // /api/v1/series already honours the window …
        let mut with_match = window.clone();
        with_match.push(("match[]", "windowed"));
        let reply = api.get("/api/v1/series", &with_match, None).await;
        assert_eq!(reply.success_data(), json!([]), "{window:?}");
        // … and so do labels with match[] …
        assert!(
            api.strings("/api/v1/labels", &with_match, None).await.is_empty(),
            "{window:?}"
        );
        // … but without match[] the head's names and values come back regardless.
        let names = api.strings("/api/v1/labels", window, None).await;
        assert!(
            names.is_empty(),
            "label names outside any sample's time: {names:?} for {window:?}"
        );
        let values = api.strings("/api/v1/label/job/values", window, None).await;
        assert!(
            values.is_empty(),
            "label values outside any sample's time: {values:?} for {window:?}"
        );
    }
}
