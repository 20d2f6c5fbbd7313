//! Drain, the log clustering algorithm behind Loki's patterns (He et al.,
//! "Drain: An Online Log Parsing Approach with Fixed Depth Tree", ICWS
//! 2017), with the settings and rules of Loki's pattern ingester
//! (`pkg/pattern/drain/`).
//!
//! A line's tokens walk a prefix tree: first by token count, then by its
//! leading tokens (a token with a digit in it goes down the `<_>` branch,
//! and a node with too many children sends newcomers there too). At the
//! leaf the line joins the most similar cluster — the share of positions
//! whose tokens are equal — when that share reaches the threshold, and the
//! positions where they differ become `<_>`; otherwise it founds a cluster.
//! Each cluster counts its lines per 10 s, in chunks of at most an hour.
//!
//! At most [`DrainConfig::max_clusters`] clusters are kept, the least
//! recently used evicted; a Drain that evicts more than a quarter as many
//! clusters as it sees lines stops learning for ten minutes — of log time
//! here (Loki counts wall-clock time, since it learns as lines arrive).

use std::collections::HashMap;

use super::tokenize::{PARAM, Spacing, Tokenized, Tokenizer};

/// Lines with fewer tokens are not clustered.
const MIN_TOKENS: usize = 4;
/// Lines with more tokens are not clustered.
const MAX_TOKENS: usize = 80;
/// How long a Drain stops learning once it evicts too much, in ns.
const BLOCK_NS: i64 = 10 * 60 * 1_000_000_000;
const NS_PER_MS: i64 = 1_000_000;

/// Loki's `drain.DefaultConfig()` with the pattern ingester's defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DrainConfig {
    /// Tree depth below the token-count level (Loki's `LogClusterDepth` 30, minus 2).
    pub(crate) max_node_depth: usize,
    /// Least similarity for a line to join a cluster.
    pub(crate) similarity_threshold: f64,
    /// Children a tree node may have before newcomers share its `<_>` child.
    pub(crate) max_children: usize,
    /// Clusters kept; 0 for no bound.
    pub(crate) max_clusters: usize,
    /// Evicted clusters per line above which learning stops for a while.
    pub(crate) max_eviction_ratio: f64,
    /// A cluster's counts are cut into chunks spanning at most this long.
    pub(crate) max_chunk_age_ms: i64,
    /// Counts are kept per this many ms (Loki's `TimeResolution`).
    pub(crate) sample_interval_ms: i64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            max_node_depth: 30 - 2,
            similarity_threshold: 0.3,
            max_children: 15,
            max_clusters: 300,
            max_eviction_ratio: 0.25,
            max_chunk_age_ms: 3_600_000,
            sample_interval_ms: 10_000,
        }
    }
}

/// A count of lines in one sample interval (or, after [`for_range`], one step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Start of the interval, ms since the epoch.
    pub(crate) timestamp_ms: i64,
    pub(crate) count: i64,
}

/// Lines that look alike, and how many of them came when.
#[derive(Debug)]
pub(crate) struct Cluster {
    tokens: Vec<String>,
    spacing: Option<Spacing>,
    /// Samples ascending, cut into chunks of at most `max_chunk_age_ms`.
    chunks: Vec<Vec<Sample>>,
    /// When the cluster was last used (a tick of [`Drain::clock`]).
    last_used: u64,
}

impl Cluster {
    /// The cluster's sample chunks.
    pub(crate) fn chunks(&self) -> &[Vec<Sample>] {
        &self.chunks
    }

    /// Counts a line at `timestamp_ms` (Loki's `Chunks.Add`).
    fn count(&mut self, timestamp_ms: i64, config: &DrainConfig) {
        let bucket = timestamp_ms - timestamp_ms % config.sample_interval_ms;
        let fresh = Sample {
            timestamp_ms: bucket,
            count: 1,
        };
        let Some(chunk) = self.chunks.last_mut() else {
            self.chunks.push(vec![fresh]);
            return;
        };
        let (Some(first), Some(last)) = (chunk.first().copied(), chunk.last_mut()) else {
            return;
        };
        if last.timestamp_ms == bucket {
            last.count += 1;
            return;
        }
        if bucket - first.timestamp_ms >= config.max_chunk_age_ms {
            self.chunks.push(vec![fresh]);
            return;
        }
        if timestamp_ms < last.timestamp_ms {
            // Older than what the chunk already holds: Loki drops it.
            return;
        }
        chunk.push(fresh);
    }
}

/// One chunk's samples in `[from, through)` (through included when it is
/// the chunk's last sample, as Loki's `Chunk.ForRange` has it), summed per
/// `step` aligned to the epoch, with zero counts for the steps in between.
/// Raw samples when `step` is the sample interval.
pub(crate) fn for_range(chunk: &[Sample], from: i64, through: i64, step: i64, sample_interval: i64) -> Vec<Sample> {
    let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
        return Vec::new();
    };
    if from >= through || first.timestamp_ms >= through || last.timestamp_ms < from {
        return Vec::new();
    }
    let low = if from > first.timestamp_ms {
        chunk.partition_point(|s| s.timestamp_ms < from)
    } else {
        0
    };
    let high = if through < last.timestamp_ms {
        chunk.partition_point(|s| s.timestamp_ms < through)
    } else {
        chunk.len()
    };
    if low >= high {
        return Vec::new();
    }
    let selected = &chunk[low..high];
    if step == sample_interval {
        return selected.to_vec();
    }
    let mut current = selected[0].timestamp_ms - selected[0].timestamp_ms % step;
    let mut out = vec![Sample {
        timestamp_ms: current,
        count: 0,
    }];
    for sample in selected {
        if sample.timestamp_ms >= current + step {
            let bucket = sample.timestamp_ms - sample.timestamp_ms % step;
            let mut gap = current + step;
            while gap <= bucket {
                out.push(Sample {
                    timestamp_ms: gap,
                    count: 0,
                });
                gap += step;
            }
            current = bucket;
        }
        if let Some(last) = out.last_mut() {
            last.count += sample.count;
        }
    }
    out
}

/// A node of the prefix tree.
#[derive(Debug, Default)]
struct Node {
    /// Few per node (at most `max_children`), so a list beats a map.
    children: Vec<(Box<str>, usize)>,
    clusters: Vec<u32>,
}

impl Node {
    fn child(&self, token: &str) -> Option<usize> {
        self.children.iter().find(|(key, _)| &**key == token).map(|(_, at)| *at)
    }
}

/// Stops learning when clusters are evicted faster than lines come in.
#[derive(Debug)]
struct Limiter {
    added: i64,
    evicted: i64,
    max_ratio: f64,
    blocked_until: Option<i64>,
}

impl Limiter {
    fn allow(&mut self, now: i64) -> bool {
        if let Some(until) = self.blocked_until {
            if now < until {
                return false;
            }
            self.added = 0;
            self.evicted = 0;
            self.blocked_until = None;
        }
        if self.added == 0 {
            self.added = 1;
            return true;
        }
        if self.evicted as f64 / self.added as f64 > self.max_ratio {
            self.blocked_until = Some(now.saturating_add(BLOCK_NS));
            return false;
        }
        self.added += 1;
        true
    }
}

/// One Drain: the clusters of one stream's lines of one level.
#[derive(Debug)]
pub(crate) struct Drain {
    config: DrainConfig,
    tokenizer: Tokenizer,
    /// The tree below the token-count level; index 0 is unused.
    nodes: Vec<Node>,
    /// The first level: token count to node.
    by_length: HashMap<usize, usize>,
    clusters: HashMap<u32, Cluster>,
    last_id: u32,
    /// Ticks on every use of a cluster, for least-recently-used eviction.
    clock: u64,
    limiter: Limiter,
}

impl Drain {
    pub(crate) fn new(config: DrainConfig, tokenizer: Tokenizer) -> Self {
        let limiter = Limiter {
            added: 0,
            evicted: 0,
            max_ratio: config.max_eviction_ratio,
            blocked_until: None,
        };
        Drain {
            config,
            tokenizer,
            nodes: vec![Node::default()],
            by_length: HashMap::new(),
            clusters: HashMap::new(),
            last_id: 0,
            clock: 0,
            limiter,
        }
    }

    /// The clusters and the patterns they stand for (empty patterns left out).
    pub(crate) fn patterns(&self) -> impl Iterator<Item = (String, &Cluster)> {
        self.clusters.values().filter_map(|cluster| {
            let pattern = self.tokenizer.join(&cluster.tokens, cluster.spacing.as_ref());
            (!pattern.is_empty()).then_some((pattern, cluster))
        })
    }

    /// Learns a line logged at `timestamp_ns`; true when it was counted in a cluster.
    pub(crate) fn train(&mut self, line: &str, timestamp_ns: i64) -> bool {
        if !self.limiter.allow(timestamp_ns) {
            return false;
        }
        let Some(Tokenized { tokens, spacing }) = self.tokenizer.tokenize(line) else {
            return false;
        };
        if tokens.len() < MIN_TOKENS || tokens.len() > MAX_TOKENS {
            return false;
        }
        let timestamp_ms = timestamp_ns / NS_PER_MS;
        let tokens: Vec<&str> = tokens.iter().map(|t| t.as_ref()).collect();
        match self.search(&tokens) {
            Some(id) => {
                let tick = self.tick();
                if let Some(cluster) = self.clusters.get_mut(&id) {
                    for (template, token) in cluster.tokens.iter_mut().zip(&tokens) {
                        if template != token {
                            *template = PARAM.to_string();
                        }
                    }
                    cluster.count(timestamp_ms, &self.config);
                    cluster.last_used = tick;
                }
            }
            None => {
                self.last_id += 1;
                let id = self.last_id;
                let mut cluster = Cluster {
                    tokens: tokens.iter().map(|t| t.to_string()).collect(),
                    spacing,
                    chunks: Vec::new(),
                    last_used: 0,
                };
                cluster.count(timestamp_ms, &self.config);
                self.insert(id, cluster);
                self.add_to_tree(id);
            }
        }
        true
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Whether the cluster is still kept, marking it used (Loki's cache
    /// lookups all count as uses, even those that only test a candidate).
    fn touch(&mut self, id: u32) -> bool {
        let tick = self.tick();
        match self.clusters.get_mut(&id) {
            Some(cluster) => {
                cluster.last_used = tick;
                true
            }
            None => false,
        }
    }

    /// Keeps a new cluster, evicting the least recently used beyond the bound.
    fn insert(&mut self, id: u32, mut cluster: Cluster) {
        cluster.last_used = self.tick();
        self.clusters.insert(id, cluster);
        if self.config.max_clusters == 0 || self.clusters.len() <= self.config.max_clusters {
            return;
        }
        let oldest = self
            .clusters
            .iter()
            .min_by_key(|(_, cluster)| cluster.last_used)
            .map(|(id, _)| *id);
        if let Some(oldest) = oldest {
            self.clusters.remove(&oldest);
            self.limiter.evicted += 1;
        }
    }

    /// How many leading tokens choose the leaf for a line of `count` tokens.
    fn path_length(&self, count: usize) -> usize {
        self.config
            .max_node_depth
            .saturating_sub(1)
            .min(count.saturating_sub(1))
    }

    /// The cluster a line's tokens belong to, if any.
    fn search(&mut self, tokens: &[&str]) -> Option<u32> {
        let mut node = *self.by_length.get(&tokens.len())?;
        for token in &tokens[..self.path_length(tokens.len())] {
            let here = &self.nodes[node];
            node = here.child(token).or_else(|| here.child(PARAM))?;
        }
        self.best_match(node, tokens)
    }

    /// The leaf's cluster most similar to `tokens` (more `<_>` breaking
    /// ties), if similar enough.
    fn best_match(&mut self, node: usize, tokens: &[&str]) -> Option<u32> {
        let candidates = self.nodes[node].clusters.clone();
        let mut best: Option<(f64, usize, u32)> = None;
        for id in candidates {
            if !self.touch(id) {
                continue;
            }
            let Some(cluster) = self.clusters.get(&id) else {
                continue;
            };
            let Some((similarity, params)) = similarity(&cluster.tokens, tokens) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((best_similarity, best_params, _)) => {
                    similarity > best_similarity || (similarity == best_similarity && params > best_params)
                }
            };
            if better {
                best = Some((similarity, params, id));
            }
        }
        best.filter(|(similarity, _, _)| *similarity >= self.config.similarity_threshold)
            .map(|(_, _, id)| id)
    }

    /// Files a new cluster in the tree.
    fn add_to_tree(&mut self, id: u32) {
        let Some(tokens) = self.clusters.get(&id).map(|c| c.tokens.clone()) else {
            return;
        };
        let first = match self.by_length.get(&tokens.len()) {
            Some(node) => *node,
            None => {
                let node = self.new_node();
                self.by_length.insert(tokens.len(), node);
                node
            }
        };
        let mut node = first;
        for token in &tokens[..self.path_length(tokens.len())] {
            node = self.step_down(node, token);
        }
        // Clusters evicted since are dropped from the leaf.
        let kept: Vec<u32> = self.nodes[node].clusters.clone();
        let mut alive = Vec::with_capacity(kept.len() + 1);
        for old in kept {
            if self.touch(old) {
                alive.push(old);
            }
        }
        alive.push(id);
        self.nodes[node].clusters = alive;
    }

    /// The child `token` leads to from `node`, made if needed: a token with
    /// a digit goes to `<_>`; other tokens get their own child while the
    /// node has room, keeping the last place for `<_>`.
    fn step_down(&mut self, node: usize, token: &str) -> usize {
        if let Some(child) = self.nodes[node].child(token) {
            return child;
        }
        let param = self.nodes[node].child(PARAM);
        let children = self.nodes[node].children.len();
        let has_digit = token.chars().any(char::is_numeric);
        let key = match (has_digit, param) {
            (true, Some(param)) => return param,
            (true, None) => PARAM,
            (false, Some(param)) => {
                if children >= self.config.max_children {
                    return param;
                }
                token
            }
            (false, None) => {
                if children + 1 < self.config.max_children {
                    token
                } else {
                    // The last place (Loki never gets here with no room left:
                    // the `<_>` child takes it first).
                    PARAM
                }
            }
        };
        let child = self.new_node();
        self.nodes[node].children.push((key.into(), child));
        child
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }
}

/// The share of positions where the template's token equals the line's,
/// and how many template positions are `<_>`; `None` when a template token
/// marked with a leading NUL byte (which must match exactly) differs.
fn similarity(template: &[String], tokens: &[&str]) -> Option<(f64, usize)> {
    debug_assert_eq!(template.len(), tokens.len());
    let mut equal = 0usize;
    let mut params = 0usize;
    for (mine, theirs) in template.iter().zip(tokens) {
        if mine.starts_with('\0') && mine != theirs {
            return None;
        }
        if mine == PARAM {
            params += 1;
        } else if mine == theirs {
            equal += 1;
        }
    }
    Some((equal as f64 / template.len() as f64, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::tokenize::{LogFormat, detect_format};

    fn drain_of(format: LogFormat) -> Drain {
        Drain::new(DrainConfig::default(), Tokenizer::new(format))
    }

    fn train_all(drain: &mut Drain, lines: &[&str]) -> usize {
        lines.iter().filter(|line| drain.train(line, 0)).count()
    }

    fn patterns(drain: &Drain) -> Vec<String> {
        let mut out: Vec<String> = drain.patterns().map(|(p, _)| p).collect();
        out.sort();
        out
    }

    fn total(drain: &Drain) -> i64 {
        drain
            .patterns()
            .flat_map(|(_, c)| c.chunks().iter().flatten().map(|s| s.count))
            .sum()
    }

    #[test]
    fn lines_differing_in_variable_tokens_make_one_pattern() {
        let mut drain = drain_of(LogFormat::Unknown);
        let lines = [
            "server request took 123 ms to complete",
            "server request took 456 ms to complete",
            "server request took 789 ms to complete",
        ];
        assert_eq!(train_all(&mut drain, &lines), 3);
        assert_eq!(patterns(&drain), ["server request took <_> ms to complete"]);
        assert_eq!(total(&drain), 3);
    }

    #[test]
    fn lines_of_another_shape_stay_apart() {
        let mut drain = drain_of(LogFormat::Unknown);
        let lines = [
            "test test test A",
            "test test test B",
            "my name is W",
            "my name is X",
            // Another token count is another branch of the tree.
            "my name is not X",
        ];
        train_all(&mut drain, &lines);
        assert_eq!(
            patterns(&drain),
            ["my name is <_>", "my name is not X", "test test test <_>"]
        );
    }

    #[test]
    fn similarity_threshold_is_inclusive_at_three_tenths() {
        // Tokens with digits share the tree's `<_>` branch, so these lines
        // meet at one leaf and are compared. 3 of 10 tokens equal (0.3): joins.
        let mut drain = drain_of(LogFormat::Unknown);
        train_all(&mut drain, &["a b c 1 2 3 4 5 6 7", "a b c 8 9 0 1 2 3 4"]);
        assert_eq!(patterns(&drain), ["a b c <_> <_> <_> <_> <_> <_> <_>"]);
        // 2 of 10 (0.2): a cluster of its own.
        let mut drain = drain_of(LogFormat::Unknown);
        train_all(&mut drain, &["a b 1 2 3 4 5 6 7 8", "a b 9 0 1 2 3 4 5 6"]);
        assert_eq!(patterns(&drain), ["a b 1 2 3 4 5 6 7 8", "a b 9 0 1 2 3 4 5 6"]);
    }

    #[test]
    fn only_lines_reaching_the_same_leaf_are_compared() {
        // 9 of 10 tokens equal, but the third word differs and words without
        // digits branch the tree: no comparison, two clusters.
        let mut drain = drain_of(LogFormat::Unknown);
        train_all(&mut drain, &["a b c d e f g h i j", "a b x d e f g h i j"]);
        assert_eq!(patterns(&drain), ["a b c d e f g h i j", "a b x d e f g h i j"]);
        // The last token is past the tree's path and only compared.
        let mut drain = drain_of(LogFormat::Unknown);
        train_all(&mut drain, &["a b c d e f g h i j", "a b c d e f g h i x"]);
        assert_eq!(patterns(&drain), ["a b c d e f g h i <_>"]);
    }

    #[test]
    fn similarity_counts_placeholders_as_different() {
        // The template after two lines: `x 1 2 3 <_> <_> <_> y` (5 of 8 kept).
        let mut drain = drain_of(LogFormat::Unknown);
        train_all(&mut drain, &["x 1 2 3 4 5 6 y", "x 1 2 3 9 9 9 y"]);
        assert_eq!(patterns(&drain), ["x 1 2 3 <_> <_> <_> y"]);
        // 1 of 8 equal positions (0.125) is below the threshold even though
        // the placeholders would take anything (that would make 0.5).
        train_all(&mut drain, &["x 7 7 7 7 7 7 z"]);
        assert_eq!(patterns(&drain), ["x 1 2 3 <_> <_> <_> y", "x 7 7 7 7 7 7 z"]);
    }

    #[test]
    fn tokens_with_digits_share_one_branch() {
        // The second token differs in every line but has digits, so all
        // lines reach the same leaf and merge.
        let mut drain = drain_of(LogFormat::Unknown);
        for i in 0..40 {
            assert!(drain.train(&format!("user u{i} logged in from 10.0.0.{i}"), 0));
        }
        assert_eq!(patterns(&drain), ["user <_> logged in from <_>"]);
        assert_eq!(total(&drain), 40);
    }

    #[test]
    fn too_few_or_too_many_tokens_are_not_learned() {
        let mut drain = drain_of(LogFormat::Unknown);
        assert!(!drain.train("only three tokens", 0));
        assert!(!drain.train(&"w ".repeat(81), 0));
        assert!(drain.train(&"w ".repeat(80), 0));
        assert!(drain.train("now four tokens here", 0));
    }

    #[test]
    fn logfmt_lines_cluster_by_key_and_value_tokens() {
        // Lines from Loki's `ingester-logfmt.txt` test data.
        let lines = [
            r#"ts=2024-04-17T09:52:46.363974185Z caller=http.go:194 level=debug traceID=1b48f5156a61ca69 msg="GET /debug/pprof/delta_mutex (200) 1.161082ms""#,
            r#"ts=2024-04-17T09:52:46.3664Z caller=http.go:194 level=debug traceID=3d3b1b6f1d7aa2e1 orgID=1819 msg="POST /ingester.v1.IngesterService/Push (200) 6.2ms""#,
            r#"ts=2024-04-17T09:52:46.41Z caller=http.go:194 level=debug traceID=5e1b0f3ae4c5dd19 orgID=75 msg="POST /ingester.v1.IngesterService/Push (200) 11.79ms""#,
            r#"ts=2024-04-17T09:52:46.42Z caller=head.go:216 level=debug tenant=987678 msg="profile is empty after delta computation" metricName=memory"#,
            r#"ts=2024-04-17T09:52:47.1Z caller=head.go:216 level=debug tenant=987678 msg="profile is empty after delta computation" metricName=memory"#,
        ];
        assert_eq!(detect_format(lines[0]), LogFormat::Logfmt);
        let mut drain = drain_of(LogFormat::Logfmt);
        assert_eq!(train_all(&mut drain, &lines), 5);
        assert_eq!(
            patterns(&drain),
            [
                r#"ts=<_> caller=head.go:216 level=debug tenant=987678 msg="profile is empty after delta computation" metricName=memory"#,
                r#"ts=<_> caller=http.go:194 level=debug traceID=<_> msg="GET /debug/pprof/delta_mutex (200) 1.161082ms""#,
                // A value is one token: the differing messages become one `<_>`.
                "ts=<_> caller=http.go:194 level=debug traceID=<_> orgID=<_> msg=<_>",
            ]
        );
    }

    #[test]
    fn the_same_lines_as_plain_text_cluster_by_punctuation_tokens() {
        // Loki's golden patterns for these lines with the punctuation
        // tokenizer: the whole `msg` text is cut into tokens.
        let lines = [
            r#"ts=2024-04-17T09:52:46.3664Z caller=http.go:194 level=debug traceID=3d3b1b6f1d7aa2e1 orgID=1819 msg="POST /ingester.v1.IngesterService/Push (200) 6.2ms""#,
            r#"ts=2024-04-17T09:52:46.41Z caller=http.go:194 level=debug traceID=5e1b0f3ae4c5dd19 orgID=75 msg="POST /ingester.v1.IngesterService/Push (200) 11.79ms""#,
        ];
        let mut drain = drain_of(LogFormat::Unknown);
        train_all(&mut drain, &lines);
        assert_eq!(
            patterns(&drain),
            [
                r#"ts=<_> caller=http.go:194 level=debug traceID=<_> orgID=<_> msg="POST /ingester.v1.IngesterService/Push (200) <_>""#
            ]
        );
    }

    #[test]
    fn json_lines_cluster_by_their_message() {
        let mut drain = drain_of(LogFormat::Json);
        let lines: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"time":"2024-07-03T10:48:1{i}Z","level":"INFO","msg":"successfully discovered {i} agent IP addresses","pid":{i}}}"#))
            .collect();
        for line in &lines {
            assert!(drain.train(line, 0));
        }
        // Lines without a message are not counted.
        assert!(!drain.train(r#"{"time":"x","level":"INFO"}"#, 0));
        assert_eq!(
            patterns(&drain),
            ["<_>successfully discovered <_> agent IP addresses<_>"]
        );
        assert_eq!(total(&drain), 5);
    }

    #[test]
    fn counts_fall_in_ten_second_buckets_and_one_hour_chunks() {
        let mut drain = drain_of(LogFormat::Unknown);
        let second = 1_000_000_000i64;
        for (t, line) in [
            (0, "job 1 finished in 3s"),
            (9 * second, "job 2 finished in 4s"),
            (10 * second, "job 3 finished in 5s"),
            (35 * second, "job 4 finished in 5s"),
            (3600 * second, "job 5 finished in 5s"),
        ] {
            assert!(drain.train(line, t));
        }
        let chunks: Vec<Vec<Sample>> = drain.patterns().flat_map(|(_, c)| c.chunks().to_vec()).collect();
        let sample = |timestamp_ms, count| Sample { timestamp_ms, count };
        assert_eq!(
            chunks,
            [
                vec![sample(0, 2), sample(10_000, 1), sample(30_000, 1)],
                vec![sample(3_600_000, 1)],
            ]
        );
    }

    #[test]
    fn ranges_are_cut_and_restepped_as_loki_does() {
        let sample = |timestamp_ms, count| Sample { timestamp_ms, count };
        let chunk = [sample(0, 2), sample(10_000, 1), sample(40_000, 3), sample(50_000, 1)];
        // The sample interval as step: the raw samples in [from, through)…
        assert_eq!(for_range(&chunk, 10_000, 50_000 - 1, 10_000, 10_000), chunk[1..3]);
        // …and the chunk's last sample when `through` is exactly on it.
        assert_eq!(for_range(&chunk, 10_000, 50_000, 10_000, 10_000), chunk[1..]);
        assert_eq!(for_range(&chunk, 45_000, 50_000, 10_000, 10_000), chunk[3..]);
        // A wider step sums into epoch-aligned buckets, zero-filling gaps.
        assert_eq!(
            for_range(&chunk, 0, 60_000, 20_000, 10_000),
            [sample(0, 3), sample(20_000, 0), sample(40_000, 4)]
        );
        assert_eq!(
            for_range(&chunk, 0, 60_000, 15_000, 10_000),
            [sample(0, 3), sample(15_000, 0), sample(30_000, 3), sample(45_000, 1)]
        );
        assert!(for_range(&chunk, 60_000, 70_000, 10_000, 10_000).is_empty());
        assert!(for_range(&chunk, 20_000, 30_000, 10_000, 10_000).is_empty());
        assert!(for_range(&[], 0, 70_000, 10_000, 10_000).is_empty());
    }

    #[test]
    fn at_most_max_clusters_are_kept_and_evicting_too_fast_stops_learning() {
        let config = DrainConfig {
            max_clusters: 2,
            ..DrainConfig::default()
        };
        let mut drain = Drain::new(config, Tokenizer::new(LogFormat::Unknown));
        let second = 1_000_000_000i64;
        // Three shapes, one line each: the third evicts the first.
        let shapes = ["alpha beta gamma delta", "one two three four five", "a b c d e f"];
        for (i, line) in shapes.iter().enumerate() {
            assert!(drain.train(line, i as i64 * second));
        }
        assert_eq!(patterns(&drain), ["a b c d e f", "one two three four five"]);
        // 1 eviction over 3 lines is above a quarter: learning stops…
        assert!(!drain.train("a b c d e f", 3 * second));
        assert!(!drain.train("a b c d e f", (3 + 599) * second));
        // …for ten minutes of log time.
        assert!(drain.train("a b c d e f", (3 + 600) * second));
    }

    #[test]
    fn least_recently_used_clusters_are_evicted_first() {
        let config = DrainConfig {
            max_clusters: 2,
            max_eviction_ratio: 1.0,
            ..DrainConfig::default()
        };
        let mut drain = Drain::new(config, Tokenizer::new(LogFormat::Unknown));
        drain.train("alpha beta gamma delta", 0);
        drain.train("one two three four five", 0);
        // Using the first again makes the second the oldest.
        drain.train("alpha beta gamma delta", 0);
        drain.train("a b c d e f", 0);
        assert_eq!(patterns(&drain), ["a b c d e f", "alpha beta gamma delta"]);
    }

    #[test]
    fn a_crowded_node_sends_new_tokens_down_the_placeholder_branch() {
        let mut drain = drain_of(LogFormat::Unknown);
        // Twenty different words after `event`: the first 14 get children,
        // the 15th place goes to `<_>`, and the rest follow it there.
        let words = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
            "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
        ];
        for word in words {
            drain.train(&format!("event {word} happened just now"), 0);
        }
        let root = drain.by_length[&5];
        let event = drain.nodes[root].child("event").unwrap();
        assert_eq!(drain.nodes[event].children.len(), 15);
        assert!(drain.nodes[event].child(PARAM).is_some());
        // Separate patterns while each word has its own branch; the words
        // behind `<_>` (oscar… tango) merged with the first there.
        let found = patterns(&drain);
        assert!(
            found.contains(&"event alpha happened just now".to_string()),
            "{found:?}"
        );
        assert!(found.contains(&"event <_> happened just now".to_string()), "{found:?}");
        assert_eq!(found.len(), 15, "{found:?}");
    }

    /// Loki's Drain test corpora (`pkg/pattern/drain/testdata/*.txt`), run
    /// when `TIDEWATCH_LOKI_DRAIN_TESTDATA` names that directory. Each file
    /// is learned at once, with the tokenizer its first line chooses
    /// (Loki's `drain_golden_test.go`) and with the plain tokenizer (Loki's
    /// `TestDrain_TrainExtractsPatterns`). The hashes are xxh3 of the sorted
    /// patterns joined by newlines, taken from output checked to have the
    /// cluster counts, SHA-256 and tree sizes Loki's tests pin, and its
    /// pattern lists.
    #[test]
    fn loki_test_corpora_give_lokis_patterns() {
        let Some(dir) = std::env::var_os("TIDEWATCH_LOKI_DRAIN_TESTDATA") else {
            eprintln!("TIDEWATCH_LOKI_DRAIN_TESTDATA not set: Loki's Drain corpora skipped");
            return;
        };
        let detected = |file: &str| {
            let text = std::fs::read_to_string(std::path::Path::new(&dir).join(format!("{file}.txt"))).unwrap();
            let first = text.lines().next().unwrap_or_default().to_string();
            (text, detect_format(&first))
        };
        let cases: [(&str, bool, usize, usize, u64); 13] = [
            ("agent-logfmt", true, 15, 111, 0x2656bf918c8a9d52),
            ("calico", true, 81, 1294, 0x83b1396427c65b53),
            ("distributor-logfmt", true, 1, 13, 0x1bdfc3141ad3cdd1),
            ("drone-json", true, 1, 5, 0x37dcc122cc8deb2b),
            ("ingester-logfmt", true, 3, 28, 0xa004a1772ca575e4),
            ("journald", true, 111, 1686, 0x0a399f24243439a3),
            ("kafka", true, 13, 291, 0xa82dc930c7eb8e45),
            ("kubernetes", true, 34, 740, 0xb87e3d45594f0497),
            ("vault", true, 1, 11, 0x3335bad7af065003),
            ("agent-logfmt", false, 19, 397, 0x299c4d5ee01c6fb6),
            ("distributor-logfmt", false, 4, 86, 0xd01fc3ab90456ff1),
            ("drone-json", false, 5, 94, 0x1cc2519a1b72795a),
            ("ingester-logfmt", false, 3, 63, 0xc8abf7e22a28f495),
        ];
        for (file, detect, clusters, nodes, hash) in cases {
            let (text, format) = detected(file);
            let format = if detect { format } else { LogFormat::Unknown };
            let mut drain = drain_of(format);
            for line in text.lines() {
                drain.train(line, 0);
            }
            let mut templates: Vec<String> = drain
                .clusters
                .values()
                .map(|c| drain.tokenizer.join(&c.tokens, c.spacing.as_ref()))
                .collect();
            templates.sort();
            let got = (
                templates.len(),
                drain.nodes.len(),
                xxhash_rust::xxh3::xxh3_64(templates.join("\n").as_bytes()),
            );
            assert_eq!(got, (clusters, nodes, hash), "{file} ({format:?})");
        }
    }
}
