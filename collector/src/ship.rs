//! Sending batches to the server: one shipper per kind (logs through the Loki
//! push API, metrics through remote write), each with its own spool.
//!
//! Batches go out one at a time, in order. A batch is *acknowledged* when the
//! server accepted it (2xx), refused it for good (a 4xx other than 429: sending
//! it again cannot help, and Loki stores a push's valid entries even when it
//! answers 400), or it was written to the spool. Only then are the file
//! positions it covers advanced, so a crash at any point re-reads rather than
//! loses. While the spool holds anything, new batches join it behind the
//! older ones and the spool drains front first, with exponential backoff
//! between failed attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, watch};

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::positions::{FileKey, Positions};
use crate::spool::{Dropped, Spool};

/// How long a batch still queued at shutdown may take to send before it is
/// spooled instead.
const FINAL_SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Quick attempts before a batch goes to the spool.
const DIRECT_ATTEMPTS: u32 = 3;

/// What a shipper sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Logs,
    Metrics,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Logs => "logs",
            Kind::Metrics => "metrics",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Logs => "/loki/api/v1/push",
            Kind::Metrics => "/api/v1/write",
        }
    }
}

/// A file position to advance once the batch is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub key: FileKey,
    pub fingerprint_hash: u64,
    pub offset: u64,
}

/// One encoded request body and what it covers.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Snappy-compressed protobuf, as sent.
    pub body: Vec<u8>,
    /// Lines or samples in it.
    pub items: u64,
    /// Uncompressed bytes of lines (logs), for the counters.
    pub raw_bytes: u64,
    pub acks: Vec<Ack>,
}

/// A shipper's counters, exposed on the collector's `/metrics`.
#[derive(Debug, Default)]
pub struct ShipStats {
    pub batches_sent: AtomicU64,
    pub items_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Attempts that failed and will be tried again.
    pub batches_retried: AtomicU64,
    /// Batches the server refused for good (their items are not stored).
    pub batches_refused: AtomicU64,
    pub items_refused: AtomicU64,
    pub batches_spooled: AtomicU64,
    pub batches_dropped: AtomicU64,
    pub items_dropped: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_batches: AtomicU64,
}

impl ShipStats {
    fn count_dropped(&self, kind: Kind, dropped: Dropped) {
        if dropped.batches == 0 {
            return;
        }
        self.batches_dropped.fetch_add(dropped.batches, Ordering::Relaxed);
        self.items_dropped.fetch_add(dropped.items, Ordering::Relaxed);
        tracing::error!(
            kind = kind.as_str(),
            batches = dropped.batches,
            items = dropped.items,
            bytes = dropped.bytes,
            "spool full, oldest batches dropped"
        );
    }
}

/// How a send ended.
#[derive(Debug)]
enum Sent {
    Accepted,
    Refused(String),
}

/// The HTTP side: URL, headers, client (plain HTTP or TLS per `server.tls`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: String,
    kind: Kind,
    config: ServerConfig,
}

/// Most of an error response body kept for the log.
const MAX_ERROR_BODY: usize = 64 * 1024;

impl Endpoint {
    pub fn new(config: &ServerConfig, kind: Kind) -> Result<Endpoint> {
        let https = config.url.starts_with("https://");
        let connector = crate::tls::connector(&config.tls, https)?;
        Ok(Endpoint {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url: format!("{}{}", config.url.trim_end_matches('/'), kind.path()),
            kind,
            config: config.clone(),
        })
    }

    fn bearer_token(&self) -> Option<String> {
        if let Some(path) = &self.config.bearer_token_file {
            match std::fs::read_to_string(path) {
                Ok(token) => return Some(token.trim().to_string()),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "bearer token file unreadable");
                }
            }
        }
        self.config.bearer_token.clone()
    }

    async fn send(&self, body: &[u8]) -> Result<Sent> {
        let mut request = Request::post(&self.url)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, crate::USER_AGENT);
        if self.kind == Kind::Metrics {
            request = request
                .header(CONTENT_ENCODING, "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        }
        if let Some(tenant) = &self.config.tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        if let Some(token) = self.bearer_token() {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| self.error(format!("invalid request: {e}"), false))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| self.error(crate::tls::describe_client_error(&e), true))?;
            let status = response.status();
            if status.is_success() {
                return Ok(Sent::Accepted);
            }
            let text = match Limited::new(response.into_body(), MAX_ERROR_BODY).collect().await {
                Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_string(),
                Err(_) => String::new(),
            };
            let message = format!("{status}: {text}");
            if status.as_u16() == 429 || status.is_server_error() {
                return Err(self.error(message, true));
            }
            Ok(Sent::Refused(message))
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(self.error(format!("no answer within {:?}", self.config.timeout), true)),
        }
    }

    fn error(&self, message: String, retryable: bool) -> Error {
        Error::Send {
            url: self.url.clone(),
            message,
            retryable,
        }
    }
}

/// Sends one kind of batch with retries and a spool.
#[derive(Debug)]
pub struct Shipper {
    endpoint: Endpoint,
    spool: Spool,
    positions: Option<Positions>,
    stats: Arc<ShipStats>,
    backoff: Backoff,
}

impl Shipper {
    pub fn new(endpoint: Endpoint, spool: Spool, positions: Option<Positions>, stats: Arc<ShipStats>) -> Shipper {
        let backoff = Backoff::new(endpoint.config.min_backoff, endpoint.config.max_backoff);
        stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
        stats.spool_batches.store(spool.len() as u64, Ordering::Relaxed);
        Shipper {
            endpoint,
            spool,
            positions,
            stats,
            backoff,
        }
    }

    /// Runs until `incoming` closes (everything received is then delivered or
    /// spooled) or `shutdown` turns true (what is in flight is spooled).
    pub async fn run(mut self, mut incoming: mpsc::Receiver<Outgoing>, mut shutdown: watch::Receiver<bool>) {
        let kind = self.endpoint.kind;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !self.spool.is_empty() {
                self.drain_one(&mut incoming, &mut shutdown).await;
                continue;
            }
            let outgoing = tokio::select! {
                received = incoming.recv() => match received {
                    Some(outgoing) => outgoing,
                    None => break,
                },
                _ = shutdown.changed() => continue,
            };
            if self.needs_sending(&outgoing) {
                self.deliver(outgoing, &mut shutdown).await;
            }
        }
        // Whatever is still queued goes to the spool, so nothing that was
        // read is lost when the process stops.
        incoming.close();
        while let Ok(outgoing) = incoming.try_recv() {
            if !self.needs_sending(&outgoing) {
                continue;
            }
            // One quick try while the server still answers; else the spool.
            if self.spool.is_empty() {
                let attempt = tokio::time::timeout(FINAL_SEND_TIMEOUT, self.endpoint.send(&outgoing.body)).await;
                if let Ok(Ok(sent)) = attempt {
                    self.delivered(sent, &outgoing);
                    continue;
                }
            }
            self.spool_batch(outgoing);
        }
        tracing::info!(kind = kind.as_str(), spooled = self.spool.len(), "shipper stopped");
    }

    /// Sends a batch directly, a few quick attempts, then spools it.
    async fn deliver(&mut self, outgoing: Outgoing, shutdown: &mut watch::Receiver<bool>) {
        let mut delay = self.endpoint.config.min_backoff;
        for attempt in 1..=DIRECT_ATTEMPTS {
            match self.endpoint.send(&outgoing.body).await {
                Ok(sent) => {
                    self.delivered(sent, &outgoing);
                    self.backoff.reset();
                    return;
                }
                Err(error) => {
                    self.stats.batches_retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(kind = self.endpoint.kind.as_str(), attempt, %error, "send failed");
                }
            }
            if attempt < DIRECT_ATTEMPTS && !sleep_or_shutdown(delay, shutdown).await {
                break;
            }
            delay = (delay * 2).min(self.endpoint.config.max_backoff);
        }
        self.spool_batch(outgoing);
    }

    /// Tries the spool's oldest batch once; on failure waits out the backoff,
    /// spooling whatever arrives meanwhile.
    async fn drain_one(&mut self, incoming: &mut mpsc::Receiver<Outgoing>, shutdown: &mut watch::Receiver<bool>) {
        let (front, dropped) = match self.spool.front() {
            Ok(front) => front,
            Err(error) => {
                tracing::error!(%error, "spool unreadable");
                (None, Dropped::default())
            }
        };
        self.stats.count_dropped(self.endpoint.kind, dropped);
        let Some(batch) = front else {
            self.update_spool_gauges();
            return;
        };
        match self.endpoint.send(&batch.body).await {
            Ok(sent) => {
                self.record(sent, batch.items, 0);
                if let Err(error) = self.spool.pop(batch.sequence) {
                    tracing::error!(%error, "delivered batch could not be removed from the spool");
                }
                self.backoff.reset();
                self.update_spool_gauges();
                return;
            }
            Err(error) => {
                self.stats.batches_retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(kind = self.endpoint.kind.as_str(), %error, spooled = self.spool.len(), "send from spool failed");
            }
        }
        let wait = tokio::time::sleep(self.backoff.next());
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => return,
                _ = shutdown.changed() => return,
                received = incoming.recv() => match received {
                    Some(outgoing) => {
                        if self.needs_sending(&outgoing) {
                            self.spool_batch(outgoing);
                        }
                    }
                    None => {
                        // Nothing more will come; keep draining on schedule.
                        (&mut wait).await;
                        return;
                    }
                },
            }
        }
    }

    /// False for a batch with only checkpoints to move (skipped bytes,
    /// released files), which is acknowledged on arrival: every batch before
    /// it was already sent or spooled, so nothing it covers is unsafe.
    fn needs_sending(&self, outgoing: &Outgoing) -> bool {
        if outgoing.body.is_empty() {
            self.acknowledge(&outgoing.acks);
            return false;
        }
        true
    }

    /// The server answered a batch: count it and move its positions.
    fn delivered(&self, sent: Sent, outgoing: &Outgoing) {
        self.record(sent, outgoing.items, outgoing.raw_bytes);
        self.acknowledge(&outgoing.acks);
    }

    fn spool_batch(&mut self, outgoing: Outgoing) {
        match self.spool.push(outgoing.items, &outgoing.body) {
            Ok(dropped) => {
                self.stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                self.stats.count_dropped(self.endpoint.kind, dropped);
                // In the spool is as good as sent: the positions may move.
                self.acknowledge(&outgoing.acks);
            }
            Err(error) => {
                // Not acknowledged: the lines are read again after a restart.
                tracing::error!(%error, items = outgoing.items, "batch could not be spooled");
            }
        }
        self.update_spool_gauges();
    }

    fn record(&self, sent: Sent, items: u64, raw_bytes: u64) {
        match sent {
            Sent::Accepted => {
                self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                self.stats.items_sent.fetch_add(items, Ordering::Relaxed);
                self.stats.bytes_sent.fetch_add(raw_bytes, Ordering::Relaxed);
            }
            Sent::Refused(message) => {
                self.stats.batches_refused.fetch_add(1, Ordering::Relaxed);
                self.stats.items_refused.fetch_add(items, Ordering::Relaxed);
                tracing::error!(kind = self.endpoint.kind.as_str(), %message, items, "server refused batch");
            }
        }
    }

    fn acknowledge(&self, acks: &[Ack]) {
        if let Some(positions) = &self.positions {
            for ack in acks {
                positions.advance(ack.key, ack.fingerprint_hash, ack.offset);
            }
        }
    }

    fn update_spool_gauges(&self) {
        self.stats.spool_bytes.store(self.spool.bytes(), Ordering::Relaxed);
        self.stats
            .spool_batches
            .store(self.spool.len() as u64, Ordering::Relaxed);
    }
}

/// Sleeps unless shutdown comes first; false on shutdown.
async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        _ = shutdown.changed() => false,
    }
}

/// Exponential backoff between `min` and `max`.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, current: min }
    }

    fn next(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next().as_millis(), 100);
    }
}
