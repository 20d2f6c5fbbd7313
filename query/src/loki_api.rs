//! Loki's HTTP API for browsing logs: label names and values, series,
//! index statistics and volumes, detected fields and patterns, with Loki's
//! JSON shapes. Grafana's Loki data source calls these when it connects,
//! fills its label pickers and draws the log volume histogram; its Logs
//! Drilldown app asks for fields and patterns.
//!
//! Errors are answered as Loki answers them: a plain-text message with a
//! 4xx/5xx status (Grafana shows the text as it is).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use tidewatch_model::logs::{LogRead, LogSelect, NsRange, TimestampNs};
use tidewatch_model::{Labels, Matcher, TenantId};

use crate::api::{format_value, request_params, tenant_from_headers, unescape_label_name};
use crate::error::Error;
use crate::logql::{self, Expr, LogQueryParams, LogQueryResult};
use crate::loki_params::{default_step, parse_bounds, parse_direction, parse_limit, parse_step, parse_time};
use crate::params::Params;
use crate::patterns::{PatternDetector, PatternRange, PatternSeries};

/// A failed Loki API request: Loki's plain-text error body.
#[derive(Debug)]
pub struct LokiError(pub Error);

impl From<Error> for LokiError {
    fn from(error: Error) -> Self {
        LokiError(error)
    }
}

impl From<logql::ParseError> for LokiError {
    fn from(error: logql::ParseError) -> Self {
        LokiError(error.into())
    }
}

impl From<tidewatch_model::Error> for LokiError {
    fn from(error: tidewatch_model::Error) -> Self {
        LokiError(Error::from(error))
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        let status = self.0.error_type.status();
        let mut message = self.0.message;
        message.push('\n');
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
    }
}

type LokiResult = Result<Response, LokiError>;

/// The current time in ns, for default ranges.
fn now_ns() -> TimestampNs {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Longest a LogQL query may run before it is answered with 503.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Limits of the Loki query endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiQueryConfig {
    /// Most log lines one `/loki/api/v1/patterns` request may examine
    /// (`logs.limits.max_pattern_lines_per_query`); 0 for no limit.
    pub max_pattern_lines: usize,
}

impl Default for LokiQueryConfig {
    fn default() -> Self {
        LokiQueryConfig {
            max_pattern_lines: tidewatch_model::log_validate::LogLimits::default().max_pattern_lines_per_query,
        }
    }
}

/// The Loki query and browsing endpoints over `store`.
pub fn loki_browse_router<S: LogRead>(store: Arc<S>, config: LokiQueryConfig) -> Router {
    let patterns_state = PatternsState {
        store: store.clone(),
        max_lines: config.max_pattern_lines,
    };
    Router::new()
        .route("/loki/api/v1/query", get(query::<S>).post(query::<S>))
        .route("/loki/api/v1/query_range", get(query_range::<S>).post(query_range::<S>))
        .route("/loki/api/v1/labels", get(labels::<S>).post(labels::<S>))
        .route(
            "/loki/api/v1/label/{name}/values",
            get(label_values::<S>).post(label_values::<S>),
        )
        .route("/loki/api/v1/series", get(series::<S>).post(series::<S>))
        .route("/loki/api/v1/index/stats", get(index_stats::<S>).post(index_stats::<S>))
        .route("/loki/api/v1/index/volume", get(volume::<S>).post(volume::<S>))
        .route(
            "/loki/api/v1/index/volume_range",
            get(volume_range::<S>).post(volume_range::<S>),
        )
        .route(
            "/loki/api/v1/detected_fields",
            get(detected_fields::<S>).post(detected_fields::<S>),
        )
        .route(
            "/loki/api/v1/detected_field/{name}/values",
            get(detected_field_values::<S>).post(detected_field_values::<S>),
        )
        .with_state(store)
        .merge(
            Router::new()
                .route("/loki/api/v1/patterns", get(patterns::<S>).post(patterns::<S>))
                .with_state(patterns_state),
        )
}

fn success(data: Json) -> Response {
    let body = json!({"status": "success", "data": data});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn range_of(params: &Params) -> Result<NsRange, LokiError> {
    let (start, end) = parse_bounds(params.get("start"), params.get("end"), params.get("since"), now_ns())?;
    if end < start {
        return Err(Error::bad_data("end timestamp must not be before start time").into());
    }
    Ok(NsRange::new(start, end))
}

/// The matchers of a stream selector parameter (`query`, `match[]`): a log
/// query whose pipeline is ignored, as Loki's index endpoints do.
fn selector_matchers(raw: &str) -> Result<Vec<Matcher>, LokiError> {
    match logql::parse(raw)? {
        Expr::Log(log) => Ok(log.matchers),
        Expr::Metric(_) => Err(Error::bad_data(format!("only stream selectors are allowed here, got {raw:?}")).into()),
    }
}

async fn labels<S: LogRead>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let range = range_of(&params)?;
    let names = match params.get("query") {
        Some(query) => {
            let matchers = selector_matchers(query)?;
            let streams = store.log_series(&tenant, &matchers, range).await?;
            let names: std::collections::BTreeSet<&str> =
                streams.iter().flat_map(|l| l.iter().map(|p| p.name.as_str())).collect();
            names.into_iter().map(str::to_string).collect()
        }
        None => store.log_label_names(&tenant, range).await?,
    };
    Ok(success(json!(names)))
}

async fn label_values<S: LogRead>(
    State(store): State<Arc<S>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let name = unescape_label_name(&name)?;
    let range = range_of(&params)?;
    let matchers = match params.get("query") {
        Some(query) => selector_matchers(query)?,
        None => Vec::new(),
    };
    let values = store.log_label_values(&tenant, &name, &matchers, range).await?;
    Ok(success(json!(values)))
}

fn labels_json(labels: &Labels) -> Json {
    Json::Object(
        labels
            .iter()
            .map(|l| (l.name.clone(), Json::String(l.value.clone())))
            .collect(),
    )
}

async fn series<S: LogRead>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let range = range_of(&params)?;
    let selectors = params.all("match[]").iter().chain(params.all("match"));
    let mut all: std::collections::BTreeSet<Labels> = std::collections::BTreeSet::new();
    let mut any = false;
    for selector in selectors {
        any = true;
        all.extend(store.log_series(&tenant, &selector_matchers(selector)?, range).await?);
    }
    if !any {
        return Err(Error::bad_data("at least one match[] argument must be provided").into());
    }
    Ok(success(Json::Array(all.iter().map(labels_json).collect())))
}

/// Per stream: entries and line bytes in the range.
async fn stream_volumes<S: LogRead>(
    store: &S,
    tenant: &TenantId,
    matchers: Vec<Matcher>,
    range: NsRange,
    mut each_entry: impl FnMut(&Labels, TimestampNs, u64) + Send,
) -> Result<(), LokiError> {
    let select = LogSelect::new(matchers, range);
    store
        .visit_logs(tenant, &select, |stream| {
            for entry in &stream.entries {
                each_entry(&stream.labels, entry.timestamp, entry.line.len() as u64);
            }
            Ok(())
        })
        .await?;
    Ok(())
}

async fn index_stats<S: LogRead>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let range = range_of(&params)?;
    let matchers = selector_matchers(required_query(&params)?)?;
    let (mut streams, mut entries, mut bytes) = (0u64, 0u64, 0u64);
    let mut last: Option<Labels> = None;
    stream_volumes(&*store, &tenant, matchers, range, |labels, _, size| {
        if last.as_ref() != Some(labels) {
            streams += 1;
            last = Some(labels.clone());
        }
        entries += 1;
        bytes += size;
    })
    .await?;
    // No envelope, as Loki answers. A stream's entries in the range count as
    // one chunk: Tidewatch does not cut streams into chunks.
    let body = json!({"streams": streams, "chunks": streams, "bytes": bytes, "entries": entries});
    Ok(([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
}

/// How volumes are grouped: by label-value pairs of these names, or by
/// label name only.
#[derive(Debug)]
struct VolumeGrouping {
    names: Vec<String>,
    by_name_only: bool,
}

impl VolumeGrouping {
    fn from_params(params: &Params, matchers: &[Matcher]) -> Result<Self, LokiError> {
        let names: Vec<String> = match params.get("targetLabels") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
            None => {
                let mut names: Vec<String> = Vec::new();
                for matcher in matchers {
                    if !names.contains(&matcher.name) {
                        names.push(matcher.name.clone());
                    }
                }
                names
            }
        };
        let by_name_only = match params.get("aggregateBy") {
            None | Some("series") => false,
            Some("labels") => true,
            Some(other) => {
                return Err(
                    Error::bad_data(format!("invalid aggregateBy {other:?}: expected series or labels")).into(),
                );
            }
        };
        Ok(VolumeGrouping { names, by_name_only })
    }

    /// The groups a stream's bytes count towards.
    fn groups(&self, labels: &Labels) -> Vec<Labels> {
        if self.by_name_only {
            return self
                .names
                .iter()
                .filter(|name| labels.get(name).is_some())
                .map(|name| Labels::from_sorted(vec![tidewatch_model::Label::new(name.clone(), String::new())]))
                .collect();
        }
        let pairs: Vec<(&str, &str)> = self
            .names
            .iter()
            .filter_map(|name| labels.get(name).map(|value| (name.as_str(), value)))
            .collect();
        if pairs.is_empty() {
            return Vec::new();
        }
        vec![Labels::from_pairs(pairs)]
    }
}

/// A group's labels as JSON. Label-name groups keep their empty values
/// (`Labels` drops empty values, so they are rebuilt here).
fn group_json(group: &Labels, by_name_only: bool) -> Json {
    if by_name_only {
        return Json::Object(
            group
                .iter()
                .map(|l| (l.name.clone(), Json::String(String::new())))
                .collect(),
        );
    }
    labels_json(group)
}

fn seconds(timestamp: TimestampNs) -> Json {
    // Prometheus-style sample times: float seconds.
    json!(timestamp as f64 / 1e9)
}

/// What a volume request asks for.
#[derive(Debug)]
struct VolumeQuery {
    range: NsRange,
    matchers: Vec<Matcher>,
    grouping: VolumeGrouping,
    limit: usize,
}

impl VolumeQuery {
    fn from_params(params: &Params) -> Result<Self, LokiError> {
        let range = range_of(params)?;
        let matchers = selector_matchers(required_query(params)?)?;
        let grouping = VolumeGrouping::from_params(params, &matchers)?;
        let limit = parse_limit(params.get("limit"))?;
        Ok(VolumeQuery {
            range,
            matchers,
            grouping,
            limit,
        })
    }

    /// Hands every entry in `range` to `add` once per group it counts
    /// towards, with its time and line bytes. A stream's groups are worked
    /// out once: its entries come together.
    async fn for_each_entry<S: LogRead>(
        &self,
        store: &S,
        tenant: &TenantId,
        range: NsRange,
        mut add: impl FnMut(&Labels, TimestampNs, u64) + Send,
    ) -> Result<(), LokiError> {
        let mut cached: Option<(Labels, Vec<Labels>)> = None;
        stream_volumes(
            store,
            tenant,
            self.matchers.clone(),
            range,
            |labels, timestamp, size| {
                if cached.as_ref().is_none_or(|(l, _)| l != labels) {
                    cached = Some((labels.clone(), self.grouping.groups(labels)));
                }
                if let Some((_, groups)) = &cached {
                    for group in groups {
                        add(group, timestamp, size);
                    }
                }
            },
        )
        .await
    }

    /// The `limit` groups with the most bytes, most first.
    fn top<T>(&self, groups: BTreeMap<Labels, T>, bytes: impl Fn(&T) -> u64) -> Vec<(Labels, T)> {
        let mut ranked: Vec<(Labels, T)> = groups.into_iter().collect();
        ranked.sort_by(|a, b| bytes(&b.1).cmp(&bytes(&a.1)).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(self.limit);
        ranked
    }
}

async fn volume<S: LogRead>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let request = VolumeQuery::from_params(&params)?;
    let mut totals: BTreeMap<Labels, u64> = BTreeMap::new();
    request
        .for_each_entry(&*store, &tenant, request.range, |group, _, size| {
            *totals.entry(group.clone()).or_default() += size;
        })
        .await?;
    let result: Vec<Json> = request
        .top(totals, |bytes| *bytes)
        .iter()
        .map(|(group, bytes)| {
            json!({
                "metric": group_json(group, request.grouping.by_name_only),
                "value": [seconds(request.range.end), format_value(*bytes as f64)],
            })
        })
        .collect();
    Ok(success(json!({"resultType": "vector", "result": result})))
}

async fn volume_range<S: LogRead>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let request = VolumeQuery::from_params(&params)?;
    let range = request.range;
    let step = step_of(&params, range)?;
    if step <= 0 {
        return Err(Error::bad_data("zero or negative query resolution step widths are not accepted").into());
    }
    // Each step time T holds the bytes of (T − step, T]; the steps run from start to end.
    let steps = ((range.end - range.start) / step + 1) as usize;
    if steps > 11_000 {
        return Err(Error::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        )
        .into());
    }
    let mut buckets: BTreeMap<Labels, Vec<u64>> = BTreeMap::new();
    let query_range = NsRange::new(range.start.saturating_sub(step - 1), range.end);
    request
        .for_each_entry(&*store, &tenant, query_range, |group, timestamp, size| {
            // The first step time at or after the entry.
            let index = if timestamp <= range.start {
                0
            } else {
                ((timestamp - range.start + step - 1) / step) as usize
            };
            if index < steps {
                buckets.entry(group.clone()).or_insert_with(|| vec![0; steps])[index] += size;
            }
        })
        .await?;
    let result: Vec<Json> = request
        .top(buckets, |values| values.iter().sum())
        .iter()
        .map(|(group, values)| {
            let points: Vec<Json> = values
                .iter()
                .enumerate()
                .filter(|(_, bytes)| **bytes > 0)
                .map(|(i, bytes)| json!([seconds(range.start + i as i64 * step), format_value(*bytes as f64)]))
                .collect();
            json!({"metric": group_json(group, request.grouping.by_name_only), "values": points})
        })
        .collect();
    Ok(success(json!({"resultType": "matrix", "result": result})))
}

/// `step`, or a 250th of the range when absent, as Loki defaults it.
fn step_of(params: &Params, range: NsRange) -> Result<i64, LokiError> {
    Ok(match params.get("step") {
        Some(step) => parse_step("step", step)?,
        None => default_step(range.start, range.end),
    })
}

/// A label set as a JSON object; LogQL results may carry empty values
/// (`--keep-empty`, a missing JSON path), which Loki writes out.
fn result_labels(labels: &Labels) -> Json {
    labels_json(labels)
}

/// Loki's JSON for a query result, with an execution-time summary in `stats`.
fn render_result(result: &LogQueryResult, exec_seconds: f64) -> Response {
    let (result_type, result) = match result {
        LogQueryResult::Streams(streams) => (
            "streams",
            Json::Array(
                streams
                    .iter()
                    .map(|stream| {
                        let values: Vec<Json> = stream
                            .entries
                            .iter()
                            .map(|e| json!([e.timestamp.to_string(), e.line]))
                            .collect();
                        json!({"stream": result_labels(&stream.labels), "values": values})
                    })
                    .collect(),
            ),
        ),
        LogQueryResult::Vector(samples) => (
            "vector",
            Json::Array(
                samples
                    .iter()
                    .map(|s| json!({"metric": result_labels(&s.labels), "value": [seconds(s.timestamp), format_value(s.value)]}))
                    .collect(),
            ),
        ),
        LogQueryResult::Matrix(series) => (
            "matrix",
            Json::Array(
                series
                    .iter()
                    .map(|s| {
                        let values: Vec<Json> =
                            s.points.iter().map(|&(t, v)| json!([seconds(t), format_value(v)])).collect();
                        json!({"metric": result_labels(&s.labels), "values": values})
                    })
                    .collect(),
            ),
        ),
        LogQueryResult::Scalar { timestamp, value } => ("scalar", json!([seconds(*timestamp), format_value(*value)])),
    };
    success(json!({
        "resultType": result_type,
        "result": result,
        "stats": {"summary": {"execTime": exec_seconds}},
    }))
}

async fn run_query<S: LogRead>(store: &S, tenant: &TenantId, query: &str, params: LogQueryParams) -> LokiResult {
    let expr = logql::parse(query)?;
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(QUERY_TIMEOUT, logql::evaluate(store, tenant, &expr, &params))
        .await
        .map_err(|_| Error::timeout(format!("query timed out after {}s", QUERY_TIMEOUT.as_secs())))??;
    Ok(render_result(&result, started.elapsed().as_secs_f64()))
}

fn required_query(params: &Params) -> Result<&str, LokiError> {
    params
        .get("query")
        .ok_or_else(|| LokiError(Error::bad_data("query parameter is required")))
}

async fn query<S: LogRead>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let query = required_query(&params)?;
    let time = parse_time("time", params.get("time"))?.unwrap_or_else(now_ns);
    let direction = parse_direction(params.get("direction"))?;
    let limit = parse_limit(params.get("limit"))?;
    run_query(&*store, &tenant, query, LogQueryParams::instant(time, direction, limit)).await
}

async fn query_range<S: LogRead>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let query = required_query(&params)?;
    let range = range_of(&params)?;
    let step = step_of(&params, range)?;
    let direction = parse_direction(params.get("direction"))?;
    let limit = parse_limit(params.get("limit"))?;
    let mut query_params = LogQueryParams::range(range.start, range.end, step, direction, limit);
    if let Some(interval) = params.get("interval") {
        query_params.interval = parse_step("interval", interval)?;
    }
    run_query(&*store, &tenant, query, query_params).await
}

/// Fields reported by default (`limit`, formerly `field_limit`).
const DEFAULT_FIELD_LIMIT: usize = 1000;

/// The newest `line_limit` entries of a log query over the request's range
/// and the label names of the streams it selects: what field detection reads.
async fn detection_input<S: LogRead>(
    store: &S,
    params: &Params,
    tenant: &TenantId,
) -> Result<(Vec<logql::StreamResult>, std::collections::HashSet<String>, usize), LokiError> {
    let query = required_query(params)?;
    let range = range_of(params)?;
    let step = step_of(params, range)?;
    let line_limit = match params.get("line_limit") {
        Some(value) => parse_limit(Some(value))?,
        None => crate::loki_params::DEFAULT_LIMIT,
    };
    let limit = match params.get("limit").or_else(|| params.get("field_limit")) {
        Some(value) => parse_limit(Some(value))?,
        None => DEFAULT_FIELD_LIMIT,
    };
    let expr = logql::parse(query)?;
    let Expr::Log(log) = &expr else {
        return Err(Error::bad_data(format!("only log queries are allowed here, got {query:?}")).into());
    };
    let query_params = LogQueryParams::range(
        range.start,
        range.end,
        step,
        tidewatch_model::logs::Direction::Backward,
        line_limit,
    );
    let result = tokio::time::timeout(QUERY_TIMEOUT, logql::evaluate(store, tenant, &expr, &query_params))
        .await
        .map_err(|_| Error::timeout(format!("query timed out after {}s", QUERY_TIMEOUT.as_secs())))??;
    let LogQueryResult::Streams(streams) = result else {
        return Err(Error::bad_data("only log queries are allowed here").into());
    };
    let selected = store.log_series(tenant, &log.matchers, range).await?;
    Ok((streams, logql::detect::label_names(&selected), limit))
}

/// Loki's `DetectedFieldsResponse` as JSON: no envelope, empty parts left out.
fn detected_response(fields: Option<Json>, values: Option<Json>, limit: usize) -> Response {
    let mut body = serde_json::Map::new();
    let any = fields.is_some() || values.is_some();
    if let Some(fields) = fields {
        body.insert("fields".into(), fields);
    }
    if let Some(values) = values {
        body.insert("values".into(), values);
    }
    if any {
        body.insert("limit".into(), json!(limit));
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        Json::Object(body).to_string(),
    )
        .into_response()
}

/// `/loki/api/v1/detected_fields`: the fields of the newest `line_limit`
/// lines of `query` (see [`logql::detect`]).
async fn detected_fields<S: LogRead>(
    State(store): State<Arc<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let (streams, names, limit) = detection_input(&*store, &params, &tenant).await?;
    let fields = logql::detect::FieldDetector::new().detect(&streams, &names, limit);
    let json_fields: Vec<Json> = fields
        .iter()
        .map(|field| {
            let mut out = json!({
                "label": field.label,
                "type": field.field_type.as_str(),
                "cardinality": field.cardinality,
                "parsers": if field.parsers.is_empty() { Json::Null } else { json!(field.parsers) },
            });
            if !field.json_path.is_empty() {
                out["jsonPath"] = json!(field.json_path);
            }
            out
        })
        .collect();
    Ok(detected_response(
        (!json_fields.is_empty()).then(|| json!(json_fields)),
        None,
        limit,
    ))
}

/// `/loki/api/v1/detected_field/<name>/values`: the distinct values of one field.
async fn detected_field_values<S: LogRead>(
    State(store): State<Arc<S>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let (streams, names, limit) = detection_input(&*store, &params, &tenant).await?;
    let values = logql::detect::FieldDetector::new().values(&streams, &names, &name, limit);
    Ok(detected_response(
        None,
        (!values.is_empty()).then(|| json!(values)),
        limit,
    ))
}

/// What `/loki/api/v1/patterns` works with.
struct PatternsState<S> {
    store: Arc<S>,
    max_lines: usize,
}

impl<S> Clone for PatternsState<S> {
    fn clone(&self) -> Self {
        PatternsState {
            store: self.store.clone(),
            max_lines: self.max_lines,
        }
    }
}

/// Loki's answer to a patterns query that is more than a stream selector.
const ERR_ONLY_MATCHERS: &str = "only label matchers are supported";
/// Loki's step errors for patterns (`pkg/loghttp/query.go`).
const ERR_ZERO_OR_NEGATIVE_STEP: &str =
    "zero or negative query resolution step widths are not accepted. Try a positive integer";
const ERR_STEP_TOO_SMALL: &str =
    "exceeded maximum resolution of 11,000 points per time series. Try increasing the value of the step parameter";
/// Most steps a patterns range may hold.
const MAX_PATTERN_STEPS: i64 = 11_000;

/// `/loki/api/v1/patterns`: the patterns of the lines of the streams `query`
/// selects in `start`…`end`, with their level and line counts per `step`
/// (see [`crate::patterns`]). At most `max_lines` lines are examined.
async fn patterns<S: LogRead>(
    State(state): State<PatternsState<S>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> LokiResult {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let query = required_query(&params)?;
    let matchers = match logql::parse(query)? {
        Expr::Log(log) if log.pipeline.is_empty() => log.matchers,
        _ => return Err(Error::bad_data(ERR_ONLY_MATCHERS).into()),
    };
    let range = range_of(&params)?;
    let step = step_of(&params, range)?;
    if step <= 0 {
        return Err(Error::bad_data(ERR_ZERO_OR_NEGATIVE_STEP).into());
    }
    if range.end.saturating_sub(range.start) / step > MAX_PATTERN_STEPS {
        return Err(Error::bad_data(ERR_STEP_TOO_SMALL).into());
    }
    let pattern_range = PatternRange::new(range.start, range.end, step);
    let select = LogSelect::new(matchers, pattern_range.entries());
    let deadline = std::time::Instant::now() + QUERY_TIMEOUT;
    let store = state.store.clone();
    let max_lines = state.max_lines;
    let read = async move {
        let mut streams = Vec::new();
        let mut lines = 0usize;
        store
            .visit_logs(&tenant, &select, |stream| {
                lines += stream.entries.len();
                if max_lines > 0 && lines > max_lines {
                    return Err(tidewatch_model::Error::Invalid(too_many_pattern_lines(max_lines)));
                }
                streams.push(stream);
                Ok(())
            })
            .await?;
        Ok::<_, LokiError>(streams)
    };
    let streams = tokio::time::timeout(QUERY_TIMEOUT, read)
        .await
        .map_err(|_| pattern_timeout())??;
    // Drain is CPU work: off the runtime, giving up at the deadline.
    let found = tokio::task::spawn_blocking(move || {
        let mut detector = PatternDetector::new(pattern_range);
        for stream in &streams {
            if std::time::Instant::now() > deadline {
                return None;
            }
            detector.add_stream(stream);
        }
        Some(detector.finish())
    })
    .await
    .map_err(|e| Error {
        error_type: crate::error::ErrorType::Internal,
        message: format!("pattern detection failed: {e}"),
    })?
    .ok_or_else(pattern_timeout)?;
    Ok(patterns_response(&found))
}

fn too_many_pattern_lines(max_lines: usize) -> String {
    format!(
        "the query would examine too many log lines for patterns (more than {max_lines}, \
         logs.limits.max_pattern_lines_per_query); consider adding more specific stream selectors \
         or reduce the time range of the query"
    )
}

fn pattern_timeout() -> LokiError {
    Error::timeout(format!("query timed out after {}s", QUERY_TIMEOUT.as_secs())).into()
}

/// Loki's `QueryPatternsResponse` as its marshaller writes it: fields in the
/// order pattern, level, samples; samples as `[<unix seconds>, <lines>]`;
/// `<`, `>` and `&` in patterns escaped as `\u003c`, `\u003e`, `\u0026`.
fn patterns_response(found: &[PatternSeries]) -> Response {
    #[derive(serde::Serialize)]
    struct Series<'a> {
        pattern: &'a str,
        level: &'a str,
        samples: Vec<[i64; 2]>,
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        status: &'static str,
        data: Vec<Series<'a>>,
    }
    let data = found
        .iter()
        .map(|series| Series {
            pattern: &series.pattern,
            level: series.level,
            samples: series
                .samples
                .iter()
                .map(|&(timestamp_ms, count)| [timestamp_ms / 1000, count])
                .collect(),
        })
        .collect();
    let json = serde_json::to_string(&Body {
        status: "success",
        data,
    })
    .unwrap_or_default();
    // These characters only occur inside strings in JSON text.
    let mut text = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => text.push_str("\\u003c"),
            '>' => text.push_str("\\u003e"),
            '&' => text.push_str("\\u0026"),
            c => text.push(c),
        }
    }
    text.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}
