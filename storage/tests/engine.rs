//! The storage engine end to end: restart, flush, compaction, retention,
//! limits and tenancy, driven by a manual clock.

use std::sync::Arc;

use tidewatch_model::seam::{SeriesRead, SeriesSamples, TimeRange, WriteBatch};
use tidewatch_model::{Labels, ManualClock, Matcher, Sample, TenantId, stale_nan};
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

fn labels(name: &str, pod: &str) -> Labels {
    Labels::from_pairs([("__name__", name), ("pod", pod)])
}

fn batch(series: &[(Labels, Vec<(i64, f64)>)]) -> WriteBatch {
    WriteBatch {
        series: series
            .iter()
            .map(|(labels, samples)| SeriesSamples {
                labels: labels.clone(),
                samples: samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
                histograms: Vec::new(),
                start_timestamps: Default::default(),
            })
            .collect(),
        metadata: Vec::new(),
    }
}

async fn all(storage: &Storage, tenant: &TenantId) -> Vec<SeriesSamples> {
    storage
        .select(tenant, &[Matcher::equal("__name__", "m")], TimeRange::ALL)
        .await
        .unwrap()
}

fn same_samples(got: &[Sample], expected: &[(i64, f64)]) -> bool {
    got.len() == expected.len()
        && got
            .iter()
            .zip(expected)
            .all(|(g, &(t, v))| g.timestamp == t && g.value.to_bits() == v.to_bits())
}

#[tokio::test]
async fn restart_loads_blocks_and_replays_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let flushed: Vec<(i64, f64)> = (0..10).map(|i| (NOW - HOUR + i * 15_000, i as f64)).collect();
    let in_wal: Vec<(i64, f64)> = vec![
        (NOW - 1000, f64::NAN),
        (NOW, stale_nan()),
        (NOW - 2 * HOUR, f64::INFINITY),
    ];
    {
        let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
            .await
            .unwrap();
        storage
            .append(&tenant, batch(&[(labels("m", "a"), flushed.clone())]))
            .await
            .unwrap();
        storage.flush_all().await.unwrap();
        assert_eq!(storage.block_count(), 1);
        storage
            .append(&tenant, batch(&[(labels("m", "a"), in_wal.clone())]))
            .await
            .unwrap();
    }
    let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    assert_eq!(storage.block_count(), 1);
    let series = all(&storage, &tenant).await;
    assert_eq!(series.len(), 1);
    let mut expected = flushed.clone();
    expected.extend(in_wal.iter().copied());
    expected.sort_by_key(|&(t, _)| t);
    assert!(same_samples(&series[0].samples, &expected), "{:?}", series[0].samples);

    // A second restart after flushing everything reads the same from blocks alone,
    // and the WAL checkpoint keeps no flushed samples.
    storage.flush_all().await.unwrap();
    drop(storage);
    let storage = Storage::open(config(dir.path()), Arc::new(clock)).await.unwrap();
    assert_eq!(storage.head_totals().1, 0, "flushed samples came back into the head");
    assert!(same_samples(&all(&storage, &tenant).await[0].samples, &expected));
}

#[tokio::test]
async fn compaction_merges_finished_windows_and_keeps_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    // Three 2h windows of one aligned 6h window, a day ago: flush splits them into three blocks.
    let start = NOW - 24 * HOUR;
    let samples: Vec<(i64, f64)> = (0..(6 * 60)).map(|i| (start + i * 60_000, i as f64)).collect();
    storage
        .append(
            &tenant,
            batch(&[
                (labels("m", "a"), samples.clone()),
                (labels("m", "b"), samples[..10].to_vec()),
            ]),
        )
        .await
        .unwrap();
    storage.flush_all().await.unwrap();
    assert_eq!(storage.block_count(), 3);
    // Overlapping late data for the first window makes a fourth block in that window.
    storage
        .append(&tenant, batch(&[(labels("m", "a"), vec![(start, 100.0)])]))
        .await
        .unwrap();
    storage.flush_all().await.unwrap();
    assert_eq!(storage.block_count(), 4);

    storage.maintain().await.unwrap();
    assert_eq!(storage.block_count(), 1, "the finished 6h window was not compacted");
    let series = all(&storage, &tenant).await;
    let mut expected = samples.clone();
    expected[0] = (start, 100.0);
    assert!(same_samples(&series[0].samples, &expected));
    assert!(same_samples(&series[1].samples, &samples[..10]));

    // Compaction survives a restart: sources are gone, the merged block remains.
    drop(storage);
    let storage = Storage::open(config(dir.path()), Arc::new(clock)).await.unwrap();
    assert_eq!(storage.block_count(), 1);
    assert!(same_samples(&all(&storage, &tenant).await[0].samples, &expected));
}

#[tokio::test]
async fn retention_deletes_old_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    storage
        .append(&tenant, batch(&[(labels("m", "a"), vec![(NOW - 3 * HOUR, 1.0)])]))
        .await
        .unwrap();
    storage.flush_all().await.unwrap();
    storage.maintain().await.unwrap();
    assert_eq!(storage.block_count(), 1);
    clock.advance(16 * 24 * HOUR);
    storage.maintain().await.unwrap();
    assert_eq!(storage.block_count(), 0);
    assert!(all(&storage, &tenant).await.is_empty());
}

#[tokio::test]
async fn head_windows_are_cut_into_blocks_as_time_passes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    let samples: Vec<(i64, f64)> = (0..(4 * 60)).map(|i| (NOW - 4 * HOUR + i * 60_000, i as f64)).collect();
    storage
        .append(&tenant, batch(&[(labels("m", "a"), samples.clone())]))
        .await
        .unwrap();
    storage.maintain().await.unwrap();
    assert!(storage.block_count() >= 1, "no block was cut from a 4h head");
    let (_, head_samples) = storage.head_totals();
    assert!(head_samples < samples.len() as u64);
    assert!(same_samples(&all(&storage, &tenant).await[0].samples, &samples));
}

#[tokio::test]
async fn tenants_are_isolated_on_disk_and_in_queries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let a = TenantId::parse("a").unwrap();
    let b = TenantId::parse("b").unwrap();
    {
        let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
            .await
            .unwrap();
        storage
            .append(&a, batch(&[(labels("m", "x"), vec![(NOW, 1.0)])]))
            .await
            .unwrap();
        storage.flush_all().await.unwrap();
        storage
            .append(&a, batch(&[(labels("m", "x"), vec![(NOW + 1, 2.0)])]))
            .await
            .unwrap();
        assert!(all(&storage, &b).await.is_empty());
    }
    let storage = Storage::open(config(dir.path()), Arc::new(clock)).await.unwrap();
    assert_eq!(all(&storage, &a).await[0].samples.len(), 2);
    assert!(all(&storage, &b).await.is_empty());
    assert!(storage.label_names(&b, &[], TimeRange::ALL).await.unwrap().is_empty());
    assert_eq!(
        storage.label_values(&a, "pod", &[], TimeRange::ALL).await.unwrap(),
        ["x"]
    );
}

#[tokio::test]
async fn rejected_batches_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let mut settings = config(dir.path());
    settings.max_series_per_tenant = 2;
    settings.out_of_order_window_ms = HOUR;
    let storage = Storage::open(settings, Arc::new(clock)).await.unwrap();
    storage
        .append(&tenant, batch(&[(labels("m", "a"), vec![(NOW, 1.0)])]))
        .await
        .unwrap();

    let err = storage
        .append(
            &tenant,
            batch(&[
                (labels("m", "b"), vec![(NOW, 1.0)]),
                (labels("m", "c"), vec![(NOW, 1.0)]),
            ]),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit of 2 series per tenant"), "{err}");

    // The valid first series of a batch whose second series is out of window is not stored either.
    let err = storage
        .append(
            &tenant,
            batch(&[
                (labels("m", "b"), vec![(NOW, 5.0)]),
                (labels("m", "a"), vec![(NOW - 2 * HOUR, 1.0)]),
            ]),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    assert!(err.to_string().contains("pod=\"a\""), "{err}");
    let series = all(&storage, &tenant).await;
    assert_eq!(series.len(), 1);
    assert!(same_samples(&series[0].samples, &[(NOW, 1.0)]));
}

#[tokio::test]
async fn compaction_streams_across_chunks_of_series() {
    // More series than one merge step holds, spread unevenly over the blocks.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let storage = Storage::open(config(dir.path()), Arc::new(clock)).await.unwrap();
    let start = NOW - 24 * HOUR;
    let pods: Vec<String> = (0..5000).map(|i| format!("pod-{i:05}")).collect();
    for window in 0..3i64 {
        let t = start + window * 2 * HOUR;
        let series: Vec<(Labels, Vec<(i64, f64)>)> = pods
            .iter()
            .enumerate()
            .filter(|(i, _)| (*i as i64 + window) % 3 != 0)
            .map(|(i, pod)| (labels("m", pod), vec![(t, i as f64), (t + 1, f64::from_bits(i as u64))]))
            .collect();
        storage.append(&tenant, batch(&series)).await.unwrap();
        storage.flush_all().await.unwrap();
    }
    assert_eq!(storage.block_count(), 3);
    storage.maintain().await.unwrap();
    assert_eq!(storage.block_count(), 1);
    let series = all(&storage, &tenant).await;
    assert_eq!(series.len(), pods.len());
    for (i, entry) in series.iter().enumerate() {
        let mut expected = Vec::new();
        for window in 0..3i64 {
            if (i as i64 + window) % 3 != 0 {
                let t = start + window * 2 * HOUR;
                expected.extend([(t, i as f64), (t + 1, f64::from_bits(i as u64))]);
            }
        }
        assert!(
            same_samples(&entry.samples, &expected),
            "series {i}: {:?}",
            entry.samples
        );
    }
}

#[tokio::test]
async fn batched_selection_equals_selection_across_blocks_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let storage = Storage::open(config(dir.path()), clock).await.unwrap();
    let tenant = TenantId::default_tenant();
    // Older samples of some series go to blocks, newer ones of others stay in the head.
    let old: Vec<(Labels, Vec<(i64, f64)>)> = (0..7)
        .map(|i| {
            (
                labels("m", &format!("p{i}")),
                vec![(NOW - 3 * HOUR, i as f64), (NOW - 3 * HOUR + 15_000, 1.0)],
            )
        })
        .collect();
    storage.append(&tenant, batch(&old)).await.unwrap();
    storage.flush_all().await.unwrap();
    let new: Vec<(Labels, Vec<(i64, f64)>)> = (3..11)
        .map(|i| (labels("m", &format!("p{i}")), vec![(NOW - 60_000, -(i as f64))]))
        .collect();
    storage.append(&tenant, batch(&new)).await.unwrap();
    let expected = all(&storage, &tenant).await;
    assert_eq!(expected.len(), 11);
    for batch_size in [1, 3, 100] {
        let mut got: Vec<SeriesSamples> = Vec::new();
        storage
            .select_batches(
                &tenant,
                &[Matcher::equal("__name__", "m")],
                TimeRange::ALL,
                batch_size,
                |batch| {
                    assert!(!batch.is_empty() && batch.len() <= batch_size);
                    got.extend(batch);
                    Ok(())
                },
            )
            .await
            .unwrap();
        assert_eq!(got.len(), expected.len(), "batch {batch_size}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.labels, e.labels);
            assert!(g.samples.iter().zip(&e.samples).all(|(a, b)| a.same_as(b)) && g.samples.len() == e.samples.len());
        }
    }
    // A visitor's error ends the selection and comes back unchanged.
    let err = storage
        .select_batches(&tenant, &[Matcher::equal("__name__", "m")], TimeRange::ALL, 2, |_| {
            Err(tidewatch_model::Error::Invalid("stop".into()))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "stop");
}

/// The newest sample in range per series, the slow way: all of them, then the last.
async fn newest_by_selecting(storage: &Storage, tenant: &TenantId, range: TimeRange) -> Vec<SeriesSamples> {
    let mut all = storage
        .select(tenant, &[Matcher::equal("__name__", "m")], range)
        .await
        .unwrap();
    all.iter_mut().for_each(SeriesSamples::keep_latest);
    all
}

async fn newest_by_latest_read(storage: &Storage, tenant: &TenantId, range: TimeRange) -> Vec<SeriesSamples> {
    let mut got = Vec::new();
    storage
        .select_latest_batches(tenant, &[Matcher::equal("__name__", "m")], range, 3, |batch| {
            got.extend(batch);
            Ok(())
        })
        .await
        .unwrap();
    got
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    // Reading only the newest sample (chunk ends in the head, the last rows
    // of blocks) gives what selecting everything and keeping the last does,
    // with blocks, the head's chunks and its out-of-order samples in play.
    #[test]
    fn newest_sample_reads_equal_selecting_everything(
        flushed in proptest::collection::vec(proptest::collection::btree_set(0i64..1_000, 0..300), 4),
        appended in proptest::collection::vec(proptest::collection::btree_set(0i64..1_000, 0..300), 4),
        late in proptest::collection::vec(proptest::collection::btree_set(0i64..1_000, 0..20), 4),
        ranges in proptest::collection::vec((0i64..1_000, 0i64..400), 8),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let storage = Storage::open(config(dir.path()), Arc::new(ManualClock::new(NOW))).await.unwrap();
            let tenant = TenantId::default_tenant();
            // Times are 15 s steps within the last 4 h 10 m; values tell the write apart.
            let at = |step: i64| NOW - 4 * HOUR + step * 15_000;
            let write = |sets: &Vec<std::collections::BTreeSet<i64>>, tag: f64| {
                let series: Vec<(Labels, Vec<(i64, f64)>)> = sets
                    .iter()
                    .enumerate()
                    .map(|(i, steps)| (labels("m", &format!("p{i}")), steps.iter().map(|&s| (at(s), tag + s as f64)).collect()))
                    .collect();
                batch(&series)
            };
            storage.append(&tenant, write(&flushed, 0.5)).await.unwrap();
            storage.flush_all().await.unwrap();
            storage.append(&tenant, write(&appended, 10_000.25)).await.unwrap();
            // Older than what the head holds: out-of-order samples.
            storage.append(&tenant, write(&late, 20_000.125)).await.unwrap();
            // Ranges that start or end exactly on a series' last block sample.
            let edges = flushed.iter().filter_map(|steps| steps.last()).flat_map(|&last| [(last, 0), (last, 7), (last - 3, 3)]);
            for (start, width) in ranges.into_iter().chain(edges) {
                let range = TimeRange::new(at(start), at(start + width));
                let expected = newest_by_selecting(&storage, &tenant, range).await;
                let got = newest_by_latest_read(&storage, &tenant, range).await;
                assert_eq!(got.len(), expected.len(), "{range:?}");
                for (g, e) in got.iter().zip(&expected) {
                    assert_eq!(g.labels, e.labels);
                    assert!(
                        g.samples.len() == e.samples.len() && g.samples.iter().zip(&e.samples).all(|(a, b)| a.same_as(b)),
                        "{range:?} {}: {:?} != {:?}", g.labels, g.samples, e.samples
                    );
                }
            }
        });
    }
}

/// Blocks with files under the tenant's blocks prefix (deleting a block's
/// files may leave its empty directory behind).
fn block_dirs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("blocks/anonymous")).map_or(0, |d| {
        d.filter(|e| e.as_ref().is_ok_and(|e| e.path().join("meta.json").exists()))
            .count()
    })
}

// A query that snapshotted blocks keeps reading them while compaction
// replaces them: their files go only once no read holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_waits_for_reads_before_deleting_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW);
    let tenant = TenantId::default_tenant();
    let storage = Storage::open(config(dir.path()), Arc::new(clock.clone()))
        .await
        .unwrap();
    let start = NOW - 24 * HOUR;
    let series: Vec<(Labels, Vec<(i64, f64)>)> = (0..6)
        .map(|p| {
            (
                labels("m", &format!("p{p}")),
                (0..300).map(|i| (start + i * 60_000, i as f64)).collect(),
            )
        })
        .collect();
    storage.append(&tenant, batch(&series)).await.unwrap();
    storage.flush_all().await.unwrap();
    let before = storage.block_count();
    assert!(before > 1, "several blocks to compact");

    let (reached_tx, reached_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let reader = {
        let storage = storage.clone();
        let tenant = tenant.clone();
        tokio::spawn(async move {
            let mut batches = 0;
            let mut read = 0;
            storage
                .select_batches(
                    &tenant,
                    &[Matcher::equal("__name__", "m")],
                    TimeRange::ALL,
                    1,
                    |batch| {
                        batches += 1;
                        read += batch.iter().map(|s| s.samples.len()).sum::<usize>();
                        if batches == 1 {
                            // Hold the read here while compaction runs.
                            reached_tx.send(()).unwrap();
                            go_rx.lock().unwrap().recv().unwrap();
                        }
                        Ok(())
                    },
                )
                .await
                .map(|()| read)
        })
    };
    tokio::task::spawn_blocking(move || reached_rx.recv().unwrap())
        .await
        .unwrap();
    storage.maintain().await.unwrap();
    assert_eq!(storage.block_count(), 1, "compacted");
    assert!(
        block_dirs(dir.path()) > 1,
        "the sources' files stay while a read holds them"
    );
    go_tx.send(()).unwrap();
    let read = reader
        .await
        .unwrap()
        .expect("the read finishes from the replaced blocks");
    assert_eq!(read, 6 * 300);
    storage.maintain().await.unwrap();
    assert_eq!(block_dirs(dir.path()), 1, "the next maintenance deletes them");
}
