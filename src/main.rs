//! The `tidewatch` binary: parses the command line and configuration and wires
//! the crates together. Logic lives in the crates.

mod collector;
mod config;
mod loadgen;
mod loadgen_histograms;
mod loadgen_logs;
mod memory;
mod selfmon;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Tidewatch: logs, metrics and alerts for container clusters, in one binary.
#[derive(Debug, Parser)]
#[command(name = "tidewatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// All-in-one: the server plus self-monitoring (its own metrics ingested every 15 s).
    Up {
        /// Address for every API.
        #[arg(long, default_value = "127.0.0.1:9470")]
        listen: SocketAddr,
        /// Where WAL and blocks live.
        #[arg(long, default_value = "./tidewatch-data")]
        data_dir: PathBuf,
        /// YAML configuration file (see README).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The server alone: ingestion, storage and the query APIs, no self-monitoring.
    Server {
        #[arg(long, default_value = "127.0.0.1:9470")]
        listen: SocketAddr,
        #[arg(long, default_value = "./tidewatch-data")]
        data_dir: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The node agent (a Kubernetes DaemonSet): tails container logs, scrapes
    /// metrics and ships both to a Tidewatch server, with checkpoints and a spool.
    Collector {
        /// The server's base URL (logs go to /loki/api/v1/push, metrics to /api/v1/write).
        #[arg(long)]
        server: Option<String>,
        /// Log files to tail (default /var/log/containers/*.log).
        #[arg(long)]
        log_glob: Option<String>,
        /// Where positions and the spool live (default ./tidewatch-collector).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// This node's name (default $NODE_NAME, else the host name).
        #[arg(long)]
        node: Option<String>,
        /// Sent as X-Scope-OrgID.
        #[arg(long)]
        tenant: Option<String>,
        /// Serve the collector's own /metrics here (e.g. 0.0.0.0:9471).
        #[arg(long)]
        listen: Option<String>,
        /// YAML configuration file (see README); flags win over it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run Prometheus `promqltest` scripts against the PromQL engine; ends with
    /// `N passed, M failed[, K skipped]`, exit status 1 when anything failed.
    Promqltest {
        /// Script files (`*.test`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print every skipped statement with its reason.
        #[arg(long)]
        show_skipped: bool,
    },
    /// Run Loki `logqltest` scripts against the LogQL engine; ends with
    /// `N passed, M failed[, K skipped]`, exit status 1 when anything failed.
    Logqltest {
        /// Script files (`*.logqltest`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Benchmarks and load generators.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Send realistic Kubernetes series as remote write and report throughput
    /// (and, with --receiver-pid, the receiver's CPU and peak memory).
    RemoteWrite {
        /// Remote write endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9470/api/v1/write")]
        url: String,
        /// Number of active series.
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        /// Scrapes (15 s apart) to send per series.
        #[arg(long, default_value_t = 20)]
        scrapes: usize,
        /// Send many samples per series per request instead of the live shape.
        #[arg(long)]
        backfill: bool,
        /// Use remote write 2.0.
        #[arg(long)]
        v2: bool,
        /// Series per request (Prometheus sends up to 2000 samples per request).
        #[arg(long, default_value_t = 2000)]
        series_per_request: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Process id of the receiver, to measure its CPU time and peak RSS.
        #[arg(long)]
        receiver_pid: Option<u32>,
        /// Tenant header to send.
        #[arg(long)]
        tenant: Option<String>,
        /// Timestamp (ms) of the first scrape; default: now minus the run's span.
        #[arg(long)]
        start_ms: Option<i64>,
        /// Send native histograms instead of the float series: one
        /// `http_request_duration_seconds` per pod and route (--series counts
        /// them), integer counts that grow every scrape and reset when a pod
        /// restarts, as remote write histograms (bucket deltas).
        #[arg(long)]
        native_histograms: bool,
        /// Exponential schema of --native-histograms (-4..=8; 3: 8 buckets per power of two).
        #[arg(long, default_value_t = loadgen_histograms::DEFAULT_SCHEMA, allow_negative_numbers = true)]
        histogram_schema: i32,
        /// Seed of the generated values (the same seed sends the same data).
        #[arg(long, default_value_t = loadgen::DEFAULT_SEED)]
        seed: u64,
        /// Wait until this URL answers 2xx before sending.
        #[arg(long)]
        wait_for: Option<String>,
    },
    /// Push realistic Kubernetes container logs through the Loki push API and
    /// report throughput (and, with --receiver-pid, the receiver's CPU and
    /// peak memory).
    LokiPush {
        /// Loki push endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9470/loki/api/v1/push")]
        url: String,
        /// Number of streams (containers).
        #[arg(long, default_value_t = 1_000)]
        streams: usize,
        /// Lines to push in total, round robin over the streams, 1 ms apart.
        #[arg(long, default_value_t = 1_000_000)]
        lines: usize,
        /// Lines per request (Promtail batches about 1 MiB).
        #[arg(long, default_value_t = 5_000)]
        lines_per_request: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Process id of the receiver, to measure its CPU time and peak RSS.
        #[arg(long)]
        receiver_pid: Option<u32>,
        /// Tenant header to send.
        #[arg(long)]
        tenant: Option<String>,
        /// Timestamp (ns) of the first line; default: now minus the run's span.
        #[arg(long)]
        start_ns: Option<i64>,
        /// Also write every line to this file (for grep/rg comparisons).
        #[arg(long)]
        raw_file: Option<PathBuf>,
        /// Seed of the generated lines.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Wait until this URL answers 2xx before sending.
        #[arg(long)]
        wait_for: Option<String>,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// jemalloc rather than glibc's malloc: a push allocates a string per line
/// and a flush frees millions of them, and glibc's bins spent 19 % of the
/// server's CPU on that at 10k log streams. With jemalloc the push at 10k
/// streams took 20 % less CPU and the flush 5-10 % less, for 13 % more peak
/// RSS on a 1M-line push (BENCHMARKS.md, session 13). mimalloc saved less
/// and cost +40 % RSS.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up {
                listen,
                data_dir,
                config,
            } => {
                server::run(server::ServerOptions {
                    listen,
                    data_dir,
                    config,
                    self_monitor: Some(Duration::from_secs(15)),
                    maintenance_interval: Duration::from_secs(30),
                    collector: true,
                })
                .await
            }
            Command::Server {
                listen,
                data_dir,
                config,
            } => {
                server::run(server::ServerOptions {
                    listen,
                    data_dir,
                    config,
                    self_monitor: None,
                    maintenance_interval: Duration::from_secs(30),
                    collector: false,
                })
                .await
            }
            Command::Collector {
                server,
                log_glob,
                state_dir,
                node,
                tenant,
                listen,
                config,
            } => {
                collector::run_standalone(collector::CollectorFlags {
                    config,
                    server,
                    log_glob,
                    state_dir,
                    node,
                    tenant,
                    listen,
                })
                .await
            }
            Command::Promqltest { files, show_skipped } => promqltest(&files, show_skipped).await,
            Command::Logqltest { files } => logqltest(&files).await,
            Command::Bench { bench } => match bench {
                BenchCommand::RemoteWrite {
                    url,
                    series,
                    scrapes,
                    backfill,
                    v2,
                    series_per_request,
                    concurrency,
                    receiver_pid,
                    tenant,
                    start_ms,
                    native_histograms,
                    histogram_schema,
                    seed,
                    wait_for,
                } => {
                    if let Some(ready_url) = wait_for {
                        loadgen::wait_ready(&ready_url, Duration::from_secs(60)).await?;
                    }
                    loadgen::run(loadgen::LoadOptions {
                        url,
                        series,
                        scrapes,
                        backfill,
                        v2,
                        series_per_request,
                        concurrency,
                        receiver_pid,
                        tenant,
                        start_ms,
                        native_histograms,
                        histogram_schema,
                        seed,
                    })
                    .await
                }
                BenchCommand::LokiPush {
                    url,
                    streams,
                    lines,
                    lines_per_request,
                    concurrency,
                    receiver_pid,
                    tenant,
                    start_ns,
                    raw_file,
                    seed,
                    wait_for,
                } => {
                    if let Some(ready_url) = wait_for {
                        loadgen::wait_ready(&ready_url, Duration::from_secs(60)).await?;
                    }
                    loadgen_logs::run(loadgen_logs::LogLoadOptions {
                        url,
                        streams,
                        lines,
                        lines_per_request,
                        concurrency,
                        receiver_pid,
                        tenant,
                        start_ns,
                        raw_file,
                        seed,
                    })
                    .await
                }
            },
        }
    })
}

/// `tidewatch promqltest`: runs the scripts, prints failures (and skips) and the summary.
async fn promqltest(files: &[PathBuf], show_skipped: bool) -> anyhow::Result<()> {
    use tidewatch_query::promqltest::{Outcome, Report, run_script};
    let mut all = Report::default();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let name = file
            .file_name()
            .map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
        all.statements.extend(run_script(&name, &text).await.statements);
    }
    for statement in &all.statements {
        match &statement.outcome {
            Outcome::Failed(message) => {
                println!(
                    "FAIL {}:{}: {}
     {message}",
                    statement.file, statement.line, statement.expr
                )
            }
            Outcome::Skipped(reason) if show_skipped => {
                println!(
                    "SKIP {}:{}: {}
     {reason}",
                    statement.file, statement.line, statement.expr
                )
            }
            _ => {}
        }
    }
    println!("{}", all.summary());
    if all.failed() > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `tidewatch logqltest`: runs the scripts, prints failures, the summary and every skip's reason.
async fn logqltest(files: &[PathBuf]) -> anyhow::Result<()> {
    use tidewatch_query::logqltest::{Outcome, Report, run_script};
    let mut all = Report::default();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let name = file
            .file_name()
            .map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
        all.statements.extend(run_script(&name, &text).await.statements);
    }
    for statement in &all.statements {
        if let Outcome::Failed(message) = &statement.outcome {
            println!(
                "FAIL {}:{}: {}\n     {message}",
                statement.file, statement.line, statement.expr
            );
        }
    }
    println!("{}", all.summary());
    for statement in &all.statements {
        if let Outcome::Skipped(reason) = &statement.outcome {
            println!("  skipped {}:{}: {reason}", statement.file, statement.line);
        }
    }
    if all.failed() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
