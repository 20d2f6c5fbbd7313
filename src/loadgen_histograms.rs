//! Native histograms for `tidewatch bench remote-write --native-histograms`:
//! request latencies of HTTP routes, as a Go service instrumented with
//! client_golang exposes them and Prometheus sends them on.
//!
//! One `http_request_duration_seconds` histogram per pod and route (the pods
//! of the float series: same namespaces, nodes and pod names), with an
//! exponential schema (3 by default: 8 buckets per power of two) and
//! client_golang's zero threshold. Each scrape adds a varying number of
//! observations drawn from a log-normal latency per route, with a slow tail
//! and a per-series latency level that drifts; buckets appear as observations
//! first land in them and stay (counts are cumulative). Now and then a pod's
//! container restarts, and all its histograms start again from zero: a
//! counter reset, which receivers must detect by comparing (the reset hint is
//! left unknown, as for scraped histograms).
//!
//! Everything is integer or table arithmetic on a seeded generator (bucket
//! bounds come from the model's bound table, not `exp`), so a seed gives the
//! same histograms on every machine.

use std::sync::Arc;

use tidewatch_model::histogram::{
    Bucket, CounterResetHint, EXPONENTIAL_SCHEMA_MAX, EXPONENTIAL_SCHEMA_MIN, FloatHistogram, HistogramSample,
    exponential_bound,
};
use tidewatch_model::seam::SeriesSamples;
use tidewatch_model::{Labels, TimestampMs};

use crate::loadgen::{Pod, Rng, SCRAPE_INTERVAL_MS};

/// The metric every generated histogram series has.
pub(crate) const METRIC: &str = "http_request_duration_seconds";
/// The schema when none is asked for: buckets grow by 2^(1/8) ≈ 9 %.
pub(crate) const DEFAULT_SCHEMA: i32 = 3;
/// client_golang's `DefNativeHistogramZeroThreshold`, 2^-128.
const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
/// Chance per scrape that a pod's container restarts: over 4 h (960 scrapes)
/// about one pod in twenty.
const RESTART_PROBABILITY: f64 = 1.0 / 20_000.0;
/// Share of requests that hit the slow path (a retry, a cold cache) and take
/// `SLOW_LOG2_FACTOR` powers of two longer.
const SLOW_SHARE: f64 = 0.005;
const SLOW_LOG2_FACTOR: f64 = 4.0;
/// Spread of latencies around a route's median, in powers of two (one
/// standard deviation ≈ ×1.6).
const SIGMA_LOG2: f64 = 0.7;
/// How far a series' latency level drifts per scrape, and its limit, in
/// powers of two.
const DRIFT_LOG2: f64 = 0.05;
const DRIFT_LIMIT_LOG2: f64 = 1.0;
/// Observations are kept within these powers of two (≈ 1 µs .. 17 min).
const MIN_LOG2: f64 = -20.0;
const MAX_LOG2: f64 = 10.0;

/// An HTTP route every pod serves.
#[derive(Debug, Clone, Copy)]
struct Route {
    method: &'static str,
    path: &'static str,
    requests_per_second: f64,
    /// log2 of the median latency in seconds.
    median_log2: f64,
}

/// Four routes with different traffic and latency (medians 45 ms, 12 ms,
/// 180 ms, 1.5 ms): about 13 observations per series per scrape on average.
const ROUTES: [Route; 4] = [
    Route {
        method: "GET",
        path: "/api/v1/orders",
        requests_per_second: 1.0,
        median_log2: -4.474, // 45 ms
    },
    Route {
        method: "GET",
        path: "/api/v1/users",
        requests_per_second: 2.0,
        median_log2: -6.381, // 12 ms
    },
    Route {
        method: "POST",
        path: "/api/v1/search",
        requests_per_second: 0.3,
        median_log2: -2.474, // 180 ms
    },
    Route {
        method: "GET",
        path: "/healthz",
        requests_per_second: 0.2,
        median_log2: -9.381, // 1.5 ms
    },
];

/// One series' cumulative state since its container (re)started.
#[derive(Debug, Clone)]
struct SeriesState {
    route: Route,
    pod_index: usize,
    /// Latency level relative to the route's median, in powers of two.
    drift_log2: f64,
    count: u64,
    sum: f64,
    /// Populated buckets, ascending by index.
    buckets: Vec<(i32, u64)>,
}

/// The generated histogram series and their state.
#[derive(Debug)]
pub(crate) struct NativeHistogramSet {
    labels: Vec<Labels>,
    states: Vec<SeriesState>,
    schema: i32,
    rng: Rng,
    restarts: u64,
}

impl NativeHistogramSet {
    /// `count` histogram series, one per pod and route, pod after pod; the
    /// schema must be an exponential one.
    pub(crate) fn kubernetes(count: usize, schema: i32, seed: u64) -> anyhow::Result<NativeHistogramSet> {
        if !(EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&schema) {
            anyhow::bail!(
                "--histogram-schema {schema}: exponential schemas are {EXPONENTIAL_SCHEMA_MIN}..={EXPONENTIAL_SCHEMA_MAX}"
            );
        }
        let mut labels = Vec::with_capacity(count);
        let mut states = Vec::with_capacity(count);
        let mut pod_index = 0usize;
        while labels.len() < count {
            let pod = Pod::nth(pod_index);
            for route in ROUTES.iter().take(count - labels.len()) {
                let mut pairs = pod.labels(METRIC, "app", "app");
                pairs.push(("method".into(), route.method.into()));
                pairs.push(("route".into(), route.path.into()));
                labels.push(Labels::from_pairs(pairs));
                states.push(SeriesState {
                    route: *route,
                    pod_index,
                    drift_log2: 0.0,
                    count: 0,
                    sum: 0.0,
                    buckets: Vec::new(),
                });
            }
            pod_index += 1;
        }
        Ok(NativeHistogramSet {
            labels,
            states,
            schema,
            rng: Rng::seeded(seed),
            restarts: 0,
        })
    }

    pub(crate) fn labels(&self) -> &[Labels] {
        &self.labels
    }

    /// Container restarts so far (each resets the pod's histograms).
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Advances every series one scrape and appends its histogram at `t` to
    /// `out[i]` (one entry per series, in the order of [`Self::labels`]).
    pub(crate) fn scrape_into(&mut self, t: TimestampMs, out: &mut [SeriesSamples]) {
        debug_assert_eq!(out.len(), self.states.len());
        let scale = 2f64.powi(self.schema);
        let mut current_pod = None;
        let mut restarting = false;
        for (state, series) in self.states.iter_mut().zip(out.iter_mut()) {
            // A restart takes every series of the pod; they are adjacent.
            if current_pod != Some(state.pod_index) {
                current_pod = Some(state.pod_index);
                restarting = self.rng.unit() < RESTART_PROBABILITY;
                if restarting {
                    self.restarts += 1;
                }
            }
            if restarting {
                state.count = 0;
                state.sum = 0.0;
                state.buckets.clear();
            }
            state.drift_log2 = (state.drift_log2 + DRIFT_LOG2 * (2.0 * self.rng.unit() - 1.0))
                .clamp(-DRIFT_LIMIT_LOG2, DRIFT_LIMIT_LOG2);
            let mean = state.route.requests_per_second * SCRAPE_INTERVAL_MS as f64 / 1000.0;
            let observations = (mean * (0.5 + self.rng.unit())).round() as u64;
            for _ in 0..observations {
                let mut log2 = state.route.median_log2 + state.drift_log2 + SIGMA_LOG2 * standard_normal(&mut self.rng);
                if self.rng.unit() < SLOW_SHARE {
                    log2 += SLOW_LOG2_FACTOR;
                }
                let log2 = log2.clamp(MIN_LOG2, MAX_LOG2);
                // Bucket i holds (b(i-1), b(i)] with b(i) = 2^(i / 2^schema).
                let index = (log2 * scale).ceil() as i32;
                let upper = exponential_bound(index, self.schema);
                let lower = exponential_bound(index - 1, self.schema);
                // A value in the bucket, never its lower bound.
                let value = upper - self.rng.unit() * (upper - lower);
                state.count += 1;
                state.sum += value;
                match state.buckets.binary_search_by_key(&index, |&(i, _)| i) {
                    Ok(at) => state.buckets[at].1 += 1,
                    Err(at) => state.buckets.insert(at, (index, 1)),
                }
            }
            series.histograms.push(HistogramSample {
                timestamp: t,
                histogram: state.histogram(self.schema),
            });
        }
    }
}

impl SeriesState {
    /// The histogram as client_golang would expose it now.
    fn histogram(&self, schema: i32) -> FloatHistogram {
        FloatHistogram {
            counter_reset_hint: CounterResetHint::Unknown,
            schema,
            zero_threshold: ZERO_THRESHOLD,
            zero_count: 0.0,
            count: self.count as f64,
            sum: self.sum,
            positive: self
                .buckets
                .iter()
                .map(|&(index, count)| Bucket {
                    index,
                    count: count as f64,
                })
                .collect(),
            negative: Vec::new(),
            custom_values: Arc::from(Vec::<f64>::new()),
        }
    }
}

/// A standard normal variate (Irwin–Hall: twelve uniforms less six), plain
/// arithmetic so it is the same everywhere; its tails end at ±6.
fn standard_normal(rng: &mut Rng) -> f64 {
    let mut total = 0.0;
    for _ in 0..12 {
        total += rng.unit();
    }
    total - 6.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidewatch_model::remote_write::{histogram_from_proto, histogram_to_proto};

    fn run(count: usize, schema: i32, seed: u64, scrapes: usize) -> (NativeHistogramSet, Vec<SeriesSamples>) {
        let mut set = NativeHistogramSet::kubernetes(count, schema, seed).expect("valid schema");
        let mut out: Vec<SeriesSamples> = set
            .labels()
            .iter()
            .map(|l| SeriesSamples::floats(l.clone(), Vec::new()))
            .collect();
        for scrape in 0..scrapes {
            set.scrape_into(1_700_000_000_000 + scrape as i64 * SCRAPE_INTERVAL_MS, &mut out);
        }
        (set, out)
    }

    #[test]
    fn one_series_per_pod_and_route_all_distinct() {
        let (set, _) = run(1001, DEFAULT_SCHEMA, 7, 0);
        assert_eq!(set.labels().len(), 1001);
        let distinct: std::collections::HashSet<&Labels> = set.labels().iter().collect();
        assert_eq!(distinct.len(), 1001);
        let names: std::collections::HashSet<&str> = set.labels().iter().filter_map(|l| l.get("__name__")).collect();
        assert_eq!(names, [METRIC].into());
        assert!(
            set.labels()
                .iter()
                .all(|l| l.get("route").is_some() && l.get("namespace").is_some())
        );
    }

    #[test]
    fn a_seed_gives_the_same_histograms_and_another_seed_others() {
        let (_, first) = run(40, DEFAULT_SCHEMA, 42, 30);
        let (_, again) = run(40, DEFAULT_SCHEMA, 42, 30);
        let (_, other) = run(40, DEFAULT_SCHEMA, 43, 30);
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn histograms_are_valid_integer_histograms_that_survive_the_wire() {
        for schema in [EXPONENTIAL_SCHEMA_MIN, 0, DEFAULT_SCHEMA, EXPONENTIAL_SCHEMA_MAX] {
            let (_, out) = run(24, schema, 5, 40);
            for series in &out {
                for sample in &series.histograms {
                    let h = &sample.histogram;
                    h.validate()
                        .unwrap_or_else(|e| panic!("{} at {}: {e}", series.labels, sample.timestamp));
                    let buckets: f64 = h.positive.iter().map(|b| b.count).sum();
                    assert_eq!(
                        h.count,
                        buckets + h.zero_count,
                        "count is the observations in the buckets"
                    );
                    assert!(h.positive.iter().all(|b| b.count > 0.0 && b.count.fract() == 0.0));
                    let wire = histogram_to_proto(sample);
                    assert!(
                        !wire.positive_deltas.is_empty() && wire.positive_counts.is_empty(),
                        "sent as an integer histogram (bucket deltas), as Prometheus 2.42 ingests"
                    );
                    let back = histogram_from_proto(&wire).expect("decodes");
                    assert_eq!(&back, sample);
                }
            }
        }
    }

    #[test]
    fn counts_grow_except_across_a_restart() {
        // Enough pods and scrapes for a few restarts at 1 in 20,000.
        let mut set = NativeHistogramSet::kubernetes(4000, DEFAULT_SCHEMA, 11).expect("valid schema");
        let mut previous: Option<Vec<SeriesSamples>> = None;
        let mut resets = 0;
        for scrape in 0..120 {
            let restarts_before = set.restarts();
            let mut out: Vec<SeriesSamples> = set
                .labels()
                .iter()
                .map(|l| SeriesSamples::floats(l.clone(), Vec::new()))
                .collect();
            set.scrape_into(1_700_000_000_000 + scrape * SCRAPE_INTERVAL_MS, &mut out);
            let restarts_now = set.restarts() - restarts_before;
            let mut fell = 0;
            for (now, before) in out.iter().zip(previous.iter().flatten()) {
                let (now, before) = (&now.histograms[0].histogram, &before.histograms[0].histogram);
                let grew = now.count >= before.count
                    && now.sum >= before.sum
                    && before.positive.iter().all(|old| {
                        now.positive
                            .iter()
                            .any(|new| new.index == old.index && new.count >= old.count)
                    });
                if !grew {
                    // Only a restart lowers anything, and it starts from zero:
                    // the histogram holds one scrape's observations (< 60).
                    assert!(now.count <= 60.0, "scrape {scrape}: fell without a restart");
                    fell += 1;
                }
            }
            assert!(
                fell <= restarts_now * ROUTES.len() as u64,
                "scrape {scrape}: {fell} series fell"
            );
            resets += fell;
            previous = Some(out);
        }
        assert!(resets > 0, "expected a container restart in 1000 pods x 120 scrapes");
    }

    #[test]
    fn rejects_custom_and_unknown_schemas() {
        assert!(NativeHistogramSet::kubernetes(4, -53, 1).is_err());
        assert!(NativeHistogramSet::kubernetes(4, 9, 1).is_err());
    }
}
