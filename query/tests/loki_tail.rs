//! `/loki/api/v1/tail` over a real WebSocket on a loopback port: history
//! first, then entries pushed after connecting, filtered by the query's
//! pipeline; other tenants' pushes never arrive.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tidewatch_model::logs::{LogEntry, LogIngest, LogPush, LogStream, MemLogStore};
use tidewatch_model::{Labels, TenantId};
use tidewatch_query::loki_tail::{TailHub, Tailing, loki_tail_router};
use tokio_tungstenite::tungstenite::Message;

fn push(app: &str, lines: &[(i64, &str)]) -> LogPush {
    LogPush {
        streams: vec![LogStream {
            labels: Labels::from_pairs([("app", app)]),
            entries: lines.iter().map(|&(t, l)| LogEntry::new(t, l)).collect(),
        }],
    }
}

async fn next_message(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a tail message within 10 s")
            .expect("the socket stays open")
            .expect("a valid frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn tail_sends_history_then_live_entries_its_query_keeps() {
    let hub = Arc::new(TailHub::default());
    let store = Arc::new(Tailing::new(Arc::new(MemLogStore::new()), hub.clone()));
    let tenant = TenantId::default_tenant();
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    store
        .push(
            &tenant,
            push("api", &[(now - 2_000, "old GET /a"), (now - 1_000, "old POST /b")]),
        )
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = loki_tail_router(store.clone(), hub);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let query: String = form_urlencoded::byte_serialize(br#"{app="api"} |= "GET""#).collect();
    let url = format!("ws://{address}/loki/api/v1/tail?query={query}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let history = next_message(&mut socket).await;
    assert_eq!(
        history,
        json!({"streams": [{"stream": {"app": "api"}, "values": [[(now - 2_000).to_string(), "old GET /a"]]}], "dropped_entries": null})
    );
    // Another tenant's push, a non-matching stream and a filtered-out line never arrive.
    store
        .push(&TenantId::parse("other").unwrap(), push("api", &[(now, "other GET")]))
        .await
        .unwrap();
    store.push(&tenant, push("db", &[(now, "db GET")])).await.unwrap();
    store
        .push(
            &tenant,
            push("api", &[(now + 1, "new POST /c"), (now + 2, "new GET /d")]),
        )
        .await
        .unwrap();
    let live = next_message(&mut socket).await;
    assert_eq!(
        live["streams"],
        json!([{"stream": {"app": "api"}, "values": [[(now + 2).to_string(), "new GET /d"]]}])
    );
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn metric_queries_cannot_be_tailed() {
    let hub = Arc::new(TailHub::default());
    let store = Arc::new(MemLogStore::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, loki_tail_router(store, hub)).await.unwrap() });
    let query: String = form_urlencoded::byte_serialize(br#"count_over_time({app="api"}[1m])"#).collect();
    let error = tokio_tungstenite::connect_async(format!("ws://{address}/loki/api/v1/tail?query={query}"))
        .await
        .unwrap_err();
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 400),
        other => panic!("expected an HTTP 400, got {other}"),
    }
}
