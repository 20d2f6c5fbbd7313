//! Wiring the collector: standalone (`tidewatch collector`, the DaemonSet)
//! and in process (`tidewatch up`, shipping to its own server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tidewatch_collector::config::DEFAULT_LOG_GLOB;
use tidewatch_collector::{CollectorConfig, RunningCollector};

/// Command-line overrides of the collector's configuration file.
#[derive(Debug, Default, Clone)]
pub(crate) struct CollectorFlags {
    pub(crate) config: Option<PathBuf>,
    pub(crate) server: Option<String>,
    pub(crate) log_glob: Option<String>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) node: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) listen: Option<String>,
}

impl CollectorFlags {
    /// The file (or defaults) with the flags applied on top, validated.
    pub(crate) fn into_config(self) -> anyhow::Result<CollectorConfig> {
        let mut config = match &self.config {
            Some(path) => CollectorConfig::load(path)?,
            None => CollectorConfig::default(),
        };
        if let Some(server) = self.server {
            config.server.url = server;
        }
        if let Some(glob) = self.log_glob {
            config.logs.glob = glob;
        }
        if let Some(state_dir) = self.state_dir {
            config.state_dir = state_dir;
        }
        if let Some(node) = self.node {
            config.node = Some(node);
        }
        if let Some(tenant) = self.tenant {
            config.server.tenant = Some(tenant);
        }
        if let Some(listen) = self.listen {
            config.listen = Some(listen);
        }
        config
            .validate()
            .map_err(|message| anyhow::anyhow!("collector configuration: {message}"))?;
        Ok(config)
    }
}

/// `tidewatch collector`: runs until Ctrl-C or SIGTERM, then ships or spools
/// what it read and saves its positions.
pub(crate) async fn run_standalone(flags: CollectorFlags) -> anyhow::Result<()> {
    let config = flags.into_config()?;
    println!(
        "Tidewatch collector {} shipping to {} (node {}, state in {})",
        env!("CARGO_PKG_VERSION"),
        config.server.url,
        config.node_name(),
        config.state_dir.display()
    );
    if config.logs.enabled {
        println!("  tailing {}", config.logs.glob);
    }
    let collector = RunningCollector::start(config)
        .await
        .context("starting the collector")?;
    if let Some(addr) = collector.metrics_addr {
        println!("  own metrics on http://{addr}/metrics");
    }
    crate::server::shutdown_signal().await;
    collector.stop().await;
    Ok(())
}

/// The collector `tidewatch up` runs next to its server: the host's logs
/// (when the glob's directory exists) and its own counters, shipped to the
/// server on `listen`, state under the data directory.
pub(crate) fn in_process_config(
    section: Option<CollectorConfig>,
    listen: SocketAddr,
    data_dir: &Path,
) -> CollectorConfig {
    let configured = section.is_some();
    let mut config = section.unwrap_or_default();
    let host = if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    };
    let host = if listen.is_ipv6() && !listen.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    if !configured || config.server.url == tidewatch_collector::config::DEFAULT_SERVER {
        config.server.url = format!("http://{host}:{}", listen.port());
    }
    if !configured || config.state_dir == CollectorConfig::default().state_dir {
        config.state_dir = data_dir.join("collector");
    }
    if config.logs.glob == DEFAULT_LOG_GLOB && !Path::new("/var/log/containers").is_dir() {
        // Not a Kubernetes node: nothing to tail unless configured.
        config.logs.enabled = false;
    }
    config
}

/// Starts the in-process collector; failures are logged, not fatal: the
/// server is useful without it.
pub(crate) async fn start_in_process(config: CollectorConfig) -> Option<RunningCollector> {
    let logs = config.logs.enabled.then(|| config.logs.glob.clone());
    match RunningCollector::start(config).await {
        Ok(collector) => {
            match logs {
                Some(glob) => println!("  collector: tailing {glob}"),
                None => println!("  collector: no log glob to tail (set collector.logs.glob)"),
            }
            Some(collector)
        }
        Err(error) => {
            tracing::error!(%error, "in-process collector did not start");
            None
        }
    }
}
