//! The shipper against a real HTTPS server on 127.0.0.1: what it sends
//! (URL, headers, body), what it does with each answer (accept, refuse for
//! good, retry then spool, drain the spool once the server is back), and
//! that positions only move once a batch is acknowledged.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidewatch_collector::config::{ServerConfig, TlsConfig};
use tidewatch_collector::positions::{FileKey, Fingerprint, Positions};
use tidewatch_collector::ship::{Ack, Endpoint, Kind, Outgoing, ShipStats, Shipper};
use tidewatch_collector::spool::Spool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

mod common;
use common::{TEST_CERT, serve_tls};

const PATIENCE: Duration = Duration::from_secs(20);

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// An HTTPS server answering every request with the current status.
#[derive(Debug, Clone)]
struct Server {
    status: Arc<Mutex<u16>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start() -> (Server, String) {
        let server = Server {
            status: Arc::new(Mutex::new(204)),
            seen: Arc::default(),
        };
        let handle = server.clone();
        let address = serve_tls(move |stream| {
            let handle = handle.clone();
            async move { handle.serve(stream).await }
        })
        .await;
        (
            server,
            format!("https://localhost:{}", address.rsplit(':').next().unwrap()),
        )
    }

    /// Reads one request (head and `Content-Length` body), answers, closes.
    async fn serve(&self, mut stream: impl AsyncRead + AsyncWrite + Unpin) {
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 65536];
        let head_end = loop {
            if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            }
        };
        let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_owned();
        let mut headers = HashMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        while bytes.len() < head_end + length {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            }
        }
        let body = bytes[head_end..head_end + length].to_vec();
        self.seen.lock().unwrap().push(Seen { path, headers, body });
        let status = *self.status.lock().unwrap();
        let text = if status == 400 { "entry too far behind" } else { "" };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn set_status(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn server_config(url: &str, ca_dir: &std::path::Path) -> ServerConfig {
    let ca_file = ca_dir.join("ca.crt");
    std::fs::write(&ca_file, TEST_CERT).unwrap();
    ServerConfig {
        url: url.to_string(),
        tenant: Some("team-a".into()),
        bearer_token: Some("s3cret".into()),
        tls: TlsConfig {
            ca_file: Some(ca_file),
            ..TlsConfig::default()
        },
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    }
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Running {
    tx: mpsc::Sender<Outgoing>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<ShipStats>,
}

fn start(config: &ServerConfig, kind: Kind, spool_dir: &std::path::Path, positions: Option<Positions>) -> Running {
    let (tx, rx) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let stats = Arc::new(ShipStats::default());
    let shipper = Shipper::new(
        Endpoint::new(config, kind).unwrap(),
        Spool::open(spool_dir, 1 << 20).unwrap(),
        positions,
        stats.clone(),
    );
    let task = tokio::spawn(shipper.run(rx, stop_rx));
    Running { tx, stop, task, stats }
}

#[tokio::test]
async fn batches_go_over_tls_with_the_configured_headers() {
    let (server, url) = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&url, dir.path());
    let logs = start(&config, Kind::Logs, &dir.path().join("logs"), None);
    let metrics = start(&config, Kind::Metrics, &dir.path().join("metrics"), None);
    logs.tx
        .send(Outgoing {
            body: b"log body".to_vec(),
            items: 3,
            raw_bytes: 30,
            acks: Vec::new(),
        })
        .await
        .unwrap();
    metrics
        .tx
        .send(Outgoing {
            body: b"metric body".to_vec(),
            items: 5,
            raw_bytes: 0,
            acks: Vec::new(),
        })
        .await
        .unwrap();
    until("both batches", || server.seen().len() == 2).await;
    until("both counted", || {
        logs.stats.items_sent.load(Ordering::Relaxed) == 3 && metrics.stats.items_sent.load(Ordering::Relaxed) == 5
    })
    .await;
    let seen = server.seen();
    let log = seen
        .iter()
        .find(|s| s.path == "/loki/api/v1/push")
        .expect("a Loki push");
    assert_eq!(log.body, b"log body");
    assert_eq!(log.headers["content-type"], "application/x-protobuf");
    assert_eq!(log.headers["authorization"], "Bearer s3cret");
    assert_eq!(log.headers["x-scope-orgid"], "team-a");
    assert!(
        !log.headers.contains_key("content-encoding"),
        "Loki pushes carry snappy without the header"
    );
    let write = seen.iter().find(|s| s.path == "/api/v1/write").expect("a remote write");
    assert_eq!(write.body, b"metric body");
    assert_eq!(write.headers["content-encoding"], "snappy");
    assert_eq!(write.headers["x-prometheus-remote-write-version"], "0.1.0");
    assert_eq!(write.headers["authorization"], "Bearer s3cret");
    for running in [logs, metrics] {
        drop(running.tx);
        running.task.await.unwrap();
    }
}

#[tokio::test]
async fn an_untrusted_certificate_is_never_sent_to() {
    let (server, url) = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = server_config(&url, dir.path());
    config.tls.ca_file = None; // the system roots do not know the test CA
    let shipper = start(&config, Kind::Logs, &dir.path().join("spool"), None);
    shipper
        .tx
        .send(Outgoing {
            body: b"secret".to_vec(),
            items: 1,
            raw_bytes: 6,
            acks: Vec::new(),
        })
        .await
        .unwrap();
    until("the batch spooled", || {
        shipper.stats.batches_spooled.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(
        server.seen().is_empty(),
        "nothing reached a server whose certificate failed"
    );
    assert!(shipper.stats.batches_retried.load(Ordering::Relaxed) >= 1);
    shipper.stop.send(true).unwrap();
    shipper.task.await.unwrap();
}

#[tokio::test]
async fn refused_batches_are_final_failed_ones_spool_then_drain_in_order() {
    let (server, url) = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&url, dir.path());
    let positions = Positions::load(dir.path()).unwrap();
    let key = FileKey { dev: 1, ino: 7 };
    let fingerprint = Fingerprint::of(b"first bytes");
    positions.track(key, fingerprint, 0, std::path::Path::new("/x.log"));
    let ack = |offset| Ack {
        key,
        fingerprint_hash: fingerprint.hash,
        offset,
    };
    let shipper = start(&config, Kind::Logs, &dir.path().join("spool"), Some(positions.clone()));

    // 400: refused for good, counted, the position moves (retrying cannot help).
    server.set_status(400);
    shipper
        .tx
        .send(Outgoing {
            body: b"refused".to_vec(),
            items: 2,
            raw_bytes: 7,
            acks: vec![ack(10)],
        })
        .await
        .unwrap();
    until("the refusal", || {
        shipper.stats.batches_refused.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(shipper.stats.items_refused.load(Ordering::Relaxed), 2);
    until("position after the refusal", || positions.offset(key) == Some(10)).await;

    // 503: retried, then spooled (the position moves: the spool holds it),
    // and batches behind it queue in the spool in order.
    server.set_status(503);
    shipper
        .tx
        .send(Outgoing {
            body: b"one".to_vec(),
            items: 1,
            raw_bytes: 3,
            acks: vec![ack(20)],
        })
        .await
        .unwrap();
    until("the first spooled", || {
        shipper.stats.batches_spooled.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(positions.offset(key), Some(20));
    shipper
        .tx
        .send(Outgoing {
            body: b"two".to_vec(),
            items: 1,
            raw_bytes: 3,
            acks: vec![ack(30)],
        })
        .await
        .unwrap();
    until("the second spooled", || {
        shipper.stats.batches_spooled.load(Ordering::Relaxed) == 2
    })
    .await;
    assert!(shipper.stats.spool_batches.load(Ordering::Relaxed) >= 1);

    // The server is back: the spool drains, oldest first, and empties.
    server.set_status(204);
    until("the spool drained", || {
        shipper.stats.spool_batches.load(Ordering::Relaxed) == 0
    })
    .await;
    let accepted: Vec<Vec<u8>> = server
        .seen()
        .into_iter()
        .map(|s| s.body)
        .filter(|b| b == b"one" || b == b"two")
        .collect();
    let first_two = accepted.iter().position(|b| b == b"two").unwrap();
    assert!(
        accepted[..first_two].iter().any(|b| b == b"one"),
        "one before two: {accepted:?}"
    );
    assert_eq!(shipper.stats.items_sent.load(Ordering::Relaxed), 2);
    assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0);
    drop(shipper.tx);
    shipper.task.await.unwrap();
}
