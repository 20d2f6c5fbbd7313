//! Loki's browsing endpoints in process (labels, values, series, index stats
//! and volumes) over the in-memory log store, checked field by field.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tidewatch_model::logs::{LogEntry, LogIngest, LogPush, LogStream, MemLogStore};
use tidewatch_model::{Labels, TenantId};
use tidewatch_query::loki_api::{LokiQueryConfig, loki_browse_router};
use tower::ServiceExt;

const S: i64 = 1_000_000_000;

fn stream(pairs: &[(&str, &str)], entries: &[(i64, &str)]) -> LogStream {
    LogStream {
        labels: Labels::from_pairs(pairs.iter().copied()),
        entries: entries.iter().map(|&(t, line)| LogEntry::new(t * S, line)).collect(),
    }
}

async fn router() -> axum::Router {
    let store = Arc::new(MemLogStore::new());
    let push = LogPush {
        streams: vec![
            stream(
                &[("app", "api"), ("env", "prod")],
                &[(100, "GET /a"), (110, "GET /bb"), (190, "x")],
            ),
            stream(&[("app", "api"), ("env", "dev")], &[(120, "POST /c")]),
            stream(
                &[("app", "db"), ("env", "prod"), ("team", "data")],
                &[(150, "slow query")],
            ),
        ],
    };
    store.push(&TenantId::default_tenant(), push).await.unwrap();
    // Another tenant's stream must never show.
    let other = LogPush {
        streams: vec![stream(&[("app", "secret")], &[(100, "hidden")])],
    };
    store.push(&TenantId::parse("other").unwrap(), other).await.unwrap();
    loki_browse_router(store, LokiQueryConfig::default())
}

async fn get(router: &axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, body)
}

fn encode(query: &str) -> String {
    form_urlencoded::byte_serialize(query.as_bytes()).collect()
}

#[tokio::test]
async fn label_names_and_values() {
    let router = router().await;
    let (status, body) = get(&router, "/loki/api/v1/labels?start=0&end=1000").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "success", "data": ["app", "env", "team"]}));
    let (_, body) = get(&router, "/loki/api/v1/label/app/values?start=0&end=1000").await;
    assert_eq!(body["data"], json!(["api", "db"]));
    let uri = format!(
        "/loki/api/v1/label/env/values?start=0&end=1000&query={}",
        encode(r#"{app="api"}"#)
    );
    let (_, body) = get(&router, &uri).await;
    assert_eq!(body["data"], json!(["dev", "prod"]));
    // Only streams with entries in the range count.
    let (_, body) = get(&router, "/loki/api/v1/label/env/values?start=115&end=130").await;
    assert_eq!(body["data"], json!(["dev"]));
}

#[tokio::test]
async fn series_by_selector() {
    let router = router().await;
    let uri = format!(
        "/loki/api/v1/series?start=0&end=1000&match[]={}",
        encode(r#"{env="prod"}"#)
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"],
        json!([{"app": "api", "env": "prod"}, {"app": "db", "env": "prod", "team": "data"}])
    );
    let (status, body) = get(&router, "/loki/api/v1/series?start=0&end=1000").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.as_str().unwrap().contains("match[]"), "{body}");
    let uri = format!("/loki/api/v1/series?match[]={}", encode(r#"{env=""}"#));
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.as_str().unwrap().starts_with("parse error"), "{body}");
}

#[tokio::test]
async fn index_stats_without_envelope() {
    let router = router().await;
    let uri = format!(
        "/loki/api/v1/index/stats?start=0&end=1000&query={}",
        encode(r#"{app="api"}"#)
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::OK);
    let bytes = "GET /a".len() + "GET /bb".len() + "x".len() + "POST /c".len();
    assert_eq!(body, json!({"streams": 2, "chunks": 2, "bytes": bytes, "entries": 4}));
}

#[tokio::test]
async fn volumes_group_by_selector_labels_or_targets() {
    let router = router().await;
    let uri = format!(
        "/loki/api/v1/index/volume?start=0&end=1000&query={}",
        encode(r#"{app=~".+"}"#)
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["resultType"], "vector");
    assert_eq!(
        body["data"]["result"],
        json!([
            {"metric": {"app": "api"}, "value": [1000.0, "21"]},
            {"metric": {"app": "db"}, "value": [1000.0, "10"]},
        ])
    );
    let uri = format!(
        "/loki/api/v1/index/volume?start=0&end=1000&targetLabels=env&query={}",
        encode(r#"{app=~".+"}"#)
    );
    let (_, body) = get(&router, &uri).await;
    assert_eq!(
        body["data"]["result"],
        json!([
            {"metric": {"env": "prod"}, "value": [1000.0, "24"]},
            {"metric": {"env": "dev"}, "value": [1000.0, "7"]},
        ])
    );
    let uri = format!(
        "/loki/api/v1/index/volume?start=0&end=1000&aggregateBy=labels&targetLabels=team,app&query={}",
        encode(r#"{app=~".+"}"#)
    );
    let (_, body) = get(&router, &uri).await;
    assert_eq!(
        body["data"]["result"],
        json!([
            {"metric": {"app": ""}, "value": [1000.0, "31"]},
            {"metric": {"team": ""}, "value": [1000.0, "10"]},
        ])
    );
}

#[tokio::test]
async fn volume_range_buckets_bytes_by_step() {
    let router = router().await;
    let uri = format!(
        "/loki/api/v1/index/volume_range?start=100&end=200&step=50&query={}",
        encode(r#"{app="api", env="prod"}"#)
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // (50, 100] holds "GET /a"; (100, 150] "GET /bb"; (150, 200] "x".
    assert_eq!(
        body["data"]["result"],
        json!([{"metric": {"app": "api", "env": "prod"}, "values": [[100.0, "6"], [150.0, "7"], [200.0, "1"]]}])
    );
    let uri = format!(
        "/loki/api/v1/index/volume_range?start=0&end=100&step=0&query={}",
        encode(r#"{app="api"}"#)
    );
    let (status, _) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn grafana_save_and_test_answers_two() {
    let router = router().await;
    let uri = format!(
        "/loki/api/v1/query?time=4000000000&query={}",
        encode("vector(1)+vector(1)")
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "vector");
    assert_eq!(
        body["data"]["result"],
        json!([{"metric": {}, "value": [4000000000.0, "2"]}])
    );
}

#[tokio::test]
async fn log_queries_return_streams_in_direction_with_limit() {
    let router = router().await;
    let uri = format!(
        "/loki/api/v1/query_range?start=0&end=1000&limit=2&query={}",
        encode(r#"{app="api"} |= "GET""#)
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["resultType"], "streams");
    assert_eq!(
        body["data"]["result"],
        json!([{"stream": {"app": "api", "env": "prod"}, "values": [["110000000000", "GET /bb"], ["100000000000", "GET /a"]]}])
    );
    let uri = format!(
        "/loki/api/v1/query_range?start=0&end=1000&limit=1&direction=forward&query={}",
        encode(r#"{app="api"}"#)
    );
    let (_, body) = get(&router, &uri).await;
    assert_eq!(body["data"]["result"][0]["values"], json!([["100000000000", "GET /a"]]));
    // Instant log queries are refused, as Loki does.
    let uri = format!("/loki/api/v1/query?time=200&query={}", encode(r#"{app="api"}"#));
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.as_str().unwrap().contains("instant"), "{body}");
}

#[tokio::test]
async fn metric_queries_return_matrices_and_errors_are_text() {
    let router = router().await;
    let uri = format!(
        "/loki/api/v1/query_range?start=100&end=200&step=50&query={}",
        encode(r#"sum by (app) (count_over_time({env="prod"}[50s]))"#)
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["resultType"], "matrix");
    // (50,100]: GET /a; (100,150]: GET /bb; (150,200]: x — and db's slow query at 150.
    assert_eq!(
        body["data"]["result"],
        json!([
            {"metric": {"app": "api"}, "values": [[100.0, "1"], [150.0, "1"], [200.0, "1"]]},
            {"metric": {"app": "db"}, "values": [[150.0, "1"]]},
        ])
    );
    let uri = format!(
        "/loki/api/v1/query_range?start=0&end=10&query={}",
        encode("sum(rate({app=\"api\"}[5m]")
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.as_str().unwrap().starts_with("parse error at line 1"), "{body}");
}

#[tokio::test]
async fn detected_fields_and_their_values_in_lokis_shape() {
    let store = Arc::new(MemLogStore::new());
    let mut json_stream = stream(
        &[("app", "checkout")],
        &[
            (100, r#"{"status":200,"took":"15ms","user":{"id":"u1"}}"#),
            (101, r#"{"status":503,"took":"2s","user":{"id":"u2"}}"#),
        ],
    );
    json_stream.entries[1].structured_metadata = Labels::from_pairs([("trace_id", "t-1")]);
    let push = LogPush {
        streams: vec![
            json_stream,
            stream(&[("app", "db")], &[(102, "level=warn rows=12 size=5MB")]),
        ],
    };
    store.push(&TenantId::default_tenant(), push).await.unwrap();
    let router = loki_browse_router(store, LokiQueryConfig::default());

    let uri = format!(
        "/loki/api/v1/detected_fields?start=0&end=1000&query={}",
        encode(r#"{app=~".+"}"#)
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["limit"], json!(1000));
    let fields = body["fields"].as_array().unwrap();
    let field = |name: &str| {
        fields
            .iter()
            .find(|f| f["label"] == name)
            .unwrap_or_else(|| panic!("{name} not in {body}"))
            .clone()
    };
    assert_eq!(
        field("status"),
        json!({"label": "status", "type": "int", "cardinality": 2, "parsers": ["json"], "jsonPath": ["status"]})
    );
    assert_eq!(field("took")["type"], "duration");
    assert_eq!(field("user_id")["cardinality"], 2);
    assert_eq!(field("user_id")["jsonPath"], json!(["user", "id"]));
    assert_eq!(field("rows")["parsers"], json!(["logfmt"]));
    assert_eq!(field("size")["type"], "bytes");
    assert_eq!(
        field("trace_id")["parsers"],
        json!(null),
        "structured metadata has no parser"
    );
    assert!(
        fields.iter().all(|f| f["label"] != "app"),
        "stream labels are not fields"
    );

    // A filter narrows the lines read; `limit` caps the fields.
    let uri = format!(
        "/loki/api/v1/detected_fields?start=0&end=1000&limit=1&query={}",
        encode(r#"{app="checkout"} |= "503""#)
    );
    let (_, body) = get(&router, &uri).await;
    assert_eq!(body["fields"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["limit"], json!(1));

    let uri = format!(
        "/loki/api/v1/detected_field/status/values?start=0&end=1000&query={}",
        encode(r#"{app="checkout"}"#)
    );
    let (_, body) = get(&router, &uri).await;
    assert_eq!(body, json!({"values": ["200", "503"], "limit": 1000}));

    // Nothing found: an empty object, as Loki answers.
    let uri = format!(
        "/loki/api/v1/detected_fields?start=0&end=1000&query={}",
        encode(r#"{app="none"}"#)
    );
    let (status, body) = get(&router, &uri).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));

    // Bad input is a 400 with the parser's message.
    let (status, body) = get(&router, "/loki/api/v1/detected_fields?query=%7Bapp%3D").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let uri = format!(
        "/loki/api/v1/detected_fields?query={}",
        encode(r#"count_over_time({app="db"}[1m])"#)
    );
    let (status, _) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let uri = format!("/loki/api/v1/detected_fields?limit=0&query={}", encode(r#"{app="db"}"#));
    let (status, _) = get(&router, &uri).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
