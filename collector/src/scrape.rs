//! The scrape loop: targets in, [`WriteBatch`]es out, with Prometheus'
//! semantics so that what reaches the server is what a Prometheus scraping
//! the same targets would have stored.
//!
//! What it guarantees:
//!
//! - One batch per scrape of a target, sent on the channel the shipper
//!   drains; a full channel makes the loop wait (backpressure), never drop.
//! - Every series carries `job`, `instance` and the target's labels (a
//!   scraped label that collides is kept as `exported_<name>`, Prometheus'
//!   `honor_labels: false`), plus the canonical `cluster` and `node` labels
//!   and, for series naming a `namespace` and `pod`, the pod's labels from the
//!   [`PodDirectory`] — added, never overriding what the series has.
//! - Every scrape reports `up`, `scrape_duration_seconds`,
//!   `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling` and
//!   `scrape_series_added`, as Prometheus does.
//! - Staleness as in Prometheus: a series in the previous scrape but not in
//!   this one gets a stale marker at this scrape's time; a failed scrape
//!   (connection error, timeout, non-2xx, bad body) has `up` 0 and marks
//!   every previous series stale; a target that disappears (a pod deleted)
//!   gets markers for all its last series. Series with timestamps of their
//!   own are not tracked, as in Prometheus.
//! - A failing or hanging target costs at most its timeout, is logged with
//!   the target and the reason, and counted in [`ScrapeStats`]; the loop and
//!   all other targets carry on.
//!
//! On shutdown no stale markers are written: the collector that replaces
//! this one continues the same series, and markers would cut them for the
//! length of the restart.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidewatch_model::exposition::{self, Scrape};
use tidewatch_model::seam::{MetricMetadata, MetricType, SeriesSamples, WriteBatch};
use tidewatch_model::{Clock, Label, Labels, METRIC_NAME, Sample, SystemClock, TimestampMs, stale_nan};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{CollectorConfig, MetricsConfig, TlsConfig};
use crate::error::Error;
use crate::labels;
use crate::node::{DEFAULT_MOUNT_TIMEOUT, NodeCollector};
use crate::{PodDirectory, PodScrapeTarget};

mod http;

pub use http::{MAX_BODY_BYTES, SCRAPE_TIMEOUT_HEADER};

/// Names of the series Prometheus adds to every scrape.
pub mod report {
    pub const UP: &str = "up";
    pub const SCRAPE_DURATION_SECONDS: &str = "scrape_duration_seconds";
    pub const SCRAPE_SAMPLES_SCRAPED: &str = "scrape_samples_scraped";
    pub const SCRAPE_SAMPLES_POST_METRIC_RELABELING: &str = "scrape_samples_post_metric_relabeling";
    pub const SCRAPE_SERIES_ADDED: &str = "scrape_series_added";
}

/// Job of the node's own metrics.
pub const JOB_NODE: &str = "node";
/// Job of the kubelet's endpoints.
pub const JOB_KUBELET: &str = "kubelet";
/// Job of pods annotated `prometheus.io/scrape: "true"`.
pub const JOB_KUBERNETES_PODS: &str = "kubernetes-pods";
/// The kubelet endpoints' label telling them apart (kube-prometheus' convention).
pub const METRICS_PATH_LABEL: &str = "metrics_path";
/// Prefix given to a scraped label that collides with a target label.
pub const EXPORTED_PREFIX: &str = "exported_";
/// The kubelet's metric endpoints.
pub const KUBELET_PATHS: [&str; 2] = ["/metrics/cadvisor", "/metrics/resource"];
/// The kubelet's port when no URL is configured.
pub const KUBELET_PORT: u16 = 10250;

/// Where a target's metrics come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An HTTP GET of `scheme://address path`.
    Http {
        scheme: String,
        address: String,
        path: String,
    },
    /// The node's own metrics, read in process.
    Node,
}

/// One thing to scrape.
#[derive(Debug, Clone)]
pub struct Target {
    pub job: String,
    pub endpoint: Endpoint,
    /// The labels every series of this target gets, `job` and `instance`
    /// included.
    pub labels: Labels,
    pub interval: Duration,
    pub timeout: Duration,
    /// Read on every scrape and sent as `Authorization: Bearer …`.
    pub bearer_token_file: Option<PathBuf>,
    pub tls: TlsConfig,
}

impl Target {
    /// The URL scraped, `None` for the node target.
    pub fn url(&self) -> Option<String> {
        match &self.endpoint {
            Endpoint::Http { scheme, address, path } => Some(format!("{scheme}://{address}{path}")),
            Endpoint::Node => None,
        }
    }

    /// The identity of a target across re-evaluations: a target whose key
    /// changes is a new target (its old series go stale).
    fn key(&self) -> String {
        format!(
            "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.job, self.endpoint, self.labels, self.interval, self.timeout, self.bearer_token_file, self.tls
        )
    }

    /// How the target is named in logs.
    fn describe(&self) -> String {
        self.url().unwrap_or_else(|| format!("{} (in process)", self.job))
    }
}

/// Builds a target's label set: `extra` first (static labels win over the
/// defaults, as in Prometheus), then `job` and `instance` when not given.
fn target_labels(job: &str, instance: &str, extra: &BTreeMap<String, String>) -> Labels {
    let mut pairs: BTreeMap<String, String> = extra.clone();
    pairs.entry(labels::JOB.to_owned()).or_insert_with(|| job.to_owned());
    pairs
        .entry(labels::INSTANCE.to_owned())
        .or_insert_with(|| instance.to_owned());
    Labels::from_pairs(pairs)
}

/// Prometheus refuses a timeout longer than the interval; we shorten it,
/// so one slow scrape never overlaps the next.
fn clamp_timeout(timeout: Duration, interval: Duration) -> Duration {
    timeout.min(interval)
}

/// Targets of the `scrape_configs` jobs.
pub fn static_targets(metrics: &MetricsConfig) -> Vec<Target> {
    let mut targets = Vec::new();
    for job in &metrics.scrape_configs {
        let interval = job.scrape_interval.unwrap_or(metrics.scrape_interval);
        let timeout = clamp_timeout(job.scrape_timeout.unwrap_or(metrics.scrape_timeout), interval);
        for group in &job.static_configs {
            for address in &group.targets {
                targets.push(Target {
                    job: job.job_name.clone(),
                    endpoint: Endpoint::Http {
                        scheme: job.scheme.clone(),
                        address: address.clone(),
                        path: job.metrics_path.clone(),
                    },
                    labels: target_labels(&job.job_name, address, &group.labels),
                    interval,
                    timeout,
                    bearer_token_file: job.bearer_token_file.clone(),
                    tls: job.tls_config.clone(),
                });
            }
        }
    }
    targets
}

/// The kubelet's `/metrics/cadvisor` and `/metrics/resource`, at the
/// configured URL, else `https://$NODE_IP:10250`, else at the node's name.
pub fn kubelet_targets(metrics: &MetricsConfig, node_name: &str) -> Vec<Target> {
    let base = match &metrics.kubelet.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = std::env::var("NODE_IP")
                .ok()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| node_name.to_owned());
            // An IPv6 node address needs brackets in a URL.
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            format!("https://{host}:{KUBELET_PORT}")
        }
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base.as_str()));
    let (address, prefix) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let timeout = clamp_timeout(metrics.scrape_timeout, metrics.scrape_interval);
    let mut targets = Vec::new();
    for path in KUBELET_PATHS {
        let mut extra = BTreeMap::new();
        extra.insert(METRICS_PATH_LABEL.to_owned(), path.to_owned());
        targets.push(Target {
            job: JOB_KUBELET.to_owned(),
            endpoint: Endpoint::Http {
                scheme: scheme.to_owned(),
                address: address.to_owned(),
                path: format!("{prefix}{path}"),
            },
            labels: target_labels(JOB_KUBELET, address, &extra),
            interval: metrics.scrape_interval,
            timeout,
            bearer_token_file: Some(metrics.kubelet.bearer_token_file.clone()),
            tls: metrics.kubelet.tls.clone(),
        });
    }
    targets
}

/// Annotated pods, with `namespace` and `pod` as target labels.
pub fn pod_targets(metrics: &MetricsConfig, pods: &[PodScrapeTarget]) -> Vec<Target> {
    let timeout = clamp_timeout(metrics.scrape_timeout, metrics.scrape_interval);
    let mut targets = Vec::new();
    for pod in pods {
        let mut extra = BTreeMap::new();
        extra.insert(labels::NAMESPACE.to_owned(), pod.namespace.clone());
        extra.insert(labels::POD.to_owned(), pod.pod.clone());
        let path = if pod.path.starts_with('/') {
            pod.path.clone()
        } else {
            format!("/{}", pod.path)
        };
        targets.push(Target {
            job: JOB_KUBERNETES_PODS.to_owned(),
            endpoint: Endpoint::Http {
                scheme: pod.scheme.clone(),
                address: pod.address.clone(),
                path,
            },
            labels: target_labels(JOB_KUBERNETES_PODS, &pod.address, &extra),
            interval: metrics.scrape_interval,
            timeout,
            bearer_token_file: None,
            tls: TlsConfig::default(),
        });
    }
    targets
}

/// The node's own metrics: job `node`, instance the node's name.
pub fn node_target(metrics: &MetricsConfig, node_name: &str) -> Target {
    Target {
        job: JOB_NODE.to_owned(),
        endpoint: Endpoint::Node,
        labels: target_labels(JOB_NODE, node_name, &BTreeMap::new()),
        interval: metrics.scrape_interval,
        timeout: clamp_timeout(metrics.scrape_timeout, metrics.scrape_interval),
        bearer_token_file: None,
        tls: TlsConfig::default(),
    }
}

// ---------------------------------------------------------------------------
// Counters.

/// Why a scrape failed; the `reason` label of the error counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// No connection, TLS handshake failure, reset.
    Connection,
    /// No complete answer within the timeout.
    Timeout,
    /// A status other than 2xx.
    HttpStatus,
    /// The body could not be read, or was larger than the limit.
    Body,
    /// The body is not valid exposition text.
    Parse,
    /// The bearer token file could not be read.
    Auth,
    /// The target's TLS settings could not be loaded.
    Tls,
}

impl FailureKind {
    const ALL: [FailureKind; 7] = [
        FailureKind::Connection,
        FailureKind::Timeout,
        FailureKind::HttpStatus,
        FailureKind::Body,
        FailureKind::Parse,
        FailureKind::Auth,
        FailureKind::Tls,
    ];

    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connection => "connection",
            FailureKind::Timeout => "timeout",
            FailureKind::HttpStatus => "http_status",
            FailureKind::Body => "body",
            FailureKind::Parse => "parse",
            FailureKind::Auth => "auth",
            FailureKind::Tls => "tls",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A failed scrape: why, and what happened.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    message: String,
}

pub const SCRAPE_TARGETS: &str = "tidewatch_collector_scrape_targets";
pub const SCRAPES_TOTAL: &str = "tidewatch_collector_scrapes_total";
pub const SCRAPE_ERRORS_TOTAL: &str = "tidewatch_collector_scrape_errors_total";
pub const SCRAPE_SAMPLES_TOTAL: &str = "tidewatch_collector_scrape_samples_total";
pub const SCRAPE_STALE_MARKERS_TOTAL: &str = "tidewatch_collector_scrape_stale_markers_total";
pub const SCRAPE_BATCHES_SENT_TOTAL: &str = "tidewatch_collector_scrape_batches_sent_total";
pub const NODE_GROUP_ERRORS_TOTAL: &str = "tidewatch_collector_node_group_errors_total";
/// Label of [`SCRAPE_ERRORS_TOTAL`].
pub const REASON_LABEL: &str = "reason";

/// The scrape loop's counters, shared with whoever serves the collector's own
/// `/metrics`. All counts are since start.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    /// Targets currently scraped (a gauge).
    pub targets: AtomicU64,
    pub scrapes_total: AtomicU64,
    /// Failed scrapes, by reason (see [`ScrapeStats::errors_total`]).
    errors_by_reason: [AtomicU64; FailureKind::ALL.len()],
    /// Samples read from targets (before the report series are added).
    pub samples_total: AtomicU64,
    pub stale_markers_total: AtomicU64,
    pub batches_sent_total: AtomicU64,
    /// Node metric groups that were skipped (missing or unparseable file).
    pub node_group_errors_total: AtomicU64,
}

impl ScrapeStats {
    /// Failed scrapes over all reasons.
    pub fn errors_total(&self) -> u64 {
        self.errors_by_reason.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn count_failure(&self, kind: FailureKind) {
        self.errors_by_reason[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as series with one sample at `now_ms`, with metadata,
    /// for the collector's own `/metrics`.
    pub fn write_batch(&self, now_ms: TimestampMs) -> WriteBatch {
        let mut batch = WriteBatch::default();
        let mut add = |name: &str, kind: MetricType, help: &str, extra: Option<(&str, &str)>, value: u64| {
            if !batch.metadata.iter().any(|m| m.metric_family_name == name) {
                batch.metadata.push(MetricMetadata {
                    metric_family_name: name.to_owned(),
                    metric_type: kind,
                    help: help.to_owned(),
                    unit: String::new(),
                });
            }
            let mut pairs = vec![(METRIC_NAME.to_owned(), name.to_owned())];
            if let Some((label, label_value)) = extra {
                pairs.push((label.to_owned(), label_value.to_owned()));
            }
            batch.series.push(SeriesSamples::floats(
                Labels::from_pairs(pairs),
                vec![Sample::new(now_ms, value as f64)],
            ));
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        add(
            SCRAPE_TARGETS,
            MetricType::Gauge,
            "Targets currently scraped.",
            None,
            load(&self.targets),
        );
        add(
            SCRAPES_TOTAL,
            MetricType::Counter,
            "Scrapes attempted.",
            None,
            load(&self.scrapes_total),
        );
        for kind in FailureKind::ALL {
            add(
                SCRAPE_ERRORS_TOTAL,
                MetricType::Counter,
                "Scrapes that failed, by reason.",
                Some((REASON_LABEL, kind.as_str())),
                load(&self.errors_by_reason[kind.index()]),
            );
        }
        add(
            SCRAPE_SAMPLES_TOTAL,
            MetricType::Counter,
            "Samples read from targets.",
            None,
            load(&self.samples_total),
        );
        add(
            SCRAPE_STALE_MARKERS_TOTAL,
            MetricType::Counter,
            "Staleness markers written for vanished series.",
            None,
            load(&self.stale_markers_total),
        );
        add(
            SCRAPE_BATCHES_SENT_TOTAL,
            MetricType::Counter,
            "Batches handed to the shipper.",
            None,
            load(&self.batches_sent_total),
        );
        add(
            NODE_GROUP_ERRORS_TOTAL,
            MetricType::Counter,
            "Node metric groups skipped because their file was missing or unparseable.",
            None,
            load(&self.node_group_errors_total),
        );
        batch
    }
}

// ---------------------------------------------------------------------------
// The loop.

/// What every target loop shares.
#[derive(Debug)]
struct Shared {
    /// `cluster` and `node`, added to every series that lacks them.
    canonical: Vec<Label>,
    pods: Arc<dyn PodDirectory>,
    sender: mpsc::Sender<WriteBatch>,
    stats: Arc<ScrapeStats>,
    clock: Arc<dyn Clock>,
    node: Option<NodeCollector>,
}

/// Why a target loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// The target is gone: mark its series stale.
    Removed,
    /// The collector stops: leave the series as they are.
    Shutdown,
}

#[derive(Debug)]
struct RunningTarget {
    stop: oneshot::Sender<StopReason>,
    task: tokio::task::JoinHandle<()>,
}

/// Scrapes every target into batches on the shipper's channel.
#[derive(Debug)]
pub struct Scraper {
    metrics: MetricsConfig,
    node_name: String,
    kubelet: bool,
    shared: Arc<Shared>,
}

impl Scraper {
    /// A scraper for `config.metrics`. The kubelet is scraped when
    /// `metrics.kubelet.enabled` says so, or — unset — when running in a
    /// cluster (`KUBERNETES_SERVICE_HOST` is set).
    pub fn new(
        config: &CollectorConfig,
        node_name: impl Into<String>,
        pods: Arc<dyn PodDirectory>,
        sender: mpsc::Sender<WriteBatch>,
    ) -> Self {
        let node_name = node_name.into();
        let metrics = config.metrics.clone();
        let kubelet = metrics
            .kubelet
            .enabled
            .unwrap_or_else(|| std::env::var_os("KUBERNETES_SERVICE_HOST").is_some());
        // A hanging mount must not hold the node target past its scrape timeout.
        let node_timeout = clamp_timeout(metrics.scrape_timeout, metrics.scrape_interval);
        let node = metrics
            .node
            .enabled
            .then(|| NodeCollector::new(&metrics.node).with_mount_timeout(DEFAULT_MOUNT_TIMEOUT.min(node_timeout)));
        let canonical = vec![
            Label::new(labels::CLUSTER, config.cluster.clone()),
            Label::new(labels::NODE, node_name.clone()),
        ];
        Scraper {
            metrics,
            node_name,
            kubelet,
            shared: Arc::new(Shared {
                canonical,
                pods,
                sender,
                stats: Arc::new(ScrapeStats::default()),
                clock: Arc::new(SystemClock),
                node,
            }),
        }
    }

    /// Takes sample timestamps from `clock` instead of the wall clock.
    /// Scheduling still uses tokio's timer.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.shared_mut().clock = clock;
        self
    }

    /// Uses `node` for the node target (e.g. with a shorter mount timeout).
    pub fn with_node_collector(mut self, node: NodeCollector) -> Self {
        self.shared_mut().node = Some(node);
        self
    }

    fn shared_mut(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.shared).expect("configured before run, while not shared")
    }

    /// The counters, to be served on the collector's own `/metrics`.
    pub fn stats(&self) -> Arc<ScrapeStats> {
        Arc::clone(&self.shared.stats)
    }

    /// The targets as of now: static jobs, the kubelet, annotated pods and
    /// the node. Called again every `scrape_interval` by [`Scraper::run`].
    pub fn targets(&self) -> Vec<Target> {
        if !self.metrics.enabled {
            return Vec::new();
        }
        let mut targets = static_targets(&self.metrics);
        if self.kubelet {
            targets.extend(kubelet_targets(&self.metrics, &self.node_name));
        }
        if self.metrics.annotated_pods {
            targets.extend(pod_targets(&self.metrics, &self.shared.pods.scrape_targets()));
        }
        if self.shared.node.is_some() {
            targets.push(node_target(&self.metrics, &self.node_name));
        }
        targets
    }

    /// Runs until `shutdown` turns true (or its sender is dropped): every
    /// `scrape_interval` the target set is re-evaluated, new targets get a
    /// loop of their own and vanished ones are stopped with stale markers.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut running: HashMap<String, RunningTarget> = HashMap::new();
        let mut reevaluate = tokio::time::interval(self.metrics.scrape_interval);
        reevaluate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = reevaluate.tick() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
            }
            if *shutdown.borrow() {
                break;
            }
            let targets = self.targets();
            let mut wanted: HashMap<String, Target> = HashMap::with_capacity(targets.len());
            for target in targets {
                wanted.insert(target.key(), target);
            }
            let vanished: Vec<String> = running.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
            for key in vanished {
                if let Some(target) = running.remove(&key) {
                    tracing::info!(target = %key, "scrape target removed");
                    // The loop writes its stale markers and ends on its own.
                    let _ = target.stop.send(StopReason::Removed);
                }
            }
            for (key, target) in wanted {
                if running.contains_key(&key) {
                    continue;
                }
                tracing::info!(job = %target.job, target = %target.describe(), "scrape target added");
                let (stop, stop_rx) = oneshot::channel();
                let task = tokio::spawn(target_loop(Arc::clone(&self.shared), target, stop_rx));
                running.insert(key, RunningTarget { stop, task });
            }
            self.shared.stats.targets.store(running.len() as u64, Ordering::Relaxed);
        }
        for (_, target) in running.drain() {
            let _ = target.stop.send(StopReason::Shutdown);
            let _ = target.task.await;
        }
        self.shared.stats.targets.store(0, Ordering::Relaxed);
    }
}

/// The series a target reported last time, and whether each is tracked for
/// staleness (series with their own timestamps are not).
#[derive(Debug, Default)]
struct TargetState {
    previous: HashMap<Labels, bool>,
}

/// How a target is reached: an HTTP client, the node collector, or the
/// reason it cannot be (bad TLS files), reported on every scrape.
enum Source {
    Http { client: http::HttpClient, url: String },
    Node(NodeCollector),
    Broken(String),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http { url, .. } => f.debug_struct("Http").field("url", url).finish(),
            Source::Node(_) => f.write_str("Node"),
            Source::Broken(reason) => f.debug_tuple("Broken").field(reason).finish(),
        }
    }
}

fn source_for(shared: &Shared, target: &Target) -> Source {
    match &target.endpoint {
        Endpoint::Node => match &shared.node {
            Some(node) => Source::Node(node.clone()),
            None => Source::Broken("node metrics are disabled".into()),
        },
        Endpoint::Http { scheme, .. } => {
            let url = target.url().unwrap_or_default();
            match http::client(&target.tls, scheme == "https") {
                Ok(client) => Source::Http { client, url },
                Err(error) => Source::Broken(error.to_string()),
            }
        }
    }
}

async fn target_loop(shared: Arc<Shared>, target: Target, mut stop: oneshot::Receiver<StopReason>) {
    let source = source_for(&shared, &target);
    let mut state = TargetState::default();
    // Spread targets over the interval (Prometheus does the same with a hash
    // of the target), so they do not all hit the network at once.
    let interval_ms = target.interval.as_millis().max(1) as u64;
    let offset = Duration::from_millis(xxhash_rust::xxh3::xxh3_64(target.key().as_bytes()) % interval_ms);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, target.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            reason = &mut stop => {
                finish(&shared, &target, &mut state, reason.unwrap_or(StopReason::Shutdown)).await;
                return;
            }
            _ = ticker.tick() => {}
        }
        let batch = scrape_once(&shared, &target, &source, &mut state).await;
        tokio::select! {
            biased;
            reason = &mut stop => {
                finish(&shared, &target, &mut state, reason.unwrap_or(StopReason::Shutdown)).await;
                return;
            }
            sent = shared.sender.send(batch) => {
                if sent.is_err() {
                    tracing::debug!(target = %target.describe(), "shipper gone, scrape loop ends");
                    return;
                }
                shared.stats.batches_sent_total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Ends a target's loop: a removed target's last series get stale markers.
async fn finish(shared: &Shared, target: &Target, state: &mut TargetState, reason: StopReason) {
    if reason != StopReason::Removed {
        return;
    }
    let now_ms = shared.clock.now_ms();
    let mut batch = WriteBatch::default();
    let markers = stale_markers(
        state.previous.drain().filter(|(_, tracked)| *tracked).map(|(l, _)| l),
        now_ms,
        &mut batch,
    );
    if markers == 0 {
        return;
    }
    shared.stats.stale_markers_total.fetch_add(markers, Ordering::Relaxed);
    tracing::debug!(target = %target.describe(), markers, "stale markers for a removed target");
    if shared.sender.send(batch).await.is_ok() {
        shared.stats.batches_sent_total.fetch_add(1, Ordering::Relaxed);
    }
}

fn stale_markers(series: impl Iterator<Item = Labels>, now_ms: TimestampMs, batch: &mut WriteBatch) -> u64 {
    let mut count = 0;
    for labels in series {
        batch
            .series
            .push(SeriesSamples::floats(labels, vec![Sample::new(now_ms, stale_nan())]));
        count += 1;
    }
    count
}

/// Reads the source: the parsed page, or why it failed.
async fn read_source(
    source: &Source,
    target: &Target,
    start_ms: TimestampMs,
    stats: &ScrapeStats,
) -> Result<Scrape, Failure> {
    match source {
        Source::Broken(reason) => Err(Failure {
            kind: FailureKind::Tls,
            message: reason.clone(),
        }),
        Source::Node(node) => {
            let node_scrape = node.collect(start_ms).await;
            stats
                .node_group_errors_total
                .fetch_add(node_scrape.failed.len() as u64, Ordering::Relaxed);
            Ok(node_scrape.scrape)
        }
        Source::Http { client, url } => {
            let fetched = http::fetch(client, target, url).await?;
            // A large page takes milliseconds to parse: off the runtime.
            let parsed = tokio::task::spawn_blocking(move || {
                exposition::parse(fetched.content_type.as_deref(), &fetched.body, start_ms)
            })
            .await;
            match parsed {
                Ok(Ok(scrape)) => Ok(scrape),
                Ok(Err(error)) => Err(Failure {
                    kind: FailureKind::Parse,
                    message: error.to_string(),
                }),
                Err(join_error) => Err(Failure {
                    kind: FailureKind::Parse,
                    message: format!("parser task failed: {join_error}"),
                }),
            }
        }
    }
}

/// One scrape of one target, as the batch to send.
async fn scrape_once(shared: &Shared, target: &Target, source: &Source, state: &mut TargetState) -> WriteBatch {
    let start_ms = shared.clock.now_ms();
    let started = Instant::now();
    shared.stats.scrapes_total.fetch_add(1, Ordering::Relaxed);
    let result = read_source(source, target, start_ms, &shared.stats).await;
    let duration = started.elapsed();

    let mut batch = WriteBatch::default();
    let mut current: HashMap<Labels, bool> = HashMap::new();
    let mut samples_scraped = 0usize;
    let mut series_added = 0usize;
    let up = match result {
        Ok(scrape) => {
            samples_scraped = scrape.sample_count();
            shared
                .stats
                .samples_total
                .fetch_add(samples_scraped as u64, Ordering::Relaxed);
            let mut relabeler = Relabeler::new(&target.labels, &shared.canonical, shared.pods.as_ref());
            batch.series.reserve(scrape.series.len() + 5);
            for series in scrape.series {
                let labels = relabeler.relabel(&series.labels);
                // Only series stamped with the scrape time are tracked: one
                // with timestamps of its own may legitimately skip scrapes.
                let tracked = series.samples.iter().all(|s| s.timestamp == start_ms);
                if !state.previous.contains_key(&labels) && !current.contains_key(&labels) {
                    series_added += 1;
                }
                current.insert(labels.clone(), tracked);
                batch.series.push(SeriesSamples {
                    labels,
                    samples: series.samples,
                    histograms: series.histograms,
                    start_timestamps: Default::default(),
                });
            }
            batch.metadata = scrape.metadata;
            1.0
        }
        Err(failure) => {
            shared.stats.count_failure(failure.kind);
            let error = Error::Scrape {
                target: target.describe(),
                message: failure.message,
            };
            tracing::warn!(job = %target.job, target = %target.describe(), reason = failure.kind.as_str(), error = %error, "scrape failed");
            0.0
        }
    };

    // The report series, labelled like the target's own series.
    let report_values = [
        (report::UP, up),
        (report::SCRAPE_DURATION_SECONDS, duration.as_secs_f64()),
        (report::SCRAPE_SAMPLES_SCRAPED, samples_scraped as f64),
        (report::SCRAPE_SAMPLES_POST_METRIC_RELABELING, samples_scraped as f64),
        (report::SCRAPE_SERIES_ADDED, series_added as f64),
    ];
    for (name, value) in report_values {
        let labels = report_labels(name, &target.labels, &shared.canonical);
        current.insert(labels.clone(), true);
        batch
            .series
            .push(SeriesSamples::floats(labels, vec![Sample::new(start_ms, value)]));
    }

    let vanished = state
        .previous
        .iter()
        .filter(|(labels, tracked)| **tracked && !current.contains_key(*labels))
        .map(|(labels, _)| labels.clone());
    let markers = stale_markers(vanished, start_ms, &mut batch);
    shared.stats.stale_markers_total.fetch_add(markers, Ordering::Relaxed);
    state.previous = current;
    batch
}

fn report_labels(name: &str, target_labels: &Labels, canonical: &[Label]) -> Labels {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(target_labels.len() + canonical.len() + 1);
    pairs.push((METRIC_NAME.to_owned(), name.to_owned()));
    for label in target_labels.iter() {
        pairs.push((label.name.clone(), label.value.clone()));
    }
    for label in canonical {
        if target_labels.get(&label.name).is_none() {
            pairs.push((label.name.clone(), label.value.clone()));
        }
    }
    Labels::from_pairs(pairs)
}

/// Applies target labels, canonical labels and pod labels to scraped series.
/// Pod lookups are cached for one scrape: a cAdvisor page has hundreds of
/// series per pod.
struct Relabeler<'a> {
    target_labels: &'a Labels,
    canonical: &'a [Label],
    pods: &'a dyn PodDirectory,
    pod_cache: HashMap<(String, String), Option<Arc<[Label]>>>,
}

impl<'a> Relabeler<'a> {
    fn new(target_labels: &'a Labels, canonical: &'a [Label], pods: &'a dyn PodDirectory) -> Self {
        Relabeler {
            target_labels,
            canonical,
            pods,
            pod_cache: HashMap::new(),
        }
    }

    fn relabel(&mut self, scraped: &Labels) -> Labels {
        let mut pairs: Vec<Label> = scraped.iter().cloned().collect();
        // honor_labels: false — the target's labels win; a scraped label of
        // the same name survives as exported_<name> (shortest names first,
        // prefixing again while the name is taken, as Prometheus does).
        let mut conflicts: Vec<Label> = Vec::new();
        for target_label in self.target_labels.iter() {
            if let Some(position) = pairs.iter().position(|l| l.name == target_label.name) {
                conflicts.push(pairs.swap_remove(position));
            }
        }
        for target_label in self.target_labels.iter() {
            pairs.push(target_label.clone());
        }
        conflicts.sort_by_key(|l| l.name.len());
        for conflict in conflicts {
            let mut name = conflict.name.clone();
            loop {
                name = format!("{EXPORTED_PREFIX}{name}");
                if !pairs.iter().any(|l| l.name == name) {
                    break;
                }
            }
            pairs.push(Label::new(name, conflict.value));
        }
        for label in self.canonical {
            if !pairs.iter().any(|l| l.name == label.name) {
                pairs.push(label.clone());
            }
        }
        let namespace = pairs
            .iter()
            .find(|l| l.name == labels::NAMESPACE)
            .map(|l| l.value.clone());
        let pod = pairs.iter().find(|l| l.name == labels::POD).map(|l| l.value.clone());
        if let (Some(namespace), Some(pod)) = (namespace, pod) {
            let pods = self.pods;
            let pod_labels = self
                .pod_cache
                .entry((namespace, pod))
                .or_insert_with_key(|(namespace, pod)| pods.pod_labels(namespace, pod, None));
            if let Some(pod_labels) = pod_labels {
                for label in pod_labels.iter() {
                    if !pairs.iter().any(|l| l.name == label.name) {
                        pairs.push(label.clone());
                    }
                }
            }
        }
        Labels::from_pairs(pairs.into_iter().map(|l| (l.name, l.value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoPods;
    use crate::config::{ScrapeConfig, StaticConfig};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())))
    }

    #[derive(Debug)]
    struct OnePod;

    impl PodDirectory for OnePod {
        fn pod_labels(&self, namespace: &str, pod: &str, _: Option<&str>) -> Option<Arc<[Label]>> {
            (namespace == "shop" && pod == "cart-1").then(|| {
                Arc::from(vec![
                    Label::new("node", "pod-node-wins-not"),
                    Label::new("workload", "cart"),
                    Label::new("workload_kind", "Deployment"),
                ])
            })
        }
    }

    #[test]
    fn colliding_labels_are_exported() {
        let target = labels(&[("instance", "10.0.0.1:8080"), ("job", "app"), ("env", "dev")]);
        let canonical = vec![Label::new("cluster", "c1"), Label::new("node", "n1")];
        let mut relabeler = Relabeler::new(&target, &canonical, &NoPods);
        let scraped = labels(&[
            ("__name__", "m"),
            ("job", "inner"),
            ("instance", "x"),
            ("exported_instance", "taken"),
            ("node", "exporter-node"),
        ]);
        let out = relabeler.relabel(&scraped);
        assert_eq!(
            out,
            labels(&[
                ("__name__", "m"),
                ("cluster", "c1"),
                ("env", "dev"),
                ("exported_exported_instance", "x"),
                ("exported_instance", "taken"),
                ("exported_job", "inner"),
                ("instance", "10.0.0.1:8080"),
                ("job", "app"),
                ("node", "exporter-node"),
            ])
        );
    }

    #[test]
    fn pod_labels_are_added_without_overriding() {
        let target = labels(&[("instance", "k:10250"), ("job", "kubelet")]);
        let canonical = vec![Label::new("cluster", "c1"), Label::new("node", "n1")];
        let mut relabeler = Relabeler::new(&target, &canonical, &OnePod);
        let out = relabeler.relabel(&labels(&[
            ("__name__", "container_cpu_usage_seconds_total"),
            ("namespace", "shop"),
            ("pod", "cart-1"),
            ("workload", "scraped-wins"),
        ]));
        assert_eq!(out.get("workload"), Some("scraped-wins"));
        assert_eq!(out.get("workload_kind"), Some("Deployment"));
        assert_eq!(out.get("node"), Some("n1"), "canonical node before pod labels");
        let unknown = relabeler.relabel(&labels(&[("__name__", "x"), ("namespace", "a"), ("pod", "b")]));
        assert_eq!(unknown.get("workload"), None);
        assert_eq!(relabeler.pod_cache.len(), 2);
    }

    #[test]
    fn targets_follow_prometheus_conventions() {
        let mut metrics = MetricsConfig::default();
        metrics.scrape_configs.push(ScrapeConfig {
            job_name: "app".into(),
            scrape_interval: Some(Duration::from_secs(5)),
            scrape_timeout: Some(Duration::from_secs(30)),
            metrics_path: "/stats".into(),
            scheme: "http".into(),
            bearer_token_file: None,
            tls_config: TlsConfig::default(),
            static_configs: vec![StaticConfig {
                targets: vec!["a:1".into(), "b:2".into()],
                labels: [
                    ("env".to_string(), "dev".to_string()),
                    ("instance".to_string(), "named".to_string()),
                ]
                .into_iter()
                .collect(),
            }],
        });
        let targets = static_targets(&metrics);
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].url().as_deref(), Some("http://a:1/stats"));
        assert_eq!(
            targets[0].timeout,
            Duration::from_secs(5),
            "timeout clamped to the interval"
        );
        assert_eq!(
            targets[1].labels,
            labels(&[("env", "dev"), ("instance", "named"), ("job", "app")]),
            "a static instance label wins over the address"
        );

        metrics.kubelet.url = Some("https://10.1.2.3:10250/".into());
        let kubelet = kubelet_targets(&metrics, "node-a");
        assert_eq!(kubelet.len(), 2);
        assert_eq!(
            kubelet[0].url().as_deref(),
            Some("https://10.1.2.3:10250/metrics/cadvisor")
        );
        assert_eq!(
            kubelet[1].labels,
            labels(&[
                ("instance", "10.1.2.3:10250"),
                ("job", "kubelet"),
                ("metrics_path", "/metrics/resource")
            ])
        );
        assert!(kubelet[0].bearer_token_file.is_some());

        let pods = pod_targets(
            &metrics,
            &[PodScrapeTarget {
                namespace: "shop".into(),
                pod: "cart-1".into(),
                scheme: "http".into(),
                address: "10.4.0.7:9102".into(),
                path: "metrics".into(),
            }],
        );
        assert_eq!(pods[0].url().as_deref(), Some("http://10.4.0.7:9102/metrics"));
        assert_eq!(
            pods[0].labels,
            labels(&[
                ("instance", "10.4.0.7:9102"),
                ("job", "kubernetes-pods"),
                ("namespace", "shop"),
                ("pod", "cart-1")
            ])
        );
        let node = node_target(&metrics, "node-a");
        assert_eq!(node.labels, labels(&[("instance", "node-a"), ("job", "node")]));
        assert_eq!(node.url(), None);
    }

    #[test]
    fn stats_render_as_series() {
        let stats = ScrapeStats::default();
        stats.scrapes_total.fetch_add(3, Ordering::Relaxed);
        stats.count_failure(FailureKind::Timeout);
        stats.count_failure(FailureKind::Timeout);
        stats.count_failure(FailureKind::Parse);
        assert_eq!(stats.errors_total(), 3);
        let batch = stats.write_batch(42);
        let find = |name: &str, reason: Option<&str>| {
            batch
                .series
                .iter()
                .find(|s| s.labels.metric_name() == Some(name) && s.labels.get(REASON_LABEL) == reason)
                .map(|s| s.samples[0].value)
        };
        assert_eq!(find(SCRAPES_TOTAL, None), Some(3.0));
        assert_eq!(find(SCRAPE_ERRORS_TOTAL, Some("timeout")), Some(2.0));
        assert_eq!(find(SCRAPE_ERRORS_TOTAL, Some("parse")), Some(1.0));
        assert_eq!(find(SCRAPE_ERRORS_TOTAL, Some("connection")), Some(0.0));
        assert_eq!(
            batch
                .metadata
                .iter()
                .filter(|m| m.metric_family_name == SCRAPE_ERRORS_TOTAL)
                .count(),
            1
        );
        // What it renders parses back: the collector's /metrics is valid text.
        let text = exposition::render_text(&batch.series, &batch.metadata);
        assert!(exposition::parse_text(text.as_bytes(), 42).is_ok());
    }
}
