//! Loki's `/loki/api/v1/patterns` in process over the in-memory log store:
//! the exact body Loki's marshaller writes, patterns merged across streams,
//! counts per step (zero-filled between counted steps, as Loki does), each
//! pattern usable as a `|>` filter that finds its lines again, the line
//! limit, and Loki's 400s.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;
use tidewatch_model::logs::{LogEntry, LogIngest, LogPush, LogStream, MemLogStore};
use tidewatch_model::{Labels, TenantId};
use tidewatch_query::loki_api::{LokiQueryConfig, loki_browse_router};
use tower::ServiceExt;

const S: i64 = 1_000_000_000;
/// A whole minute, so 60 s steps start here.
const BASE: i64 = 1_700_000_040;
const INFO: &str = r#"level=info msg="request done" path=<_> took=<_>"#;
const ERROR: &str = r#"level=error msg="upstream failed" code=502 attempt=<_>"#;

fn stream(pairs: &[(&str, &str)], entries: Vec<(i64, String)>) -> LogStream {
    LogStream {
        labels: Labels::from_pairs(pairs.iter().copied()),
        entries: entries.into_iter().map(|(t, line)| LogEntry::new(t, line)).collect(),
    }
}

/// `app="api"`: 80 info lines over two pods (every 5 s from BASE, pod b 2 s
/// later), 35 errors in pod a (20 in the first minute, 15 in the fourth),
/// 10 warnings (too few for a pattern). `app="worker"` and another tenant
/// hold lines the queries must not see.
async fn store() -> Arc<MemLogStore> {
    let store = Arc::new(MemLogStore::new());
    let info = |offset: i64| -> Vec<(i64, String)> {
        (0..40)
            .map(|i| {
                (
                    (BASE + offset + i * 5) * S,
                    format!(r#"level=info msg="request done" path=/items/{i} took={}ms"#, i * 7 % 13),
                )
            })
            .collect()
    };
    let mut pod_a = info(0);
    for i in 0..20 {
        pod_a.push((
            (BASE + i * 2) * S + 1,
            format!(r#"level=error msg="upstream failed" code=502 attempt={i}"#),
        ));
    }
    for i in 0..15 {
        pod_a.push((
            (BASE + 185 + i) * S + 1,
            format!(r#"level=error msg="upstream failed" code=502 attempt={i}"#),
        ));
    }
    for i in 0..10 {
        pod_a.push((
            (BASE + 300 + i) * S,
            format!(r#"level=warn msg="disk almost full" free={i}GB"#),
        ));
    }
    pod_a.sort();
    let worker: Vec<(i64, String)> = (0..50)
        .map(|i| ((BASE + i) * S, format!("level=info msg=\"job done\" job={i}")))
        .collect();
    let push = LogPush {
        streams: vec![
            stream(&[("app", "api"), ("pod", "a")], pod_a),
            stream(&[("app", "api"), ("pod", "b")], info(2)),
            stream(&[("app", "worker")], worker),
        ],
    };
    store.push(&TenantId::default_tenant(), push).await.unwrap();
    let other = LogPush {
        streams: vec![stream(
            &[("app", "api")],
            (0..40)
                .map(|i| ((BASE + i) * S, format!("secret {i} of the other tenant")))
                .collect(),
        )],
    };
    store.push(&TenantId::parse("other").unwrap(), other).await.unwrap();
    store
}

async fn router(max_pattern_lines: usize) -> axum::Router {
    loki_browse_router(store().await, LokiQueryConfig { max_pattern_lines })
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn get(router: &axum::Router, params: &[(&str, &str)]) -> (StatusCode, String) {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let uri = format!("/loki/api/v1/patterns?{query}");
    send(router, Request::get(uri).body(Body::empty()).unwrap()).await
}

fn range(seconds: i64) -> (String, String) {
    (BASE.to_string(), (BASE + seconds).to_string())
}

#[tokio::test]
async fn patterns_in_lokis_exact_shape_merged_across_streams_per_step() {
    let router = router(1_000_000).await;
    let (start, end) = range(600);
    let (status, body) = get(
        &router,
        &[
            ("query", r#"{app="api"}"#),
            ("start", &start),
            ("end", &end),
            ("step", "60s"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b = BASE;
    // Loki's marshaller: pattern, level, samples in that order; `<` and `>`
    // HTML-escaped; samples as [unix seconds, lines]; most lines first.
    // Info: 24 lines per minute over both pods, 8 in the fourth. Errors: 20
    // in the first minute, 15 in the fourth, and Loki's zeros between.
    let expected = format!(
        concat!(
            r#"{{"status":"success","data":["#,
            r#"{{"pattern":"level=info msg=\"request done\" path=\u003c_\u003e took=\u003c_\u003e","level":"info","samples":[[{},24],[{},24],[{},24],[{},8]]}},"#,
            r#"{{"pattern":"level=error msg=\"upstream failed\" code=502 attempt=\u003c_\u003e","level":"error","samples":[[{},20],[{},0],[{},0],[{},15]]}}"#,
            "]}}\n"
        ),
        b,
        b + 60,
        b + 120,
        b + 180,
        b,
        b + 60,
        b + 120,
        b + 180,
    );
    assert_eq!(body, expected);
    // The same, parsed: the warnings (10 lines) are below Loki's minimum of 30.
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let patterns: Vec<&str> = parsed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pattern"].as_str().unwrap())
        .collect();
    assert_eq!(patterns, [INFO, ERROR]);
}

#[tokio::test]
async fn each_pattern_as_a_pattern_filter_counts_its_lines_again() {
    let router = router(1_000_000).await;
    let (start, end) = range(600);
    let (_, body) = get(
        &router,
        &[("query", r#"{app="api"}"#), ("start", &start), ("end", &end)],
    )
    .await;
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let data = parsed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for series in data {
        let pattern = series["pattern"].as_str().unwrap();
        let total: i64 = series["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[1].as_i64().unwrap())
            .sum();
        // No step given: Loki's default (a 250th of the range, 2 s) is raised
        // to the 10 s counts are kept at; samples are raw 10 s counts.
        for sample in series["samples"].as_array().unwrap() {
            assert_eq!((sample[0].as_i64().unwrap() - BASE) % 10, 0, "{sample}");
            assert!(sample[1].as_i64().unwrap() > 0, "raw samples have no zeros: {sample}");
        }
        let query = format!("sum(count_over_time({{app=\"api\"}} |> `{pattern}` [1h]))");
        let uri = format!(
            "/loki/api/v1/query?time={end}&query={}",
            form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        );
        let (status, body) = send(&router, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value["data"]["result"][0]["value"][1],
            json!(total.to_string()),
            "{pattern}"
        );
    }
}

#[tokio::test]
async fn post_form_narrow_ranges_selectors_and_tenants() {
    let router = router(1_000_000).await;
    let (start, end) = range(600);
    // POST with a form body answers as GET does.
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("query", r#"{app="api", pod="b"}"#),
            ("start", &start),
            ("end", &end),
            ("step", "600"),
        ])
        .finish();
    let request = Request::post("/loki/api/v1/patterns")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let (status, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    // 600 s steps are aligned to the epoch, not to `start`.
    let bucket = BASE - BASE % 600;
    assert_eq!(
        parsed,
        json!({"status": "success", "data": [{"pattern": INFO, "level": "info", "samples": [[bucket, 40]]}]})
    );
    // The first two minutes: 48 infos; the 20 errors of the first minute
    // are now fewer than 30 lines, too few for a pattern.
    let (_, body) = get(
        &router,
        &[
            ("query", r#"{app="api"}"#),
            ("start", &start),
            ("end", &(BASE + 119).to_string()),
            ("step", "60"),
        ],
    )
    .await;
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        parsed["data"],
        json!([{"pattern": INFO, "level": "info", "samples": [[BASE, 24], [BASE + 60, 24]]}])
    );
    // Nothing selected, or another tenant's data: an empty list.
    let (status, body) = get(
        &router,
        &[("query", r#"{app="nope"}"#), ("start", &start), ("end", &end)],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "{\"status\":\"success\",\"data\":[]}\n")
    );
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("query", r#"{app="api"}"#), ("start", &start), ("end", &end)])
        .finish();
    let request = Request::get(format!("/loki/api/v1/patterns?{query}"))
        .header("X-Scope-OrgID", "other")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let data = parsed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{body}");
    assert_eq!(data[0]["pattern"], "secret <_> of the other tenant");
}

#[tokio::test]
async fn more_lines_than_the_limit_is_a_400_that_says_how_to_narrow_it() {
    // app="api" holds 125 lines in the range.
    let (start, end) = range(600);
    let params = [
        ("query", r#"{app="api"}"#),
        ("start", start.as_str()),
        ("end", end.as_str()),
    ];
    let (status, body) = get(&router(124).await, &params).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("too many log lines for patterns (more than 124"),
        "{body}"
    );
    assert!(body.contains("max_pattern_lines_per_query"), "{body}");
    assert!(body.contains("reduce the time range"), "{body}");
    let (status, _) = get(&router(125).await, &params).await;
    assert_eq!(status, StatusCode::OK);
    // 0 switches the limit off.
    let (status, _) = get(&router(0).await, &params).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_get_lokis_400s() {
    let router = router(1_000_000).await;
    let (start, end) = range(600);
    let cases: [(&[(&str, &str)], &str); 10] = [
        (&[("start", &start), ("end", &end)], "query parameter is required"),
        (&[("query", "{app="), ("start", &start), ("end", &end)], "parse error"),
        (
            &[("query", r#"{app="api"} |= "x""#), ("start", &start), ("end", &end)],
            "only label matchers are supported",
        ),
        (
            &[("query", r#"count_over_time({app="api"}[1m])"#)],
            "only label matchers are supported",
        ),
        (
            &[("query", r#"{app="api"}"#), ("start", &end), ("end", &start)],
            "end timestamp must not be before start time",
        ),
        (
            &[("query", r#"{app="api"}"#), ("start", "yesterday")],
            "could not parse 'start' parameter",
        ),
        (
            &[
                ("query", r#"{app="api"}"#),
                ("start", &start),
                ("end", &end),
                ("step", "0"),
            ],
            "zero or negative query resolution step",
        ),
        (
            &[
                ("query", r#"{app="api"}"#),
                ("start", &start),
                ("end", &end),
                ("step", "-60"),
            ],
            "zero or negative query resolution step",
        ),
        (
            &[
                ("query", r#"{app="api"}"#),
                ("start", &start),
                ("end", &end),
                ("step", "0.01"),
            ],
            "exceeded maximum resolution of 11,000 points",
        ),
        (
            &[
                ("query", r#"{app="api"}"#),
                ("start", &start),
                ("end", &end),
                ("step", "soon"),
            ],
            "invalid step",
        ),
    ];
    for (params, message) in cases {
        let (status, body) = get(&router, params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}: {body}");
        assert!(body.contains(message), "{params:?}: {body}");
    }
}
