//! The HTTP side of a scrape: one GET with Prometheus' headers, bounded in
//! time and size, over plain HTTP or rustls with the ring provider.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tidewatch_model::exposition::SCRAPE_ACCEPT_HEADER;

use super::{Failure, FailureKind, Target};
use crate::config::TlsConfig;
use crate::error::Result;

/// The header that tells a target how long it has (Prometheus sends it too;
/// some exporters use it to cut their own work short).
pub const SCRAPE_TIMEOUT_HEADER: &str = "X-Prometheus-Scrape-Timeout-Seconds";

/// Largest response body read. Prometheus has no limit by default; an
/// unbounded read lets one broken target take the collector's memory.
pub const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// How long an idle keep-alive connection to a target is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// An HTTP(S) client for one target's TLS settings.
pub(super) type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A response that came back in time with a 2xx status.
#[derive(Debug)]
pub(super) struct Fetched {
    pub(super) content_type: Option<String>,
    pub(super) body: Bytes,
}

/// Builds the client for a target. `tls` is only read for `https` targets,
/// so a plain HTTP target never loads certificates.
pub(super) fn client(tls: &TlsConfig, https: bool) -> Result<HttpClient> {
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(crate::tls::connector(tls, https)?))
}

/// Prometheus' spelling of the timeout: Go's `FormatFloat(s, 'f', -1, 64)`,
/// i.e. the shortest decimal (`10`, `0.25`).
pub(super) fn timeout_header_value(timeout: Duration) -> String {
    format!("{}", timeout.as_secs_f64())
}

/// One GET of the target's URL, all of it (connect, headers, body) within
/// the target's timeout.
pub(super) async fn fetch(client: &HttpClient, target: &Target, url: &str) -> std::result::Result<Fetched, Failure> {
    let mut request = Request::get(url)
        .header(ACCEPT, SCRAPE_ACCEPT_HEADER)
        .header(USER_AGENT, crate::USER_AGENT)
        .header(SCRAPE_TIMEOUT_HEADER, timeout_header_value(target.timeout));
    if let Some(token_file) = &target.bearer_token_file {
        // Read on every scrape: service-account tokens are rotated on disk.
        let token = tokio::fs::read_to_string(token_file).await.map_err(|e| Failure {
            kind: FailureKind::Auth,
            message: format!("reading bearer token file {}: {e}", token_file.display()),
        })?;
        let value = HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| Failure {
            kind: FailureKind::Auth,
            message: format!("bearer token file {} holds an invalid token", token_file.display()),
        })?;
        request = request.header(AUTHORIZATION, value);
    }
    let request = request.body(Empty::new()).map_err(|e| Failure {
        kind: FailureKind::Connection,
        message: format!("invalid request for {url}: {e}"),
    })?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| Failure {
            kind: FailureKind::Connection,
            message: crate::tls::describe_client_error(&e),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure {
                kind: FailureKind::HttpStatus,
                message: format!("server returned HTTP status {status}"),
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| Failure {
                kind: FailureKind::Body,
                message: format!("reading the body: {e}"),
            })?
            .to_bytes();
        Ok(Fetched { content_type, body })
    };
    match tokio::time::timeout(target.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(Failure {
            kind: FailureKind::Timeout,
            message: format!("no complete answer within the scrape timeout of {:?}", target.timeout),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_header_is_go_shortest_float() {
        assert_eq!(timeout_header_value(Duration::from_secs(10)), "10");
        assert_eq!(timeout_header_value(Duration::from_millis(250)), "0.25");
        assert_eq!(timeout_header_value(Duration::from_millis(1500)), "1.5");
    }
}
