//! Native histograms through the storage engine: head, WAL replay, blocks,
//! compaction, and last-write-wins between float and histogram samples
//! across sources.

use std::sync::Arc;

use proptest::prelude::*;
use tidewatch_model::histogram::{Bucket, CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, HistogramSample};
use tidewatch_model::seam::{SeriesRead, SeriesSamples, TimeRange, WriteBatch};
use tidewatch_model::{Labels, ManualClock, Matcher, Sample, TenantId};
use tidewatch_storage::{FsyncPolicy, Storage, StorageConfig};

const HOUR: i64 = 3_600_000;
/// A fixed "now": 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600_000;

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        fsync: FsyncPolicy::Never,
        ..StorageConfig::new(dir)
    }
}

fn labels(name: &str) -> Labels {
    Labels::from_pairs([("__name__", name), ("job", "test")])
}

fn histogram(timestamp: i64, count: f64) -> HistogramSample {
    HistogramSample {
        timestamp,
        histogram: FloatHistogram {
            count,
            sum: count * 1.5,
            zero_count: 1.0,
            positive: vec![Bucket {
                index: 2,
                count: count - 1.0,
            }],
            ..FloatHistogram::default()
        },
    }
}

fn write(series: Vec<SeriesSamples>) -> WriteBatch {
    WriteBatch {
        series,
        metadata: Vec::new(),
    }
}

fn same_histogram(a: &HistogramSample, b: &HistogramSample) -> bool {
    let (x, y) = (&a.histogram, &b.histogram);
    let same_buckets = |p: &[Bucket], q: &[Bucket]| {
        p.len() == q.len()
            && p.iter()
                .zip(q)
                .all(|(m, n)| m.index == n.index && m.count.to_bits() == n.count.to_bits())
    };
    a.timestamp == b.timestamp
        && x.counter_reset_hint == y.counter_reset_hint
        && x.schema == y.schema
        && x.zero_threshold.to_bits() == y.zero_threshold.to_bits()
        && x.zero_count.to_bits() == y.zero_count.to_bits()
        && x.count.to_bits() == y.count.to_bits()
        && x.sum.to_bits() == y.sum.to_bits()
        && same_buckets(&x.positive, &y.positive)
        && same_buckets(&x.negative, &y.negative)
        && x.custom_values.len() == y.custom_values.len()
        && x.custom_values
            .iter()
            .zip(y.custom_values.iter())
            .all(|(m, n)| m.to_bits() == n.to_bits())
}

fn same_histograms(got: &[HistogramSample], expected: &[HistogramSample]) -> bool {
    got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| same_histogram(g, e))
}

async fn select_all(storage: &Storage, tenant: &TenantId) -> Vec<SeriesSamples> {
    storage
        .select(tenant, &[Matcher::equal("job", "test")], TimeRange::ALL)
        .await
        .unwrap()
}

#[tokio::test]
async fn compaction_keeps_histograms_and_histogram_only_series_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    // Three 2h windows of one 6h window a day ago: three blocks, then one.
    let start = NOW - 24 * HOUR;
    let histograms: Vec<HistogramSample> = (0..36)
        .map(|i| histogram(start + i * 10 * 60_000, 10.0 + i as f64))
        .collect();
    let floats: Vec<Sample> = (0..36)
        .map(|i| Sample::new(start + i * 10 * 60_000, i as f64))
        .collect();
    let summary = storage
        .append(
            &tenant,
            write(vec![
                SeriesSamples {
                    labels: labels("only_histograms"),
                    samples: Vec::new(),
                    histograms: histograms.clone(),
                    start_timestamps: Default::default(),
                },
                SeriesSamples::floats(labels("only_floats"), floats.clone()),
            ]),
        )
        .await
        .unwrap();
    assert_eq!((summary.samples, summary.histograms), (36, 36));
    storage.flush_all().await.unwrap();
    assert_eq!(storage.block_count(), 3);
    storage.maintain().await.unwrap();
    assert_eq!(storage.block_count(), 1, "the finished 6h window was not compacted");

    drop(storage);
    let storage = Storage::open(config(dir.path()), Arc::new(clock)).await.unwrap();
    let series = select_all(&storage, &tenant).await;
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].labels, labels("only_floats"));
    assert!(series[0].histograms.is_empty());
    assert_eq!(series[0].samples, floats);
    assert_eq!(series[1].labels, labels("only_histograms"));
    assert!(series[1].samples.is_empty());
    assert!(same_histograms(&series[1].histograms, &histograms));
    let listed = storage
        .series(
            &tenant,
            &[Matcher::equal("__name__", "only_histograms")],
            TimeRange::ALL,
        )
        .await
        .unwrap();
    assert_eq!(listed, vec![labels("only_histograms")]);
    let names = storage
        .label_values(&tenant, "__name__", &[], TimeRange::new(start, start + HOUR))
        .await
        .unwrap();
    assert_eq!(names, ["only_floats", "only_histograms"]);
}

#[tokio::test]
async fn the_newest_source_wins_between_floats_and_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    let t = NOW - HOUR;
    let series = |samples: Vec<Sample>, histograms: Vec<HistogramSample>| {
        write(vec![SeriesSamples {
            labels: labels("switching"),
            samples,
            histograms,
            start_timestamps: Default::default(),
        }])
    };
    // Block: floats at t and t+1, a histogram at t+2.
    storage
        .append(
            &tenant,
            series(
                vec![Sample::new(t, 1.0), Sample::new(t + 1, 2.0)],
                vec![histogram(t + 2, 5.0)],
            ),
        )
        .await
        .unwrap();
    storage.flush_all().await.unwrap();
    // Head: a histogram over the float at t, a float over the histogram at t+2.
    storage
        .append(&tenant, series(vec![Sample::new(t + 2, 3.0)], vec![histogram(t, 7.0)]))
        .await
        .unwrap();
    let check = |got: Vec<SeriesSamples>| {
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![Sample::new(t + 1, 2.0), Sample::new(t + 2, 3.0)]);
        assert!(same_histograms(&got[0].histograms, &[histogram(t, 7.0)]));
    };
    check(select_all(&storage, &tenant).await);
    // The same after replay, and once everything is in blocks (one merged by compaction).
    drop(storage);
    let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    check(select_all(&storage, &tenant).await);
    storage.flush_all().await.unwrap();
    assert_eq!(storage.block_count(), 2);
    check(select_all(&storage, &tenant).await);
    clock.advance(12 * HOUR);
    storage.maintain().await.unwrap();
    assert_eq!(storage.block_count(), 1);
    check(select_all(&storage, &tenant).await);
}

/// Valid histograms of every kind: exponential with both signs and a zero
/// bucket, custom buckets, whole or fractional counts, odd sums, staleness
/// markers.
fn valid_histogram() -> impl Strategy<Value = FloatHistogram> {
    let buckets = |max_index: i32| {
        proptest::collection::btree_map(
            -max_index..=max_index,
            prop_oneof![(0u32..1000).prop_map(f64::from), 0.0f64..1e3],
            0..6,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(index, count)| Bucket { index, count })
                .collect::<Vec<_>>()
        })
    };
    let exponential = (-4i32..=8, buckets(40), buckets(40), 0.0f64..10.0, 0.0f64..1e-3).prop_map(
        |(schema, positive, negative, zero_count, zero_threshold)| FloatHistogram {
            schema,
            zero_count,
            zero_threshold,
            positive,
            negative,
            ..FloatHistogram::default()
        },
    );
    let custom = (proptest::collection::btree_set(-1000i32..1000, 1..6), buckets(3)).prop_map(|(bounds, positive)| {
        let bounds: Vec<f64> = bounds.into_iter().map(|b| f64::from(b) / 10.0).collect();
        let positive = positive
            .into_iter()
            .filter(|b: &Bucket| b.index >= 0 && b.index as usize <= bounds.len())
            .collect();
        FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            positive,
            custom_values: Arc::from(bounds),
            ..FloatHistogram::default()
        }
    });
    (
        prop_oneof![exponential, custom],
        0i32..4,
        prop_oneof![any::<f64>(), -1e6f64..1e6],
        0.0f64..100.0,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(mut histogram, hint, sum, extra, stale)| {
            if stale {
                return FloatHistogram::stale_marker();
            }
            let buckets: f64 = histogram
                .positive
                .iter()
                .chain(&histogram.negative)
                .map(|b| b.count)
                .sum();
            histogram.count = buckets + histogram.zero_count + extra.floor();
            histogram.sum = sum;
            histogram.counter_reset_hint = CounterResetHint::from_proto(hint);
            histogram
        })
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    // Random valid histograms come back bit for bit from the head, after WAL
    // replay, and from blocks after a flush and another restart.
    #[test]
    fn histograms_round_trip_through_head_wal_and_blocks(
        by_series in proptest::collection::btree_map(
            "[a-c]{1,2}",
            proptest::collection::btree_map(0i64..(6 * HOUR), valid_histogram(), 1..8),
            1..4,
        )
    ) {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(NOW);
            let tenant = TenantId::default_tenant();
            let expected: Vec<SeriesSamples> = by_series
                .iter()
                .map(|(name, histograms)| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "h"), ("job", "test"), ("name", name.as_str())]),
                    samples: Vec::new(),
                    histograms: histograms
                        .iter()
                        .map(|(&offset, histogram)| HistogramSample {
                            timestamp: NOW - 6 * HOUR + offset,
                            histogram: histogram.clone(),
                        })
                        .collect(),
                    start_timestamps: Default::default(),
                })
                .collect();
            let verify = |got: Vec<SeriesSamples>| -> Result<(), TestCaseError> {
                prop_assert_eq!(got.len(), expected.len());
                for (g, e) in got.iter().zip(&expected) {
                    prop_assert_eq!(&g.labels, &e.labels);
                    prop_assert!(same_histograms(&g.histograms, &e.histograms), "{:?} != {:?}", g.histograms, e.histograms);
                }
                Ok(())
            };
            {
                let storage = Storage::open(config(dir.path()), Arc::new(clock.clone())).await.unwrap();
                // Newest first per series, so most arrive out of order.
                let mut reversed = expected.clone();
                for series in &mut reversed {
                    series.histograms.reverse();
                }
                for series in reversed {
                    for sample in series.histograms {
                        let one = SeriesSamples { labels: series.labels.clone(), samples: Vec::new(), histograms: vec![sample], start_timestamps: Default::default() };
                        storage.append(&tenant, write(vec![one])).await.unwrap();
                    }
                }
                verify(select_all(&storage, &tenant).await)?;
            }
            let storage = Storage::open(config(dir.path()), Arc::new(clock.clone())).await.unwrap();
            verify(select_all(&storage, &tenant).await)?;
            storage.flush_all().await.unwrap();
            verify(select_all(&storage, &tenant).await)?;
            drop(storage);
            let storage = Storage::open(config(dir.path()), Arc::new(clock)).await.unwrap();
            verify(select_all(&storage, &tenant).await)?;
            Ok::<(), TestCaseError>(())
        })?;
    }
}
