//! Blocks written by earlier builds stay readable, and compaction rewrites
//! them in the current format with every sample intact.
//!
//! The fixture `fixtures/format7-blocks/` holds two format-7 blocks (the last
//! layout before time slices: one run of rows per series, absolute
//! timestamps, keyframes every 128 samples) written by that build from
//! `tidewatch bench remote-write --series 6 --scrapes 300`, and in
//! `expected.json` every sample that build served for them through
//! `/api/v1/query` (`{__name__=~".+"}[1d]`), values as Prometheus formats them.

use std::path::Path;
use std::sync::Arc;

use tidewatch_model::seam::{SeriesRead, SeriesSamples, TimeRange};
use tidewatch_model::{Labels, ManualClock, MatchOp, Matcher, TenantId};
use tidewatch_storage::block::{BLOCK_FORMAT_VERSION, BlockMeta, META_FILE};
use tidewatch_storage::{FsyncPolicy, Storage, StorageConfig};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/format7-blocks");
const DAY: i64 = 24 * 3_600_000;

type Expected = Vec<(Labels, Vec<(i64, f64)>)>;

fn expected() -> Expected {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("expected.json")).unwrap();
    let series: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    series
        .iter()
        .map(|s| {
            let labels = Labels::from_pairs(
                s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_string())),
            );
            let samples = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| {
                    let value: f64 = pair[1].as_str().unwrap().parse().unwrap();
                    (pair[0].as_i64().unwrap(), value)
                })
                .collect();
            (labels, samples)
        })
        .collect()
}

/// Copies the fixture's block directories into a data directory's tenant.
fn data_dir_with_fixture_blocks() -> (tempfile::TempDir, Vec<BlockMeta>) {
    let dir = tempfile::tempdir().unwrap();
    let tenant_dir = dir.path().join("blocks").join(TenantId::default_tenant().as_str());
    let mut metas = Vec::new();
    for entry in std::fs::read_dir(FIXTURE).unwrap() {
        let block = entry.unwrap().path();
        if !block.is_dir() {
            continue;
        }
        let target = tenant_dir.join(block.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for file in std::fs::read_dir(&block).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, target.join(file.file_name().unwrap())).unwrap();
        }
        metas.push(serde_json::from_slice(&std::fs::read(block.join(META_FILE)).unwrap()).unwrap());
    }
    (dir, metas)
}

/// Every series' samples in `range`, read through the storage engine, must
/// equal the expected ones bit for bit.
async fn assert_reads(storage: &Storage, expected: &Expected, range: TimeRange) {
    let every = Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap();
    let got: Vec<SeriesSamples> = storage
        .select(&TenantId::default_tenant(), &[every], range)
        .await
        .unwrap();
    let wanted: Vec<(&Labels, Vec<(i64, f64)>)> = expected
        .iter()
        .map(|(labels, samples)| {
            let within = samples.iter().copied().filter(|&(t, _)| range.contains(t)).collect();
            (labels, within)
        })
        .filter(|(_, samples): &(_, Vec<_>)| !samples.is_empty())
        .collect();
    assert_eq!(got.len(), wanted.len(), "series in {range:?}");
    for (series, (labels, samples)) in got.iter().zip(&wanted) {
        assert_eq!(&series.labels, *labels);
        let got_samples: Vec<(i64, u64)> = series
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value.to_bits()))
            .collect();
        let wanted_samples: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got_samples, wanted_samples, "{labels} in {range:?}");
    }
}

/// Everything, and short ranges at the start, across the head-window
/// boundary between the two blocks, across keyframes, and at the end.
fn ranges(metas: &[BlockMeta]) -> Vec<TimeRange> {
    let first = metas.iter().map(|m| m.min_time).min().unwrap();
    let last = metas.iter().map(|m| m.max_time).max().unwrap();
    let boundary = metas.iter().map(|m| m.max_time).min().unwrap();
    let mut ranges = vec![TimeRange::ALL];
    for at in [first, first + 128 * 15_000, boundary, last - 300_000, first + 3_600_000] {
        ranges.push(TimeRange::new(at - 300_000, at + 300_000));
    }
    ranges
}

#[tokio::test]
async fn format_7_blocks_read_back_and_compact_into_the_current_format() {
    let expected = expected();
    assert_eq!(expected.iter().map(|(_, s)| s.len()).sum::<usize>(), 1800);
    let (dir, metas) = data_dir_with_fixture_blocks();
    assert_eq!(metas.len(), 2);
    assert!(metas.iter().all(|m| m.version == 7));
    let now = metas.iter().map(|m| m.max_time).max().unwrap() + 2 * DAY;
    let config = StorageConfig {
        fsync: FsyncPolicy::Never,
        ..StorageConfig::new(dir.path())
    };
    let storage = Storage::open(config, Arc::new(ManualClock::new(now))).await.unwrap();
    assert_eq!(storage.block_count(), 2);
    for range in ranges(&metas) {
        assert_reads(&storage, &expected, range).await;
    }

    // Both lie in one finished 6-hour window: compaction merges them into
    // one block of the current format, sliced, with the same samples.
    storage.maintain().await.unwrap();
    assert_eq!(storage.block_count(), 1, "the fixture's window was not compacted");
    let tenant_dir = dir.path().join("blocks").join(TenantId::default_tenant().as_str());
    let merged: Vec<BlockMeta> = std::fs::read_dir(&tenant_dir)
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.unwrap().path().join(META_FILE)).ok())
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
        .collect();
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].version, BLOCK_FORMAT_VERSION);
    assert!(merged[0].slice_ms.is_some());
    for range in ranges(&metas) {
        assert_reads(&storage, &expected, range).await;
    }
}
