//! The Prometheus API in process: router + oneshot requests over the in-memory
//! store, checking JSON shapes field by field.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tidewatch_model::remote_write::encode_v1;
use tidewatch_model::seam::{Ingest, MemSeriesStore, MetricMetadata, MetricType, SeriesSamples, WriteBatch};
use tidewatch_model::{Labels, Sample, TenantId};
use tidewatch_query::stats::HttpStats;
use tidewatch_query::{ApiConfig, prometheus_router};
use tower::ServiceExt;

async fn router_with_data() -> (axum::Router, Arc<HttpStats>) {
    let store = Arc::new(MemSeriesStore::new());
    let batch = WriteBatch {
        series: vec![
            SeriesSamples {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "api"), ("instance", "a:1")]),
                samples: vec![Sample::new(1_000, 1.0), Sample::new(16_000, f64::INFINITY)],
                histograms: Vec::new(),
                start_timestamps: Default::default(),
            },
            SeriesSamples {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "db"), ("instance", "b:1")]),
                samples: vec![Sample::new(1_000, 0.0)],
                histograms: Vec::new(),
                start_timestamps: Default::default(),
            },
        ],
        metadata: vec![MetricMetadata {
            metric_family_name: "up".into(),
            metric_type: MetricType::Gauge,
            help: "Whether the target is up.".into(),
            unit: String::new(),
        }],
    };
    store
        .ingest(
            &TenantId::default_tenant(),
            tidewatch_model::raw_write::RawWriteBatch::from_batch(&batch),
        )
        .await
        .unwrap();
    let stats = Arc::new(HttpStats::default());
    (prometheus_router(store, ApiConfig::default(), stats.clone()), stats)
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

async fn get(router: &axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
    send(router, Request::get(uri).body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn instant_query_shape() {
    let (router, _) = router_with_data().await;
    let (status, body) = get(&router, "/api/v1/query?query=up%7Bjob%3D%22api%22%7D&time=20").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "instance": "a:1", "job": "api"}, "value": [20, "+Inf"]}
        ]}})
    );
}

#[tokio::test]
async fn form_post_scalar_like_grafana() {
    let (router, _) = router_with_data().await;
    let request = Request::post("/api/v1/query")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(Body::from("query=2&time=4"))
        .unwrap();
    let (status, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"],
        serde_json::json!({"resultType": "scalar", "result": [4, "2"]})
    );
}

#[tokio::test]
async fn range_query_and_matrix_selector() {
    let (router, _) = router_with_data().await;
    let (status, body) = get(&router, "/api/v1/query_range?query=up&start=0&end=20&step=10").await;
    assert_eq!(status, StatusCode::OK);
    let result = &body["data"]["result"];
    assert_eq!(body["data"]["resultType"], "matrix");
    assert_eq!(result[0]["values"], serde_json::json!([[10, "1"], [20, "+Inf"]]));
    assert_eq!(result[1]["values"], serde_json::json!([[10, "0"], [20, "0"]]));

    let (_, body) = get(&router, "/api/v1/query?query=up%7Bjob%3D%22api%22%7D%5B1m%5D&time=16").await;
    assert_eq!(
        body["data"]["result"][0]["values"],
        serde_json::json!([[1, "1"], [16, "+Inf"]])
    );
}

#[tokio::test]
async fn errors_have_prometheus_shape_and_status() {
    let (router, _) = router_with_data().await;
    let cases = [
        ("/api/v1/query?query=up%7B", StatusCode::BAD_REQUEST, "bad_data"),
        (
            "/api/v1/query?query=up%20%2B%20on()%20up&time=20",
            StatusCode::UNPROCESSABLE_ENTITY,
            "execution",
        ),
        (
            "/api/v1/query?query=up&time=yesterday",
            StatusCode::BAD_REQUEST,
            "bad_data",
        ),
        (
            "/api/v1/query_range?query=up&start=10&end=0&step=1",
            StatusCode::BAD_REQUEST,
            "bad_data",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=10&step=0",
            StatusCode::BAD_REQUEST,
            "bad_data",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=100000&step=1",
            StatusCode::BAD_REQUEST,
            "bad_data",
        ),
        (
            "/api/v1/query_range?query=up%5B1m%5D&start=0&end=10&step=1",
            StatusCode::BAD_REQUEST,
            "bad_data",
        ),
        ("/api/v1/series", StatusCode::BAD_REQUEST, "bad_data"),
        (
            "/api/v1/series?match[]=%7Bjob%3D%22%22%7D",
            StatusCode::BAD_REQUEST,
            "bad_data",
        ),
        ("/api/v1/labels?limit=-3", StatusCode::BAD_REQUEST, "bad_data"),
    ];
    for (uri, expected_status, expected_type) in cases {
        let (status, body) = get(&router, uri).await;
        assert_eq!(status, expected_status, "{uri}: {body}");
        assert_eq!(body["status"], "error", "{uri}");
        assert_eq!(body["errorType"], expected_type, "{uri}");
        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{uri}");
    }
    let (_, body) = get(&router, "/api/v1/query?query=up&time=yesterday").await;
    assert!(body["error"].as_str().unwrap().contains("\"time\""), "{body}");
}

#[tokio::test]
async fn series_labels_values_with_limits() {
    let (router, _) = router_with_data().await;
    let (_, body) = get(&router, "/api/v1/series?match[]=up&match[]=%7Bjob%3D%22db%22%7D").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        body["data"][1],
        serde_json::json!({"__name__": "up", "instance": "b:1", "job": "db"})
    );

    let (_, body) = get(&router, "/api/v1/labels").await;
    assert_eq!(body["data"], serde_json::json!(["__name__", "instance", "job"]));
    let (_, body) = get(&router, "/api/v1/labels?limit=1").await;
    assert_eq!(body["data"], serde_json::json!(["__name__"]));
    assert_eq!(body["warnings"], serde_json::json!(["results truncated due to limit"]));

    let (_, body) = get(&router, "/api/v1/label/job/values?match[]=up%7Bjob%3D%22db%22%7D").await;
    assert_eq!(body["data"], serde_json::json!(["db"]));
    let (_, body) = get(&router, "/api/v1/label/__name__/values?limit=40000").await;
    assert_eq!(body["data"], serde_json::json!(["up"]));
    // Time bounds exclude everything.
    let (_, body) = get(&router, "/api/v1/label/job/values?start=100&end=200").await;
    assert_eq!(body["data"], serde_json::json!([]));
}

#[tokio::test]
async fn metadata_buildinfo_tsdb() {
    let (router, _) = router_with_data().await;
    let (_, body) = get(&router, "/api/v1/metadata?limit=40000").await;
    assert_eq!(
        body["data"],
        serde_json::json!({"up": [{"type": "gauge", "help": "Whether the target is up.", "unit": ""}]})
    );
    let (_, body) = get(&router, "/api/v1/status/buildinfo").await;
    assert!(body["data"]["version"].as_str().unwrap().starts_with('3'));
    assert!(body["data"].get("features").is_none());
    let (_, body) = get(&router, "/api/v1/status/tsdb").await;
    assert_eq!(body["data"]["headStats"]["numSeries"], 2);
    assert_eq!(
        body["data"]["seriesCountByMetricName"][0],
        serde_json::json!({"name": "up", "value": 2})
    );
}

#[tokio::test]
async fn tenants_do_not_see_each_other() {
    let (router, _) = router_with_data().await;
    let request = Request::get("/api/v1/series?match[]=up")
        .header("X-Scope-OrgID", "other")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], serde_json::json!([]));
    let request = Request::get("/api/v1/series?match[]=up")
        .header("X-Scope-OrgID", "a/b")
        .body(Body::empty())
        .unwrap();
    let (status, _) = send(&router, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn remote_write_statuses_and_stats() {
    let (router, stats) = router_with_data().await;
    let batch = WriteBatch {
        series: vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "written"), ("job", "x")]),
            samples: vec![Sample::new(5_000, 7.0)],
            histograms: Vec::new(),
            start_timestamps: Default::default(),
        }],
        metadata: Vec::new(),
    };
    let request = Request::post("/api/v1/write")
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .body(Body::from(encode_v1(&batch)))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["X-Prometheus-Remote-Write-Samples-Written"], "1");
    let (_, body) = get(&router, "/api/v1/query?query=written&time=5").await;
    assert_eq!(body["data"]["result"][0]["value"], serde_json::json!([5, "7"]));

    let request = Request::post("/api/v1/write")
        .header("Content-Type", "text/plain")
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(
        router.clone().oneshot(request).await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let request = Request::post("/api/v1/write").body(Body::from("not snappy")).unwrap();
    let (status, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.as_str().unwrap().contains("snappy"), "{body}");

    let counted = stats.snapshot();
    assert_eq!(counted[&("/api/v1/write".to_string(), 204)].count, 1);
    assert_eq!(counted[&("/api/v1/write".to_string(), 400)].count, 1);
}

#[tokio::test]
async fn what_grafana_calls_when_it_connects() {
    let (router, _) = router_with_data().await;
    let (status, body) = get(&router, "/api/v1/query_exemplars?query=up&start=0&end=20").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], serde_json::json!([]));
    let (status, body) = get(&router, "/api/v1/format_query?query=sum%20by(job)(up)").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], "sum by (job) (up)");
    let (status, body) = get(&router, "/api/v1/parse_query?query=up%5B5m%5D").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["type"], "matrixSelector");
    assert_eq!(body["data"]["range"], 300_000);
    let (status, body) = get(&router, "/api/v1/format_query?query=sum(").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errorType"], "bad_data");
    let (status, body) = get(
        &router,
        "/api/v1/labels?match[]=%7B__name__%3D~%22.%2B%22%7D&limit=40000&start=0&end=20",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], serde_json::json!(["__name__", "instance", "job"]));
    let (_, body) = get(&router, "/api/v1/label/__name__/values?limit=40000&start=0&end=20").await;
    assert_eq!(body["data"], serde_json::json!(["up"]));
    let (_, body) = get(&router, "/api/v1/metadata?limit=40000").await;
    assert_eq!(body["data"]["up"][0]["type"], "gauge");
}

#[tokio::test]
async fn engine_results_through_the_api() {
    let (router, _) = router_with_data().await;
    let (status, body) = get(&router, "/api/v1/query?query=sum%20by%20(job)%20(up)%20*%202&time=10").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut results: Vec<(String, String)> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["job"].as_str().unwrap().to_string(),
                r["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    results.sort();
    assert_eq!(
        results,
        [
            ("api".to_string(), "2".to_string()),
            ("db".to_string(), "0".to_string())
        ]
    );
    let (status, body) = get(&router, "/api/v1/query?query=rate(up%5B1m%5D)&time=20").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let infos = body["infos"]
        .as_array()
        .expect("rate over a gauge name carries an info");
    assert!(
        infos[0]
            .as_str()
            .unwrap()
            .starts_with("PromQL info: metric might not be a counter"),
        "{body}"
    );
}

#[tokio::test]
async fn native_histograms_in_prometheus_json() {
    use tidewatch_model::histogram::{Bucket, FloatHistogram, HistogramSample};
    let store = Arc::new(MemSeriesStore::new());
    let histogram = FloatHistogram {
        schema: 0,
        zero_threshold: 0.001,
        zero_count: 1.0,
        count: 7.0,
        sum: 10.0,
        positive: vec![Bucket { index: 0, count: 2.0 }, Bucket { index: 1, count: 3.0 }],
        negative: vec![Bucket { index: 0, count: 1.0 }],
        ..FloatHistogram::default()
    };
    store.insert(
        &TenantId::default_tenant(),
        vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "h")]),
            samples: Vec::new(),
            histograms: vec![
                HistogramSample {
                    timestamp: 10_000,
                    histogram: histogram.clone(),
                },
                HistogramSample {
                    timestamp: 20_000,
                    histogram,
                },
            ],
            start_timestamps: Default::default(),
        }],
    );
    let router = prometheus_router(store, ApiConfig::default(), Arc::new(HttpStats::default()));
    let buckets = serde_json::json!([
        [1, "-1", "-0.5", "1"],
        [3, "-0.001", "0.001", "1"],
        [0, "0.5", "1", "2"],
        [0, "1", "2", "3"]
    ]);
    let (status, body) = get(&router, "/api/v1/query?query=h&time=20").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "h"}, "histogram": [20, {"count": "7", "sum": "10", "buckets": buckets}]}
        ]}})
    );
    let (_, body) = get(&router, "/api/v1/query_range?query=h&start=10&end=20&step=10").await;
    assert_eq!(
        body["data"]["result"][0],
        serde_json::json!({"metric": {"__name__": "h"}, "histograms": [
            [10, {"count": "7", "sum": "10", "buckets": buckets}],
            [20, {"count": "7", "sum": "10", "buckets": buckets}]
        ]})
    );
    let (_, body) = get(
        &router,
        "/api/v1/query?query=histogram_count(rate(h%5B1m%5D))*60&time=20",
    )
    .await;
    assert_eq!(body["data"]["result"][0]["value"][1], "0");
    let (_, body) = get(&router, "/api/v1/query?query=histogram_quantile(0.5,h)&time=20").await;
    let median: f64 = body["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    // Rank 3.5 from the top lands 1.5 into the (0.5, 1] bucket of 2:
    // three quarters of the way on a log scale.
    assert!((median - 2f64.powf(-0.25)).abs() < 1e-12, "{body}");
}
