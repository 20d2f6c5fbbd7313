//! The HTTP side of a scrape: one GET with Prometheus' headers, bounded in
//! time and size, over plain HTTP or rustls with the ring provider.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tidewatch_model::exposition::SCRAPE_ACCEPT_HEADER;

use super::{Failure, FailureKind, Target};
use crate::config::TlsConfig;
use crate::error::{Error, Result};

/// The header that tells a target how long it has (Prometheus sends it too;
/// some exporters use it to cut their own work short).
pub const SCRAPE_TIMEOUT_HEADER: &str = "X-Prometheus-Scrape-Timeout-Seconds";

/// Largest response body read. Prometheus has no limit by default; an
/// unbounded read lets one broken target take the collector's memory.
pub const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

const USER_AGENT_VALUE: &str = concat!("tidewatch-collector/", env!("CARGO_PKG_VERSION"));

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
    let tls_config = if https {
        client_tls_config(tls)?
    } else {
        // The connector wants a TLS configuration even when it will only
        // speak plain HTTP; an empty root store costs nothing.
        ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("protocol versions", e))?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector))
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, error: impl std::fmt::Display) -> Error {
    Error::InvalidConfig(format!("tls {what}: {error}"))
}

/// Prometheus' `tls_config`: `ca_file` replaces the system roots, a
/// `cert_file` + `key_file` pair is the client certificate, and
/// `insecure_skip_verify` accepts any server certificate (signatures of the
/// handshake are still checked).
pub(super) fn client_tls_config(tls: &TlsConfig) -> Result<ClientConfig> {
    let provider = ring_provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
    } else if let Some(ca_file) = &tls.ca_file {
        builder.with_root_certificates(load_roots(ca_file)?)
    } else {
        builder
            .with_native_roots()
            .map_err(|e| tls_error("system root certificates", e))?
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = load_certs(cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| Error::parse(key_file, format!("private key: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error("client certificate", e))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(Error::InvalidConfig(
            "tls: cert_file and key_file must be given together".into(),
        )),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| Error::parse(path, format!("certificates: {e}")))?;
    let mut certs = Vec::new();
    for cert in iter {
        certs.push(cert.map_err(|e| Error::parse(path, format!("certificate: {e}")))?);
    }
    if certs.is_empty() {
        return Err(Error::parse(path, "no PEM certificate found".into()));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| Error::parse(path, format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// `insecure_skip_verify: true`: any certificate is accepted, as Prometheus
/// does with the same option (kubelets often serve self-signed certificates).
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
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
        .header(USER_AGENT, USER_AGENT_VALUE)
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
            message: describe_client_error(&e),
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

/// The client error with its causes: hyper-util's own message is only
/// "client error (Connect)".
fn describe_client_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
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

    #[test]
    fn tls_settings_are_checked() {
        let missing_ca = TlsConfig {
            ca_file: Some("/nonexistent/ca.crt".into()),
            ..TlsConfig::default()
        };
        let error = client_tls_config(&missing_ca).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ca.crt"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("ca.crt");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let garbage_ca = TlsConfig {
            ca_file: Some(garbage),
            ..TlsConfig::default()
        };
        assert!(client_tls_config(&garbage_ca).is_err());

        let half_pair = TlsConfig {
            cert_file: Some("/x.crt".into()),
            insecure_skip_verify: true,
            ..TlsConfig::default()
        };
        assert!(client_tls_config(&half_pair).is_err());

        let insecure = TlsConfig {
            insecure_skip_verify: true,
            ..TlsConfig::default()
        };
        assert!(client_tls_config(&insecure).is_ok());
        assert!(
            client(&TlsConfig::default(), false).is_ok(),
            "plain HTTP needs no roots"
        );
    }
}
