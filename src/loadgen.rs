//! `tidewatch bench remote-write`: a load generator sending realistic
//! Kubernetes series as remote write, in Prometheus' live shape (one sample
//! per series per request, 15 s apart) or a backfill shape (many samples per
//! series per request), and measuring the receiver's CPU and memory from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tidewatch_model::remote_write::{encode_v1, encode_v2};
use tidewatch_model::seam::{SeriesSamples, WriteBatch};
use tidewatch_model::{Labels, Sample, TimestampMs};

use crate::loadgen_histograms::NativeHistogramSet;

pub(crate) const SCRAPE_INTERVAL_MS: i64 = 15_000;
const HISTOGRAM_BOUNDS: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
];

/// Options of a run.
#[derive(Debug, Clone)]
pub(crate) struct LoadOptions {
    pub(crate) url: String,
    pub(crate) series: usize,
    pub(crate) scrapes: usize,
    pub(crate) backfill: bool,
    pub v2: bool,
    pub(crate) series_per_request: usize,
    pub(crate) concurrency: usize,
    pub(crate) receiver_pid: Option<u32>,
    pub(crate) tenant: Option<String>,
    /// Timestamp of the first scrape; defaults to now minus the run's span.
    pub(crate) start_ms: Option<TimestampMs>,
    /// Send `http_request_duration_seconds` native histograms instead of the
    /// float series (`series` then counts histogram series).
    pub(crate) native_histograms: bool,
    /// Exponential schema of the native histograms.
    pub(crate) histogram_schema: i32,
    /// Seed of the generated values.
    pub(crate) seed: u64,
}

/// The seed of `tidewatch bench remote-write` when none is given; every
/// figure in BENCHMARKS.md was measured on the data it generates.
pub(crate) const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// A deterministic xorshift generator, so runs are comparable.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A generator from any seed (xorshift is stuck at 0, so 0 takes the default).
    pub(crate) fn seeded(seed: u64) -> Rng {
        Rng(if seed == 0 { DEFAULT_SEED } else { seed })
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The labels every generated series of one pod shares.
#[derive(Debug, Clone)]
pub(crate) struct Pod {
    namespace: String,
    node: String,
    name: String,
    instance: String,
}

impl Pod {
    /// The `pod_index`th pod: 12 namespaces, 40 nodes, 97 apps, three pods each.
    pub(crate) fn nth(pod_index: usize) -> Pod {
        let app = format!("app-{}", (pod_index / 3) % 97);
        Pod {
            namespace: format!("team-{}", pod_index % 12),
            node: format!("node-{}", pod_index % 40),
            name: format!("{app}-{:x}-{}", pod_index * 2654435761 % 0xfffff, pod_index % 7),
            instance: format!(
                "10.{}.{}.{}:8080",
                pod_index / 65536 % 256,
                pod_index / 256 % 256,
                pod_index % 256
            ),
        }
    }

    /// A series of this pod: metric `name` scraped by `job` from `container`.
    pub(crate) fn labels(&self, name: &str, job: &str, container: &str) -> Vec<(String, String)> {
        vec![
            ("__name__".into(), name.into()),
            ("namespace".into(), self.namespace.clone()),
            ("pod".into(), self.name.clone()),
            ("container".into(), container.into()),
            ("node".into(), self.node.clone()),
            ("job".into(), job.into()),
            ("instance".into(), self.instance.clone()),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Increments by a random amount with this mean each scrape.
    Counter(f64),
    /// Random walk around this level.
    Gauge(f64),
    /// A histogram bucket counter: cumulative share of requests at this bucket.
    Bucket(f64),
}

/// The generated series set with per-series state.
#[derive(Debug)]
pub(crate) struct SeriesSet {
    labels: Vec<Labels>,
    kinds: Vec<Kind>,
    values: Vec<f64>,
    rng: Rng,
}

impl SeriesSet {
    /// About `count` series shaped like cAdvisor, kube and application metrics.
    pub(crate) fn kubernetes(count: usize, seed: u64) -> SeriesSet {
        let mut labels = Vec::with_capacity(count);
        let mut kinds = Vec::with_capacity(count);
        let mut pod_index = 0usize;
        'outer: loop {
            let pod = Pod::nth(pod_index);
            let base = |name: &str, job: &str, container: &str| pod.labels(name, job, container);
            let mut push = |pairs: Vec<(String, String)>, kind: Kind| -> bool {
                labels.push(Labels::from_pairs(pairs));
                kinds.push(kind);
                labels.len() >= count
            };
            for container in ["app", "sidecar"] {
                if push(
                    base("container_cpu_usage_seconds_total", "cadvisor", container),
                    Kind::Counter(0.4),
                ) {
                    break 'outer;
                }
                if push(
                    base("container_memory_working_set_bytes", "cadvisor", container),
                    Kind::Gauge(2.5e8),
                ) {
                    break 'outer;
                }
                if push(
                    base("container_network_receive_bytes_total", "cadvisor", container),
                    Kind::Counter(4.0e4),
                ) {
                    break 'outer;
                }
            }
            for (method, code, rate) in [("GET", "200", 40.0), ("GET", "500", 0.5), ("POST", "200", 8.0)] {
                let mut pairs = base("http_requests_total", "app", "app");
                pairs.push(("method".into(), method.into()));
                pairs.push(("code".into(), code.into()));
                if push(pairs, Kind::Counter(rate)) {
                    break 'outer;
                }
            }
            for (i, bound) in HISTOGRAM_BOUNDS.iter().enumerate() {
                let mut pairs = base("http_request_duration_seconds_bucket", "app", "app");
                pairs.push(("le".into(), (*bound).into()));
                let share = (i + 1) as f64 / HISTOGRAM_BOUNDS.len() as f64;
                if push(pairs, Kind::Bucket(share)) {
                    break 'outer;
                }
            }
            if push(
                base("http_request_duration_seconds_sum", "app", "app"),
                Kind::Counter(4.0),
            ) {
                break 'outer;
            }
            if push(
                base("http_request_duration_seconds_count", "app", "app"),
                Kind::Counter(48.0),
            ) {
                break 'outer;
            }
            pod_index += 1;
        }
        let values = vec![0.0; labels.len()];
        SeriesSet {
            labels,
            kinds,
            values,
            rng: Rng::seeded(seed),
        }
    }

    /// Advances every series one scrape and returns the new values.
    fn scrape(&mut self) -> &[f64] {
        let mut requests_step = 0.0;
        for i in 0..self.values.len() {
            let noise = self.rng.unit();
            self.values[i] = match self.kinds[i] {
                // Counters move in whole units when their rate is large, as real ones do.
                Kind::Counter(mean) if mean >= 1.0 => self.values[i] + (mean * 2.0 * noise).round(),
                Kind::Counter(mean) => self.values[i] + ((mean * 2.0 * noise) * 1000.0).round() / 1000.0,
                Kind::Gauge(level) => {
                    // Memory-like: starts near the level, then moves by a few pages
                    // per scrape (often not at all), as a working set does.
                    let current = if self.values[i] == 0.0 {
                        (level * (0.8 + 0.4 * noise) / 4096.0).round() * 4096.0
                    } else {
                        self.values[i]
                    };
                    if noise < 0.3 {
                        current
                    } else {
                        let step = ((self.rng.unit() - 0.5) * 0.02 * level / 4096.0).round() * 4096.0;
                        (current + step).clamp(0.5 * level, 1.5 * level)
                    }
                }
                Kind::Bucket(share) => {
                    if share <= 1.0 / HISTOGRAM_BOUNDS.len() as f64 + f64::EPSILON {
                        requests_step = (60.0 * noise).round();
                    }
                    self.values[i] + (requests_step * share).round()
                }
            };
        }
        &self.values
    }
}

/// Per-process figures read from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessSample {
    pub(crate) cpu_seconds: f64,
    pub(crate) peak_rss_bytes: u64,
}

pub(crate) fn read_process(pid: u32) -> Option<ProcessSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(ProcessSample {
        cpu_seconds: ticks / 100.0,
        peak_rss_bytes: peak_kib * 1024,
    })
}

/// What a run sends: the float series or native histograms.
#[derive(Debug)]
enum Generator {
    Floats(SeriesSet),
    NativeHistograms(NativeHistogramSet),
}

impl Generator {
    fn for_options(options: &LoadOptions) -> anyhow::Result<Generator> {
        Ok(if options.native_histograms {
            Generator::NativeHistograms(NativeHistogramSet::kubernetes(
                options.series,
                options.histogram_schema,
                options.seed,
            )?)
        } else {
            Generator::Floats(SeriesSet::kubernetes(options.series, options.seed))
        })
    }

    fn labels(&self) -> &[Labels] {
        match self {
            Generator::Floats(set) => &set.labels,
            Generator::NativeHistograms(set) => set.labels(),
        }
    }

    /// One empty [`SeriesSamples`] per series, for [`Self::scrape_into`].
    fn empty_series(&self) -> Vec<SeriesSamples> {
        self.labels()
            .iter()
            .map(|labels| SeriesSamples::floats(labels.clone(), Vec::new()))
            .collect()
    }

    /// Advances every series one scrape and appends its new sample or
    /// histogram at `t` to `out[i]`.
    fn scrape_into(&mut self, t: TimestampMs, out: &mut [SeriesSamples]) {
        match self {
            Generator::Floats(set) => {
                for (series, value) in out.iter_mut().zip(set.scrape()) {
                    series.samples.push(Sample::new(t, *value));
                }
            }
            Generator::NativeHistograms(set) => set.scrape_into(t, out),
        }
    }
}

/// Builds every request body up front, so the sender's own work is not
/// measured; each body comes with the samples and histograms it carries.
fn build_requests(options: &LoadOptions, generator: &mut Generator, start: TimestampMs) -> Vec<(Vec<u8>, u64)> {
    let mut bodies = Vec::new();
    let mut encode_in_batches = |series: Vec<SeriesSamples>| {
        let mut series = series.into_iter();
        loop {
            let batch = WriteBatch {
                series: series.by_ref().take(options.series_per_request).collect(),
                metadata: Vec::new(),
            };
            if batch.series.is_empty() {
                break;
            }
            let body = if options.v2 {
                encode_v2(&batch)
            } else {
                encode_v1(&batch)
            };
            bodies.push((body, (batch.sample_count() + batch.histogram_count()) as u64));
        }
    };
    if options.backfill {
        // Backfill: every scrape of a slice of series in one request.
        let mut history = generator.empty_series();
        for series in &mut history {
            series.samples.reserve(options.scrapes);
        }
        for scrape in 0..options.scrapes {
            generator.scrape_into(start + scrape as i64 * SCRAPE_INTERVAL_MS, &mut history);
        }
        encode_in_batches(history);
    } else {
        // Live: one sample per series per request, scrape after scrape.
        for scrape in 0..options.scrapes {
            let mut current = generator.empty_series();
            generator.scrape_into(start + scrape as i64 * SCRAPE_INTERVAL_MS, &mut current);
            encode_in_batches(current);
        }
    }
    bodies
}

/// Runs the load and prints a summary.
pub(crate) async fn run(options: LoadOptions) -> anyhow::Result<()> {
    if options.series == 0 || options.scrapes == 0 || options.series_per_request == 0 || options.concurrency == 0 {
        bail!("--series, --scrapes, --series-per-request and --concurrency must be positive");
    }
    let mut generator = Generator::for_options(&options)?;
    let now = chrono::Utc::now().timestamp_millis();
    let start = options
        .start_ms
        .unwrap_or(now - options.scrapes as i64 * SCRAPE_INTERVAL_MS);
    let bodies = build_requests(&options, &mut generator, start);
    let series_count = generator.labels().len();
    let total_samples: u64 = bodies.iter().map(|(_, n)| n).sum();
    let total_bytes: usize = bodies.iter().map(|(b, _)| b.len()).sum();
    let kind = match &generator {
        Generator::Floats(_) => "floats".to_string(),
        Generator::NativeHistograms(set) => format!(
            "native-histograms schema={} container_restarts={}",
            options.histogram_schema,
            set.restarts()
        ),
    };
    println!(
        "shape={} protocol={} kind={kind} seed={} series={series_count} scrapes={} requests={} samples={total_samples} compressed_bytes={total_bytes}",
        if options.backfill { "backfill" } else { "live" },
        if options.v2 { "2.0" } else { "1.0" },
        options.seed,
        options.scrapes,
        bodies.len(),
    );
    let client = reqwest::Client::builder().build().context("building HTTP client")?;
    let content_type = if options.v2 {
        "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    } else {
        "application/x-protobuf"
    };
    let before = options.receiver_pid.and_then(read_process);
    let started = Instant::now();
    let failures = Arc::new(AtomicU64::new(0));
    // In the live shape, scrape k+1 must not overtake scrape k: send one scrape's
    // requests concurrently, then the next.
    let per_wave = if options.backfill {
        bodies.len()
    } else {
        series_count.div_ceil(options.series_per_request)
    };
    let version = if options.v2 { "2.0.0" } else { "0.1.0" };
    let mut headers = vec![
        ("Content-Type", content_type.to_string()),
        ("Content-Encoding", "snappy".to_string()),
        ("X-Prometheus-Remote-Write-Version", version.to_string()),
    ];
    if let Some(tenant) = &options.tenant {
        headers.push(("X-Scope-OrgID", tenant.clone()));
    }
    let mut bodies = bodies.into_iter().map(|(body, _)| body).peekable();
    while bodies.peek().is_some() {
        let wave: Vec<Vec<u8>> = bodies.by_ref().take(per_wave).collect();
        post_all(&client, &options.url, &headers, wave, options.concurrency, &failures).await?;
    }
    let elapsed = started.elapsed();
    let after = options.receiver_pid.and_then(read_process);
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "elapsed_s={:.3} samples_per_s={:.0} failed_requests={failed}",
        elapsed.as_secs_f64(),
        total_samples as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
    );
    if let (Some(before), Some(after)) = (before, after) {
        let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.01);
        println!(
            "receiver_cpu_s={cpu:.2} samples_per_cpu_s={:.0} receiver_peak_rss_bytes={} peak_rss_bytes_per_series={:.0}",
            total_samples as f64 / cpu,
            after.peak_rss_bytes,
            after.peak_rss_bytes as f64 / series_count as f64
        );
    }
    if failed > 0 {
        bail!("{failed} requests failed");
    }
    Ok(())
}

/// POSTs every body to `url` with `headers`, `concurrency` at a time;
/// failed requests are counted in `failures` (the first few printed).
pub(crate) async fn post_all(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
    bodies: Vec<Vec<u8>>,
    concurrency: usize,
    failures: &Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let client = client.clone();
        let url = url.to_string();
        let headers = headers.to_vec();
        let failures = failures.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(body) = next else { break };
                let mut request = client.post(&url).body(body);
                for (name, value) in &headers {
                    request = request.header(*name, value.as_str());
                }
                match request.send().await {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => {
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {status}: {}", text.trim());
                        }
                    }
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {e}");
                        }
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.context("sender task")?;
    }
    Ok(())
}

/// Waits until `url` answers, for scripts that start a server and then load it.
pub(crate) async fn wait_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not answer within {timeout:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_the_requested_number_of_distinct_series() {
        let set = SeriesSet::kubernetes(1000, DEFAULT_SEED);
        assert_eq!(set.labels.len(), 1000);
        let distinct: std::collections::HashSet<&Labels> = set.labels.iter().collect();
        assert_eq!(distinct.len(), 1000);
    }

    #[test]
    fn counters_never_decrease() {
        let mut set = SeriesSet::kubernetes(200, DEFAULT_SEED);
        let first = set.scrape().to_vec();
        let second = set.scrape().to_vec();
        for (i, kind) in set.kinds.iter().enumerate() {
            if matches!(kind, Kind::Counter(_) | Kind::Bucket(_)) {
                assert!(second[i] >= first[i]);
            }
        }
    }
}
