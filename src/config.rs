//! The configuration file: YAML, unknown fields rejected, parsed into a serde
//! struct and then validated into the settings the crates take.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tidewatch_model::log_validate::LogLimits;
use tidewatch_query::loki_api::LokiQueryConfig;
use tidewatch_query::{ApiConfig, LokiPushConfig};
use tidewatch_storage::{FsyncPolicy, StorageConfig, StreamRetention};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ConfigFile {
    pub(crate) storage: StorageSection,
    pub(crate) limits: LimitsSection,
    pub(crate) query: QuerySection,
    pub(crate) logs: LogsSection,
    /// The collector `tidewatch up` runs in process (the collector's own file
    /// format; see README).
    pub(crate) collector: Option<tidewatch_collector::CollectorConfig>,
}

/// Logs: Loki's `limits_config` keys under `limits`, plus how log blocks are
/// cut and kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogsSection {
    /// Time window of one log block (Parquet file + full-text index).
    pub(crate) block_duration: String,
    /// Per-stream retention, like Loki's `retention_stream`; streams no rule
    /// matches keep `storage.retention`.
    pub(crate) retention_stream: Vec<RetentionStreamSection>,
    pub(crate) limits: LogLimits,
}

impl Default for LogsSection {
    fn default() -> Self {
        LogsSection {
            block_duration: "1h".into(),
            retention_stream: Vec::new(),
            limits: LogLimits::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionStreamSection {
    /// A LogQL stream selector, e.g. `{namespace="dev"}`.
    pub(crate) selector: String,
    pub(crate) period: String,
    #[serde(default)]
    pub(crate) priority: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StorageSection {
    /// `always`, `never`, or a duration such as `1s`.
    pub(crate) wal_fsync: String,
    pub(crate) block_duration: String,
    pub(crate) retention: String,
    pub(crate) out_of_order_window: String,
    pub(crate) block_cache_bytes: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            wal_fsync: "1s".into(),
            block_duration: "2h".into(),
            retention: "15d".into(),
            out_of_order_window: "7d".into(),
            block_cache_bytes: StorageConfig::new("").block_cache_bytes,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsSection {
    pub(crate) max_labels_per_series: usize,
    pub(crate) max_label_name_length: usize,
    pub(crate) max_label_value_length: usize,
    pub(crate) max_series_per_tenant: usize,
    pub(crate) max_samples_per_request: usize,
    pub(crate) max_sample_age: String,
    pub(crate) max_sample_future: String,
    pub(crate) max_request_body_bytes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let defaults = tidewatch_model::validate::IngestLimits::default();
        LimitsSection {
            max_labels_per_series: defaults.max_labels_per_series,
            max_label_name_length: defaults.max_label_name_length,
            max_label_value_length: defaults.max_label_value_length,
            max_series_per_tenant: 0,
            max_samples_per_request: defaults.max_samples_per_request,
            max_sample_age: "7d".into(),
            max_sample_future: "10m".into(),
            max_request_body_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct QuerySection {
    pub(crate) lookback_delta: String,
    pub(crate) timeout: String,
    pub(crate) max_samples: usize,
    pub(crate) max_series: usize,
}

impl Default for QuerySection {
    fn default() -> Self {
        QuerySection {
            lookback_delta: "5m".into(),
            timeout: "2m".into(),
            max_samples: 50_000_000,
            max_series: 1_000_000,
        }
    }
}

/// Parses YAML into `T`. The one place YAML is read, so the library behind it
/// (a maintained fork of serde_yaml) can change in one spot.
pub(crate) fn load_yaml<T: for<'de> Deserialize<'de>>(text: &str, origin: &str) -> anyhow::Result<T> {
    serde_norway::from_str(text).map_err(|e| match e.location() {
        Some(at) => anyhow::anyhow!("{origin}:{}:{}: {e}", at.line(), at.column()),
        None => anyhow::anyhow!("{origin}: {e}"),
    })
}

fn duration_ms(field: &str, raw: &str) -> anyhow::Result<i64> {
    let parsed = tidewatch_query::params::parse_duration(raw)
        .with_context(|| format!("{field}: {raw:?} is not a duration such as 30s, 5m, 2h or 15d"))?;
    if parsed <= 0 {
        bail!("{field}: {raw:?} must be positive");
    }
    Ok(parsed)
}

/// The validated settings.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) storage: StorageConfig,
    pub(crate) api: ApiConfig,
    pub(crate) log_push: LokiPushConfig,
    pub(crate) log_query: LokiQueryConfig,
}

impl ConfigFile {
    pub(crate) fn read(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        load_yaml(&text, &path.display().to_string())
    }

    pub(crate) fn into_settings(self, data_dir: &Path) -> anyhow::Result<Settings> {
        let mut storage = StorageConfig::new(data_dir);
        storage.fsync = match self.storage.wal_fsync.as_str() {
            "always" => FsyncPolicy::Always,
            "never" => FsyncPolicy::Never,
            other => FsyncPolicy::Interval(Duration::from_millis(duration_ms("storage.wal_fsync", other)? as u64)),
        };
        storage.block_duration_ms = duration_ms("storage.block_duration", &self.storage.block_duration)?;
        storage.retention_ms = duration_ms("storage.retention", &self.storage.retention)?;
        storage.out_of_order_window_ms = duration_ms("storage.out_of_order_window", &self.storage.out_of_order_window)?;
        storage.block_cache_bytes = self.storage.block_cache_bytes;
        storage.max_series_per_tenant = self.limits.max_series_per_tenant;
        storage.limits.max_labels_per_series = self.limits.max_labels_per_series;
        storage.limits.max_label_name_length = self.limits.max_label_name_length;
        storage.limits.max_label_value_length = self.limits.max_label_value_length;
        storage.limits.max_samples_per_request = self.limits.max_samples_per_request;
        storage.limits.max_sample_age_ms = duration_ms("limits.max_sample_age", &self.limits.max_sample_age)?;
        storage.limits.max_future_ms = duration_ms("limits.max_sample_future", &self.limits.max_sample_future)?;
        let mut api = ApiConfig {
            lookback_ms: duration_ms("query.lookback_delta", &self.query.lookback_delta)?,
            query_timeout: Duration::from_millis(duration_ms("query.timeout", &self.query.timeout)? as u64),
            max_body_bytes: self.limits.max_request_body_bytes,
            ..ApiConfig::default()
        };
        api.query_limits.max_samples = self.query.max_samples;
        api.query_limits.max_series = self.query.max_series;
        storage.log_block_duration_ms = duration_ms("logs.block_duration", &self.logs.block_duration)?;
        storage.max_log_streams_per_tenant = self.logs.limits.max_global_streams_per_user;
        for (i, rule) in self.logs.retention_stream.iter().enumerate() {
            let field = format!("logs.retention_stream[{i}]");
            let matchers = match tidewatch_query::logql::parse(&rule.selector) {
                Ok(tidewatch_query::logql::Expr::Log(log)) if log.pipeline.is_empty() => log.matchers,
                Ok(_) => bail!("{field}.selector: {:?} is not a stream selector", rule.selector),
                Err(e) => bail!("{field}.selector: {e}"),
            };
            storage.log_retention_streams.push(StreamRetention {
                matchers,
                period_ms: duration_ms(&format!("{field}.period"), &rule.period)?,
                priority: rule.priority,
            });
        }
        let log_query = LokiQueryConfig {
            max_pattern_lines: self.logs.limits.max_pattern_lines_per_query,
        };
        let log_push = LokiPushConfig::new(self.logs.limits);
        Ok(Settings {
            storage,
            api,
            log_push,
            log_query,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let file: ConfigFile = load_yaml(
            "storage:\n  wal_fsync: always\n  retention: 30d\nlimits:\n  max_series_per_tenant: 100\n",
            "t.yml",
        )
        .unwrap();
        let settings = file.into_settings(Path::new("/tmp/x")).unwrap();
        assert_eq!(settings.storage.fsync, FsyncPolicy::Always);
        assert_eq!(settings.storage.retention_ms, 30 * 24 * 3_600_000);
        assert_eq!(settings.storage.max_series_per_tenant, 100);
    }

    #[test]
    fn log_section_takes_loki_limit_names() {
        let file: ConfigFile = load_yaml(
            "logs:\n  block_duration: 30m\n  retention_stream:\n    - selector: '{namespace=\"dev\"}'\n      period: 24h\n      priority: 2\n  limits:\n    max_line_size: 128KB\n    max_global_streams_per_user: 10\n    max_pattern_lines_per_query: 5000\n",
            "t.yml",
        )
        .unwrap();
        let settings = file.into_settings(Path::new("/tmp/x")).unwrap();
        assert_eq!(settings.storage.log_block_duration_ms, 30 * 60_000);
        assert_eq!(settings.storage.max_log_streams_per_tenant, 10);
        assert_eq!(settings.storage.log_retention_streams.len(), 1);
        assert_eq!(settings.storage.log_retention_streams[0].period_ms, 24 * 3_600_000);
        assert_eq!(settings.log_push.limits.max_line_size, 128 * 1024);
        assert_eq!(settings.log_query.max_pattern_lines, 5000);
        let defaults = ConfigFile::default().into_settings(Path::new("/tmp/x")).unwrap();
        assert_eq!(defaults.log_query.max_pattern_lines, 1_000_000);
        let bad: ConfigFile = load_yaml(
            "logs:\n  retention_stream:\n    - selector: 'nope'\n      period: 1d\n",
            "t.yml",
        )
        .unwrap();
        let err = bad.into_settings(Path::new("/tmp/x")).unwrap_err().to_string();
        assert!(err.contains("logs.retention_stream[0].selector"), "{err}");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = load_yaml::<ConfigFile>("storage:\n  retension: 30d\n", "t.yml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.yml:2:"), "{err}");
        assert!(err.contains("retension"), "{err}");
        let file: ConfigFile = load_yaml("storage:\n  retention: forever\n", "t.yml").unwrap();
        let err = file.into_settings(Path::new("/tmp/x")).unwrap_err().to_string();
        assert!(err.contains("storage.retention"), "{err}");
    }
}
