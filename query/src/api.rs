//! The Prometheus HTTP API: `/api/v1/…` with Prometheus' JSON shapes, status
//! codes and error bodies, plus remote write ingestion at `/api/v1/write`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tidewatch_model::remote_write::{self, DecodeLimits, Protocol};
use tidewatch_model::seam::{Ingest, MetadataRead, SeriesRead, SeriesSamples, TimeRange};
use tidewatch_model::tenant::TENANT_HEADER;
use tidewatch_model::{ErrorKind, FloatHistogram, Labels, Matcher, TenantId, TimestampMs};

use crate::engine::{self, EvalRange, QueryLimits, Value};
use crate::error::{Error, ErrorType};
use crate::params::{MAX_TIME_MS, MIN_TIME_MS, Params, match_sets};
use crate::stats::HttpStats;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub lookback_ms: i64,
    pub query_limits: QueryLimits,
    /// Default and maximum query evaluation time.
    pub query_timeout: Duration,
    /// Largest accepted request body (compressed).
    pub max_body_bytes: usize,
    pub decode_limits: DecodeLimits,
    /// Reported by `/api/v1/status/buildinfo`.
    pub version: String,
    pub revision: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            lookback_ms: engine::DEFAULT_LOOKBACK_MS,
            query_limits: QueryLimits::default(),
            query_timeout: Duration::from_secs(120),
            max_body_bytes: 64 << 20,
            decode_limits: DecodeLimits::default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: String::new(),
        }
    }
}

/// The compatibility version `/api/v1/status/buildinfo` reports: clients such
/// as Grafana pick features by Prometheus version, and we serve 3.x semantics.
pub const PROMETHEUS_COMPATIBLE_VERSION: &str = "3.5.0";

struct ApiState<S> {
    store: Arc<S>,
    config: ApiConfig,
}

/// Builds the router for the Prometheus API over `store`. Every request is
/// counted in `stats` by route and status.
pub fn prometheus_router<S>(store: Arc<S>, config: ApiConfig, stats: Arc<HttpStats>) -> Router
where
    S: SeriesRead + MetadataRead + Ingest,
{
    let body_limit = config.max_body_bytes;
    let state = Arc::new(ApiState { store, config });
    Router::new()
        .route("/api/v1/query", get(query::<S>).post(query::<S>))
        .route("/api/v1/query_range", get(query_range::<S>).post(query_range::<S>))
        .route("/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/parse_query", get(parse_query).post(parse_query))
        .route("/api/v1/series", get(series::<S>).post(series::<S>))
        .route("/api/v1/labels", get(labels::<S>).post(labels::<S>))
        .route("/api/v1/label/{name}/values", get(label_values::<S>))
        .route("/api/v1/metadata", get(metadata::<S>))
        .route("/api/v1/status/buildinfo", get(buildinfo::<S>))
        .route("/api/v1/status/tsdb", get(tsdb_status::<S>))
        .route("/api/v1/write", post(write::<S>))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .layer(middleware::from_fn_with_state(stats, record_stats))
}

/// Counts requests by matched route and status, for self-monitoring.
pub async fn record_stats(State(stats): State<Arc<HttpStats>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    stats.record(&route, response.status().as_u16(), started.elapsed());
    response
}

/// The tenant named by `X-Scope-OrgID`, or the default tenant.
pub fn tenant_from_headers(headers: &HeaderMap) -> Result<TenantId, Error> {
    match headers.get(TENANT_HEADER) {
        None => Ok(TenantId::default_tenant()),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| Error::bad_data(format!("{TENANT_HEADER} header is not valid text")))?;
            TenantId::parse(text).map_err(|e| Error::bad_data(e.to_string()))
        }
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

pub(crate) fn request_params(query: Option<String>, headers: &HeaderMap, body: &Bytes) -> Params {
    let form = is_form(headers).then_some(body.as_ref());
    Params::from_request(query.as_deref(), form)
}

fn now_ms() -> TimestampMs {
    chrono::Utc::now().timestamp_millis()
}

/// A success body: `{"status":"success","data":…}` plus warnings and infos
/// when any (Prometheus puts them in separate arrays).
fn success_raw(data_json: &str, warnings: &[String], infos: &[String]) -> Response {
    let mut body = String::with_capacity(data_json.len() + 64);
    body.push_str("{\"status\":\"success\",\"data\":");
    body.push_str(data_json);
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if !list.is_empty() {
            body.push_str(&format!(",\"{key}\":"));
            body.push_str(&serde_json::to_string(list).unwrap_or_else(|_| "[]".into()));
        }
    }
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn success(data: serde_json::Value, warnings: &[String]) -> Response {
    success_raw(&data.to_string(), warnings, &[])
}

/// A float as Prometheus writes sample values: shortest round-trip decimal,
/// never an exponent, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{value}")
    }
}

/// A millisecond timestamp as Prometheus writes it: seconds, up to three decimals.
pub fn format_time(timestamp: TimestampMs) -> String {
    let seconds = timestamp.div_euclid(1000);
    let millis = timestamp.rem_euclid(1000);
    if millis == 0 {
        return seconds.to_string();
    }
    let fraction = format!("{millis:03}");
    let fraction = fraction.trim_end_matches('0');
    if seconds < 0 {
        // -0.5 s is seconds -1 + 500 ms: write it the conventional way.
        let total = -timestamp;
        let (whole, part) = (total / 1000, total % 1000);
        let part = format!("{part:03}");
        return format!("-{whole}.{}", part.trim_end_matches('0'));
    }
    format!("{seconds}.{fraction}")
}

fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, &label.name);
        out.push(':');
        push_json_string(out, &label.value);
    }
    out.push('}');
}

fn push_json_string(out: &mut String, value: &str) {
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".to_string()));
}

fn write_point(out: &mut String, timestamp: TimestampMs, value: &str) {
    let _ = write!(out, "[{},", format_time(timestamp));
    push_json_string(out, value);
    out.push(']');
}

fn write_matrix(out: &mut String, series: &[SeriesSamples]) {
    out.push_str("{\"resultType\":\"matrix\",\"result\":[");
    for (i, entry) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        write_labels(out, &entry.labels);
        // Prometheus leaves out whichever of the two lists is empty.
        if !entry.samples.is_empty() || entry.histograms.is_empty() {
            out.push_str(",\"values\":[");
            for (j, sample) in entry.samples.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_point(out, sample.timestamp, &format_value(sample.value));
            }
            out.push(']');
        }
        if !entry.histograms.is_empty() {
            out.push_str(",\"histograms\":[");
            for (j, sample) in entry.histograms.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_histogram_point(out, sample.timestamp, &sample.histogram);
            }
            out.push(']');
        }
        out.push('}');
    }
    out.push_str("]}");
}

/// `[time, {"count":…,"sum":…,"buckets":[[rule,"lower","upper","count"],…]}]`,
/// the populated buckets from the lowest values up, as Prometheus writes a
/// native histogram.
fn write_histogram_point(out: &mut String, timestamp: TimestampMs, histogram: &FloatHistogram) {
    let _ = write!(out, "[{},{{\"count\":", format_time(timestamp));
    push_json_string(out, &format_value(histogram.count));
    out.push_str(",\"sum\":");
    push_json_string(out, &format_value(histogram.sum));
    let mut first = true;
    for bucket in crate::engine::histogram::all_buckets(histogram) {
        if bucket.count == 0.0 {
            continue;
        }
        out.push_str(if first { ",\"buckets\":[" } else { "," });
        first = false;
        let _ = write!(out, "[{},", bucket.boundary_rule);
        push_json_string(out, &format_value(bucket.lower));
        out.push(',');
        push_json_string(out, &format_value(bucket.upper));
        out.push(',');
        push_json_string(out, &format_value(bucket.count));
        out.push(']');
    }
    if !first {
        out.push(']');
    }
    out.push_str("}]");
}

/// The `data` object of a query result.
pub fn render_value(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Vector {
            time,
            samples,
            histograms,
        } => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, (labels, sample)) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, labels);
                out.push_str(",\"value\":");
                write_point(&mut out, *time, &format_value(*sample));
                out.push('}');
            }
            for (i, (labels, histogram)) in histograms.iter().enumerate() {
                if i > 0 || !samples.is_empty() {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, labels);
                out.push_str(",\"histogram\":");
                write_histogram_point(&mut out, *time, histogram);
                out.push('}');
            }
            out.push_str("]}");
        }
        Value::Matrix(series) => write_matrix(&mut out, series),
        Value::Scalar { time, value } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            write_point(&mut out, *time, &format_value(*value));
            out.push('}');
        }
        Value::String { time, value } => {
            out.push_str("{\"resultType\":\"string\",\"result\":");
            write_point(&mut out, *time, value);
            out.push('}');
        }
    }
    out
}

fn query_timeout(params: &Params, config: &ApiConfig) -> Result<Duration, Error> {
    let requested = params.duration("timeout")?;
    Ok(match requested {
        Some(ms) if ms > 0 => Duration::from_millis(ms as u64).min(config.query_timeout),
        _ => config.query_timeout,
    })
}

fn lookback(params: &Params, config: &ApiConfig) -> Result<i64, Error> {
    Ok(params
        .duration("lookback_delta")?
        .filter(|&ms| ms > 0)
        .unwrap_or(config.lookback_ms))
}

async fn run_query<S: SeriesRead>(
    state: &ApiState<S>,
    tenant: &TenantId,
    params: &Params,
    range: EvalRange,
) -> Result<Response, Error> {
    let query = query_param(params)?;
    let timeout = query_timeout(params, &state.config)?;
    let evaluation = engine::evaluate(state.store.as_ref(), tenant, &query, range, state.config.query_limits);
    let evaluated = tokio::time::timeout(timeout, evaluation)
        .await
        .map_err(|_| Error::timeout(format!("query timed out in expression evaluation after {timeout:?}")))??;
    let annotations = &evaluated.annotations;
    Ok(success_raw(
        &render_value(&evaluated.value),
        &annotations.warnings,
        &annotations.infos,
    ))
}

async fn query<S: SeriesRead>(
    State(state): State<Arc<ApiState<S>>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let time = params.time("time", now_ms())?;
    let range = EvalRange::instant(time, lookback(&params, &state.config)?);
    run_query(&state, &tenant, &params, range).await
}

async fn query_range<S: SeriesRead>(
    State(state): State<Arc<ApiState<S>>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let start = params
        .get("start")
        .ok_or_else(|| Error::bad_data("invalid parameter \"start\": cannot parse \"\" to a valid timestamp"))
        .and_then(|_| params.time("start", 0))?;
    let end = params
        .get("end")
        .ok_or_else(|| Error::bad_data("invalid parameter \"end\": cannot parse \"\" to a valid timestamp"))
        .and_then(|_| params.time("end", 0))?;
    if end < start {
        return Err(Error::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = params
        .duration("step")?
        .ok_or_else(|| Error::bad_data("invalid parameter \"step\": cannot parse \"\" to a valid duration"))?;
    if step <= 0 {
        return Err(Error::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > state.config.query_limits.max_points_per_series {
        return Err(Error::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let range = EvalRange {
        start,
        end,
        step,
        lookback: lookback(&params, &state.config)?,
    };
    run_query(&state, &tenant, &params, range).await
}

/// The `query` parameter, parsed.
fn query_param(params: &Params) -> Result<engine::Query, Error> {
    let text = params
        .get("query")
        .ok_or_else(|| Error::bad_data("invalid parameter \"query\": query must not be empty"))?;
    engine::parse(text)
}

/// Exemplars are not stored yet (remote write refuses them with a 400), so
/// every valid request has none — the answer Grafana expects, not an error.
async fn query_exemplars(RawQuery(raw): RawQuery, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    let params = request_params(raw, &headers, &body);
    query_param(&params)?;
    time_range(&params)?;
    Ok(success(serde_json::Value::Array(Vec::new()), &[]))
}

async fn format_query(RawQuery(raw): RawQuery, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    let params = request_params(raw, &headers, &body);
    let query = query_param(&params)?;
    Ok(success(serde_json::Value::String(query.expr().prettify()), &[]))
}

async fn parse_query(RawQuery(raw): RawQuery, headers: HeaderMap, body: Bytes) -> Result<Response, Error> {
    let params = request_params(raw, &headers, &body);
    let query = query_param(&params)?;
    Ok(success(crate::ast_json::translate(query.expr()), &[]))
}

fn time_range(params: &Params) -> Result<TimeRange, Error> {
    let start = params.time("start", MIN_TIME_MS)?;
    let end = params.time("end", MAX_TIME_MS)?;
    if end < start {
        return Err(Error::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    Ok(TimeRange::new(start, end))
}

const TRUNCATED_WARNING: &str = "results truncated due to limit";

fn truncate<T>(items: &mut Vec<T>, limit: Option<usize>, warnings: &mut Vec<String>) {
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        warnings.push(TRUNCATED_WARNING.to_string());
    }
}

async fn series<S: SeriesRead>(
    State(state): State<Arc<ApiState<S>>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    let sets = match_sets(&params)?;
    if sets.is_empty() {
        return Err(Error::bad_data("no match[] parameter provided"));
    }
    let range = time_range(&params)?;
    let limit = params.limit()?;
    let mut all: BTreeSet<Labels> = BTreeSet::new();
    for matchers in &sets {
        all.extend(state.store.series(&tenant, matchers, range).await?);
    }
    let mut list: Vec<Labels> = all.into_iter().collect();
    let mut warnings = Vec::new();
    truncate(&mut list, limit, &mut warnings);
    let mut out = String::from("[");
    for (i, labels) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_labels(&mut out, labels);
    }
    out.push(']');
    Ok(success_raw(&out, &warnings, &[]))
}

async fn names_or_values<S: SeriesRead>(
    state: &ApiState<S>,
    tenant: &TenantId,
    params: &Params,
    name: Option<&str>,
) -> Result<Response, Error> {
    let sets = match_sets(params)?;
    let range = time_range(params)?;
    let limit = params.limit()?;
    let no_matchers: Vec<Vec<Matcher>> = vec![Vec::new()];
    let sets = if sets.is_empty() { no_matchers } else { sets };
    let mut all = BTreeSet::new();
    for matchers in &sets {
        let found = match name {
            None => state.store.label_names(tenant, matchers, range).await?,
            Some(name) => state.store.label_values(tenant, name, matchers, range).await?,
        };
        all.extend(found);
    }
    let mut list: Vec<String> = all.into_iter().collect();
    let mut warnings = Vec::new();
    truncate(&mut list, limit, &mut warnings);
    Ok(success(serde_json::json!(list), &warnings))
}

async fn labels<S: SeriesRead>(
    State(state): State<Arc<ApiState<S>>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let params = request_params(raw, &headers, &body);
    let tenant = tenant_from_headers(&headers)?;
    names_or_values(&state, &tenant, &params, None).await
}

/// Reverses Prometheus' `U__` escaping of label names in URL paths:
/// `U__` + the name with `_` doubled and other characters as `_<hex>_`.
pub fn unescape_label_name(raw: &str) -> Result<String, Error> {
    let Some(rest) = raw.strip_prefix("U__") else {
        return Ok(raw.to_string());
    };
    let invalid = || Error::bad_data(format!("invalid label name: {raw:?}"));
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let mut hex = String::new();
        loop {
            match chars.next() {
                Some('_') => break,
                Some(h) if h.is_ascii_hexdigit() => hex.push(h),
                _ => return Err(invalid()),
            }
        }
        let code = u32::from_str_radix(&hex, 16).map_err(|_| invalid())?;
        out.push(char::from_u32(code).ok_or_else(invalid)?);
    }
    Ok(out)
}

async fn label_values<S: SeriesRead>(
    State(state): State<Arc<ApiState<S>>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let params = Params::from_request(raw.as_deref(), None);
    let tenant = tenant_from_headers(&headers)?;
    let name = unescape_label_name(&name)?;
    // Prometheus 3 accepts any UTF-8 label name here; only the empty name is invalid.
    if name.is_empty() {
        return Err(Error::bad_data(format!("invalid label name: {name:?}")));
    }
    names_or_values(&state, &tenant, &params, Some(&name)).await
}

async fn metadata<S: MetadataRead>(
    State(state): State<Arc<ApiState<S>>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let params = Params::from_request(raw.as_deref(), None);
    let tenant = tenant_from_headers(&headers)?;
    let limit = params.limit()?;
    let per_metric = match params.get("limit_per_metric") {
        None => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => {
                return Err(Error::bad_data(format!(
                    "limit_per_metric must be a number, got {raw:?}"
                )));
            }
        },
    };
    let metric = params.get("metric");
    let all = state.store.metadata(&tenant).await?;
    let mut data = serde_json::Map::new();
    for (name, entries) in all {
        if metric.is_some_and(|m| m != name) {
            continue;
        }
        if limit.is_some_and(|l| data.len() >= l) {
            break;
        }
        let list: Vec<serde_json::Value> = entries
            .iter()
            .take(per_metric.unwrap_or(usize::MAX))
            .map(|m| serde_json::json!({"type": m.metric_type.as_str(), "help": m.help, "unit": m.unit}))
            .collect();
        data.insert(name, serde_json::Value::Array(list));
    }
    Ok(success(serde_json::Value::Object(data), &[]))
}

async fn buildinfo<S>(State(state): State<Arc<ApiState<S>>>) -> Response {
    success(
        serde_json::json!({
            "version": PROMETHEUS_COMPATIBLE_VERSION,
            "revision": state.config.revision,
            "branch": "main",
            "buildUser": "tidewatch",
            "buildDate": "",
            "goVersion": format!("tidewatch {}", state.config.version),
        }),
        &[],
    )
}

async fn tsdb_status<S: MetadataRead>(
    State(state): State<Arc<ApiState<S>>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let params = Params::from_request(raw.as_deref(), None);
    let tenant = tenant_from_headers(&headers)?;
    let limit = params.limit()?.unwrap_or(10);
    let stats = state.store.cardinality(&tenant, limit).await?;
    let pairs = |list: &[(String, u64)]| -> serde_json::Value {
        list.iter()
            .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
            .collect()
    };
    Ok(success(
        serde_json::json!({
            "headStats": {
                "numSeries": stats.num_series,
                "numLabelPairs": stats.num_label_pairs,
                "chunkCount": stats.chunk_count,
                "minTime": stats.min_time,
                "maxTime": stats.max_time,
            },
            "seriesCountByMetricName": pairs(&stats.series_count_by_metric_name),
            "labelValueCountByLabelName": pairs(&stats.label_value_count_by_label_name),
            "memoryInBytesByLabelName": pairs(&stats.memory_in_bytes_by_label_name),
            "seriesCountByLabelValuePair": pairs(&stats.series_count_by_label_value_pair),
        }),
        &[],
    ))
}

/// Remote write answers in plain text, as Prometheus does.
fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

async fn write<S: Ingest>(State(state): State<Arc<ApiState<S>>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Some(protocol) = Protocol::from_content_type(content_type) else {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {:?}: expected application/x-protobuf with proto=prometheus.WriteRequest or proto=io.prometheus.write.v2.Request",
                content_type.unwrap_or_default()
            ),
        );
    };
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or_default();
        if !encoding.eq_ignore_ascii_case("snappy") {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content encoding {encoding:?}: only snappy is accepted"),
            );
        }
    }
    let tenant = match tenant_from_headers(&headers) {
        Ok(tenant) => tenant,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.message),
    };
    let batch = match tidewatch_model::raw_write::decode_raw(&body, protocol, state.config.decode_limits) {
        Ok(batch) => batch,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.store.ingest(&tenant, batch).await {
        Ok(summary) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let response_headers = response.headers_mut();
            for (name, count) in [
                (remote_write::HEADER_SAMPLES_WRITTEN, summary.samples),
                (remote_write::HEADER_HISTOGRAMS_WRITTEN, summary.histograms),
                (remote_write::HEADER_EXEMPLARS_WRITTEN, summary.exemplars),
            ] {
                response_headers.insert(name, HeaderValue::from(count));
            }
            response
        }
        Err(e) => {
            let status = match e.kind() {
                ErrorKind::BadData => StatusCode::BAD_REQUEST,
                ErrorKind::Retryable => StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if status.is_server_error() {
                tracing::error!(tenant = %tenant, error = %e, "remote write failed");
            }
            plain(status, e.to_string())
        }
    }
}

/// Maps an [`ErrorType`] to its status (exposed for the binary's own routes).
pub fn status_of(error_type: ErrorType) -> StatusCode {
    error_type.status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_prometheus() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_time(1_435_781_451_781), "1435781451.781");
        assert_eq!(format_time(4_000), "4");
        assert_eq!(format_time(1_500), "1.5");
        assert_eq!(format_time(-1_500), "-1.5");
    }

    #[test]
    fn unescapes_utf8_label_names() {
        assert_eq!(unescape_label_name("job").unwrap(), "job");
        assert_eq!(unescape_label_name("U__a_2e_b").unwrap(), "a.b");
        assert_eq!(unescape_label_name("U__a__b").unwrap(), "a_b");
        assert!(unescape_label_name("U__a_zz_").is_err());
    }
}
