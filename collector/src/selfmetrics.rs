//! The collector's own metrics: exposed in the Prometheus text format on its
//! `/metrics` and shipped with the other metrics (`job="tidewatch-collector"`).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ship::ShipStats;
use crate::tail::TailStats;

/// Everything the collector counts.
#[derive(Debug, Default)]
pub struct CollectorStats {
    pub tail: Arc<TailStats>,
    pub logs: Arc<ShipStats>,
    pub metrics: Arc<ShipStats>,
    /// Parts that keep their own counters (scraping, Kubernetes).
    pub extra: std::sync::Mutex<Vec<Arc<dyn MetricsSource>>>,
}

/// A part of the collector with counters of its own.
pub trait MetricsSource: Send + Sync + std::fmt::Debug {
    /// Appends its families in the Prometheus text format.
    fn render(&self, out: &mut String);
}

/// Writes one counter or gauge family with a single unlabelled sample.
pub fn write_family(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

fn load(counter: &AtomicU64) -> f64 {
    counter.load(Ordering::Relaxed) as f64
}

impl CollectorStats {
    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let tail = &self.tail;
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "tidewatch_collector_log_lines_read_total",
                "Lines read from log files.",
                &tail.lines_read,
            ),
            (
                "tidewatch_collector_log_bytes_read_total",
                "Bytes read from log files.",
                &tail.bytes_read,
            ),
            (
                "tidewatch_collector_log_lines_invalid_total",
                "Lines not in their file's CRI or Docker format, shipped as read.",
                &tail.invalid_lines,
            ),
            (
                "tidewatch_collector_log_lines_invalid_utf8_total",
                "Lines with bytes that are not UTF-8, shipped with replacement characters.",
                &tail.invalid_utf8_lines,
            ),
            (
                "tidewatch_collector_log_lines_split_total",
                "Lines longer than logs.max_line_size, split into pieces.",
                &tail.lines_split,
            ),
            (
                "tidewatch_collector_log_files_opened_total",
                "Log files opened.",
                &tail.files_opened,
            ),
            (
                "tidewatch_collector_log_files_released_total",
                "Log files drained and closed after rotation or deletion.",
                &tail.files_released,
            ),
            (
                "tidewatch_collector_log_files_rotated_total",
                "Log paths that came to lead to a new file.",
                &tail.files_rotated,
            ),
            (
                "tidewatch_collector_log_files_truncated_total",
                "Log files that were truncated and read again from the start.",
                &tail.files_truncated,
            ),
            (
                "tidewatch_collector_log_read_errors_total",
                "Log files that could not be opened or read.",
                &tail.read_errors,
            ),
        ];
        for (name, help, counter) in counters {
            write_family(&mut out, name, "counter", help, load(counter));
        }
        write_family(
            &mut out,
            "tidewatch_collector_log_files_open",
            "gauge",
            "Log files being tailed.",
            load(&tail.files_open),
        );
        {
            let lag = tail.lag.lock().unwrap_or_else(|p| p.into_inner());
            let name = "tidewatch_collector_log_file_lag_bytes";
            let _ = writeln!(
                out,
                "# HELP {name} Bytes written to a log file but not yet acknowledged.\n# TYPE {name} gauge"
            );
            for (path, bytes) in lag.iter() {
                let path = path
                    .to_string_lossy()
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = writeln!(out, "{name}{{path=\"{path}\"}} {bytes}");
            }
        }
        render_ship(&mut out, &[("logs", &self.logs), ("metrics", &self.metrics)]);
        let extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        for source in extra.iter() {
            source.render(&mut out);
        }
        out
    }
}

/// The shippers' counters: one family per counter, a `kind` sample per shipper.
fn render_ship(out: &mut String, shippers: &[(&str, &Arc<ShipStats>)]) {
    type Pick = fn(&ShipStats) -> &AtomicU64;
    let families: [(&str, &str, &str, Pick); 11] = [
        (
            "tidewatch_collector_batches_sent_total",
            "counter",
            "Batches the server accepted.",
            |s| &s.batches_sent,
        ),
        (
            "tidewatch_collector_items_sent_total",
            "counter",
            "Lines or samples the server accepted.",
            |s| &s.items_sent,
        ),
        (
            "tidewatch_collector_bytes_sent_total",
            "counter",
            "Uncompressed line bytes the server accepted.",
            |s| &s.bytes_sent,
        ),
        (
            "tidewatch_collector_batches_retried_total",
            "counter",
            "Send attempts that failed and were retried.",
            |s| &s.batches_retried,
        ),
        (
            "tidewatch_collector_batches_refused_total",
            "counter",
            "Batches the server refused for good (4xx).",
            |s| &s.batches_refused,
        ),
        (
            "tidewatch_collector_items_refused_total",
            "counter",
            "Lines or samples in refused batches.",
            |s| &s.items_refused,
        ),
        (
            "tidewatch_collector_batches_spooled_total",
            "counter",
            "Batches written to the on-disk spool.",
            |s| &s.batches_spooled,
        ),
        (
            "tidewatch_collector_spool_dropped_batches_total",
            "counter",
            "Batches dropped because the spool was full or a spooled batch was corrupt.",
            |s| &s.batches_dropped,
        ),
        (
            "tidewatch_collector_spool_dropped_items_total",
            "counter",
            "Lines or samples in dropped batches.",
            |s| &s.items_dropped,
        ),
        ("tidewatch_collector_spool_bytes", "gauge", "Bytes in the spool.", |s| {
            &s.spool_bytes
        }),
        (
            "tidewatch_collector_spool_batches",
            "gauge",
            "Batches in the spool.",
            |s| &s.spool_batches,
        ),
    ];
    for (name, kind_name, help, pick) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind_name}");
        for (kind, stats) in shippers {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", load(pick(stats)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_parses_as_prometheus_text() {
        let stats = CollectorStats::default();
        stats.tail.lines_read.store(42, Ordering::Relaxed);
        stats.logs.items_dropped.store(7, Ordering::Relaxed);
        stats.tail.lag.lock().unwrap().push(("/var/log/a \"b\".log".into(), 10));
        let text = stats.render();
        let scrape = tidewatch_model::exposition::parse_text(text.as_bytes(), 0).unwrap();
        let value = |name: &str, label: Option<(&str, &str)>| {
            scrape
                .series
                .iter()
                .find(|s| s.labels.metric_name() == Some(name) && label.is_none_or(|(n, v)| s.labels.get(n) == Some(v)))
                .map(|s| s.samples[0].value)
        };
        assert_eq!(value("tidewatch_collector_log_lines_read_total", None), Some(42.0));
        assert_eq!(
            value("tidewatch_collector_spool_dropped_items_total", Some(("kind", "logs"))),
            Some(7.0)
        );
        assert_eq!(
            value(
                "tidewatch_collector_spool_dropped_items_total",
                Some(("kind", "metrics"))
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                "tidewatch_collector_log_file_lag_bytes",
                Some(("path", "/var/log/a \"b\".log"))
            ),
            Some(10.0)
        );
    }
}
