//! The scrape loop against real HTTP targets on 127.0.0.1: labels, report
//! series, staleness, failing and hanging targets, pods that come and go,
//! and the node target over a fixture directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidewatch_collector::config::{CollectorConfig, ScrapeConfig, StaticConfig, TlsConfig};
use tidewatch_collector::scrape::{SCRAPE_TIMEOUT_HEADER, Scraper};
use tidewatch_collector::{PodDirectory, PodScrapeTarget};
use tidewatch_model::exposition::{self, SCRAPE_ACCEPT_HEADER};
use tidewatch_model::seam::{SeriesSamples, WriteBatch};
use tidewatch_model::{Label, Labels, is_stale_nan};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

mod common;
use common::{TEST_CERT, serve_tls};

/// Longest a test waits for an expected batch before failing: a safety net
/// against hangs, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);

const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the test server answers on one path.
#[derive(Debug, Clone)]
enum Reply {
    Page {
        content_type: &'static str,
        body: Vec<u8>,
    },
    Status(u16),
    /// Accepts the request and never answers.
    Hang,
}

/// A minimal HTTP/1.1 server: reads a request head, answers per path,
/// closes the connection, and records each request's headers.
#[derive(Debug, Clone, Default)]
struct TestServer {
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl TestServer {
    async fn start() -> (TestServer, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = TestServer::default();
        let handle = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handle = handle.clone();
                tokio::spawn(async move { handle.serve(stream).await });
            }
        });
        (server, address)
    }

    fn set(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(path.to_owned(), reply);
    }

    fn page(&self, path: &str, content_type: &'static str, body: &[u8]) {
        self.set(
            path,
            Reply::Page {
                content_type,
                body: body.to_vec(),
            },
        );
    }

    /// The same server behind TLS with the test certificate.
    async fn start_tls() -> (TestServer, String) {
        let server = TestServer::default();
        let handle = server.clone();
        let address = serve_tls(move |stream| {
            let handle = handle.clone();
            async move { handle.serve(stream).await }
        })
        .await;
        (server, address)
    }

    async fn serve(&self, mut stream: impl AsyncRead + AsyncWrite + Unpin) {
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_owned();
        let mut headers = HashMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        self.requests.lock().unwrap().push(headers);
        let reply = self
            .replies
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or(Reply::Status(404));
        let response = match reply {
            Reply::Page { content_type, body } => {
                let mut response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                response.extend_from_slice(&body);
                response
            }
            Reply::Status(code) => {
                format!("HTTP/1.1 {code} Oops\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops\n").into_bytes()
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
        };
        let _ = stream.write_all(&response).await;
        let _ = stream.shutdown().await;
    }
}

#[derive(Debug, Default)]
struct FakePods {
    targets: Mutex<Vec<PodScrapeTarget>>,
}

impl PodDirectory for FakePods {
    fn pod_labels(&self, namespace: &str, pod: &str, _: Option<&str>) -> Option<Arc<[Label]>> {
        (namespace == "shop" && pod == "cart-1").then(|| {
            Arc::from(vec![
                Label::new("workload", "cart"),
                Label::new("workload_kind", "Deployment"),
            ])
        })
    }

    fn scrape_targets(&self) -> Vec<PodScrapeTarget> {
        self.targets.lock().unwrap().clone()
    }
}

fn base_config() -> CollectorConfig {
    let mut config = CollectorConfig {
        cluster: "test-cluster".into(),
        ..CollectorConfig::default()
    };
    config.metrics.scrape_interval = INTERVAL;
    config.metrics.scrape_timeout = TIMEOUT;
    config.metrics.node.enabled = false;
    config.metrics.kubelet.enabled = Some(false);
    config.metrics.annotated_pods = false;
    config
}

fn static_job(config: &mut CollectorConfig, job: &str, address: &str, path: &str) {
    config.metrics.scrape_configs.push(ScrapeConfig {
        job_name: job.into(),
        scrape_interval: None,
        scrape_timeout: None,
        metrics_path: path.into(),
        scheme: "http".into(),
        bearer_token_file: None,
        tls_config: TlsConfig::default(),
        static_configs: vec![StaticConfig {
            targets: vec![address.into()],
            labels: [("env".to_string(), "test".to_string())].into_iter().collect(),
        }],
    });
}

/// A running scraper and the receiving end of its channel.
struct Running {
    batches: mpsc::Receiver<WriteBatch>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<tidewatch_collector::scrape::ScrapeStats>,
}

impl Running {
    fn start(scraper_for: impl FnOnce(mpsc::Sender<WriteBatch>) -> Scraper) -> Running {
        let (sender, batches) = mpsc::channel(16);
        let scraper = scraper_for(sender);
        let stats = scraper.stats();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(scraper.run(shutdown_rx));
        Running {
            batches,
            shutdown,
            task,
            stats,
        }
    }

    /// The next batch that satisfies `wanted`.
    async fn until(&mut self, what: &str, wanted: impl Fn(&WriteBatch) -> bool) -> WriteBatch {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.batches.recv()).await {
                Ok(Some(batch)) if wanted(&batch) => return batch,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("channel closed while waiting for {what}"),
                Err(_) => panic!("no batch with {what} within {PATIENCE:?}"),
            }
        }
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("scraper stops on shutdown")
            .unwrap();
    }
}

fn series<'a>(batch: &'a WriteBatch, name: &str) -> Vec<&'a SeriesSamples> {
    batch
        .series
        .iter()
        .filter(|s| s.labels.metric_name() == Some(name))
        .collect()
}

fn value(batch: &WriteBatch, name: &str) -> Option<f64> {
    series(batch, name).first().map(|s| s.samples[0].value)
}

fn has_live(batch: &WriteBatch, name: &str) -> bool {
    series(batch, name)
        .iter()
        .any(|s| s.samples.iter().all(|x| !is_stale_nan(x.value)))
}

fn stale_names(batch: &WriteBatch) -> Vec<String> {
    let mut names: Vec<String> = batch
        .series
        .iter()
        .filter(|s| s.samples.iter().any(|x| is_stale_nan(x.value)))
        .filter_map(|s| s.labels.metric_name().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn conformance_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("TIDEWATCH_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    };
    dir.join("exposition").is_dir().then_some(dir)
}

/// Pages from the conformance suite, or small built-in ones (announced)
/// when the suite is not checked out next to the workspace.
fn pages() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    if let Some(dir) = conformance_dir() {
        let read = |file: &str| std::fs::read(dir.join("exposition/prometheus-textparse").join(file)).unwrap();
        return vec![
            ("text", TEXT_CONTENT_TYPE, read("promtool-metrics-test.prom")),
            ("text-237", TEXT_CONTENT_TYPE, read("alltypes.237mfs.prom.txt")),
            ("openmetrics", OPENMETRICS_CONTENT_TYPE, read("alltypes.5mfs.om.txt")),
        ];
    }
    eprintln!(
        "SKIPPED: conformance exposition pages (set TIDEWATCH_CONFORMANCE_DIR or check out ../shared/conformance); \
         using built-in pages instead"
    );
    vec![
        (
            "text",
            TEXT_CONTENT_TYPE,
            b"# TYPE a counter\na_total 1\nb{x=\"1\"} 2\nb{x=\"2\"} 3\n".to_vec(),
        ),
        (
            "openmetrics",
            OPENMETRICS_CONTENT_TYPE,
            b"# TYPE c counter\nc_total 1\nc_created 1700000000\n# EOF\n".to_vec(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_arrive_labelled_with_report_series() {
    let (server, address) = TestServer::start().await;
    let mut config = base_config();
    let pages = pages();
    for (name, content_type, body) in &pages {
        let path = format!("/{name}");
        server.page(&path, content_type, body);
        static_job(&mut config, name, &address, &path);
    }
    let mut running = Running::start(|sender| Scraper::new(&config, "node-a", Arc::new(FakePods::default()), sender));

    // The first batch of each job (batches of the jobs interleave).
    let mut first: HashMap<String, WriteBatch> = HashMap::new();
    while first.len() < pages.len() {
        let batch = running.until("a batch", |_| true).await;
        let job = series(&batch, "up")[0].labels.get("job").unwrap().to_owned();
        first.entry(job).or_insert(batch);
    }
    for (name, content_type, body) in &pages {
        let expected = exposition::parse(Some(content_type), body, 0).unwrap();
        let batch = &first[*name];
        let batch = batch.clone();
        assert_eq!(value(&batch, "up"), Some(1.0), "{name}");
        assert_eq!(
            value(&batch, "scrape_samples_scraped"),
            Some(expected.sample_count() as f64),
            "{name}"
        );
        assert_eq!(
            value(&batch, "scrape_samples_post_metric_relabeling"),
            Some(expected.sample_count() as f64)
        );
        assert_eq!(
            value(&batch, "scrape_series_added"),
            Some(expected.series.len() as f64),
            "first scrape: every series is new"
        );
        assert!(value(&batch, "scrape_duration_seconds").is_some_and(|d| d >= 0.0));
        // The page's series plus the five report series, nothing stale.
        assert_eq!(batch.series.len(), expected.series.len() + 5, "{name}");
        assert!(stale_names(&batch).is_empty());
        assert_eq!(batch.metadata.len(), expected.metadata.len());
        for s in &batch.series {
            assert_eq!(s.labels.get("job"), Some(*name), "{:?}", s.labels);
            assert_eq!(s.labels.get("instance"), Some(address.as_str()));
            assert_eq!(s.labels.get("env"), Some("test"));
            assert_eq!(s.labels.get("cluster"), Some("test-cluster"));
            assert_eq!(s.labels.get("node"), Some("node-a"));
        }
        // Every scraped sample is there with its value.
        let mut want: Vec<(Labels, u64)> = Vec::new();
        for s in &expected.series {
            for sample in &s.samples {
                want.push((s.labels.clone(), sample.value.to_bits()));
            }
        }
        let mut got: Vec<(Labels, u64)> = Vec::new();
        for s in &batch.series {
            let name = s.labels.metric_name().unwrap_or_default();
            if name.starts_with("scrape_") || name == "up" {
                continue;
            }
            let original = Labels::from_pairs(
                s.labels
                    .iter()
                    .filter(|l| !["job", "instance", "env", "cluster", "node"].contains(&l.name.as_str()))
                    .map(|l| (l.name.clone(), l.value.clone())),
            );
            for sample in &s.samples {
                got.push((original.clone(), sample.value.to_bits()));
            }
        }
        want.sort();
        got.sort();
        assert_eq!(got, want, "{name}");
    }

    let requests = server.requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    for headers in &requests {
        assert_eq!(headers.get("accept").map(String::as_str), Some(SCRAPE_ACCEPT_HEADER));
        assert_eq!(
            headers
                .get(&SCRAPE_TIMEOUT_HEADER.to_ascii_lowercase())
                .map(String::as_str),
            Some("0.15")
        );
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_labels_become_exported() {
    let (server, address) = TestServer::start().await;
    server.page(
        "/metrics",
        TEXT_CONTENT_TYPE,
        b"m{job=\"inner\",instance=\"pod:1\",env=\"prod\",other=\"x\"} 1\n",
    );
    let mut config = base_config();
    static_job(&mut config, "app", &address, "/metrics");
    let mut running = Running::start(|sender| Scraper::new(&config, "node-a", Arc::new(FakePods::default()), sender));
    let batch = running.until("m", |b| !series(b, "m").is_empty()).await;
    let m = &series(&batch, "m")[0].labels;
    assert_eq!(m.get("job"), Some("app"));
    assert_eq!(m.get("exported_job"), Some("inner"));
    assert_eq!(m.get("instance"), Some(address.as_str()));
    assert_eq!(m.get("exported_instance"), Some("pod:1"));
    assert_eq!(m.get("env"), Some("test"));
    assert_eq!(m.get("exported_env"), Some("prod"));
    assert_eq!(m.get("other"), Some("x"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_series_and_failed_scrapes_get_stale_markers() {
    let (server, address) = TestServer::start().await;
    server.page("/metrics", TEXT_CONTENT_TYPE, b"a 1\nb 2\n");
    let mut config = base_config();
    static_job(&mut config, "app", &address, "/metrics");
    let mut running = Running::start(|sender| Scraper::new(&config, "node-a", Arc::new(FakePods::default()), sender));
    running.until("a and b", |b| has_live(b, "a") && has_live(b, "b")).await;

    // b vanishes: one stale marker for b, a is still there.
    server.page("/metrics", TEXT_CONTENT_TYPE, b"a 1\n");
    let batch = running.until("b stale", |b| stale_names(b) == ["b"]).await;
    assert!(has_live(&batch, "a"));
    assert_eq!(value(&batch, "up"), Some(1.0));
    let marker = &series(&batch, "b")[0];
    assert_eq!(
        marker.labels.get("job"),
        Some("app"),
        "the marker has the series' full labels"
    );
    assert_eq!(
        marker.samples[0].timestamp,
        series(&batch, "up")[0].samples[0].timestamp
    );

    // Each way of failing: up 0, and whatever was there goes stale.
    let failures = [
        ("status 500", Reply::Status(500)),
        (
            "garbage body",
            Reply::Page {
                content_type: TEXT_CONTENT_TYPE,
                body: b"this is { not metrics\n".to_vec(),
            },
        ),
        (
            "openmetrics without # EOF",
            Reply::Page {
                content_type: OPENMETRICS_CONTENT_TYPE,
                body: b"a_total 1\n".to_vec(),
            },
        ),
        ("hanging target", Reply::Hang),
    ];
    for (what, reply) in failures {
        server.page("/metrics", TEXT_CONTENT_TYPE, b"a 1\n");
        running
            .until("a back", |b| has_live(b, "a") && value(b, "up") == Some(1.0))
            .await;
        let errors_before = running.stats.errors_total();
        server.set("/metrics", reply);
        let batch = running.until(what, |b| value(b, "up") == Some(0.0)).await;
        assert_eq!(stale_names(&batch), ["a"], "{what}");
        assert_eq!(value(&batch, "scrape_samples_scraped"), Some(0.0), "{what}");
        assert!(running.stats.errors_total() > errors_before, "{what} is counted");
        // Still failing: nothing left to mark stale, the loop keeps going.
        let again = running.until(what, |b| value(b, "up") == Some(0.0)).await;
        assert!(stale_names(&again).is_empty(), "{what}");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_come_and_go() {
    let (server, address) = TestServer::start().await;
    server.page("/metrics", TEXT_CONTENT_TYPE, b"requests_total{code=\"200\"} 7\n");
    let mut config = base_config();
    config.metrics.annotated_pods = true;
    let pods = Arc::new(FakePods::default());
    pods.targets.lock().unwrap().push(PodScrapeTarget {
        namespace: "shop".into(),
        pod: "cart-1".into(),
        scheme: "http".into(),
        address: address.clone(),
        path: "/metrics".into(),
    });
    let directory: Arc<dyn PodDirectory> = pods.clone();
    let mut running = Running::start(|sender| Scraper::new(&config, "node-a", directory, sender));
    let batch = running.until("pod series", |b| has_live(b, "requests_total")).await;
    let labels = &series(&batch, "requests_total")[0].labels;
    assert_eq!(labels.get("job"), Some("kubernetes-pods"));
    assert_eq!(labels.get("namespace"), Some("shop"));
    assert_eq!(labels.get("pod"), Some("cart-1"));
    assert_eq!(labels.get("workload"), Some("cart"), "pod labels from the directory");
    assert_eq!(labels.get("workload_kind"), Some("Deployment"));
    assert_eq!(labels.get("node"), Some("node-a"));

    pods.targets.lock().unwrap().clear();
    let batch = running
        .until("markers for the removed pod", |b| !stale_names(b).is_empty())
        .await;
    let stale = stale_names(&batch);
    for name in [
        "requests_total",
        "scrape_duration_seconds",
        "scrape_samples_post_metric_relabeling",
        "scrape_samples_scraped",
        "scrape_series_added",
        "up",
    ] {
        assert!(stale.contains(&name.to_owned()), "{name} in {stale:?}");
    }
    assert!(
        batch
            .series
            .iter()
            .all(|s| s.samples.iter().all(|x| is_stale_nan(x.value)))
    );
    assert_eq!(running.stats.targets.load(std::sync::atomic::Ordering::Relaxed), 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_target_reads_the_fixture_directory() {
    let proc_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        proc_dir.path().join("stat"),
        "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 10 0 10 100 0 0 0 0 0 0\nbtime 1700000000\nctxt 5\nprocesses 9\nprocs_running 1\nprocs_blocked 0\n",
    )
    .unwrap();
    std::fs::write(proc_dir.path().join("loadavg"), "0.1 0.2 0.3 1/1 1\n").unwrap();
    let mut config = base_config();
    config.metrics.node.enabled = true;
    config.metrics.node.proc_path = proc_dir.path().to_path_buf();
    config.metrics.node.rootfs_path = proc_dir.path().to_path_buf();
    let mut running = Running::start(|sender| Scraper::new(&config, "node-a", Arc::new(FakePods::default()), sender));
    let batch = running.until("node metrics", |b| has_live(b, "node_load1")).await;
    assert_eq!(value(&batch, "up"), Some(1.0));
    assert_eq!(value(&batch, "node_load5"), Some(0.2));
    let cpu = series(&batch, "node_cpu_seconds_total");
    assert!(!cpu.is_empty());
    for s in &cpu {
        assert_eq!(s.labels.get("job"), Some("node"));
        assert_eq!(s.labels.get("instance"), Some("node-a"));
        assert_eq!(s.labels.get("node"), Some("node-a"));
        assert_eq!(s.labels.get("cluster"), Some("test-cluster"));
    }
    let failed_meminfo = series(&batch, "node_scrape_collector_success")
        .into_iter()
        .find(|s| s.labels.get("collector") == Some("meminfo"))
        .map(|s| s.samples[0].value);
    assert_eq!(failed_meminfo, Some(0.0), "no meminfo in the fixture");
    assert!(
        running
            .stats
            .node_group_errors_total
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert!(
        batch
            .metadata
            .iter()
            .any(|m| m.metric_family_name == "node_cpu_seconds_total")
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_use_the_tls_settings() {
    let (server, address) = TestServer::start_tls().await;
    server.page("/metrics", TEXT_CONTENT_TYPE, b"secure 1\n");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, TEST_CERT).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let mut config = base_config();
    let settings = [
        (
            "with-ca",
            TlsConfig {
                ca_file: Some(ca_file.clone()),
                ..TlsConfig::default()
            },
        ),
        (
            "insecure",
            TlsConfig {
                insecure_skip_verify: true,
                ..TlsConfig::default()
            },
        ),
        // The system roots do not trust a self-signed certificate.
        ("system-roots", TlsConfig::default()),
    ];
    for (job, tls) in settings {
        static_job(&mut config, job, &address, "/metrics");
        let scrape_config = config.metrics.scrape_configs.last_mut().unwrap();
        scrape_config.scheme = "https".into();
        scrape_config.tls_config = tls;
        scrape_config.bearer_token_file = Some(token_file.clone());
    }
    let mut running = Running::start(|sender| Scraper::new(&config, "node-a", Arc::new(FakePods::default()), sender));
    let mut up: HashMap<String, f64> = HashMap::new();
    while up.len() < 3 {
        let batch = running.until("a batch", |_| true).await;
        let job = series(&batch, "up")[0].labels.get("job").unwrap().to_owned();
        up.entry(job).or_insert(value(&batch, "up").unwrap());
    }
    assert_eq!(up["with-ca"], 1.0);
    assert_eq!(up["insecure"], 1.0);
    assert_eq!(up["system-roots"], 0.0, "an untrusted certificate is refused");
    let requests = server.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .all(|h| h.get("authorization").map(String::as_str) == Some("Bearer s3cret"))
    );
    running.stop().await;
}
