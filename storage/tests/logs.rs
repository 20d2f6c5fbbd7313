//! Logs end to end: pushes and reads against `MemLogStore` as the oracle,
//! across restarts, flushes, compaction and retention, driven by a manual clock.

use std::sync::Arc;

use proptest::prelude::*;
use tidewatch_model::logs::{
    LogEntry, LogIngest, LogPush, LogRead, LogSearch, LogSelect, LogStream, MemLogStore, NsRange,
};
use tidewatch_model::{ErrorKind, Labels, ManualClock, MatchOp, Matcher, TenantId};
use tidewatch_storage::{FsyncPolicy, Storage, StorageConfig};

/// A fixed "now": 2026-01-01T00:00:00Z, in milliseconds.
const NOW_MS: i64 = 1_767_225_600_000;
const NOW_NS: i64 = NOW_MS * 1_000_000;
const MINUTE_NS: i64 = 60_000_000_000;
const HOUR_NS: i64 = 60 * MINUTE_NS;

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        fsync: FsyncPolicy::Never,
        ..StorageConfig::new(dir)
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn push_of(stream: &Labels, entries: &[(i64, &str)]) -> LogPush {
    LogPush {
        streams: vec![LogStream {
            labels: stream.clone(),
            entries: entries.iter().map(|&(t, l)| LogEntry::new(t, l)).collect(),
        }],
    }
}

async fn read<R: LogRead>(store: &R, tenant: &TenantId, select: &LogSelect) -> Vec<LogStream> {
    let mut out = Vec::new();
    store
        .visit_logs(tenant, select, |stream| {
            out.push(stream);
            Ok(())
        })
        .await
        .unwrap();
    out
}

fn everything() -> LogSelect {
    LogSelect::new(
        vec![Matcher::new(MatchOp::RegexMatch, "app", ".+").unwrap()],
        NsRange::ALL,
    )
}

async fn open(dir: &std::path::Path, clock: &ManualClock) -> Arc<Storage> {
    Storage::open(config(dir), Arc::new(clock.clone())).await.unwrap()
}

#[tokio::test]
async fn identical_entries_are_stored_once_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let storage = open(dir.path(), &clock).await;
    let tenant = TenantId::default_tenant();
    let api = labels(&[("app", "api")]);
    let first = storage
        .push(
            &tenant,
            push_of(&api, &[(NOW_NS + 20, "b"), (NOW_NS + 10, "a"), (NOW_NS + 10, "a")]),
        )
        .await
        .unwrap();
    assert_eq!(first.entries, 2, "the repeat inside one push is stored once");
    let again = storage
        .push(&tenant, push_of(&api, &[(NOW_NS + 10, "a"), (NOW_NS + 10, "a2")]))
        .await
        .unwrap();
    assert_eq!(again.entries, 1);
    let got = read(&*storage, &tenant, &everything()).await;
    let lines: Vec<(i64, &str)> = got[0]
        .entries
        .iter()
        .map(|e| (e.timestamp - NOW_NS, e.line.as_str()))
        .collect();
    assert_eq!(lines, vec![(10, "a"), (10, "a2"), (20, "b")]);
    // One stream named twice in a push, each time in order, sharing an entry
    // (and a new stream named twice the same way): stored once each.
    let web = labels(&[("app", "web")]);
    let mut twice = push_of(&api, &[(NOW_NS + 30, "c"), (NOW_NS + 40, "d")]);
    twice
        .streams
        .extend(push_of(&api, &[(NOW_NS + 35, "e"), (NOW_NS + 40, "d")]).streams);
    twice.streams.extend(push_of(&web, &[(NOW_NS + 1, "w")]).streams);
    twice.streams.extend(push_of(&web, &[(NOW_NS + 1, "w")]).streams);
    let summary = storage.push(&tenant, twice).await.unwrap();
    assert_eq!(summary.entries, 4, "c, d, e and w");
    let got = read(&*storage, &tenant, &everything()).await;
    let counts: Vec<usize> = got.iter().map(|s| s.entries.len()).collect();
    assert_eq!(counts, vec![6, 1], "api: a, a2, b, c, e, d; web: w");
}

#[tokio::test]
async fn restart_replays_the_log_wal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::parse("team-a").unwrap();
    let api = labels(&[("app", "api"), ("pod", "p1")]);
    let mut entry = LogEntry::new(NOW_NS, "GET /health 200");
    entry.structured_metadata = labels(&[("trace_id", "abc")]);
    {
        let storage = open(dir.path(), &clock).await;
        storage
            .push(
                &tenant,
                LogPush {
                    streams: vec![LogStream {
                        labels: api.clone(),
                        entries: vec![entry.clone(), LogEntry::new(NOW_NS - 5, "starting")],
                    }],
                },
            )
            .await
            .unwrap();
    }
    let storage = open(dir.path(), &clock).await;
    let got = read(&*storage, &tenant, &everything()).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels, api);
    assert_eq!(got[0].entries, vec![LogEntry::new(NOW_NS - 5, "starting"), entry]);
    // Metrics and logs of one data directory coexist: the metrics side opened too.
    assert_eq!(storage.log_head_figures().entries, 2);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let storage = open(dir.path(), &clock).await;
    let a = TenantId::parse("a").unwrap();
    let b = TenantId::parse("b").unwrap();
    let api = labels(&[("app", "api")]);
    storage.push(&a, push_of(&api, &[(NOW_NS, "only a")])).await.unwrap();
    assert!(read(&*storage, &b, &everything()).await.is_empty());
    assert!(
        storage
            .log_series(&b, &everything().matchers, NsRange::ALL)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(read(&*storage, &a, &everything()).await.len(), 1);
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_as_retryable_naming_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let storage = Storage::open(
        StorageConfig {
            max_log_streams_per_tenant: 2,
            ..config(dir.path())
        },
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let tenant = TenantId::default_tenant();
    for pod in ["p1", "p2"] {
        storage
            .push(
                &tenant,
                push_of(&labels(&[("app", "api"), ("pod", pod)]), &[(NOW_NS, "x")]),
            )
            .await
            .unwrap();
    }
    let error = storage
        .push(
            &tenant,
            push_of(&labels(&[("app", "api"), ("pod", "p3")]), &[(NOW_NS, "x")]),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Retryable);
    let message = error.to_string();
    assert!(message.contains("p3") && message.contains("limit of 2"), "{message}");
    // A stream without entries creates nothing, so it is no new stream.
    storage
        .push(&tenant, push_of(&labels(&[("app", "api"), ("pod", "p4")]), &[]))
        .await
        .unwrap();
    // Known streams still take entries.
    storage
        .push(
            &tenant,
            push_of(&labels(&[("app", "api"), ("pod", "p1")]), &[(NOW_NS + 1, "y")]),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_streams_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let storage = open(dir.path(), &clock).await;
    let tenant = TenantId::default_tenant();
    let mut push = push_of(&labels(&[("app", "api")]), &[(NOW_NS, "fine")]);
    push.streams.push(LogStream {
        labels: labels(&[("bad-name", "x")]),
        entries: vec![LogEntry::new(NOW_NS, "x")],
    });
    let error = storage.push(&tenant, push).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadData);
    assert!(
        read(&*storage, &tenant, &everything()).await.is_empty(),
        "nothing of a refused push is stored"
    );
    let empty = push_of(&Labels::default(), &[(NOW_NS, "x")]);
    assert_eq!(
        storage.push(&tenant, empty).await.unwrap_err().kind(),
        ErrorKind::BadData
    );
}

// ---- property test against the oracle ----

const APPS: [&str; 3] = ["api", "db", "web"];
const PODS: [&str; 3] = ["p0", "p1", "p2"];
const WORDS: [&str; 12] = [
    "GET",
    "POST",
    "/api/v1/users",
    "200",
    "500",
    "error",
    "errors",
    "timeout",
    "level=info",
    "10.0.0.12",
    "msg=\"done\"",
    "xerror",
];

/// What a test does, step by step.
#[derive(Debug, Clone)]
enum Step {
    /// (stream index, entries as (offset in minutes-ish ns, line))
    Push(Vec<(usize, Vec<(i64, String)>)>),
    Restart,
    /// `POST /api/v1/admin/flush`: the whole head into blocks.
    FlushAll,
    /// The maintenance loop after the clock moved on by this many minutes:
    /// flushes closed windows, compacts, applies retention.
    Maintain(i64),
}

fn stream_labels(index: usize) -> Labels {
    labels(&[("app", APPS[index % 3]), ("pod", PODS[(index / 3) % 3])])
}

fn line_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(WORDS.to_vec()), 1..5).prop_map(|words| words.join(" "))
}

fn entry_strategy() -> impl Strategy<Value = (i64, String)> {
    // A few hours of timestamps so that windows, flushes and blocks all matter,
    // on a coarse grid so that identical (timestamp, line) pairs do happen.
    (
        (0i64..240).prop_map(|m| NOW_NS - 3 * HOUR_NS + m * MINUTE_NS),
        line_strategy(),
    )
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec((0usize..9, proptest::collection::vec(entry_strategy(), 1..12)), 1..4)
            .prop_map(Step::Push),
        1 => Just(Step::Restart),
        2 => Just(Step::FlushAll),
        2 => (0i64..90).prop_map(Step::Maintain),
    ]
}

fn matcher_strategy() -> impl Strategy<Value = Vec<Matcher>> {
    prop_oneof![
        Just(vec![Matcher::new(MatchOp::RegexMatch, "app", ".+").unwrap()]),
        proptest::sample::select(APPS.to_vec()).prop_map(|app| vec![Matcher::equal("app", app)]),
        proptest::sample::select(PODS.to_vec()).prop_map(|pod| vec![
            Matcher::new(MatchOp::NotEqual, "pod", pod).unwrap(),
            Matcher::new(MatchOp::RegexMatch, "app", "a.*|w.*").unwrap()
        ]),
        Just(vec![Matcher::equal("app", "nope")]),
    ]
}

fn select_strategy() -> impl Strategy<Value = LogSelect> {
    (
        matcher_strategy(),
        prop_oneof![
            Just(NsRange::ALL),
            (0i64..260, 0i64..260).prop_map(|(a, b)| NsRange::new(
                NOW_NS - 3 * HOUR_NS + a.min(b) * MINUTE_NS,
                NOW_NS - 3 * HOUR_NS + a.max(b) * MINUTE_NS
            )),
        ],
        proptest::collection::vec(
            proptest::sample::select(vec!["error", "GET", "0.0.1", "rror", "s/v", "nothing"]),
            0..2,
        ),
    )
        .prop_map(|(matchers, range, needles)| LogSelect {
            matchers,
            range,
            line_contains: needles.into_iter().map(str::to_string).collect(),
        })
}

/// Structured metadata as a function of the line, so the oracle (which
/// keeps the first one pushed) and storage agree whatever the order.
fn metadata_for(line: &str) -> Labels {
    if line.contains("error") {
        labels(&[("trace_id", &format!("t{}", line.len()))])
    } else {
        Labels::default()
    }
}

fn to_push(streams: &[(usize, Vec<(i64, String)>)]) -> LogPush {
    LogPush {
        streams: streams
            .iter()
            .map(|(index, entries)| LogStream {
                labels: stream_labels(*index),
                entries: entries
                    .iter()
                    .map(|(t, line)| LogEntry {
                        timestamp: *t,
                        line: line.clone(),
                        structured_metadata: metadata_for(line),
                    })
                    .collect(),
            })
            .collect(),
    }
}

async fn assert_same(storage: &Storage, oracle: &MemLogStore, tenant: &TenantId, selects: &[LogSelect]) {
    for select in selects.iter().chain([&everything()]) {
        let got = read(storage, tenant, select).await;
        let expected = read(oracle, tenant, select).await;
        assert_eq!(got, expected, "select {select:?}");
        let series = storage
            .log_series(tenant, &select.matchers, select.range)
            .await
            .unwrap();
        let expected_series = oracle.log_series(tenant, &select.matchers, select.range).await.unwrap();
        assert_eq!(series, expected_series, "series {select:?}");
    }
}

async fn run_steps(steps: Vec<Step>, selects: Vec<LogSelect>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::default_tenant();
    let oracle = MemLogStore::new();
    let mut storage = open(dir.path(), &clock).await;
    for step in steps {
        match step {
            Step::Push(streams) => {
                let push = to_push(&streams);
                storage.push(&tenant, push.clone()).await.unwrap();
                oracle.push(&tenant, push).await.unwrap();
            }
            Step::Restart => {
                drop(storage);
                storage = open(dir.path(), &clock).await;
            }
            Step::FlushAll => storage.flush_all().await.unwrap(),
            Step::Maintain(minutes) => {
                clock.advance(minutes * 60_000);
                storage.maintain().await.unwrap();
            }
        }
    }
    assert_same(&storage, &oracle, &tenant, &selects).await;
    drop(storage);
    let storage = open(dir.path(), &clock).await;
    assert_same(&storage, &oracle, &tenant, &selects).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn reads_equal_the_oracle(
        steps in proptest::collection::vec(step_strategy(), 1..12),
        selects in proptest::collection::vec(select_strategy(), 1..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_steps(steps, selects));
    }
}

// ---- blocks: flush, compaction, retention ----

fn lines_of(streams: &[LogStream]) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for stream in streams {
        for entry in &stream.entries {
            out.push((stream.labels.to_string(), entry.timestamp, entry.line.clone()));
        }
    }
    out
}

#[tokio::test]
async fn flush_restart_and_compaction_keep_every_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::default_tenant();
    let oracle = MemLogStore::new();
    let api = labels(&[("app", "api")]);
    let web = labels(&[("app", "web")]);
    let storage = open(dir.path(), &clock).await;
    // Three rounds over the same two windows, each flushed: the same entries
    // land in several blocks, which compaction must merge into one copy.
    for round in 0..3 {
        let mut entries: Vec<(i64, String)> = Vec::new();
        for i in 0..50 {
            entries.push((
                NOW_NS - 2 * HOUR_NS + i * 2 * MINUTE_NS,
                format!("GET /item/{} {}", i % 7, round % 2),
            ));
        }
        for stream in [&api, &web] {
            let push = LogPush {
                streams: vec![LogStream {
                    labels: stream.clone(),
                    entries: entries.iter().map(|(t, l)| LogEntry::new(*t, l.clone())).collect(),
                }],
            };
            storage.push(&tenant, push.clone()).await.unwrap();
            oracle.push(&tenant, push).await.unwrap();
        }
        storage.flush_all().await.unwrap();
    }
    assert_eq!(storage.log_head_figures().entries, 0, "flush_all empties the head");
    assert!(storage.log_block_count() >= 4, "{} blocks", storage.log_block_count());
    let expected = read(&oracle, &tenant, &everything()).await;
    assert_eq!(read(&*storage, &tenant, &everything()).await, expected);
    drop(storage);
    let storage = open(dir.path(), &clock).await;
    assert_eq!(read(&*storage, &tenant, &everything()).await, expected, "after restart");
    clock.advance(2 * 3_600_000);
    storage.maintain().await.unwrap();
    assert_eq!(
        storage.log_block_count(),
        1,
        "small blocks of a day merge once their windows close"
    );
    let on_disk = std::fs::read_dir(dir.path().join("logs").join(tenant.as_str()).join("blocks"))
        .unwrap()
        .count();
    assert_eq!(on_disk, 1, "replaced blocks are removed from disk");
    let got = read(&*storage, &tenant, &everything()).await;
    assert_eq!(lines_of(&got), lines_of(&expected));
    drop(storage);
    let storage = open(dir.path(), &clock).await;
    assert_eq!(
        read(&*storage, &tenant, &everything()).await,
        expected,
        "compacted, after restart"
    );
}

#[tokio::test]
async fn the_wal_is_truncated_after_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::default_tenant();
    let api = labels(&[("app", "api")]);
    let storage = open(dir.path(), &clock).await;
    let big: Vec<(i64, String)> = (0..2000)
        .map(|i| (NOW_NS - HOUR_NS + i, format!("line {i} {}", "x".repeat(200))))
        .collect();
    let push = LogPush {
        streams: vec![LogStream {
            labels: api.clone(),
            entries: big.iter().map(|(t, l)| LogEntry::new(*t, l.clone())).collect(),
        }],
    };
    storage.push(&tenant, push).await.unwrap();
    let wal_dir = dir.path().join("logs").join(tenant.as_str()).join("wal");
    let before = dir_size(&wal_dir);
    storage.flush_all().await.unwrap();
    let after = dir_size(&wal_dir);
    assert!(after < before / 10, "WAL {before} -> {after} bytes");
    // A late entry for the flushed window lands in the head and is read with the block.
    storage
        .push(&tenant, push_of(&api, &[(NOW_NS - HOUR_NS, "late")]))
        .await
        .unwrap();
    drop(storage);
    let storage = open(dir.path(), &clock).await;
    let got = read(&*storage, &tenant, &everything()).await;
    assert_eq!(got[0].entries.len(), 2001);
}

/// A flush of closed windows keeps the open window's entries in the WAL;
/// a later flush of everything must drop them too.
#[tokio::test]
async fn the_wal_is_truncated_after_a_closed_window_flush_then_a_full_flush() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::default_tenant();
    let api = labels(&[("app", "api")]);
    let storage = open(dir.path(), &clock).await;
    let lines: Vec<(i64, String)> = (0..3000)
        .map(|i| {
            (
                NOW_NS - 3 * HOUR_NS + i * (HOUR_NS / 1000),
                format!("line {i} {}", "x".repeat(200)),
            )
        })
        .collect();
    let refs: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
    storage.push(&tenant, push_of(&api, &refs)).await.unwrap();
    let wal_dir = dir.path().join("logs").join(tenant.as_str()).join("wal");
    let before = dir_size(&wal_dir);
    storage.maintain().await.unwrap();
    assert!(
        storage.log_head_figures().entries > 0,
        "the open window stays in the head"
    );
    storage.flush_all().await.unwrap();
    assert_eq!(storage.log_head_figures().entries, 0);
    let after = dir_size(&wal_dir);
    assert!(after < before / 10, "WAL {before} -> {after} bytes");
    drop(storage);
    let storage = open(dir.path(), &clock).await;
    let got = read(&*storage, &tenant, &everything()).await;
    assert_eq!(got[0].entries.len(), 3000, "every entry once after a restart");
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[tokio::test]
async fn retention_drops_old_blocks_and_streams_by_selector() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::default_tenant();
    let config = StorageConfig {
        retention_ms: 7 * 24 * 3_600_000,
        log_retention_streams: vec![
            tidewatch_storage::StreamRetention {
                matchers: vec![Matcher::equal("app", "debug")],
                period_ms: 24 * 3_600_000,
                priority: 1,
            },
            tidewatch_storage::StreamRetention {
                matchers: vec![Matcher::equal("app", "audit")],
                period_ms: 30 * 24 * 3_600_000,
                priority: 1,
            },
        ],
        ..config(dir.path())
    };
    let storage = Storage::open(config, Arc::new(clock.clone())).await.unwrap();
    let day = 24 * HOUR_NS;
    for app in ["api", "debug", "audit"] {
        storage
            .push(
                &tenant,
                push_of(
                    &labels(&[("app", app)]),
                    &[
                        (NOW_NS - 3 * day, "three days ago"),
                        (NOW_NS - 8 * day, "eight days ago"),
                    ],
                ),
            )
            .await
            .unwrap();
    }
    storage.maintain().await.unwrap();
    storage.flush_all().await.unwrap();
    storage.maintain().await.unwrap();
    let got = lines_of(&read(&*storage, &tenant, &everything()).await);
    let apps = |line: &str| -> Vec<String> {
        got.iter()
            .filter(|(_, _, l)| l == line)
            .map(|(s, _, _)| s.clone())
            .collect()
    };
    assert_eq!(
        apps("eight days ago"),
        ["{app=\"audit\"}"],
        "only audit keeps 8-day-old lines"
    );
    assert_eq!(
        apps("three days ago"),
        ["{app=\"api\"}", "{app=\"audit\"}"],
        "debug keeps one day"
    );
    // Past every period, the blocks go.
    clock.advance(40 * 24 * 3_600_000);
    storage.maintain().await.unwrap();
    assert!(read(&*storage, &tenant, &everything()).await.is_empty());
    assert_eq!(storage.log_block_count(), 0);
    let blocks_dir = dir.path().join("logs").join(tenant.as_str()).join("blocks");
    assert_eq!(
        std::fs::read_dir(blocks_dir).unwrap().count(),
        0,
        "expired blocks are removed from disk"
    );
}

// ---- full-text index: line filters answered through the index are exact ----

const LEVELS: [&str; 4] = ["info", "warn", "error", "debug"];
const RESOURCES: [&str; 4] = ["users", "orders", "pods", "nodes"];
const MESSAGES: [&str; 6] = [
    "connection refused",
    "xerror while dialing",
    "errors=3 retried",
    "Started container nginx",
    "failed to list *v1.Pod: context deadline exceeded",
    "Ünïcode ✓ naïve café",
];

/// A Kubernetes-like log line from a few random choices.
fn k8s_line(kind: u8, a: usize, b: u32, c: u32) -> String {
    let uuid = format!("{b:08x}-{:04x}-41d4-a716-{c:012x}", b % 65536);
    let ip = format!("10.{}.{}.{}", b % 4, c % 256, a % 10);
    match kind % 6 {
        0 => format!(
            "level={} msg=\"{}\" pod=api-{a} ip={ip}",
            LEVELS[a % 4],
            MESSAGES[a % 6]
        ),
        1 => format!(
            "GET /api/v1/{}/{uuid} {} {}ms",
            RESOURCES[a % 4],
            [200, 404, 500][a % 3],
            c % 1000
        ),
        2 => format!(
            "E1128 12:00:{:02}.{c:06} 1 reflector.go:{b}] {}",
            a % 60,
            MESSAGES[(a + 1) % 6]
        ),
        3 => format!(
            "{{\"level\":\"{}\",\"msg\":\"{}\",\"trace_id\":\"{uuid}\"}}",
            LEVELS[(a + 2) % 4],
            MESSAGES[(a + 3) % 6]
        ),
        4 => format!("blob {} end", "ab01".repeat(70 + a % 3)),
        _ => format!(
            "{ip} - - \"POST /{}/{} HTTP/1.1\" {}",
            RESOURCES[(a + 1) % 4],
            c,
            [201, 503][a % 2]
        ),
    }
}

/// A needle: a substring of a corpus line (by character positions), or a
/// string absent from it, or a case variant.
#[derive(Debug, Clone)]
enum NeedleSpec {
    Substring { line: usize, start: usize, len: usize },
    Fixed(&'static str),
}

fn needle_strategy() -> impl Strategy<Value = NeedleSpec> {
    prop_oneof![
        4 => (any::<usize>(), any::<usize>(), 1usize..24).prop_map(|(line, start, len)| NeedleSpec::Substring { line, start, len }),
        1 => proptest::sample::select(vec![
            "error", "rror", "Error", "zzqx", "10.0.", "/api/v1/", "-41d4-", "deadline exceeded", "café", " - ", "✓",
            "ab01ab01ab01", "\"level\":\"error\"", "500 ", "ms",
        ]).prop_map(NeedleSpec::Fixed),
    ]
}

fn resolve_needle(spec: &NeedleSpec, lines: &[String]) -> String {
    match spec {
        NeedleSpec::Fixed(text) => (*text).to_string(),
        NeedleSpec::Substring { line, start, len } => {
            let chars: Vec<char> = lines[line % lines.len()].chars().collect();
            let from = start % chars.len();
            chars[from..(from + len).min(chars.len())].iter().collect()
        }
    }
}

async fn run_index_case(
    corpus: Vec<(usize, i64, u8, usize, u32, u32)>,
    needles: Vec<Vec<NeedleSpec>>,
    flush_first: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::default_tenant();
    let oracle = MemLogStore::new();
    let storage = open(dir.path(), &clock).await;
    let lines: Vec<String> = corpus
        .iter()
        .map(|&(_, _, kind, a, b, c)| k8s_line(kind, a, b, c))
        .collect();
    // Some entries flushed into blocks (with their index), the rest in the head.
    let split = flush_first.min(corpus.len());
    for (part, range) in [(0, 0..split), (1, split..corpus.len())] {
        let mut push = LogPush::default();
        for i in range {
            let (stream, minute, ..) = corpus[i];
            push.streams.push(LogStream {
                labels: stream_labels(stream),
                entries: vec![LogEntry::new(
                    NOW_NS - 3 * HOUR_NS + minute * MINUTE_NS,
                    lines[i].clone(),
                )],
            });
        }
        storage.push(&tenant, push.clone()).await.unwrap();
        oracle.push(&tenant, push).await.unwrap();
        if part == 0 {
            storage.flush_all().await.unwrap();
        }
    }
    for specs in needles {
        let mut select = everything();
        select.line_contains = specs.iter().map(|spec| resolve_needle(spec, &lines)).collect();
        let got = read(&*storage, &tenant, &select).await;
        let expected = read(&oracle, &tenant, &select).await;
        assert_eq!(got, expected, "needles {:?}", select.line_contains);
        let mut narrow = select.clone();
        narrow.matchers = vec![Matcher::equal("app", "api")];
        narrow.range = NsRange::new(NOW_NS - 2 * HOUR_NS, NOW_NS - HOUR_NS);
        assert_eq!(
            read(&*storage, &tenant, &narrow).await,
            read(&oracle, &tenant, &narrow).await
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn line_filters_through_the_index_equal_a_substring_scan(
        corpus in proptest::collection::vec((0usize..9, 0i64..240, any::<u8>(), 0usize..1000, any::<u32>(), any::<u32>()), 1..120),
        needles in proptest::collection::vec(proptest::collection::vec(needle_strategy(), 1..3), 1..12),
        flush_first in 0usize..120,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run_index_case(corpus, needles, flush_first));
    }
}

// ---- full-text search ----

#[tokio::test]
async fn search_finds_terms_phrases_and_labels_newest_first_with_a_cursor() {
    use tidewatch_storage::LogSearchRequest;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::default_tenant();
    let storage = open(dir.path(), &clock).await;
    let api = labels(&[("app", "api")]);
    let db = labels(&[("app", "db")]);
    let mut api_entries = Vec::new();
    for i in 0..30i64 {
        api_entries.push((
            NOW_NS - 2 * HOUR_NS + i * MINUTE_NS,
            format!("GET /api/v1/users/{i} 500 client=10.0.0.{i}"),
        ));
    }
    // Ties: three hits at one timestamp, across two streams.
    api_entries.push((NOW_NS - 30 * MINUTE_NS, "tie a 500".to_string()));
    api_entries.push((NOW_NS - 30 * MINUTE_NS, "tie b 500".to_string()));
    let refs: Vec<(i64, &str)> = api_entries.iter().map(|(t, l)| (*t, l.as_str())).collect();
    storage.push(&tenant, push_of(&api, &refs)).await.unwrap();
    storage.flush_all().await.unwrap();
    // Newer entries stay in the head; search covers them too.
    storage
        .push(
            &tenant,
            push_of(
                &db,
                &[(NOW_NS - 30 * MINUTE_NS, "tie c 500"), (NOW_NS, "slow query 500 ms")],
            ),
        )
        .await
        .unwrap();
    let search = |query: &str, limit: usize, cursor: Option<String>| LogSearchRequest {
        query: query.to_string(),
        range: NsRange::ALL,
        limit,
        cursor,
    };
    let page = storage
        .search_logs(&tenant, &search("\"10.0.0.7\"", 10, None))
        .await
        .unwrap();
    assert_eq!(page.hits.len(), 1);
    assert_eq!(page.hits[0].line, "GET /api/v1/users/7 500 client=10.0.0.7");
    assert_eq!(page.hits[0].labels, api);
    let page = storage
        .search_logs(&tenant, &search("500 AND labels.app:db", 10, None))
        .await
        .unwrap();
    let lines: Vec<&str> = page.hits.iter().map(|h| h.line.as_str()).collect();
    assert_eq!(lines, ["slow query 500 ms", "tie c 500"], "newest first");
    // Label predicates are answered from the streams (blocks and head alike).
    for query in [
        "500 AND labels.app:d*",
        "500 AND labels.app:/d./",
        "500 -labels.app:api",
    ] {
        let page = storage.search_logs(&tenant, &search(query, 10, None)).await.unwrap();
        let found: Vec<&str> = page.hits.iter().map(|h| h.line.as_str()).collect();
        assert_eq!(found, lines, "{query}");
    }
    // Page through every "500" hit, 2 at a time: each once, newest first.
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut totals = Vec::new();
    loop {
        let page = storage.search_logs(&tenant, &search("500", 2, cursor)).await.unwrap();
        totals.push(page.total);
        seen.extend(page.hits.iter().map(|h| (h.timestamp, h.line.clone())));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(totals.iter().all(|&t| t == 34), "{totals:?}");
    assert_eq!(seen.len(), 34);
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first across pages");
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 34, "no hit twice");
    let error = storage
        .search_logs(&tenant, &search("500 AND (", 10, None))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::BadData);
    let other = TenantId::parse("other").unwrap();
    assert!(
        storage
            .search_logs(&other, &search("500", 10, None))
            .await
            .unwrap()
            .hits
            .is_empty()
    );
}

/// Blocks of an older format keep an index this build does not open (id
/// words as Tantivy terms, say): they are scanned, and searches and
/// line filters over them still find every hit.
#[tokio::test]
async fn blocks_with_an_index_of_an_older_format_are_scanned() {
    use tidewatch_storage::LogSearchRequest;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(NOW_MS);
    let tenant = TenantId::default_tenant();
    let api = labels(&[("app", "api")]);
    let lines: Vec<(i64, String)> = (0..100i64)
        .map(|i| {
            (
                NOW_NS - 2 * HOUR_NS + i * MINUTE_NS / 2,
                format!("GET /item/{i} status={}", 200 + (i % 3) * 100),
            )
        })
        .collect();
    let refs: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
    {
        let storage = open(dir.path(), &clock).await;
        storage.push(&tenant, push_of(&api, &refs)).await.unwrap();
        storage.flush_all().await.unwrap();
    }
    let blocks = dir.path().join("logs").join(tenant.as_str()).join("blocks");
    let mut rewritten = 0;
    for block in std::fs::read_dir(&blocks).unwrap().flatten() {
        let meta_path = block.path().join("meta.json");
        let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        meta["format_version"] = serde_json::json!(4);
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        rewritten += 1;
    }
    assert!(rewritten > 0);
    let storage = open(dir.path(), &clock).await;
    let search = |query: &str| LogSearchRequest {
        query: query.to_string(),
        range: NsRange::ALL,
        limit: 10,
        cursor: None,
    };
    let page = storage.search_logs(&tenant, &search("\"status=300\"")).await.unwrap();
    assert_eq!(page.total, 33);
    assert_eq!(page.hits.len(), 10);
    assert!(page.hits.iter().all(|h| h.line.ends_with("status=300")));
    let page = storage.search_logs(&tenant, &search("\"item 42\"")).await.unwrap();
    assert_eq!(
        page.hits.iter().map(|h| h.line.as_str()).collect::<Vec<_>>(),
        ["GET /item/42 status=200"]
    );
    let filtered = read(
        &*storage,
        &tenant,
        &LogSelect {
            line_contains: vec!["/item/7 ".to_string()],
            ..everything()
        },
    )
    .await;
    let found: Vec<&str> = filtered
        .iter()
        .flat_map(|s| s.entries.iter().map(|e| e.line.as_str()))
        .collect();
    assert_eq!(found, ["GET /item/7 status=300"]);
}
