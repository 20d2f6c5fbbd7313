//! TLS for everything the collector connects to (scrape targets, the
//! server): rustls with the ring provider — no OpenSSL, no aws-lc — and
//! Prometheus' `tls_config` meaning for `ca_file`, `cert_file`/`key_file`
//! and `insecure_skip_verify`.

use std::path::Path;
use std::sync::Arc;

use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsConfig;
use crate::error::{Error, Result};

/// An HTTP(S) connector with Prometheus' `tls_config` semantics. `tls` is
/// only read when `https` is true, so plain HTTP never loads certificates.
pub(crate) fn connector(tls: &TlsConfig, https: bool) -> Result<HttpsConnector<HttpConnector>> {
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
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http()
        .enable_http1()
        .build())
}

/// A hyper client error with its causes: hyper-util's own text is only
/// "client error (Connect)", which says nothing about what went wrong.
pub(crate) fn describe_client_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
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
pub(crate) fn client_tls_config(tls: &TlsConfig) -> Result<ClientConfig> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            connector(&TlsConfig::default(), false).is_ok(),
            "plain HTTP needs no roots"
        );
    }
}
