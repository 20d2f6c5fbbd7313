//! The collector's YAML configuration. Unknown keys are refused; every key has
//! a default so an empty file (or none) runs a collector that tails
//! `/var/log/containers/*.log`, scrapes the node and ships to a local server.
//! Scrape jobs use Prometheus' `scrape_configs` shape (`job_name`,
//! `static_configs`, `metrics_path`, `scheme`, `scrape_interval`,
//! `scrape_timeout`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tidewatch_model::log_validate::{de_byte_size, de_duration};

use crate::error::{Error, Result};

/// Default base URL of the server.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:9470";
/// Default log glob: the kubelet's per-container symlinks.
pub const DEFAULT_LOG_GLOB: &str = "/var/log/containers/*.log";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where and how to ship.
    pub server: ServerConfig,
    /// This node's name (the `node` label); `--node`, else `$NODE_NAME`, else the host name.
    pub node: Option<String>,
    /// The `cluster` label on everything shipped; none when empty.
    pub cluster: String,
    /// Positions and the spool live here.
    pub state_dir: PathBuf,
    /// Address of the collector's own `/metrics`; none to not listen.
    pub listen: Option<String>,
    pub logs: LogsConfig,
    pub spool: SpoolConfig,
    pub metrics: MetricsConfig,
    pub kubernetes: KubernetesConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            server: ServerConfig::default(),
            node: None,
            cluster: String::new(),
            state_dir: PathBuf::from("./tidewatch-collector"),
            listen: None,
            logs: LogsConfig::default(),
            spool: SpoolConfig::default(),
            metrics: MetricsConfig::default(),
            kubernetes: KubernetesConfig::default(),
        }
    }
}

/// The server the collector ships to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Base URL; logs go to `<url>/loki/api/v1/push`, metrics to `<url>/api/v1/write`.
    pub url: String,
    /// Sent as `X-Scope-OrgID` when set.
    pub tenant: Option<String>,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer_token: Option<String>,
    /// Read at start (and on every retry) when set; wins over `bearer_token`.
    pub bearer_token_file: Option<PathBuf>,
    pub tls: TlsConfig,
    /// One request's timeout.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// First retry delay; doubles on each failure up to `max_backoff`.
    #[serde(deserialize_with = "de_duration")]
    pub min_backoff: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max_backoff: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            url: DEFAULT_SERVER.into(),
            tenant: None,
            bearer_token: None,
            bearer_token_file: None,
            tls: TlsConfig::default(),
            timeout: Duration::from_secs(30),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// TLS options, Prometheus' `tls_config` keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// Container log tailing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub enabled: bool,
    /// Files to tail; symlinks are followed (into `/var/log/pods`).
    pub glob: String,
    /// How often the glob is re-evaluated and files are checked for growth,
    /// rotation and deletion.
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// Longest line after merging CRI partial lines; longer lines are split
    /// into pieces of at most this size (counted).
    #[serde(deserialize_with = "de_byte_size")]
    pub max_line_size: u64,
    /// A batch is sent when it holds this many bytes of lines…
    #[serde(deserialize_with = "de_byte_size")]
    pub batch_size: u64,
    /// …or when its oldest line has waited this long.
    #[serde(deserialize_with = "de_duration")]
    pub batch_wait: Duration,
    /// Joining of multi-line records (stack traces); off unless set.
    pub multiline: Option<MultilineConfig>,
    /// Extra static labels on every log stream.
    pub labels: BTreeMap<String, String>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            enabled: true,
            glob: DEFAULT_LOG_GLOB.into(),
            poll_interval: Duration::from_millis(250),
            max_line_size: 1024 * 1024,
            batch_size: 1024 * 1024,
            batch_wait: Duration::from_secs(1),
            multiline: None,
            labels: BTreeMap::new(),
        }
    }
}

/// Multi-line joining: a record starts at a line matching `start_pattern`
/// (or the preset's), and every following line that does not is appended.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// `java`, `python` or `go`.
    #[serde(default)]
    pub preset: Option<String>,
    /// A regular expression a record's first line matches; wins over `preset`.
    #[serde(default)]
    pub start_pattern: Option<String>,
    /// A record is emitted once no continuation arrived for this long.
    #[serde(default = "default_multiline_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// At most this many lines are joined into one record.
    #[serde(default = "default_multiline_max_lines")]
    pub max_lines: usize,
}

fn default_multiline_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_multiline_max_lines() -> usize {
    500
}

/// The on-disk buffer batches go to while the server is down or slow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Upper bound of the spool; when full, the oldest batches are dropped
    /// and counted.
    #[serde(deserialize_with = "de_byte_size")]
    pub max_size: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_size: 512 * 1024 * 1024,
        }
    }
}

/// Metrics collection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Default interval of every scrape (Prometheus' `global.scrape_interval`).
    #[serde(deserialize_with = "de_duration")]
    pub scrape_interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub scrape_timeout: Duration,
    /// The node's own metrics from `/proc` and `/sys` (node-exporter names).
    pub node: NodeMetricsConfig,
    /// The kubelet's `/metrics/cadvisor` and `/metrics/resource`.
    pub kubelet: KubeletConfig,
    /// Pods annotated `prometheus.io/scrape: "true"` on this node.
    pub annotated_pods: bool,
    /// Static scrape jobs, Prometheus' `scrape_configs` shape.
    pub scrape_configs: Vec<ScrapeConfig>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            scrape_interval: Duration::from_secs(15),
            scrape_timeout: Duration::from_secs(10),
            node: NodeMetricsConfig::default(),
            kubelet: KubeletConfig::default(),
            annotated_pods: true,
            scrape_configs: Vec::new(),
        }
    }
}

/// Where the node's metrics are read from (paths are configurable so a
/// container with the host's `/proc` mounted at `/host/proc` works).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeMetricsConfig {
    pub enabled: bool,
    pub proc_path: PathBuf,
    pub sys_path: PathBuf,
    /// Prefix for mount points of filesystems (`/host/root` in a container).
    pub rootfs_path: PathBuf,
}

impl Default for NodeMetricsConfig {
    fn default() -> Self {
        NodeMetricsConfig {
            enabled: true,
            proc_path: PathBuf::from("/proc"),
            sys_path: PathBuf::from("/sys"),
            rootfs_path: PathBuf::from("/"),
        }
    }
}

/// The kubelet's metric endpoints, reached with the service-account token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeletConfig {
    /// `auto`: on when running in a cluster.
    pub enabled: Option<bool>,
    /// Base URL; default `https://$NODE_IP:10250` (or the node name).
    pub url: Option<String>,
    pub bearer_token_file: PathBuf,
    pub tls: TlsConfig,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            enabled: None,
            url: None,
            bearer_token_file: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            tls: TlsConfig {
                ca_file: Some(PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")),
                ..TlsConfig::default()
            },
        }
    }
}

/// One scrape job, as Prometheus writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub scrape_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub scrape_timeout: Option<Duration>,
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_config: TlsConfig,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
}

/// Targets and the labels they get.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

fn default_scheme() -> String {
    "http".into()
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    de_duration(deserializer).map(Some)
}

/// Kubernetes metadata and events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// `auto` (unset): on when `KUBERNETES_SERVICE_HOST` is set.
    pub enabled: Option<bool>,
    /// Pod labels copied onto logs and metrics, under the same name with
    /// characters Prometheus refuses replaced by `_`.
    pub pod_labels: Vec<String>,
    /// Pod annotations copied the same way.
    pub pod_annotations: Vec<String>,
    /// Ship Kubernetes Events of this node's pods as log lines.
    pub events: bool,
    /// How long a deleted pod's labels are kept for its files still draining.
    #[serde(deserialize_with = "de_duration")]
    pub deleted_pod_grace: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: None,
            pod_labels: Vec::new(),
            pod_annotations: Vec::new(),
            events: true,
            deleted_pod_grace: Duration::from_secs(600),
        }
    }
}

impl CollectorConfig {
    /// Reads and validates a YAML file.
    pub fn load(path: &Path) -> Result<CollectorConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        CollectorConfig::parse(&text).map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and validates YAML text; the message names the line and column.
    pub fn parse(text: &str) -> std::result::Result<CollectorConfig, String> {
        let config: CollectorConfig = if text.trim().is_empty() {
            CollectorConfig::default()
        } else {
            serde_norway::from_str(text).map_err(|e| e.to_string())?
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: URLs, patterns and sizes that must agree.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.server.url.starts_with("http://") || self.server.url.starts_with("https://")) {
            return Err(format!(
                "server.url {:?} must start with http:// or https://",
                self.server.url
            ));
        }
        if self.logs.max_line_size == 0 {
            return Err("logs.max_line_size must be positive".into());
        }
        if self.logs.batch_size == 0 {
            return Err("logs.batch_size must be positive".into());
        }
        if let Some(multiline) = &self.logs.multiline {
            crate::multiline::StartPattern::from_config(multiline)?;
        }
        let mut jobs = std::collections::HashSet::new();
        for job in &self.metrics.scrape_configs {
            if !jobs.insert(job.job_name.as_str()) {
                return Err(format!("scrape_configs: job_name {:?} appears twice", job.job_name));
            }
            if job.scheme != "http" && job.scheme != "https" {
                return Err(format!(
                    "scrape_configs {:?}: scheme must be http or https, not {:?}",
                    job.job_name, job.scheme
                ));
            }
        }
        Ok(())
    }

    /// The node name: configured, else `$NODE_NAME` (the downward API), else
    /// the host name.
    pub fn node_name(&self) -> String {
        if let Some(node) = self.node.as_ref().filter(|n| !n.is_empty()) {
            return node.clone();
        }
        if let Ok(node) = std::env::var("NODE_NAME")
            && !node.is_empty()
        {
            return node;
        }
        host_name()
    }
}

/// The kernel's host name (`uname -n`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let config = CollectorConfig::parse("").unwrap();
        assert_eq!(config.logs.glob, DEFAULT_LOG_GLOB);
        assert_eq!(config.logs.max_line_size, 1024 * 1024);
        assert_eq!(config.server.url, DEFAULT_SERVER);
    }

    #[test]
    fn prometheus_scrape_configs_are_read() {
        let config = CollectorConfig::parse(
            r#"
server: { url: "http://tw:9470", tenant: team-a }
logs: { glob: "/tmp/x/*.log", max_line_size: 64KB, multiline: { preset: java } }
metrics:
  scrape_configs:
    - job_name: app
      scrape_interval: 5s
      static_configs:
        - targets: ["127.0.0.1:8080"]
          labels: { env: dev }
"#,
        )
        .unwrap();
        assert_eq!(config.server.tenant.as_deref(), Some("team-a"));
        assert_eq!(config.logs.max_line_size, 64 * 1024);
        let job = &config.metrics.scrape_configs[0];
        assert_eq!(job.scrape_interval, Some(Duration::from_secs(5)));
        assert_eq!(job.metrics_path, "/metrics");
        assert_eq!(job.static_configs[0].labels["env"], "dev");
    }

    #[test]
    fn bad_input_is_named() {
        let unknown = CollectorConfig::parse("logz: {}").unwrap_err();
        assert!(unknown.contains("logz"), "{unknown}");
        let url = CollectorConfig::parse("server: { url: tw:9470 }").unwrap_err();
        assert!(url.contains("http://"), "{url}");
        let pattern = CollectorConfig::parse("logs: { multiline: { start_pattern: \"(\" } }").unwrap_err();
        assert!(pattern.contains("start_pattern"), "{pattern}");
        let twice =
            CollectorConfig::parse("metrics: { scrape_configs: [ {job_name: a}, {job_name: a} ] }").unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
    }
}
