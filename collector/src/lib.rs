//! Tidewatch's node agent, run as `tidewatch collector` (a Kubernetes
//! DaemonSet) or inside `tidewatch up`.
//!
//! It tails container log files (CRI and Docker json-file formats), scrapes
//! metrics (the node from `/proc` and `/sys`, the kubelet, annotated pods,
//! static targets), attaches the same canonical labels to both, and ships logs
//! through the Loki push API and metrics through Prometheus remote write.
//!
//! What it guarantees: a log file position is checkpointed only once the
//! lines before it were acknowledged by the server or written to the on-disk
//! spool, so a crash or restart neither loses nor repeats lines (the server
//! drops an identical entry sent twice). When the spool is full the oldest
//! batches are dropped and counted, never silently. Bad input — garbage lines,
//! invalid UTF-8, oversized lines, unreadable files, malformed or hanging
//! scrape targets — is counted and logged, and the collector keeps running.
//!
//! It depends only on `tidewatch-model`: never on storage or query.

pub mod config;
pub mod error;
pub mod kubernetes;
pub mod logline;
pub mod multiline;
pub mod node;
pub mod positions;
pub mod run;
pub mod scrape;
pub mod selfmetrics;
pub mod ship;
pub mod spool;
pub mod tail;
mod tls;

pub use config::CollectorConfig;
pub use error::{Error, Result};
pub use run::RunningCollector;

use std::fmt;
use std::sync::Arc;

use tidewatch_model::Label;

/// The `User-Agent` of every request the collector makes.
pub const USER_AGENT: &str = concat!("tidewatch-collector/", env!("CARGO_PKG_VERSION"));

/// Canonical label names, the same on logs and metrics.
pub mod labels {
    pub const CLUSTER: &str = "cluster";
    pub const NAMESPACE: &str = "namespace";
    pub const POD: &str = "pod";
    pub const POD_UID: &str = "pod_uid";
    pub const CONTAINER: &str = "container";
    pub const NODE: &str = "node";
    pub const WORKLOAD_KIND: &str = "workload_kind";
    pub const WORKLOAD: &str = "workload";
    /// `stdout` or `stderr`, on log streams only.
    pub const STREAM: &str = "stream";
    /// The file a stream was read from, for logs outside Kubernetes' layout.
    pub const FILENAME: &str = "filename";
    pub const JOB: &str = "job";
    pub const INSTANCE: &str = "instance";
}

/// A container, as far as its log file's name tells.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    pub namespace: String,
    pub pod: String,
    /// From the `/var/log/pods/<namespace>_<pod>_<uid>/` directory the
    /// symlink points into, when it does.
    pub pod_uid: Option<String>,
    pub container: String,
    pub container_id: Option<String>,
}

/// What the cluster knows about pods: the seam between the Kubernetes watcher
/// and the parts that label logs and metrics. Outside a cluster the collector
/// uses [`NoPods`].
pub trait PodDirectory: Send + Sync + fmt::Debug {
    /// Labels beyond namespace/pod/container for one pod: `pod_uid`,
    /// `workload_kind`, `workload` and the configured pod labels and
    /// annotations, sorted by name. `pod_uid`, when given, must match: a pod
    /// name reused by a new pod never yields the old pod's labels, and a
    /// deleted pod stays known for a grace period so its files still drain
    /// with its labels. `None` when the pod is unknown.
    fn pod_labels(&self, namespace: &str, pod: &str, pod_uid: Option<&str>) -> Option<Arc<[Label]>>;

    /// Pods on this node annotated `prometheus.io/scrape: "true"`.
    fn scrape_targets(&self) -> Vec<PodScrapeTarget> {
        Vec::new()
    }
}

/// A pod's metrics endpoint from its `prometheus.io/*` annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodScrapeTarget {
    pub namespace: String,
    pub pod: String,
    /// `http` or `https` (`prometheus.io/scheme`).
    pub scheme: String,
    /// `ip:port` (`prometheus.io/port`, else the first container port).
    pub address: String,
    /// `prometheus.io/path`, default `/metrics`.
    pub path: String,
}

/// The directory outside Kubernetes: knows no pods.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPods;

impl PodDirectory for NoPods {
    fn pod_labels(&self, _: &str, _: &str, _: Option<&str>) -> Option<Arc<[Label]>> {
        None
    }
}
