//! Logs end to end against the real binary: Loki pushes (protobuf and JSON)
//! acknowledged with 204 survive SIGKILL and a flush into Parquet + Tantivy
//! blocks, and are found again through the Loki browsing API and full-text
//! search; bad pushes get a 4xx with a message.

mod common;

use std::collections::BTreeSet;

use common::{Api, Server};
use serde_json::{Value, json};
use tidewatch_model::Labels;
use tidewatch_model::logs::{LogEntry, LogPush, LogStream};

const SECOND_NS: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap()
}

fn push_of(pod: &str, lines: &[(i64, String)]) -> LogPush {
    LogPush {
        streams: vec![LogStream {
            labels: Labels::from_pairs([("namespace", "shop"), ("app", "checkout"), ("pod", pod)]),
            entries: lines.iter().map(|(t, l)| LogEntry::new(*t, l.clone())).collect(),
        }],
    }
}

/// Every (timestamp, line) the search endpoint finds for `q`, over all pages.
async fn search_all(api: &Api, q: &str, start: i64, end: i64) -> (u64, BTreeSet<(String, String)>) {
    let mut found = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let (s, e) = (start.to_string(), end.to_string());
        let mut params = vec![("q", q), ("start", s.as_str()), ("end", e.as_str()), ("limit", "50")];
        if let Some(c) = cursor.as_deref() {
            params.push(("cursor", c));
        }
        let reply = api.get("/api/v1/logs/search", &params, None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = reply.json();
        let total = body["data"]["total"].as_u64().unwrap();
        for hit in body["data"]["hits"].as_array().unwrap() {
            assert_eq!(hit["stream"]["namespace"], "shop");
            found.insert((
                hit["timestamp"].as_str().unwrap().to_string(),
                hit["line"].as_str().unwrap().to_string(),
            ));
        }
        match &body["data"]["next"] {
            Value::String(next) => cursor = Some(next.clone()),
            _ => return (total, found),
        }
    }
}

/// A 16-digit hexadecimal trace id per line: an id word, which the index
/// keeps in its own list rather than in Tantivy.
fn trace_of(request: usize, i: usize) -> String {
    format!(
        "{:016x}",
        ((request * 50 + i) as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

#[tokio::test]
async fn pushed_logs_survive_a_crash_and_a_flush_and_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server.wait_ready().await;
    let api = server.api();
    let base = now_ns() - 600 * SECOND_NS;
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    for request in 0..20 {
        let pod = format!("checkout-{}", request % 3);
        let lines: Vec<(i64, String)> = (0..50)
            .map(|i| {
                let t = base + (request * 50 + i) as i64 * 1_000_000;
                let status = if i % 10 == 0 { 500 } else { 200 };
                (
                    t,
                    format!(
                        "method=GET path=/cart/{i} status={status} request={request}-{i} id={}",
                        trace_of(request, i)
                    ),
                )
            })
            .collect();
        for (t, line) in &lines {
            expected.insert((t.to_string(), line.clone()));
        }
        let reply = api.loki_push(&push_of(&pod, &lines), None).await;
        assert_eq!(reply.status, 204, "{}", reply.body);
    }
    // The JSON form too, with an entry already pushed (stored once).
    let json_body = json!({"streams": [{
        "stream": {"namespace": "shop", "app": "checkout", "pod": "checkout-json"},
        "values": [[(base - SECOND_NS).to_string(), "method=POST path=/pay status=500 request=json"]],
    }]});
    let reply = api
        .client
        .post(format!("{}/loki/api/v1/push", api.base))
        .header("Content-Type", "application/json")
        .body(json_body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 204);
    expected.insert((
        (base - SECOND_NS).to_string(),
        "method=POST path=/pay status=500 request=json".into(),
    ));
    let again = api
        .loki_push(
            &push_of(
                "checkout-0",
                &[(
                    base,
                    format!("method=GET path=/cart/0 status=500 request=0-0 id={}", trace_of(0, 0)),
                )],
            ),
            None,
        )
        .await;
    assert_eq!(again.status, 204);

    // Bad input: a 4xx with a message, nothing stored.
    let reply = api
        .client
        .post(format!("{}/loki/api/v1/push", api.base))
        .header("Content-Type", "application/x-protobuf")
        .body(b"not snappy".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    assert!(!reply.text().await.unwrap().is_empty());

    // SIGKILL, restart: the WAL brings every acknowledged line back.
    server.kill();
    let mut server = Server::start(dir.path());
    server.wait_ready().await;
    let api = server.api();
    let (start, end) = ((base - 2 * SECOND_NS).to_string(), now_ns().to_string());
    // Patterns count lines from the first whole 10 s of the range on, as Loki's do.
    let patterns_start = (base - 20 * SECOND_NS).to_string();
    let check = |label: &'static str| {
        let api = api.clone();
        let expected = expected.clone();
        let (start, end, patterns_start) = (start.clone(), end.clone(), patterns_start.clone());
        async move {
            let reply = api
                .get(
                    "/loki/api/v1/label/pod/values",
                    &[("start", &start), ("end", &end)],
                    None,
                )
                .await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.body);
            assert_eq!(
                reply.json()["data"],
                json!(["checkout-0", "checkout-1", "checkout-2", "checkout-json"]),
                "{label}"
            );
            let stats = api
                .get(
                    "/loki/api/v1/index/stats",
                    &[("query", "{app=\"checkout\"}"), ("start", &start), ("end", &end)],
                    None,
                )
                .await;
            assert_eq!(
                stats.json()["entries"],
                json!(expected.len()),
                "{label}: every line once"
            );
            // Full text: every line with status=500, exactly.
            let (s, e) = (start.parse().unwrap(), end.parse().unwrap());
            let (total, found) = search_all(&api, "\"status=500\"", s, e).await;
            let wanted: BTreeSet<(String, String)> = expected
                .iter()
                .filter(|(_, l)| l.contains("status=500"))
                .cloned()
                .collect();
            assert_eq!(found, wanted, "{label}");
            assert_eq!(total, wanted.len() as u64, "{label}");
            // An id word, whole and as a prefix.
            let trace = trace_of(7, 13);
            for (query, prefix) in [(trace.clone(), &trace[..]), (format!("{}*", &trace[..6]), &trace[..6])] {
                let (total, found) = search_all(&api, &query, s, e).await;
                let wanted: BTreeSet<(String, String)> = expected
                    .iter()
                    .filter(|(_, l)| {
                        l.split([' ', '='])
                            .any(|word| word.starts_with(prefix) && (query.ends_with('*') || word == prefix))
                    })
                    .cloned()
                    .collect();
                assert!(!wanted.is_empty(), "{label}: {query}");
                assert_eq!(found, wanted, "{label}: {query}");
                assert_eq!(total, wanted.len() as u64, "{label}: {query}");
            }
            // LogQL over HTTP: the same lines counted by a metric query.
            let reply = api
                .get(
                    "/loki/api/v1/query",
                    &[
                        (
                            "query",
                            "sum(count_over_time({app=\"checkout\"} |= \"status=500\" [30m]))",
                        ),
                        ("time", &end),
                    ],
                    None,
                )
                .await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.body);
            assert_eq!(
                reply.json()["data"]["result"][0]["value"][1],
                json!(wanted.len().to_string()),
                "{label}"
            );
            // Patterns (Grafana's Logs Drilldown): the GET lines of the three
            // pods are one shape; the single POST line is too rare to show.
            let reply = api
                .get(
                    "/loki/api/v1/patterns",
                    &[
                        ("query", "{app=\"checkout\"}"),
                        ("start", &patterns_start),
                        ("end", &end),
                        ("step", "60s"),
                    ],
                    None,
                )
                .await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.body);
            let body = reply.json();
            let data = body["data"].as_array().unwrap();
            assert_eq!(data.len(), 1, "{label}: {body}");
            assert_eq!(
                data[0]["pattern"], "method=GET path=<_> status=<_> request=<_> id=<_>",
                "{label}"
            );
            assert_eq!(data[0]["level"], "unknown", "{label}");
            let mut lines = 0;
            for sample in data[0]["samples"].as_array().unwrap() {
                assert_eq!(
                    sample[0].as_i64().unwrap() % 60,
                    0,
                    "{label}: steps align to the minute"
                );
                lines += sample[1].as_i64().unwrap();
            }
            let get_lines = expected.iter().filter(|(_, l)| l.starts_with("method=GET")).count();
            assert_eq!(lines, get_lines as i64, "{label}: every GET line counted once");
        }
    };
    check("after the crash").await;
    // Into Parquet + Tantivy blocks, and once more after a clean restart.
    let flush = api.post("/api/v1/admin/flush").await;
    assert!(flush.status / 100 == 2, "{}", flush.body);
    let blocks = std::fs::read_dir(dir.path().join("logs/anonymous/blocks")).map_or(0, |d| d.count());
    assert!(blocks > 0, "the flush wrote log blocks");
    check("after the flush").await;
    server.terminate();
    let server = Server::start(dir.path());
    server.wait_ready().await;
    let api = server.api();
    let check = |label| {
        let api = api.clone();
        async move {
            let (total, found) = search_all(&api, "request", base - 2 * SECOND_NS, now_ns()).await;
            assert_eq!(found.len(), 1001, "{label}: every line has the word request");
            assert_eq!(total, 1001, "{label}");
            let reply = api.get("/api/v1/logs/search", &[("q", "status AND (")], None).await;
            assert_eq!(reply.status, 400, "{label}: {}", reply.body);
        }
    };
    check("from the blocks").await;

    // Live tail over a WebSocket: a line pushed after connecting arrives.
    let query: String = common::percent_encode(r#"{app="checkout"} |= "tail-me""#);
    let url = format!(
        "{}/loki/api/v1/tail?query={query}",
        api.base.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let t = now_ns();
    let reply = api
        .loki_push(&push_of("checkout-live", &[(t, "tail-me please".into())]), None)
        .await;
    assert_eq!(reply.status, 204);
    let message = loop {
        use futures::StreamExt;
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
            .await
            .expect("a tail message within 10 s")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            break serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(
        message["streams"][0]["values"],
        json!([[t.to_string(), "tail-me please"]])
    );
}
