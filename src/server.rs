//! Wiring: storage behind the query crate's Prometheus API, the admin and
//! health endpoints, the maintenance loop and self-monitoring.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tidewatch_model::{Clock, SystemClock, TenantId};
use tidewatch_query::loki_tail::{TailHub, Tailing};
use tidewatch_query::stats::HttpStats;
use tidewatch_storage::Storage;

use crate::config::ConfigFile;
use crate::selfmon;

/// How the server is started.
#[derive(Debug, Clone)]
pub(crate) struct ServerOptions {
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) config: Option<PathBuf>,
    /// Ingest our own metrics at this interval (`tidewatch up`).
    pub(crate) self_monitor: Option<Duration>,
    pub(crate) maintenance_interval: Duration,
    /// Run the in-process collector (`tidewatch up`).
    pub(crate) collector: bool,
}

#[derive(Debug, Clone)]
struct AppState {
    storage: Arc<Storage>,
    http: Arc<HttpStats>,
}

const ENDPOINTS: &[(&str, &str)] = &[
    (
        "POST",
        "/api/v1/write                 Prometheus remote write 1.0 and 2.0",
    ),
    ("GET ", "/api/v1/query, /api/v1/query_range          PromQL"),
    (
        "GET ",
        "/api/v1/query_exemplars, /api/v1/format_query, /api/v1/parse_query",
    ),
    ("GET ", "/api/v1/series, /api/v1/labels, /api/v1/label/<name>/values"),
    (
        "GET ",
        "/api/v1/metadata, /api/v1/status/buildinfo, /api/v1/status/tsdb",
    ),
    (
        "POST",
        "/loki/api/v1/push              Loki push (protobuf + snappy, JSON)",
    ),
    (
        "GET ",
        "/loki/api/v1/labels, /loki/api/v1/label/<name>/values, /loki/api/v1/series",
    ),
    ("GET ", "/loki/api/v1/index/stats, /loki/api/v1/index/volume[_range]"),
    (
        "GET ",
        "/loki/api/v1/detected_fields, /loki/api/v1/patterns  Logs Drilldown",
    ),
    ("GET ", "/api/v1/logs/search            full-text search over logs"),
    ("POST", "/api/v1/admin/flush           write the heads into blocks now"),
    ("GET ", "/metrics                      Tidewatch's own metrics"),
    ("GET ", "/-/healthy, /-/ready"),
];

/// Opens storage and serves until Ctrl-C or SIGTERM.
pub(crate) async fn run(options: ServerOptions) -> anyhow::Result<()> {
    let config_file = match &options.config {
        Some(path) => ConfigFile::read(path)?,
        None => ConfigFile::default(),
    };
    let collector_section = config_file.collector.clone();
    let settings = config_file.into_settings(&options.data_dir)?;
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating data directory {}", options.data_dir.display()))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let storage = Storage::open(settings.storage, clock.clone())
        .await
        .with_context(|| format!("opening storage in {}", options.data_dir.display()))?;
    let http = Arc::new(HttpStats::default());
    let state = AppState {
        storage: storage.clone(),
        http: http.clone(),
    };
    let own_routes = Router::new()
        .route("/", get(index))
        .route("/api/v1/admin/flush", post(flush))
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Tidewatch is Healthy.\n" }))
        .route("/-/ready", get(|| async { "Tidewatch is Ready.\n" }))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            http.clone(),
            tidewatch_query::api::record_stats,
        ));
    // Acknowledged log pushes are announced here for `/loki/api/v1/tail`.
    let tail_hub = Arc::new(TailHub::default());
    let app = tidewatch_query::prometheus_router(storage.clone(), settings.api, http.clone())
        .merge(tidewatch_query::loki_push_router(
            Arc::new(Tailing::new(storage.clone(), tail_hub.clone())),
            settings.log_push,
            clock.clone(),
            http.clone(),
        ))
        .merge(logs_routes(storage.clone(), settings.log_query, tail_hub, http.clone()))
        .merge(own_routes);

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let address = listener.local_addr()?;
    print_banner(address, &options);

    let maintenance = tokio::spawn(maintenance_loop(storage.clone(), options.maintenance_interval));
    let self_monitor = options.self_monitor.map(|interval| {
        tokio::spawn(self_monitor_loop(
            storage.clone(),
            http.clone(),
            clock,
            address.to_string(),
            interval,
        ))
    });

    let collector = if options.collector {
        let config = crate::collector::in_process_config(collector_section, address, &options.data_dir);
        crate::collector::start_in_process(config).await
    } else {
        None
    };
    // On Ctrl-C the collector stops first, so its last batch still reaches
    // the server before the server stops listening.
    let stopped = async move {
        shutdown_signal().await;
        if let Some(collector) = collector {
            collector.stop().await;
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
        .context("serving HTTP")?;
    maintenance.abort();
    if let Some(task) = self_monitor {
        task.abort();
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Loki's browsing endpoints and full-text search, counted like the rest.
fn logs_routes(
    storage: Arc<Storage>,
    config: tidewatch_query::loki_api::LokiQueryConfig,
    tail_hub: Arc<TailHub>,
    http: Arc<HttpStats>,
) -> Router {
    tidewatch_query::loki_api::loki_browse_router(storage.clone(), config)
        .merge(tidewatch_query::loki_tail::loki_tail_router(storage.clone(), tail_hub))
        .merge(tidewatch_query::log_search::log_search_router(storage))
        .layer(axum::middleware::from_fn_with_state(
            http,
            tidewatch_query::api::record_stats,
        ))
}

fn print_banner(address: SocketAddr, options: &ServerOptions) {
    println!("Tidewatch {} listening on http://{address}", env!("CARGO_PKG_VERSION"));
    println!("  data directory: {}", options.data_dir.display());
    if let Some(interval) = options.self_monitor {
        println!(
            "  self-monitoring: own metrics ingested every {}s (job=\"tidewatch\")",
            interval.as_secs()
        );
    }
    for (method, path) in ENDPOINTS {
        println!("  {method} http://{address}{path}");
    }
    println!("  Prometheus: remote_write: [{{url: http://{address}/api/v1/write}}]");
    println!("  Grafana: add a Prometheus data source with URL http://{address}");
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    println!("shutting down");
}

async fn maintenance_loop(storage: Arc<Storage>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = storage.maintain().await {
            tracing::error!(error = %e, "storage maintenance failed");
        }
        crate::memory::release_free_memory();
    }
}

async fn self_monitor_loop(
    storage: Arc<Storage>,
    http: Arc<HttpStats>,
    clock: Arc<dyn Clock>,
    instance: String,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tenant = TenantId::default_tenant();
    loop {
        ticker.tick().await;
        let families = selfmon::collect(&storage, &http);
        let batch = selfmon::to_batch(&families, &instance, clock.now_ms());
        if let Err(e) = storage.append(&tenant, batch).await {
            tracing::warn!(error = %e, "self-monitoring write failed");
        }
    }
}

async fn index() -> Response {
    let mut text = String::from("Tidewatch: logs, metrics and alerts for container clusters.\n\n");
    for (method, path) in ENDPOINTS {
        text.push_str(&format!("{method} {path}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn flush(State(state): State<AppState>) -> Response {
    let flushed = state.storage.flush_all().await;
    crate::memory::release_free_memory();
    match flushed {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "flush failed");
            tidewatch_query::Error {
                error_type: tidewatch_query::ErrorType::Internal,
                message: format!("flush failed: {e}"),
            }
            .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let families = selfmon::collect(&state.storage, &state.http);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        selfmon::render_text(&families),
    )
        .into_response()
}
