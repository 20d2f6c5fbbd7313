//! `GET /api/v1/logs/search`: full-text search for people who want search
//! rather than LogQL. Tantivy's query syntax (terms, phrases, `AND`/`OR`/`NOT`,
//! `labels.<name>:<value>`), newest first, with the total hit count and a
//! cursor for the next page.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use tidewatch_model::logs::{LogSearch, LogSearchRequest, MAX_SEARCH_LIMIT, NsRange};

use crate::api::{request_params, tenant_from_headers};
use crate::error::Error;
use crate::loki_params::{parse_bounds, parse_limit};

/// The search endpoint over `store`.
pub fn log_search_router<S: LogSearch>(store: Arc<S>) -> Router {
    Router::new()
        .route("/api/v1/logs/search", get(search::<S>).post(search::<S>))
        .with_state(store)
}

async fn search<S: LogSearch>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let query = params
        .get("q")
        .or_else(|| params.get("query"))
        .ok_or_else(|| Error::bad_data("missing parameter q: the search query"))?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let (start, end) = parse_bounds(params.get("start"), params.get("end"), params.get("since"), now)?;
    if end < start {
        return Err(Error::bad_data("end timestamp must not be before start time"));
    }
    let limit = parse_limit(params.get("limit"))?;
    if limit > MAX_SEARCH_LIMIT {
        return Err(Error::bad_data(format!(
            "limit {limit} is above the maximum of {MAX_SEARCH_LIMIT}"
        )));
    }
    let request = LogSearchRequest {
        query: query.to_string(),
        range: NsRange::new(start, end),
        limit,
        cursor: params.get("cursor").map(str::to_string),
    };
    let page = store.search_logs(&tenant, &request).await?;
    let hits: Vec<Json> = page
        .hits
        .iter()
        .map(|hit| {
            let stream: serde_json::Map<String, Json> = hit
                .labels
                .iter()
                .map(|l| (l.name.clone(), Json::String(l.value.clone())))
                .collect();
            let mut out = json!({"stream": stream, "timestamp": hit.timestamp.to_string(), "line": hit.line});
            if !hit.structured_metadata.is_empty() {
                out["structured_metadata"] = hit
                    .structured_metadata
                    .iter()
                    .map(|l| (l.name.clone(), Json::String(l.value.clone())))
                    .collect::<serde_json::Map<String, Json>>()
                    .into();
            }
            out
        })
        .collect();
    let body = json!({
        "status": "success",
        "data": {"total": page.total, "hits": hits, "next": page.next_cursor},
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}
