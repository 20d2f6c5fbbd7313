//! Loki's push endpoint, `POST /loki/api/v1/push`, over the model's
//! [`LogIngest`] seam, answering as Loki does so that Promtail, Alloy, Fluent
//! Bit and Grafana's tools work unchanged: 204 on success; 400 with a plain-text
//! body naming the stream and the reason when something was refused (the valid
//! rest of the push is still stored); 429 with Loki's message when the
//! tenant's ingestion rate is exceeded; 413 for oversized bodies; 415 for a
//! content type or encoding we do not read.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tidewatch_model::log_validate::{LogLimits, MISSING_STREAMS_MESSAGE, ValidatedPush, validate_push};
use tidewatch_model::logs::{LogIngest, LogPush};
use tidewatch_model::loki_push::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, StreamLabelsCache, decode_push_json, decode_push_protobuf_cached,
};
use tidewatch_model::remote_write::DecodeLimits;
use tidewatch_model::{Clock, ErrorKind, TenantId, TimestampMs};

use crate::api::{record_stats, tenant_from_headers};
use crate::stats::HttpStats;

/// The route Loki clients push to.
pub const LOKI_PUSH_PATH: &str = "/loki/api/v1/push";

/// Settings of the push endpoint.
#[derive(Debug, Clone)]
pub struct LokiPushConfig {
    pub limits: LogLimits,
    /// Largest request body as received (compressed); larger ones get 413.
    /// Loki's `max_recv_msg_size` default.
    pub max_body_bytes: usize,
    /// Largest body after gzip, deflate or snappy decompression; 413 beyond.
    pub max_decompressed_bytes: usize,
}

impl LokiPushConfig {
    pub fn new(limits: LogLimits) -> Self {
        LokiPushConfig {
            limits,
            max_body_bytes: 100 << 20,
            max_decompressed_bytes: DecodeLimits::default().max_decompressed_bytes,
        }
    }
}

impl Default for LokiPushConfig {
    fn default() -> Self {
        LokiPushConfig::new(LogLimits::default())
    }
}

struct PushState<S> {
    store: Arc<S>,
    labels_cache: StreamLabelsCache,
    config: LokiPushConfig,
    clock: Arc<dyn Clock>,
    rate_limiter: RateLimiter,
}

/// The router serving `POST /loki/api/v1/push` into `store`, with limits and
/// time from `config` and `clock`. Requests are counted in `stats` by route and
/// status, like the Prometheus API's.
pub fn loki_push_router<S: LogIngest>(
    store: Arc<S>,
    config: LokiPushConfig,
    clock: Arc<dyn Clock>,
    stats: Arc<HttpStats>,
) -> Router {
    let body_limit = config.max_body_bytes;
    let rate_limiter = RateLimiter::new(
        config.limits.ingestion_rate_bytes(),
        config.limits.ingestion_burst_bytes(),
    );
    let state = Arc::new(PushState {
        store,
        labels_cache: StreamLabelsCache::default(),
        config,
        clock,
        rate_limiter,
    });
    Router::new()
        .route(LOKI_PUSH_PATH, post(push::<S>))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .layer(middleware::from_fn_with_state(stats, record_stats))
}

/// A plain-text answer as Go's `http.Error` writes it, Loki's error format.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// How the body is serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    Json,
    Protobuf,
}

/// How the body is compressed on the wire (snappy inside protobuf aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEncoding {
    Identity,
    Gzip,
    Deflate,
}

fn header_text<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("<not text>"))
}

/// The body format from `Content-Type`, parameters ignored. Without the
/// header the body is read as JSON, what hand-written clients send.
/// `Err` holds the 415 message.
fn body_format(headers: &HeaderMap) -> Result<BodyFormat, String> {
    let Some(content_type) = header_text(headers, &header::CONTENT_TYPE) else {
        return Ok(BodyFormat::Json);
    };
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case(CONTENT_TYPE_JSON) {
        Ok(BodyFormat::Json)
    } else if media_type.eq_ignore_ascii_case(CONTENT_TYPE_PROTOBUF) {
        Ok(BodyFormat::Protobuf)
    } else {
        Err(format!(
            "unsupported content type {content_type:?}: expected {CONTENT_TYPE_PROTOBUF} (snappy-compressed) or {CONTENT_TYPE_JSON}"
        ))
    }
}

/// The body encoding from `Content-Encoding`. `snappy` is accepted and means
/// nothing extra, as in Loki: protobuf bodies are always snappy-compressed and
/// some clients say so.
/// `Err` holds the 415 message.
fn body_encoding(headers: &HeaderMap) -> Result<BodyEncoding, String> {
    let Some(encoding) = header_text(headers, &header::CONTENT_ENCODING) else {
        return Ok(BodyEncoding::Identity);
    };
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" | "snappy" => Ok(BodyEncoding::Identity),
        "gzip" => Ok(BodyEncoding::Gzip),
        "deflate" => Ok(BodyEncoding::Deflate),
        _ => Err(format!(
            "Content-Encoding {encoding:?} not supported: expected gzip, deflate or snappy"
        )),
    }
}

/// Decompresses gzip or raw deflate (Go's `compress/flate`, which Loki uses)
/// into at most `limit` bytes.
fn inflate(body: &[u8], encoding: BodyEncoding, limit: usize) -> Result<Vec<u8>, tidewatch_model::Error> {
    let reader: Box<dyn Read + '_> = match encoding {
        BodyEncoding::Identity => return Ok(body.to_vec()),
        // Multi-member gzip streams are read whole, as Go's gzip reader does.
        BodyEncoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        BodyEncoding::Deflate => Box::new(flate2::read::DeflateDecoder::new(body)),
    };
    let name = if encoding == BodyEncoding::Gzip {
        "gzip"
    } else {
        "deflate"
    };
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| tidewatch_model::Error::Invalid(format!("{name} decompression failed: {e}")))?;
    if out.len() > limit {
        return Err(tidewatch_model::Error::TooLarge(format!(
            "decompressed message size too large than max (more than {limit} bytes)"
        )));
    }
    Ok(out)
}

/// Decompresses and decodes a body.
fn decode(
    body: &[u8],
    format: BodyFormat,
    encoding: BodyEncoding,
    max_decompressed_bytes: usize,
    labels_cache: &StreamLabelsCache,
) -> Result<LogPush, tidewatch_model::Error> {
    let limits = DecodeLimits { max_decompressed_bytes };
    // The common case, a plain snappy protobuf, is decoded without a copy.
    if encoding == BodyEncoding::Identity {
        return match format {
            BodyFormat::Protobuf => decode_push_protobuf_cached(body, limits, labels_cache),
            BodyFormat::Json => decode_push_json(body),
        };
    }
    let inflated = inflate(body, encoding, max_decompressed_bytes)?;
    match format {
        BodyFormat::Protobuf => decode_push_protobuf_cached(&inflated, limits, labels_cache),
        BodyFormat::Json => decode_push_json(&inflated),
    }
}

/// Why a push was not decoded, as an answer.
fn decode_failure(error: tidewatch_model::Error) -> Response {
    match error {
        tidewatch_model::Error::TooLarge(_) => text(StatusCode::PAYLOAD_TOO_LARGE, error.to_string()),
        other => text(StatusCode::BAD_REQUEST, other.to_string()),
    }
}

async fn push<S: LogIngest>(State(state): State<Arc<PushState<S>>>, headers: HeaderMap, body: Bytes) -> Response {
    let tenant = match tenant_from_headers(&headers) {
        Ok(tenant) => tenant,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.message),
    };
    let format = match body_format(&headers) {
        Ok(format) => format,
        Err(message) => return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, message),
    };
    let encoding = match body_encoding(&headers) {
        Ok(encoding) => encoding,
        Err(message) => return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, message),
    };

    // Decompressing, decoding and validating a push of megabytes takes
    // milliseconds: keep it off the async runtime's threads.
    let work_state = Arc::clone(&state);
    let decoded = tokio::task::spawn_blocking(move || {
        let push = decode(
            &body,
            format,
            encoding,
            work_state.config.max_decompressed_bytes,
            &work_state.labels_cache,
        )?;
        let sent_streams = push.streams.len();
        let validated = validate_push(push, &work_state.config.limits, work_state.clock.as_ref());
        Ok::<_, tidewatch_model::Error>((sent_streams, validated))
    })
    .await;
    let (sent_streams, validated) = match decoded {
        Ok(Ok(decoded)) => decoded,
        Ok(Err(error)) => {
            tracing::debug!(tenant = %tenant, error = %error, "loki push refused");
            return decode_failure(error);
        }
        Err(join_error) => {
            tracing::error!(tenant = %tenant, error = %join_error, "loki push decoding failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "push decoding failed");
        }
    };
    if sent_streams == 0 {
        // Loki answers an empty push with 422 rather than 204.
        return text(StatusCode::UNPROCESSABLE_ENTITY, MISSING_STREAMS_MESSAGE);
    }
    let error_message = validated.error_message();
    if let Some(message) = &error_message {
        tracing::debug!(
            tenant = %tenant,
            rejected_entries = validated.rejected_entries,
            error = %message,
            "loki push entries refused"
        );
    }
    if validated.push.streams.is_empty() {
        return match error_message {
            Some(message) => text(StatusCode::BAD_REQUEST, message),
            // Every stream was empty: nothing to do, and nothing wrong.
            None => StatusCode::NO_CONTENT.into_response(),
        };
    }

    // As in Loki, the rate limit applies to what passed validation, and a
    // push over it is refused whole so the client can retry it unchanged.
    let now_ms = state.clock.now_ms();
    if !state.rate_limiter.try_take(&tenant, validated.bytes, now_ms) {
        tracing::debug!(tenant = %tenant, bytes = validated.bytes, "loki push rate limited");
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            rate_limited_message(&tenant, &state, &validated),
        );
    }

    match state.store.push(&tenant, validated.push).await {
        Ok(_) => match error_message {
            Some(message) => text(StatusCode::BAD_REQUEST, message),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        Err(e) => {
            let status = match e.kind() {
                ErrorKind::BadData => StatusCode::BAD_REQUEST,
                ErrorKind::Retryable => StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if status.is_server_error() {
                tracing::error!(tenant = %tenant, error = %e, "loki push failed");
            }
            text(status, e.to_string())
        }
    }
}

fn rate_limited_message<S>(tenant: &TenantId, state: &PushState<S>, validated: &ValidatedPush) -> String {
    format!(
        "ingestion rate limit exceeded for user {tenant} (limit: {} bytes/sec) while attempting to ingest '{}' lines totaling '{}' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased",
        state.rate_limiter.rate as i64, validated.lines, validated.bytes
    )
}

/// Per-tenant token buckets of bytes, like the `golang.org/x/time/rate`
/// limiter Loki uses: `rate` bytes per second refill a bucket of `burst`
/// bytes, which starts full. A push takes its bytes only when they are all
/// there; a refused push takes nothing, and one larger than the burst is never
/// accepted.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: TimestampMs,
}

impl RateLimiter {
    fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn try_take(&self, tenant: &TenantId, bytes: usize, now_ms: TimestampMs) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated_ms: now_ms,
        });
        // A clock that steps back refills nothing rather than draining.
        let elapsed_ms = now_ms.saturating_sub(bucket.updated_ms).max(0);
        bucket.tokens = (bucket.tokens + elapsed_ms as f64 / 1000.0 * self.rate).min(self.burst);
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
        let wanted = bytes as f64;
        if wanted > bucket.tokens {
            return false;
        }
        bucket.tokens -= wanted;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use axum::body::Body;
    use axum::http::Request;
    use tidewatch_model::logs::{LogEntry, LogRead, LogStream, MemLogStore, NsRange};
    use tidewatch_model::loki_push::encode_push_protobuf;
    use tidewatch_model::{Labels, ManualClock};
    use tower::ServiceExt;

    use super::*;

    /// 2026-01-01T00:00:00Z.
    const NOW_MS: i64 = 1_767_225_600_000;
    const NOW_NS: i64 = NOW_MS * 1_000_000;

    struct Harness {
        store: Arc<MemLogStore>,
        clock: ManualClock,
        router: Router,
        stats: Arc<HttpStats>,
    }

    fn harness(limits: LogLimits) -> Harness {
        let store = Arc::new(MemLogStore::new());
        let clock = ManualClock::new(NOW_MS);
        let stats = Arc::new(HttpStats::default());
        let router = loki_push_router(
            Arc::clone(&store),
            LokiPushConfig::new(limits),
            Arc::new(clock.clone()),
            Arc::clone(&stats),
        );
        Harness {
            store,
            clock,
            router,
            stats,
        }
    }

    async fn send(router: &Router, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, String, Option<String>) {
        let mut request = Request::post(LOKI_PUSH_PATH);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap(), content_type)
    }

    async fn stored(store: &MemLogStore, tenant: &str) -> Vec<LogStream> {
        let mut out = Vec::new();
        let select = tidewatch_model::logs::LogSelect::new(vec![tidewatch_model::logs::every_stream()], NsRange::ALL);
        store
            .visit_logs(&TenantId::parse(tenant).unwrap(), &select, |s| {
                out.push(s);
                Ok(())
            })
            .await
            .unwrap();
        out
    }

    fn one_stream(pairs: &[(&str, &str)], entries: Vec<LogEntry>) -> LogPush {
        LogPush {
            streams: vec![LogStream {
                labels: Labels::from_pairs(pairs.iter().copied()),
                entries,
            }],
        }
    }

    const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

    #[tokio::test]
    async fn protobuf_push_is_stored_and_answered_204() {
        let h = harness(LogLimits::default());
        let push = one_stream(
            &[("app", "api")],
            vec![LogEntry::new(NOW_NS - 1, "first"), LogEntry::new(NOW_NS, "")],
        );
        let (status, body, _) = send(
            &h.router,
            &[PROTOBUF, ("X-Scope-OrgID", "team-a")],
            encode_push_protobuf(&push),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        assert_eq!(stored(&h.store, "team-a").await, push.streams);
        assert!(stored(&h.store, "anonymous").await.is_empty(), "tenants are separate");
        let counted = h.stats.snapshot();
        assert_eq!(counted[&(LOKI_PUSH_PATH.to_string(), 204)].count, 1);
    }

    #[tokio::test]
    async fn json_push_with_and_without_content_type() {
        let h = harness(LogLimits::default());
        let body = format!(
            r#"{{"streams":[{{"stream":{{"app":"web"}},"values":[["{NOW_NS}","hello",{{"trace_id":"t1"}}]]}}]}}"#
        );
        let (status, text_body, _) = send(
            &h.router,
            &[("content-type", "application/json; charset=utf-8")],
            body.clone().into_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text_body}");
        let second = body.replace("hello", "no header");
        let (status, text_body, _) = send(&h.router, &[], second.into_bytes()).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{text_body}");
        let streams = stored(&h.store, "anonymous").await;
        let lines: Vec<&str> = streams[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, vec!["hello", "no header"]);
        assert_eq!(streams[0].entries[0].structured_metadata.get("trace_id"), Some("t1"));
    }

    #[tokio::test]
    async fn gzip_and_deflate_bodies_are_read_for_both_formats() {
        let h = harness(LogLimits::default());
        let json = format!(r#"{{"streams":[{{"stream":{{"app":"gz"}},"values":[["{NOW_NS}","json gzip"]]}}]}}"#);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(json.as_bytes()).unwrap();
        let (status, body, _) = send(
            &h.router,
            &[("content-type", "application/json"), ("content-encoding", "gzip")],
            gzip.finish().unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

        let push = one_stream(&[("app", "gz")], vec![LogEntry::new(NOW_NS + 1, "protobuf deflate")]);
        let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        deflate.write_all(&encode_push_protobuf(&push)).unwrap();
        let (status, body, _) = send(
            &h.router,
            &[PROTOBUF, ("content-encoding", "deflate")],
            deflate.finish().unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

        let (status, body, _) = send(
            &h.router,
            &[PROTOBUF, ("content-encoding", "snappy")],
            encode_push_protobuf(&one_stream(
                &[("app", "gz")],
                vec![LogEntry::new(NOW_NS + 2, "snappy said")],
            )),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

        let lines: Vec<String> = stored(&h.store, "anonymous").await[0]
            .entries
            .iter()
            .map(|e| e.line.clone())
            .collect();
        assert_eq!(lines, vec!["json gzip", "protobuf deflate", "snappy said"]);

        let (status, body, _) = send(
            &h.router,
            &[("content-type", "application/json"), ("content-encoding", "gzip")],
            b"not gzip".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.starts_with("gzip decompression failed"), "{body}");
    }

    #[tokio::test]
    async fn invalid_entries_are_refused_and_the_rest_stored() {
        let h = harness(LogLimits::default());
        let old_ns = NOW_NS - 8 * 24 * 3_600 * 1_000_000_000;
        let push = LogPush {
            streams: vec![
                LogStream {
                    labels: Labels::from_pairs([("app", "api")]),
                    entries: vec![LogEntry::new(NOW_NS, "kept"), LogEntry::new(old_ns, "too old")],
                },
                LogStream {
                    labels: Labels::from_pairs([("a", "1"), ("a", "2")]),
                    entries: vec![LogEntry::new(NOW_NS, "bad stream")],
                },
            ],
        };
        let (status, body, content_type) = send(&h.router, &[PROTOBUF], encode_push_protobuf(&push)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
        assert_eq!(
            body,
            "1 errors like: entry for stream '{app=\"api\"}' has timestamp too old: 2025-12-24T00:00:00Z, \
             oldest acceptable timestamp is: 2025-12-25T00:00:00Z; \
             1 errors like: stream '{a=\"1\", a=\"2\"}' has duplicate label name: 'a'\n"
        );
        let streams = stored(&h.store, "anonymous").await;
        assert_eq!(streams.len(), 1);
        assert_eq!(streams[0].entries, vec![LogEntry::new(NOW_NS, "kept")]);
    }

    #[tokio::test]
    async fn malformed_bodies_are_400_and_store_nothing() {
        let h = harness(LogLimits::default());
        let bad_labels = encode_push_protobuf(&LogPush::default());
        // Hand-made protobuf stream whose labels do not parse.
        let request = tidewatch_model::loki_push::proto::PushRequest {
            streams: vec![tidewatch_model::loki_push::proto::StreamAdapter {
                labels: b"{app=\"x}".to_vec(),
                entries: Vec::new(),
                hash: 0,
            }],
            format: String::new(),
        };
        let unparsable_labels = snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(&request))
            .unwrap();
        for (headers, body, expected) in [
            (vec![PROTOBUF], b"garbage".to_vec(), "snappy"),
            (vec![PROTOBUF], unparsable_labels, "error parsing labels '{app=\"x}'"),
            (
                vec![("content-type", "application/json")],
                b"{\"streams\": [".to_vec(),
                "invalid JSON push",
            ),
            (
                vec![("content-type", "application/json")],
                br#"{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}"#.to_vec(),
                "invalid type: integer",
            ),
            (
                vec![PROTOBUF, ("X-Scope-OrgID", "../etc")],
                bad_labels,
                "invalid tenant id",
            ),
        ] {
            let (status, body, _) = send(&h.router, &headers, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(body.contains(expected), "expected {expected:?} in {body:?}");
        }
        assert!(stored(&h.store, "anonymous").await.is_empty());
    }

    #[tokio::test]
    async fn empty_pushes_follow_loki() {
        let h = harness(LogLimits::default());
        let (status, body, _) = send(&h.router, &[], br#"{"streams":[]}"#.to_vec()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body, format!("{MISSING_STREAMS_MESSAGE}\n"));
        let (status, _, _) = send(
            &h.router,
            &[],
            br#"{"streams":[{"stream":{"a":"b"},"values":[]}]}"#.to_vec(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "a stream without entries is nothing to do"
        );
    }

    #[tokio::test]
    async fn unknown_content_types_and_encodings_are_415() {
        let h = harness(LogLimits::default());
        let (status, body, _) = send(&h.router, &[("content-type", "text/plain")], b"x".to_vec()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body.contains("unsupported content type \"text/plain\""), "{body}");
        let (status, body, _) = send(&h.router, &[PROTOBUF, ("content-encoding", "br")], b"x".to_vec()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body.contains("Content-Encoding \"br\" not supported"), "{body}");
    }

    #[tokio::test]
    async fn oversized_bodies_are_413() {
        let store = Arc::new(MemLogStore::new());
        let config = LokiPushConfig {
            max_body_bytes: 1000,
            max_decompressed_bytes: 2000,
            ..LokiPushConfig::default()
        };
        let router = loki_push_router(
            store,
            config,
            Arc::new(ManualClock::new(NOW_MS)),
            Arc::new(HttpStats::default()),
        );
        let (status, _, _) = send(&router, &[], vec![b' '; 1001]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

        let big = one_stream(&[("app", "x")], vec![LogEntry::new(NOW_NS, "a".repeat(5000))]);
        let (status, body, _) = send(&router, &[PROTOBUF], encode_push_protobuf(&big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert!(
            body.starts_with("request body too large: decompressed message size too large"),
            "{body}"
        );

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&vec![b' '; 5000]).unwrap();
        let (status, body, _) = send(
            &router,
            &[("content-type", "application/json"), ("content-encoding", "gzip")],
            gzip.finish().unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    }

    #[tokio::test]
    async fn the_ingestion_rate_limit_answers_429_and_refills() {
        // 1000 bytes/s, burst 1500 bytes.
        let limits = LogLimits {
            ingestion_rate_mb: 1000.0 / 1_048_576.0,
            ingestion_burst_size_mb: 1500.0 / 1_048_576.0,
            ..LogLimits::default()
        };
        let h = harness(limits);
        let push_of =
            |line: &str, at: i64| encode_push_protobuf(&one_stream(&[("app", "x")], vec![LogEntry::new(at, line)]));
        let (status, _, _) = send(&h.router, &[PROTOBUF], push_of(&"a".repeat(1000), NOW_NS)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body, _) = send(&h.router, &[PROTOBUF], push_of(&"b".repeat(1000), NOW_NS)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            body,
            "ingestion rate limit exceeded for user anonymous (limit: 1000 bytes/sec) while attempting to ingest '1' \
             lines totaling '1000' bytes, reduce log volume or contact your Loki administrator to see if the limit \
             can be increased\n"
        );
        let (status, _, _) = send(&h.router, &[PROTOBUF, ("X-Scope-OrgID", "other")], push_of("c", NOW_NS)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "another tenant has its own bucket");

        h.clock.advance(500);
        let (status, _, _) = send(&h.router, &[PROTOBUF], push_of(&"b".repeat(1000), NOW_NS)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "half a second refilled 500 bytes");
        let lines = stored(&h.store, "anonymous").await[0].entries.len();
        assert_eq!(lines, 2, "the refused push stored nothing");

        h.clock.advance(60_000);
        let (status, _, _) = send(&h.router, &[PROTOBUF], push_of(&"d".repeat(1501), NOW_NS)).await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "a push above the burst never fits"
        );
    }

    #[test]
    fn the_token_bucket_starts_full_and_caps_at_the_burst() {
        let limiter = RateLimiter::new(100.0, 300.0);
        let tenant = TenantId::default_tenant();
        assert!(limiter.try_take(&tenant, 300, 0));
        assert!(!limiter.try_take(&tenant, 1, 0));
        assert!(limiter.try_take(&tenant, 100, 1000));
        assert!(!limiter.try_take(&tenant, 1, 1000));
        assert!(!limiter.try_take(&tenant, 301, 1_000_000), "never more than the burst");
        assert!(limiter.try_take(&tenant, 300, 1_000_000));
        assert!(
            !limiter.try_take(&tenant, 1, 500),
            "a clock stepping back refills nothing"
        );
    }
}
