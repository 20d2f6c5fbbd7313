//! What the collector's integration tests share: a self-signed certificate
//! for TLS servers on 127.0.0.1.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed certificate for 127.0.0.1 and localhost, valid 2020–2120,
/// made once with `openssl ca -selfsign` for this test only.
pub const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBZTCCAQqgAwIBAgIBATAKBggqhkjOPQQDAjAUMRIwEAYDVQQDDAlsb2NhbGhv
c3QwIBcNMjAwMTAxMDAwMDAwWhgPMjEyMDAxMDEwMDAwMDBaMBQxEjAQBgNVBAMM
CWxvY2FsaG9zdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNARGW0Mhbwt7GAH
BtQhTp00cYaHFoYH1OOYdSQH7K8mPGejoqrYsPBc5nrF8AZVUXui0Huw0btGglmJ
1yrfUsWjSzBJMAwGA1UdEwEB/wQCMAAwGgYDVR0RBBMwEYcEfwAAAYIJbG9jYWxo
b3N0MB0GA1UdDgQWBBSZyVczfJutADJa51wzqRMTubXFTDAKBggqhkjOPQQDAgNJ
ADBGAiEAnMO7vo8bHSWpJX62Hkvuo61CWvX0ji4BterodT8fg0gCIQCSybX6Klqe
+u/rvwKTvEb4l/KQ580vRQWAVkTc1b8P9A==
-----END CERTIFICATE-----
";
pub const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLlz9QT6rD0JlmTKC
iuGE7IM286gJbTqQj9UOF2aZ3RyhRANCAATQERltDIW8LexgBwbUIU6dNHGGhxaG
B9TjmHUkB+yvJjxno6Kq2LDwXOZ6xfAGVVF7otB7sNG7RoJZidcq31LF
-----END PRIVATE KEY-----
";

/// A TLS acceptor serving [`TEST_CERT`].
pub fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = vec![CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Serves TLS (with [`TEST_CERT`]) on a loopback port: every connection
/// whose handshake succeeds goes to `serve`; a client that refuses the
/// certificate ends at the handshake. Returns the `127.0.0.1:PORT` address.
pub async fn serve_tls<F, Fut>(serve: F) -> String
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = tls_acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (serve, acceptor) = (serve.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    serve(stream).await;
                }
            });
        }
    });
    address
}
