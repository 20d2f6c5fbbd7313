//! Self-monitoring: Tidewatch's own figures as metric families, rendered on
//! `/metrics` in the Prometheus text format and, in `tidewatch up`, ingested
//! every 15 s through the same ingest path remote write uses.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use tidewatch_model::seam::{MetricMetadata, MetricType, SeriesSamples, WriteBatch};
use tidewatch_model::{Labels, Sample, TimestampMs};
use tidewatch_query::stats::{HttpStats, LATENCY_BUCKETS};
use tidewatch_storage::Storage;

/// One metric family: metadata plus (extra labels, value) points.
#[derive(Debug)]
pub(crate) struct Family {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) metric_type: MetricType,
    pub(crate) points: Vec<(Vec<(String, String)>, f64)>,
}

fn family(name: &'static str, help: &'static str, metric_type: MetricType, value: f64) -> Family {
    Family {
        name,
        help,
        metric_type,
        points: vec![(Vec::new(), value)],
    }
}

/// (user, system) CPU seconds and resident bytes of this process, from /proc.
fn process_figures() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14th and 15th overall.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Linux reports in clock ticks (USER_HZ, 100 on every supported platform) and 4 KiB pages.
    Some((ticks / 100.0, resident_pages * 4096.0))
}

/// Collects every family.
pub(crate) fn collect(storage: &Storage, http: &HttpStats) -> Vec<Family> {
    let stats = storage.stats();
    let head = storage.head_figures();
    let logs = storage.log_head_figures();
    let mut families = vec![
        family(
            "tidewatch_samples_appended_total",
            "Samples stored through the ingest path.",
            MetricType::Counter,
            stats.samples_appended.load(Ordering::Relaxed) as f64,
        ),
        family(
            "tidewatch_histograms_appended_total",
            "Native histogram samples stored through the ingest path.",
            MetricType::Counter,
            stats.histograms_appended.load(Ordering::Relaxed) as f64,
        ),
        family(
            "tidewatch_series_created_total",
            "Series created in the head.",
            MetricType::Counter,
            stats.series_created.load(Ordering::Relaxed) as f64,
        ),
        family(
            "tidewatch_writes_rejected_total",
            "Write requests rejected by validation or limits.",
            MetricType::Counter,
            stats.writes_rejected.load(Ordering::Relaxed) as f64,
        ),
        family(
            "tidewatch_head_series",
            "Series held in the in-memory head.",
            MetricType::Gauge,
            head.series as f64,
        ),
        family(
            "tidewatch_head_samples",
            "Samples held in the in-memory head.",
            MetricType::Gauge,
            head.samples as f64,
        ),
        family(
            "tidewatch_head_sample_bytes",
            "Bytes of compressed sample data in the head.",
            MetricType::Gauge,
            head.sample_bytes as f64,
        ),
        family(
            "tidewatch_log_head_entries",
            "Log entries held in the in-memory log head.",
            MetricType::Gauge,
            logs.entries as f64,
        ),
        family(
            "tidewatch_log_head_line_bytes",
            "Bytes of the log lines held in the log head, uncompressed.",
            MetricType::Gauge,
            logs.line_bytes as f64,
        ),
        family(
            "tidewatch_log_head_memory_bytes",
            "Bytes the log head's entries take in memory (compressed chunks, open tails, duplicate-check hashes).",
            MetricType::Gauge,
            logs.memory_bytes as f64,
        ),
        family(
            "tidewatch_wal_size_bytes",
            "Bytes of write-ahead log on disk.",
            MetricType::Gauge,
            storage.wal_disk_size() as f64,
        ),
        family(
            "tidewatch_blocks",
            "Blocks loaded, over all tenants.",
            MetricType::Gauge,
            storage.block_count() as f64,
        ),
        family(
            "tidewatch_blocks_written_total",
            "Blocks written from the head.",
            MetricType::Counter,
            stats.blocks_written.load(Ordering::Relaxed) as f64,
        ),
        family(
            "tidewatch_compactions_total",
            "Block compactions completed.",
            MetricType::Counter,
            stats.compactions.load(Ordering::Relaxed) as f64,
        ),
        family(
            "tidewatch_block_cache_hits_total",
            "Decoded block segments served from the block cache.",
            MetricType::Counter,
            storage.segment_cache().hits() as f64,
        ),
        family(
            "tidewatch_block_cache_misses_total",
            "Block segments looked for in the block cache and decoded from Parquet.",
            MetricType::Counter,
            storage.segment_cache().misses() as f64,
        ),
        family(
            "tidewatch_block_cache_bytes",
            "Bytes of decoded block segments held in the block cache.",
            MetricType::Gauge,
            storage.segment_cache().bytes() as f64,
        ),
    ];
    if let Some((cpu, resident)) = process_figures() {
        families.push(family(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            MetricType::Counter,
            cpu,
        ));
        families.push(family(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            MetricType::Gauge,
            resident,
        ));
    }
    let mut requests = Family {
        name: "tidewatch_http_requests_total",
        help: "HTTP requests by handler and status code.",
        metric_type: MetricType::Counter,
        points: Vec::new(),
    };
    let mut buckets = Family {
        name: "tidewatch_http_request_duration_seconds_bucket",
        help: "HTTP request latency by handler.",
        metric_type: MetricType::Histogram,
        points: Vec::new(),
    };
    let mut sums = Family {
        name: "tidewatch_http_request_duration_seconds_sum",
        help: "HTTP request latency by handler.",
        metric_type: MetricType::Histogram,
        points: Vec::new(),
    };
    let mut counts = Family {
        name: "tidewatch_http_request_duration_seconds_count",
        help: "HTTP request latency by handler.",
        metric_type: MetricType::Histogram,
        points: Vec::new(),
    };
    // Latency is aggregated over status codes, as Prometheus' own histogram is.
    let mut by_handler: std::collections::BTreeMap<String, (u64, f64, [u64; LATENCY_BUCKETS.len()])> =
        Default::default();
    for ((route, code), endpoint) in http.snapshot() {
        requests.points.push((
            vec![("handler".into(), route.clone()), ("code".into(), code.to_string())],
            endpoint.count as f64,
        ));
        let entry = by_handler.entry(route).or_default();
        entry.0 += endpoint.count;
        entry.1 += endpoint.sum_seconds;
        for (total, bucket) in entry.2.iter_mut().zip(endpoint.buckets) {
            *total += bucket;
        }
    }
    for (route, (count, sum, cumulative)) in by_handler {
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(cumulative) {
            buckets.points.push((
                vec![("handler".into(), route.clone()), ("le".into(), bound.to_string())],
                bucket as f64,
            ));
        }
        buckets.points.push((
            vec![("handler".into(), route.clone()), ("le".into(), "+Inf".into())],
            count as f64,
        ));
        sums.points.push((vec![("handler".into(), route.clone())], sum));
        counts.points.push((vec![("handler".into(), route)], count as f64));
    }
    families.extend([requests, buckets, sums, counts]);
    families
}

/// The families as one remote-write batch, labelled with `job` and `instance`.
pub(crate) fn to_batch(families: &[Family], instance: &str, now: TimestampMs) -> WriteBatch {
    let mut batch = WriteBatch::default();
    for family in families {
        batch.metadata.push(MetricMetadata {
            metric_family_name: family.name.to_string(),
            metric_type: family.metric_type,
            help: family.help.to_string(),
            unit: String::new(),
        });
        for (extra, value) in &family.points {
            let mut pairs = vec![
                ("__name__".to_string(), family.name.to_string()),
                ("job".to_string(), "tidewatch".to_string()),
                ("instance".to_string(), instance.to_string()),
            ];
            pairs.extend(extra.iter().cloned());
            batch.series.push(SeriesSamples {
                labels: Labels::from_pairs(pairs),
                samples: vec![Sample::new(now, *value)],
                histograms: Vec::new(),
                start_timestamps: Default::default(),
            });
        }
    }
    batch
}

/// The families in the Prometheus text exposition format (0.0.4).
pub(crate) fn render_text(families: &[Family]) -> String {
    let mut out = String::new();
    let mut described = std::collections::HashSet::new();
    for family in families {
        if family.points.is_empty() {
            continue;
        }
        let base = family
            .name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        let base = if family.metric_type == MetricType::Histogram {
            base
        } else {
            family.name
        };
        if described.insert(base) {
            let _ = writeln!(out, "# HELP {base} {}", family.help);
            let _ = writeln!(out, "# TYPE {base} {}", family.metric_type.as_str());
        }
        for (labels, value) in &family.points {
            out.push_str(family.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (name, label_value)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let escaped = label_value
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(out, "{name}=\"{escaped}\"");
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", tidewatch_query::api::format_value(*value));
        }
    }
    out
}
