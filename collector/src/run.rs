//! Starting and stopping a whole collector: the tailer thread, the shippers,
//! the encoders between channels and shippers, the positions writer, and the
//! collector's own `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidewatch_model::logs::LogPush;
use tidewatch_model::seam::WriteBatch;
use tidewatch_model::{Label, Labels};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::CollectorConfig;
use crate::error::{Error, Result};
use crate::kubernetes::{self, KubeMetadata};
use crate::positions::Positions;
use crate::scrape::{ScrapeStats, Scraper};
use crate::selfmetrics::CollectorStats;
use crate::selfmetrics::MetricsSource;
use crate::ship::{Endpoint, Kind, Outgoing, Shipper};
use crate::spool::Spool;
use crate::tail::{StreamLabeler, Tailer};
use crate::{NoPods, PodDirectory, labels};

/// Batches waiting for a shipper; small, so a slow server slows the sources.
const SHIP_QUEUE: usize = 4;
/// Scrapes and event pushes waiting for encoding.
const SOURCE_QUEUE: usize = 64;
/// How often acknowledged positions are written.
const POSITIONS_SAVE_INTERVAL: Duration = Duration::from_millis(200);
/// How long start-up waits for the first pod list.
const KUBE_SYNC_WAIT: Duration = Duration::from_secs(10);
/// The job label of the collector's own metrics.
pub const SELF_JOB: &str = "tidewatch-collector";

/// A running collector.
#[derive(Debug)]
pub struct RunningCollector {
    stop_tailer: Arc<AtomicBool>,
    tailer: Option<std::thread::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    shippers: Vec<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
    positions: Positions,
    stats: Arc<CollectorStats>,
    metrics_tx: Option<mpsc::Sender<WriteBatch>>,
    events_tx: Option<mpsc::Sender<LogPush>>,
    /// Address the collector's `/metrics` listens on, when it does.
    pub metrics_addr: Option<std::net::SocketAddr>,
    node: String,
    kube: Option<KubeMetadata>,
}

impl RunningCollector {
    /// Starts everything the configuration enables, with Kubernetes metadata
    /// when `kubernetes.enabled` says so (or, unset, inside a cluster).
    pub async fn start(config: CollectorConfig) -> Result<RunningCollector> {
        RunningCollector::start_with_pods(config, None).await
    }

    /// Like [`RunningCollector::start`] with a given pod directory instead of
    /// one from the Kubernetes API (tests, or none at all with [`crate::NoPods`]).
    pub async fn start_with_pods(
        config: CollectorConfig,
        pods: Option<Arc<dyn PodDirectory>>,
    ) -> Result<RunningCollector> {
        let state_dir = config.state_dir.clone();
        std::fs::create_dir_all(&state_dir).map_err(|e| Error::io(&state_dir, e))?;
        let positions = match Positions::load(&state_dir) {
            Ok(positions) => positions,
            Err(error @ Error::CorruptState { .. }) => {
                // Keep going: every file is read again from the start, and
                // the server drops entries it already has.
                tracing::error!(%error, "positions unreadable, moved aside; files are read from the start");
                let path = state_dir.join("positions.json");
                let _ = std::fs::rename(&path, state_dir.join("positions.json.corrupt"));
                Positions::load(&state_dir)?
            }
            Err(error) => return Err(error),
        };
        let node = config.node_name();
        let stats = Arc::new(CollectorStats::default());
        let (shutdown, shutdown_rx) = watch::channel(false);

        let (logs_tx, logs_rx) = mpsc::channel::<Outgoing>(SHIP_QUEUE);
        let (metrics_out_tx, metrics_out_rx) = mpsc::channel::<Outgoing>(SHIP_QUEUE);
        let logs_spool = Spool::open(&state_dir.join("spool").join("logs"), config.spool.max_size)?;
        let metrics_spool = Spool::open(&state_dir.join("spool").join("metrics"), config.spool.max_size)?;
        let logs_shipper = Shipper::new(
            Endpoint::new(&config.server, Kind::Logs)?,
            logs_spool,
            Some(positions.clone()),
            stats.logs.clone(),
        );
        let metrics_shipper = Shipper::new(
            Endpoint::new(&config.server, Kind::Metrics)?,
            metrics_spool,
            None,
            stats.metrics.clone(),
        );
        let shippers = vec![
            tokio::spawn(logs_shipper.run(logs_rx, shutdown_rx.clone())),
            tokio::spawn(metrics_shipper.run(metrics_out_rx, shutdown_rx.clone())),
        ];

        let mut helpers = Vec::new();
        let (metrics_tx, metrics_rx) = mpsc::channel::<WriteBatch>(SOURCE_QUEUE);
        helpers.push(tokio::spawn(encode_metrics(metrics_rx, metrics_out_tx)));
        let (events_tx, events_rx) = mpsc::channel::<LogPush>(SOURCE_QUEUE);
        helpers.push(tokio::spawn(encode_logs(events_rx, logs_tx.clone())));
        helpers.push(tokio::spawn(save_positions(positions.clone(), shutdown_rx.clone())));

        let mut kube = None;
        let pods: Arc<dyn PodDirectory> = match pods {
            Some(pods) => pods,
            None if kubernetes::is_enabled(&config.kubernetes) => {
                match kubernetes::connect(
                    &config.kubernetes,
                    &node,
                    &config.cluster,
                    Some(events_tx.clone()),
                    shutdown_rx.clone(),
                )
                .await
                {
                    Ok(metadata) => {
                        // Files opened before the first pod list would go
                        // out without workload labels; wait a little for it.
                        if tokio::time::timeout(KUBE_SYNC_WAIT, metadata.wait_synced())
                            .await
                            .is_err()
                        {
                            tracing::warn!("pod list not in yet; early lines may lack pod labels");
                        }
                        let directory = metadata.directory();
                        kube = Some(metadata);
                        directory
                    }
                    Err(error) => {
                        tracing::error!(%error, "no Kubernetes metadata");
                        Arc::new(NoPods)
                    }
                }
            }
            None => Arc::new(NoPods),
        };
        if config.metrics.enabled {
            let scraper = Scraper::new(&config, node.clone(), pods.clone(), metrics_tx.clone());
            stats
                .extra
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::new(ScrapeCounters(scraper.stats())));
            helpers.push(tokio::spawn(scraper.run(shutdown_rx.clone())));
        }

        let stop_tailer = Arc::new(AtomicBool::new(false));
        let tailer = if config.logs.enabled && !config.logs.glob.is_empty() {
            let labeler = StreamLabeler {
                node: node.clone(),
                cluster: config.cluster.clone(),
                static_labels: config.logs.labels.clone().into_iter().collect(),
                pods: pods.clone(),
            };
            let tailer = Tailer::new(
                config.logs.clone(),
                positions.clone(),
                labeler,
                stats.tail.clone(),
                logs_tx,
            )?;
            let stop = stop_tailer.clone();
            Some(
                std::thread::Builder::new()
                    .name("tidewatch-tailer".into())
                    .spawn(move || tailer.run(&stop))
                    .map_err(|e| Error::io(&state_dir, e))?,
            )
        } else {
            drop(logs_tx);
            None
        };

        let mut running = RunningCollector {
            stop_tailer,
            tailer,
            shutdown,
            shippers,
            helpers,
            positions,
            stats,
            metrics_tx: Some(metrics_tx),
            events_tx: Some(events_tx),
            metrics_addr: None,
            node,
            kube,
        };
        if config.metrics.enabled {
            running.helpers.push(tokio::spawn(ship_self_metrics(
                running.stats.clone(),
                running.metrics_sender(),
                self_labels(&running.node, &config.cluster),
                config.metrics.scrape_interval,
                shutdown_rx.clone(),
            )));
        }
        if let Some(listen) = &config.listen {
            running.metrics_addr = Some(running.serve_metrics(listen, shutdown_rx).await?);
        }
        Ok(running)
    }

    /// Counters of every part.
    pub fn stats(&self) -> Arc<CollectorStats> {
        self.stats.clone()
    }

    /// Where scraped metrics go (encoded and shipped by remote write).
    pub fn metrics_sender(&self) -> mpsc::Sender<WriteBatch> {
        self.metrics_tx.clone().expect("senders live until stop")
    }

    /// Where log pushes from other sources (Kubernetes events) go.
    pub fn log_sender(&self) -> mpsc::Sender<LogPush> {
        self.events_tx.clone().expect("senders live until stop")
    }

    /// A receiver that turns true when the collector stops, for tasks
    /// started next to it.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The node name everything is labelled with.
    pub fn node(&self) -> &str {
        &self.node
    }

    async fn serve_metrics(&self, listen: &str, mut shutdown: watch::Receiver<bool>) -> Result<std::net::SocketAddr> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::InvalidConfig(format!("listen {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::InvalidConfig(format!("listen {listen}: {e}")))?;
        let stats = self.stats.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let stats = stats.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        stats.render(),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            let stopped = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                tracing::error!(%error, "collector /metrics server failed");
            }
        });
        tracing::info!(%addr, "collector metrics on /metrics");
        Ok(addr)
    }

    /// Stops reading, ships or spools what was read, saves the positions.
    pub async fn stop(mut self) {
        self.stop_tailer.store(true, Ordering::Relaxed);
        if let Some(tailer) = self.tailer.take() {
            // The tailer may be waiting for the shipper; give it a while
            // before the shippers are told to stop (and spool instead).
            let joined = tokio::task::spawn_blocking(move || tailer.join());
            tokio::pin!(joined);
            if tokio::time::timeout(Duration::from_secs(10), &mut joined)
                .await
                .is_err()
            {
                let _ = self.shutdown.send(true);
                let _ = joined.await;
            }
        }
        self.metrics_tx = None;
        self.events_tx = None;
        let _ = self.shutdown.send(true);
        for helper in self.helpers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), helper).await;
        }
        if let Some(kube) = self.kube.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), kube.join()).await;
        }
        for shipper in self.shippers.drain(..) {
            let _ = shipper.await;
        }
        let positions = self.positions.clone();
        let _ = tokio::task::spawn_blocking(move || positions.save_if_dirty()).await;
    }
}

/// The scraper's counters on the collector's `/metrics`.
#[derive(Debug)]
struct ScrapeCounters(Arc<ScrapeStats>);

impl MetricsSource for ScrapeCounters {
    fn render(&self, out: &mut String) {
        let now_ms = tidewatch_model::Clock::now_ms(&tidewatch_model::SystemClock);
        let batch = self.0.write_batch(now_ms);
        out.push_str(&tidewatch_model::exposition::render_text(
            &batch.series,
            &batch.metadata,
        ));
    }
}

fn self_labels(node: &str, cluster: &str) -> Vec<Label> {
    let mut pairs = vec![
        Label::new(labels::JOB, SELF_JOB),
        Label::new(labels::INSTANCE, node),
        Label::new(labels::NODE, node),
    ];
    if !cluster.is_empty() {
        pairs.push(Label::new(labels::CLUSTER, cluster));
    }
    pairs
}

/// Every interval, the collector's own counters go out with the scrapes.
async fn ship_self_metrics(
    stats: Arc<CollectorStats>,
    out: mpsc::Sender<WriteBatch>,
    extra_labels: Vec<Label>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now_ms = tidewatch_model::Clock::now_ms(&tidewatch_model::SystemClock);
        let text = stats.render();
        let scrape = match tidewatch_model::exposition::parse_text(text.as_bytes(), now_ms) {
            Ok(scrape) => scrape,
            Err(error) => {
                tracing::error!(%error, "own metrics did not parse");
                continue;
            }
        };
        let mut batch = scrape.into_write_batch();
        for series in &mut batch.series {
            let mut pairs: Vec<Label> = series.labels.iter().cloned().collect();
            pairs.extend(extra_labels.iter().cloned());
            series.labels = Labels::from_pairs(pairs.into_iter().map(|l| (l.name, l.value)));
        }
        if out.send(batch).await.is_err() {
            return;
        }
    }
}

async fn encode_metrics(mut batches: mpsc::Receiver<WriteBatch>, out: mpsc::Sender<Outgoing>) {
    while let Some(batch) = batches.recv().await {
        let items = (batch.sample_count() + batch.histogram_count()) as u64;
        if batch.series.is_empty() {
            continue;
        }
        let body = tidewatch_model::remote_write::encode_v1(&batch);
        let outgoing = Outgoing {
            body,
            items,
            raw_bytes: 0,
            acks: Vec::new(),
        };
        if out.send(outgoing).await.is_err() {
            return;
        }
    }
}

async fn encode_logs(mut pushes: mpsc::Receiver<LogPush>, out: mpsc::Sender<Outgoing>) {
    while let Some(push) = pushes.recv().await {
        if push.entry_count() == 0 {
            continue;
        }
        let outgoing = Outgoing {
            items: push.entry_count() as u64,
            raw_bytes: push.line_bytes() as u64,
            body: tidewatch_model::loki_push::encode_push_protobuf(&push),
            acks: Vec::new(),
        };
        if out.send(outgoing).await.is_err() {
            return;
        }
    }
}

async fn save_positions(positions: Positions, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(POSITIONS_SAVE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let positions = positions.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || positions.save_if_dirty()).await {
            tracing::error!(%error, "positions could not be saved");
        }
    }
}
