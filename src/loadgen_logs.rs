//! `tidewatch bench loki-push`: a load generator pushing realistic Kubernetes
//! container logs through the Loki push API (protobuf + snappy), measuring
//! the receiver's CPU and memory from /proc, and optionally writing the same
//! lines to plain files so `grep`/`rg` can be timed on identical data.
//!
//! Streams are pods' containers; each writes one kind of log: JSON access
//! logs, logfmt application logs, Java services (with multi-line stack
//! traces, one entry per line as the container runtime writes them) or
//! plain text. Everything derives from a seed, so runs are comparable.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use tidewatch_model::Labels;
use tidewatch_model::logs::{LogEntry, LogPush, LogStream, TimestampNs};

use crate::loadgen::{Rng, post_all, read_process};

/// Options of a run.
#[derive(Debug, Clone)]
pub(crate) struct LogLoadOptions {
    pub(crate) url: String,
    pub(crate) streams: usize,
    pub(crate) lines: usize,
    pub(crate) lines_per_request: usize,
    pub(crate) concurrency: usize,
    pub(crate) receiver_pid: Option<u32>,
    pub(crate) tenant: Option<String>,
    /// Time of the first line; defaults to the run's span before now.
    pub(crate) start_ns: Option<TimestampNs>,
    /// Also write every line, newline-terminated, to this file.
    pub(crate) raw_file: Option<std::path::PathBuf>,
    pub(crate) seed: u64,
}

/// What a stream writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    JsonAccess,
    Logfmt,
    Java,
    Plain,
}

const METHODS: [&str; 5] = ["GET", "GET", "GET", "POST", "PUT"];
const PATHS: [&str; 8] = [
    "/api/v1/users",
    "/api/v1/orders",
    "/api/v1/orders/items",
    "/healthz",
    "/api/v2/search",
    "/static/app.js",
    "/api/v1/payments",
    "/metrics",
];
const STATUSES: [u16; 10] = [200, 200, 200, 200, 200, 201, 204, 404, 500, 503];
const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "curl/8.5.0",
    "kube-probe/1.29",
    "Go-http-client/2.0",
];
const MESSAGES: [&str; 6] = [
    "request served",
    "cache miss",
    "retrying upstream call",
    "connection pool exhausted",
    "user session refreshed",
    "slow query detected",
];
const JAVA_CLASSES: [&str; 4] = [
    "com.example.orders.OrderService",
    "com.example.billing.InvoiceJob",
    "com.example.api.UserController",
    "org.springframework.web.servlet.DispatcherServlet",
];

/// The streams of a generated cluster, with the state their lines need.
#[derive(Debug)]
pub(crate) struct LogCorpus {
    streams: Vec<(Labels, LineKind)>,
    rng: Rng,
    /// Lines still owed by a stack trace in progress, per stream.
    pending: Vec<Vec<String>>,
    request_id: u64,
}

impl LogCorpus {
    /// `count` streams shaped like a cluster's containers.
    pub(crate) fn kubernetes(count: usize, seed: u64) -> LogCorpus {
        let kinds = [LineKind::JsonAccess, LineKind::Logfmt, LineKind::Java, LineKind::Plain];
        let streams = (0..count)
            .map(|i| {
                let namespace = format!("team-{}", i % 12);
                let app = ["checkout", "search", "billing", "users", "gateway", "worker"][i % 6];
                let pod = format!("{app}-{:x}-{:05}", (i / 6) % 4096, i);
                let labels = Labels::from_pairs([
                    ("namespace", namespace.as_str()),
                    ("app", app),
                    ("pod", pod.as_str()),
                    ("container", app),
                    ("node", &format!("node-{}", i % 40)),
                    ("stream", if i.is_multiple_of(9) { "stderr" } else { "stdout" }),
                ]);
                (labels, kinds[i % kinds.len()])
            })
            .collect();
        LogCorpus {
            streams,
            rng: Rng(seed.max(1)),
            pending: vec![Vec::new(); count],
            request_id: seed,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn labels(&self, stream: usize) -> &Labels {
        &self.streams[stream].0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.rng.next() % items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.rng.next(), self.rng.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn ip(&mut self) -> String {
        let n = self.rng.next();
        format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
    }

    /// The next line of `stream`, written at `timestamp`.
    pub(crate) fn line(&mut self, stream: usize, timestamp: TimestampNs) -> String {
        if let Some(line) = self.pending[stream].pop() {
            return line;
        }
        let time = chrono::DateTime::from_timestamp_nanos(timestamp).format("%Y-%m-%dT%H:%M:%S%.3fZ");
        self.request_id += 1;
        match self.streams[stream].1 {
            LineKind::JsonAccess => {
                let method = *self.pick(&METHODS);
                let path = *self.pick(&PATHS);
                let status = *self.pick(&STATUSES);
                let agent = *self.pick(&AGENTS);
                let ip = self.ip();
                let trace = self.uuid();
                let duration = (self.rng.unit() * self.rng.unit() * 900.0 * 100.0).round() / 100.0;
                let bytes = self.rng.next() % 50_000;
                let level = if status >= 500 { "error" } else { "info" };
                format!(
                    r#"{{"ts":"{time}","level":"{level}","method":"{method}","path":"{path}/{}","status":{status},"duration_ms":{duration},"bytes":{bytes},"client_ip":"{ip}","trace_id":"{trace}","user_agent":"{agent}"}}"#,
                    self.request_id % 100_000
                )
            }
            LineKind::Logfmt => {
                let message = *self.pick(&MESSAGES);
                let level = *self.pick(&["info", "info", "info", "debug", "warn", "error"]);
                let method = *self.pick(&METHODS);
                let path = *self.pick(&PATHS);
                let status = *self.pick(&STATUSES);
                let duration = self.rng.next() % 2_000;
                let request = self.uuid();
                format!(
                    r#"ts={time} level={level} caller=server.go:{} msg="{message}" method={method} path={path} status={status} duration={duration}ms request_id={request}"#,
                    80 + self.rng.next() % 200
                )
            }
            LineKind::Java => {
                let class = *self.pick(&JAVA_CLASSES);
                let thread = format!("http-nio-8080-exec-{}", self.rng.next() % 32);
                if self.rng.next().is_multiple_of(20) {
                    // An exception: the header now, the trace lines after it.
                    let order = self.rng.next() % 1_000_000;
                    let mut trace = vec![
                        format!("java.lang.IllegalStateException: order {order} is in state CANCELLED"),
                        format!("\tat {class}.process({}.java:{})", class.rsplit('.').next().unwrap_or("X"), 40 + order % 300),
                        "\tat java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1136)".to_string(),
                        "\tat java.base/java.lang.Thread.run(Thread.java:833)".to_string(),
                    ];
                    trace.reverse();
                    self.pending[stream] = trace;
                    return format!("{time} ERROR [{thread}] {class} - Failed to process order {order}");
                }
                let message = *self.pick(&MESSAGES);
                format!(
                    "{time} INFO  [{thread}] {class} - {message} in {} ms",
                    self.rng.next() % 500
                )
            }
            LineKind::Plain => {
                let ip = self.ip();
                let method = *self.pick(&METHODS);
                let path = *self.pick(&PATHS);
                let status = *self.pick(&STATUSES);
                let bytes = self.rng.next() % 20_000;
                let agent = *self.pick(&AGENTS);
                format!(r#"{ip} - - [{time}] "{method} {path} HTTP/1.1" {status} {bytes} "-" "{agent}""#)
            }
        }
    }
}

/// Runs the load and prints a summary.
pub(crate) async fn run(options: LogLoadOptions) -> anyhow::Result<()> {
    if options.streams == 0 || options.lines == 0 || options.lines_per_request == 0 || options.concurrency == 0 {
        bail!("--streams, --lines, --lines-per-request and --concurrency must be positive");
    }
    let mut corpus = LogCorpus::kubernetes(options.streams, options.seed);
    // One line per stream per millisecond step, round robin: lines of a stream
    // are `streams` ms apart.
    let span_ns = options.lines as i64 * 1_000_000;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let start = options.start_ns.unwrap_or(now - span_ns);
    let mut raw = match &options.raw_file {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    // Build every request body up front, so the sender's own work is not measured.
    let mut bodies = Vec::new();
    let (mut raw_bytes, mut written) = (0u64, 0usize);
    while written < options.lines {
        let take = options.lines_per_request.min(options.lines - written);
        let mut streams: Vec<LogStream> = Vec::new();
        let mut by_stream: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        for i in written..written + take {
            let stream = i % corpus.len();
            let timestamp = start + i as i64 * 1_000_000;
            let line = corpus.line(stream, timestamp);
            raw_bytes += line.len() as u64 + 1;
            if let Some(raw) = raw.as_mut() {
                writeln!(raw, "{line}")?;
            }
            let slot = *by_stream.entry(stream).or_insert_with(|| {
                streams.push(LogStream {
                    labels: corpus.labels(stream).clone(),
                    entries: Vec::new(),
                });
                streams.len() - 1
            });
            streams[slot].entries.push(LogEntry::new(timestamp, line));
        }
        written += take;
        bodies.push(tidewatch_model::loki_push::encode_push_protobuf(&LogPush { streams }));
    }
    if let Some(mut raw) = raw {
        raw.flush()?;
    }
    let compressed: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "streams={} lines={} requests={} raw_bytes={raw_bytes} compressed_bytes={compressed}",
        corpus.len(),
        options.lines,
        bodies.len()
    );
    let client = reqwest::Client::builder().build().context("building HTTP client")?;
    let mut headers = vec![("Content-Type", "application/x-protobuf".to_string())];
    if let Some(tenant) = &options.tenant {
        headers.push(("X-Scope-OrgID", tenant.clone()));
    }
    let before = options.receiver_pid.and_then(read_process);
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    post_all(&client, &options.url, &headers, bodies, options.concurrency, &failures).await?;
    let elapsed = started.elapsed().as_secs_f64().max(f64::EPSILON);
    let after = options.receiver_pid.and_then(read_process);
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "elapsed_s={elapsed:.3} lines_per_s={:.0} mb_per_s={:.1} failed_requests={failed}",
        options.lines as f64 / elapsed,
        raw_bytes as f64 / elapsed / 1e6
    );
    if let (Some(before), Some(after)) = (before, after) {
        let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.01);
        println!(
            "receiver_cpu_s={cpu:.2} lines_per_cpu_s={:.0} mb_per_cpu_s={:.1} receiver_peak_rss_bytes={}",
            options.lines as f64 / cpu,
            raw_bytes as f64 / cpu / 1e6,
            after.peak_rss_bytes
        );
    }
    if failed > 0 {
        bail!("{failed} requests failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_and_varied() {
        let lines = |seed| {
            let mut corpus = LogCorpus::kubernetes(8, seed);
            (0..400)
                .map(|i| corpus.line(i % 8, i as i64 * 1_000_000))
                .collect::<Vec<_>>()
        };
        let a = lines(7);
        assert_eq!(a, lines(7), "same seed, same lines");
        assert_ne!(a, lines(8));
        assert!(
            a.iter()
                .any(|l| l.starts_with('{') && serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
        assert!(a.iter().any(|l| l.contains("level=") && l.contains("msg=\"")));
        assert!(a.iter().any(|l| l.starts_with("\tat ")), "stack trace lines");
        assert!(a.iter().any(|l| l.contains("HTTP/1.1\"")));
        // Every JSON line parses: the generator must not emit broken JSON.
        for line in a.iter().filter(|l| l.starts_with('{')) {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
