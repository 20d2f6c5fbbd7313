//! Logs end to end: every push acknowledged with 204 before a SIGKILL in the
//! middle of a concurrent push load is found after the restart, exactly once,
//! and nothing that was never sent appears.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use tidewatch_model::Labels;
use tidewatch_model::logs::{LogEntry, LogPush, LogStream};

const REQUESTS: usize = 400;
const STREAMS: usize = 8;
const LINES_PER_STREAM: usize = 25;
const TASKS: usize = 4;

/// Request `i`: `LINES_PER_STREAM` lines in each of `STREAMS` streams, each
/// line naming its request, stream and position.
fn crash_push(base: i64, i: usize) -> LogPush {
    LogPush {
        streams: (0..STREAMS)
            .map(|s| LogStream {
                labels: Labels::from_pairs([("job", "crash"), ("pod", &format!("pod-{s}"))]),
                entries: (0..LINES_PER_STREAM)
                    .map(|k| {
                        let t = base + (i * LINES_PER_STREAM + k) as i64 * 1_000;
                        LogEntry::new(t, format!("request={i} stream={s} line={k}"))
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_pushes_survive_sigkill_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server.wait_ready().await;
    let api = server.api();
    let base = chrono::Utc::now().timestamp_nanos_opt().unwrap() - 300 * 1_000_000_000;

    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    let refused: Arc<Mutex<Vec<(usize, u16, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (api, next, acked, refused) = (api.clone(), next.clone(), acked.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    break;
                }
                let sent = api
                    .client
                    .post(format!("{}/loki/api/v1/push", api.base))
                    .header("Content-Type", "application/x-protobuf")
                    .body(tidewatch_model::loki_push::encode_push_protobuf(&crash_push(base, i)))
                    .send()
                    .await;
                // A 204 counts only once the whole answer has arrived.
                let answer = match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.text().await.map(|body| (status, body))
                    }
                    Err(e) => Err(e),
                };
                match answer {
                    Ok((204, _)) => {
                        acked.lock().unwrap().insert(i);
                    }
                    Ok((status, body)) => refused.lock().unwrap().push((i, status, body)),
                    Err(_) => {} // the server was killed mid-request
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < REQUESTS / 2 && next.load(Ordering::SeqCst) < REQUESTS {
        assert!(Instant::now() < deadline, "too few pushes acknowledged in 60 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    for task in tasks {
        task.await.expect("sender task panicked");
    }
    let refused = std::mem::take(&mut *refused.lock().unwrap());
    assert!(refused.is_empty(), "pushes refused by a live server: {refused:?}");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= REQUESTS / 2, "acked {}", acked.len());

    let server = Server::start(dir.path());
    server.wait_ready().await;
    let api = server.api();
    let end = (base + (REQUESTS * LINES_PER_STREAM) as i64 * 1_000 + 1).to_string();
    let start = base.to_string();
    let reply = api
        .get(
            "/loki/api/v1/query_range",
            &[
                ("query", r#"{job="crash"}"#),
                ("start", start.as_str()),
                ("end", end.as_str()),
                ("limit", "1000000"),
                ("direction", "forward"),
            ],
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut seen: BTreeSet<(usize, usize, usize)> = BTreeSet::new();
    let mut requests_present: BTreeSet<usize> = BTreeSet::new();
    for stream in reply.json()["data"]["result"].as_array().unwrap() {
        let pod = stream["stream"]["pod"].as_str().unwrap().to_string();
        for value in stream["values"].as_array().unwrap() {
            let line = value[1].as_str().unwrap();
            let fields: Vec<usize> = line
                .split(' ')
                .map(|f| f.split_once('=').unwrap().1.parse().unwrap())
                .collect();
            let (i, s, k) = (fields[0], fields[1], fields[2]);
            assert_eq!(pod, format!("pod-{s}"), "a line in the wrong stream: {line}");
            let t = base + (i * LINES_PER_STREAM + k) as i64 * 1_000;
            assert_eq!(value[0].as_str().unwrap(), t.to_string(), "{line}");
            assert!(seen.insert((i, s, k)), "a line twice: {line}");
            requests_present.insert(i);
        }
    }
    for i in &acked {
        for s in 0..STREAMS {
            for k in 0..LINES_PER_STREAM {
                assert!(
                    seen.contains(&(*i, s, k)),
                    "acknowledged line lost: request {i} stream {s} line {k}"
                );
            }
        }
    }
    eprintln!(
        "log crash test: {} acknowledged, {} requests found after restart",
        acked.len(),
        requests_present.len()
    );
}
