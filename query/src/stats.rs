//! Request counters and latencies per endpoint, for self-monitoring.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket bounds in seconds (Prometheus' `prometheus_http_request_duration_seconds` style).
pub const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];

/// Figures of one endpoint and status code.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    pub count: u64,
    pub sum_seconds: f64,
    /// Cumulative counts per bound of [`LATENCY_BUCKETS`].
    pub buckets: [u64; LATENCY_BUCKETS.len()],
}

/// HTTP statistics keyed by (route, status code).
#[derive(Debug, Default)]
pub struct HttpStats {
    by_route: Mutex<BTreeMap<(String, u16), EndpointStats>>,
}

impl HttpStats {
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        let entry = by_route.entry((route.to_string(), status)).or_default();
        entry.count += 1;
        entry.sum_seconds += seconds;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(entry.buckets.iter_mut()) {
            if seconds <= *bound {
                *bucket += 1;
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<(String, u16), EndpointStats> {
        self.by_route.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
