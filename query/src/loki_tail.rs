//! `/loki/api/v1/tail`: live tailing over a WebSocket, as Grafana's "Live"
//! button and `logcli --tail` use it.
//!
//! Every acknowledged push is published on a [`TailHub`] by [`Tailing`], a
//! wrapper around the store that pushes first and publishes after the WAL
//! has the entries. A tail connection subscribes, sends the newest `limit`
//! entries since `start` (default: the last hour), then every new entry its
//! query keeps, in Loki's message shape:
//! `{"streams":[{"stream":{…},"values":[["<ns>","line"]]}],"dropped_entries":null}`.
//! A client too slow to keep up loses entries, reported in `dropped_entries`.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value as Json, json};
use tidewatch_model::logs::{
    Direction, LogIngest, LogPush, LogPushSummary, LogRead, LogSearch, LogSearchPage, LogSearchRequest, LogSelect,
    LogStream, NsRange,
};
use tidewatch_model::{Error as ModelError, Labels, Matcher, TenantId};
use tokio::sync::broadcast;

use crate::api::tenant_from_headers;
use crate::error::Error;
use crate::logql::{self, LiveFilter, LogQueryParams, LogQueryResult, StreamResult};
use crate::loki_api::LokiError;
use crate::loki_params::{DEFAULT_SINCE_NS, parse_limit, parse_time};
use crate::params::Params;

/// Pushes waiting for slow tail connections; beyond this they lose entries.
const HUB_CAPACITY: usize = 1024;
/// Loki refuses tail `limit`s above this.
const MAX_TAIL_LIMIT: usize = 5000;

/// Where acknowledged pushes are announced to tail connections.
#[derive(Debug)]
pub struct TailHub {
    sender: broadcast::Sender<Arc<(TenantId, LogPush)>>,
}

impl Default for TailHub {
    fn default() -> Self {
        TailHub {
            sender: broadcast::channel(HUB_CAPACITY).0,
        }
    }
}

impl TailHub {
    fn subscribe(&self) -> broadcast::Receiver<Arc<(TenantId, LogPush)>> {
        self.sender.subscribe()
    }
}

/// A store whose acknowledged pushes are announced on a [`TailHub`]; reads
/// and searches go straight through.
#[derive(Debug)]
pub struct Tailing<S> {
    store: Arc<S>,
    hub: Arc<TailHub>,
}

impl<S> Tailing<S> {
    pub fn new(store: Arc<S>, hub: Arc<TailHub>) -> Self {
        Tailing { store, hub }
    }
}

impl<S: LogIngest> LogIngest for Tailing<S> {
    async fn push(&self, tenant: &TenantId, push: LogPush) -> Result<LogPushSummary, ModelError> {
        // Copy only when someone is tailing: most pushes have no audience.
        let copy = (self.hub.sender.receiver_count() > 0).then(|| push.clone());
        let summary = self.store.push(tenant, push).await?;
        if let Some(copy) = copy {
            // No receiver left is fine: the tail went away meanwhile.
            let _ = self.hub.sender.send(Arc::new((tenant.clone(), copy)));
        }
        Ok(summary)
    }
}

impl<S: LogRead> LogRead for Tailing<S> {
    async fn visit_logs<F>(&self, tenant: &TenantId, select: &LogSelect, visit: F) -> Result<(), ModelError>
    where
        F: FnMut(LogStream) -> Result<(), ModelError> + Send,
    {
        self.store.visit_logs(tenant, select, visit).await
    }

    async fn log_series(
        &self,
        tenant: &TenantId,
        matchers: &[Matcher],
        range: NsRange,
    ) -> Result<Vec<Labels>, ModelError> {
        self.store.log_series(tenant, matchers, range).await
    }
}

impl<S: LogSearch> LogSearch for Tailing<S> {
    async fn search_logs(&self, tenant: &TenantId, request: &LogSearchRequest) -> Result<LogSearchPage, ModelError> {
        self.store.search_logs(tenant, request).await
    }
}

struct TailState<S> {
    store: Arc<S>,
    hub: Arc<TailHub>,
}

/// The tail endpoint: history from `store`, live entries from `hub`.
pub fn loki_tail_router<S: LogRead>(store: Arc<S>, hub: Arc<TailHub>) -> Router {
    Router::new()
        .route("/loki/api/v1/tail", get(tail::<S>))
        .with_state(Arc::new(TailState { store, hub }))
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

async fn tail<S: LogRead>(
    State(state): State<Arc<TailState<S>>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, LokiError> {
    let params = Params::from_request(raw.as_deref(), None);
    let tenant = tenant_from_headers(&headers)?;
    let query = params
        .get("query")
        .ok_or_else(|| LokiError(Error::bad_data("query parameter is required")))?;
    let now = now_ns();
    let filter = LiveFilter::compile(&logql::parse(query)?, now)?;
    let limit = parse_limit(params.get("limit"))?;
    if limit > MAX_TAIL_LIMIT {
        return Err(Error::bad_data(format!("limit of tail requests cannot be larger than {MAX_TAIL_LIMIT}")).into());
    }
    let start = parse_time("start", params.get("start"))?.unwrap_or(now - DEFAULT_SINCE_NS);
    // Subscribe before reading history, so nothing pushed in between is missed.
    let live = state.hub.subscribe();
    let history = history(&*state.store, &tenant, &filter, start, now, limit).await?;
    Ok(upgrade.on_upgrade(move |socket| stream_tail(socket, tenant, filter, history, live)))
}

/// The newest `limit` entries in [start, now], oldest first.
async fn history<S: LogRead>(
    store: &S,
    tenant: &TenantId,
    filter: &LiveFilter,
    start: i64,
    now: i64,
    limit: usize,
) -> Result<Vec<StreamResult>, LokiError> {
    if start >= now {
        return Ok(Vec::new());
    }
    let expr = logql::Expr::Log(filter.log().clone());
    // Log queries have no steps; one step spanning the range passes the
    // resolution check.
    let params = LogQueryParams::range(start, now + 1, now + 1 - start, Direction::Backward, limit);
    match logql::evaluate(store, tenant, &expr, &params).await? {
        LogQueryResult::Streams(mut streams) => {
            for stream in &mut streams {
                stream.entries.reverse();
            }
            Ok(streams)
        }
        _ => Ok(Vec::new()),
    }
}

fn message(streams: &[StreamResult], dropped: u64) -> String {
    let streams: Vec<Json> = streams
        .iter()
        .map(|s| {
            let labels: serde_json::Map<String, Json> = s
                .labels
                .iter()
                .map(|l| (l.name.clone(), Json::String(l.value.clone())))
                .collect();
            let values: Vec<Json> = s
                .entries
                .iter()
                .map(|e| json!([e.timestamp.to_string(), e.line]))
                .collect();
            json!({"stream": labels, "values": values})
        })
        .collect();
    // Loki lists each dropped entry; we only know how many were lost.
    let dropped = if dropped == 0 {
        Json::Null
    } else {
        json!([{"labels": {}, "timestamp": now_ns().to_string(), "count": dropped}])
    };
    json!({"streams": streams, "dropped_entries": dropped}).to_string()
}

async fn stream_tail(
    mut socket: WebSocket,
    tenant: TenantId,
    filter: LiveFilter,
    history: Vec<StreamResult>,
    mut live: broadcast::Receiver<Arc<(TenantId, LogPush)>>,
) {
    if !history.is_empty() && socket.send(Message::Text(message(&history, 0).into())).await.is_err() {
        return;
    }
    let mut dropped = 0u64;
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(pushed) => {
                    let (pushed_tenant, push) = &*pushed;
                    if *pushed_tenant != tenant {
                        continue;
                    }
                    let kept: Vec<StreamResult> = push.streams.iter().flat_map(|s| filter.apply(s)).collect();
                    if kept.is_empty() {
                        continue;
                    }
                    if socket.send(Message::Text(message(&kept, dropped).into())).await.is_err() {
                        return;
                    }
                    dropped = 0;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a tail connection fell behind");
                    dropped += missed;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // The client closed, went away, or broke the protocol.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
