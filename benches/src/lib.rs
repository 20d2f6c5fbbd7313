//! Shared fixtures for the benchmarks: Kubernetes-like series that look like what
//! a cluster's Prometheus sends — cAdvisor and kube-state-metrics series per
//! container and pod, plus an application counter — with counters that grow and
//! gauges that wander, all drawn from a deterministic RNG so every run sees the
//! same data.

use std::collections::HashSet;

use tidewatch_model::seam::{MetricMetadata, MetricType, SeriesSamples, WriteBatch};
use tidewatch_model::{Labels, Sample, TimestampMs};

/// Whether the binary runs as a real benchmark (`cargo bench` passes `--bench`)
/// rather than once per benchmark as a test (`cargo test --all-targets`), where
/// fixtures should be sized down to keep setup short.
pub fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `full` in a benchmark run, `test` when the benchmarks run as tests.
pub fn sized(full: usize, test: usize) -> usize {
    if is_bench_run() { full } else { test }
}

/// Marsaglia's xorshift64: tiny, fast and deterministic; not for cryptography.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    pub fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point; any other seed works.
        XorShift64(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether an event of probability `p` happens.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// `len` characters of Kubernetes' name alphabet (no vowels, as in pod hashes).
    pub fn name_suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

/// How a series' value evolves from one scrape to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Grows by a non-negative amount averaging `rate` per scrape, in steps of `step`.
    Counter { rate: f64, step: f64 },
    /// Wanders around `base` by up to `spread` (relative), in steps of `step`.
    Gauge { base: f64, spread: f64, step: f64 },
    /// A 0/1 gauge that flips with probability `flip` per scrape.
    Flag { flip: f64 },
}

struct MetricDef {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// kube-state-metrics series are per pod, cAdvisor's per container.
    per_container: bool,
    job: Job,
    shape: fn(&mut XorShift64) -> Shape,
}

#[derive(Clone, Copy)]
enum Job {
    Kubelet,
    KubeStateMetrics,
    App,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What each container and pod exposes, roughly as a real cluster's Prometheus scrapes it.
const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative cpu time consumed in seconds.",
        kind: MetricType::Counter,
        per_container: true,
        job: Job::Kubelet,
        shape: |rng| Shape::Counter {
            rate: 0.01 + rng.unit() * 3.0,
            step: 0.0,
        },
    },
    MetricDef {
        name: "container_memory_working_set_bytes",
        help: "Current working set in bytes.",
        kind: MetricType::Gauge,
        per_container: true,
        job: Job::Kubelet,
        shape: |rng| Shape::Gauge {
            base: (0.05 + rng.unit() * 2.0) * GIB,
            spread: 0.1,
            step: 4096.0,
        },
    },
    MetricDef {
        name: "container_memory_rss",
        help: "Size of RSS in bytes.",
        kind: MetricType::Gauge,
        per_container: true,
        job: Job::Kubelet,
        shape: |rng| Shape::Gauge {
            base: (0.03 + rng.unit() * 1.5) * GIB,
            spread: 0.05,
            step: 4096.0,
        },
    },
    MetricDef {
        name: "container_network_receive_bytes_total",
        help: "Cumulative count of bytes received.",
        kind: MetricType::Counter,
        per_container: true,
        job: Job::Kubelet,
        shape: |rng| Shape::Counter {
            rate: rng.unit() * 5e6,
            step: 1.0,
        },
    },
    MetricDef {
        name: "container_network_transmit_bytes_total",
        help: "Cumulative count of bytes transmitted.",
        kind: MetricType::Counter,
        per_container: true,
        job: Job::Kubelet,
        shape: |rng| Shape::Counter {
            rate: rng.unit() * 2e6,
            step: 1.0,
        },
    },
    MetricDef {
        name: "container_fs_usage_bytes",
        help: "Number of bytes that are consumed by the container on this filesystem.",
        kind: MetricType::Gauge,
        per_container: true,
        job: Job::Kubelet,
        shape: |rng| Shape::Gauge {
            base: rng.unit() * 4.0 * GIB,
            spread: 0.01,
            step: 4096.0,
        },
    },
    MetricDef {
        name: "kube_pod_container_status_restarts_total",
        help: "The number of container restarts per container.",
        kind: MetricType::Counter,
        per_container: true,
        job: Job::KubeStateMetrics,
        shape: |_| Shape::Counter {
            rate: 0.0005,
            step: 1.0,
        },
    },
    MetricDef {
        name: "kube_pod_status_ready",
        help: "Describes whether the pod is ready to serve requests.",
        kind: MetricType::Gauge,
        per_container: false,
        job: Job::KubeStateMetrics,
        shape: |_| Shape::Flag { flip: 0.001 },
    },
    MetricDef {
        name: "http_requests_total",
        help: "Total number of HTTP requests served.",
        kind: MetricType::Counter,
        per_container: false,
        job: Job::App,
        shape: |rng| Shape::Counter {
            rate: rng.unit() * 500.0,
            step: 1.0,
        },
    },
];

const APPS: &[&str] = &[
    "checkout",
    "payments",
    "cart",
    "search",
    "frontend",
    "recommendation",
    "shipping",
    "email",
    "ad",
    "currency",
    "auth",
    "inventory",
    "catalog",
    "gateway",
    "notifications",
    "reporting",
];
const SIDECARS: &[&str] = &["istio-proxy", "fluent-bit", "envoy"];

/// Number of namespaces (`team-0` … `team-19`) and nodes (`node-000` …).
pub const NAMESPACES: u64 = 20;
pub const NODES: u64 = 60;

/// A series with its current value.
#[derive(Debug, Clone)]
pub struct SeriesState {
    pub labels: Labels,
    pub shape: Shape,
    pub value: f64,
}

impl SeriesState {
    /// Advances the value by one scrape and returns it.
    pub fn step(&mut self, rng: &mut XorShift64) -> f64 {
        self.value = match self.shape {
            Shape::Counter { rate, step } => {
                let increment = rate * 2.0 * rng.unit();
                let increment = if step > 0.0 {
                    (increment / step).round() * step
                } else {
                    increment
                };
                self.value + increment
            }
            Shape::Gauge { base, spread, step } => {
                let target = base * (1.0 + spread * (2.0 * rng.unit() - 1.0));
                let next = self.value + (target - self.value) * 0.3;
                (next / step).round() * step
            }
            Shape::Flag { flip } => {
                if rng.chance(flip) {
                    1.0 - self.value
                } else {
                    self.value
                }
            }
        };
        self.value
    }
}

/// A synthetic cluster: its series (sorted by labels) and the RNG that drives them.
#[derive(Debug, Clone)]
pub struct Cluster {
    series: Vec<SeriesState>,
    rng: XorShift64,
}

impl Cluster {
    /// Exactly `count` distinct series of pods spread over namespaces and nodes,
    /// sorted by label set.
    pub fn new(count: usize, seed: u64) -> Self {
        let mut rng = XorShift64::new(seed);
        let mut series = Vec::with_capacity(count);
        let mut pod_names = HashSet::new();
        let mut pod = 0u64;
        while series.len() < count {
            let app = APPS[rng.below(APPS.len() as u64) as usize];
            let namespace = format!("team-{}", pod % NAMESPACES);
            let node_index = rng.below(NODES);
            let node = format!("node-{node_index:03}");
            let pod_name = loop {
                let name = format!("{app}-{}-{}", rng.name_suffix(10), rng.name_suffix(5));
                if pod_names.insert((namespace.clone(), name.clone())) {
                    break name;
                }
            };
            let pod_ip = format!(
                "10.{}.{}.{}",
                64 + node_index / 64,
                pod % 250 + 2,
                (pod / 250) % 250 + 2
            );
            let mut containers = vec![app.to_string()];
            if rng.chance(0.4) {
                containers.push(SIDECARS[rng.below(SIDECARS.len() as u64) as usize].to_string());
            }
            for metric in METRICS {
                let (job, instance) = match metric.job {
                    Job::Kubelet => (
                        "kubelet".to_string(),
                        format!("10.0.{}.{}:10250", node_index / 200, node_index % 200 + 10),
                    ),
                    Job::KubeStateMetrics => ("kube-state-metrics".to_string(), "10.96.12.7:8080".to_string()),
                    Job::App => (app.to_string(), format!("{pod_ip}:8080")),
                };
                let per_series: Vec<Option<&str>> = if metric.per_container {
                    containers.iter().map(|c| Some(c.as_str())).collect()
                } else {
                    vec![None]
                };
                for container in per_series {
                    let mut pairs = vec![
                        ("__name__", metric.name.to_string()),
                        ("namespace", namespace.clone()),
                        ("pod", pod_name.clone()),
                        ("node", node.clone()),
                        ("job", job.clone()),
                        ("instance", instance.clone()),
                    ];
                    if let Some(container) = container {
                        pairs.push(("container", container.to_string()));
                    }
                    let shape = (metric.shape)(&mut rng);
                    let value = match shape {
                        Shape::Counter { rate, .. } => (rate * rng.unit() * 10_000.0).round(),
                        Shape::Gauge { base, step, .. } => (base / step).round() * step,
                        Shape::Flag { .. } => 1.0,
                    };
                    series.push(SeriesState {
                        labels: Labels::from_pairs(pairs),
                        shape,
                        value,
                    });
                }
            }
            pod += 1;
        }
        series.truncate(count);
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Cluster { series, rng }
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub fn series(&self) -> &[SeriesState] {
        &self.series
    }

    /// One scrape of the series in `range` at `timestamp`: one sample each.
    pub fn scrape(&mut self, range: std::ops::Range<usize>, timestamp: TimestampMs) -> WriteBatch {
        let Cluster { series, rng } = self;
        WriteBatch {
            series: series[range]
                .iter_mut()
                .map(|s| SeriesSamples {
                    labels: s.labels.clone(),
                    samples: vec![Sample::new(timestamp, s.step(rng))],
                    histograms: Vec::new(),
                    start_timestamps: Default::default(),
                })
                .collect(),
            metadata: Vec::new(),
        }
    }

    /// `samples` scrapes of every series, `interval_ms` apart from `start`, with a
    /// little jitter as real scrapes have; sorted by labels, as blocks want them.
    pub fn history(&mut self, start: TimestampMs, interval_ms: i64, samples: usize) -> Vec<SeriesSamples> {
        let Cluster { series, rng } = self;
        series
            .iter_mut()
            .map(|s| {
                let offset = rng.below(interval_ms.max(1) as u64) as i64;
                let samples = (0..samples as i64)
                    .map(|i| {
                        let jitter = rng.below(5) as i64;
                        Sample::new(start + offset + i * interval_ms + jitter, s.step(rng))
                    })
                    .collect();
                SeriesSamples {
                    labels: s.labels.clone(),
                    samples,
                    histograms: Vec::new(),
                    start_timestamps: Default::default(),
                }
            })
            .collect()
    }

    /// Metadata of every metric family, as remote write 2.0 carries it per series.
    pub fn metadata() -> Vec<MetricMetadata> {
        METRICS
            .iter()
            .map(|m| MetricMetadata {
                metric_family_name: m.name.to_string(),
                metric_type: m.kind,
                help: m.help.to_string(),
                unit: String::new(),
            })
            .collect()
    }
}

/// Milliseconds since the epoch, for timestamps the storage accepts (it rejects
/// samples more than a week old or ten minutes ahead).
pub fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as TimestampMs)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_deterministic_distinct_and_sorted() {
        let a = Cluster::new(3_000, 7);
        let b = Cluster::new(3_000, 7);
        assert_eq!(a.len(), 3_000);
        let labels: Vec<&Labels> = a.series().iter().map(|s| &s.labels).collect();
        assert!(labels.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        assert!(a.series().iter().zip(b.series()).all(|(x, y)| x.labels == y.labels));
        for s in a.series() {
            for name in ["__name__", "namespace", "pod", "node", "job", "instance"] {
                assert!(s.labels.get(name).is_some(), "{} lacks {name}", s.labels);
            }
        }
        assert!(a.series().iter().any(|s| s.labels.get("container").is_some()));
        assert!(a.series().iter().any(|s| s.labels.get("namespace") == Some("team-1")));
    }

    #[test]
    fn counters_never_decrease() {
        let mut cluster = Cluster::new(500, 3);
        let history = cluster.history(0, 15_000, 50);
        for (state, series) in cluster.series().iter().zip(&history) {
            assert!(series.samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
            if matches!(state.shape, Shape::Counter { .. }) {
                assert!(
                    series.samples.windows(2).all(|w| w[0].value <= w[1].value),
                    "{}",
                    state.labels
                );
            }
        }
    }
}
