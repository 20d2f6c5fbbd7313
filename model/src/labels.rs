//! Label sets: the identity of a series.

use std::fmt;
use std::sync::Arc;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One label pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: String,
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A label set sorted by name. Construction through [`Labels::from_pairs`] sorts;
/// callers that already hold sorted, unique pairs may use [`Labels::from_sorted`].
///
/// Empty values are dropped on construction, as in Prometheus: a label with an
/// empty value is the same as no label.
///
/// The pairs are shared: cloning a label set (which queries do for every
/// series they touch) is a reference count, not an allocation per string.
/// The empty set holds nothing at all, so it can be a constant.
#[derive(Clone, Eq, Default)]
pub struct Labels {
    /// `None` exactly when there are no pairs, so derived comparisons agree
    /// with comparing the pair slices.
    pairs: Option<Arc<[Label]>>,
}

// Equality and order look at the shared pairs' address first: label sets
// handed out by one index are the same allocation, and queries compare them
// constantly (merging sources, sorting, grouping).
impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        match (&self.pairs, &other.pairs) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.as_slice() == other.as_slice(),
        }
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Labels) -> std::cmp::Ordering {
        match (&self.pairs, &other.pairs) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => std::cmp::Ordering::Equal,
            _ => self.as_slice().cmp(other.as_slice()),
        }
    }
}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Labels {
    /// The empty label set, usable in statics.
    pub const EMPTY: Labels = Labels { pairs: None };

    /// Whether both hold the very same pairs (not merely equal ones).
    pub fn same_pairs(&self, other: &Labels) -> bool {
        match (&self.pairs, &other.pairs) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether another label set shares these pairs (an interner drops the
    /// sets only it still holds).
    pub fn is_shared(&self) -> bool {
        self.pairs.as_ref().is_some_and(|pairs| Arc::strong_count(pairs) > 1)
    }

    fn wrap(pairs: Vec<Label>) -> Labels {
        Labels {
            pairs: (!pairs.is_empty()).then(|| Arc::from(pairs)),
        }
    }

    /// Builds a label set from pairs in any order, dropping empty values.
    /// Duplicate names are kept (and sorted next to each other) so that
    /// validation can report them; see [`Labels::duplicate_name`].
    pub fn from_pairs<I, N, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<String>,
    {
        let mut labels: Vec<Label> = pairs
            .into_iter()
            .map(|(n, v)| Label::new(n, v))
            .filter(|l| !l.value.is_empty())
            .collect();
        labels.sort();
        Labels::wrap(labels)
    }

    /// Wraps pairs the caller guarantees are sorted by name with non-empty values.
    pub fn from_sorted(pairs: Vec<Label>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].name <= w[1].name));
        Labels::wrap(pairs)
    }

    /// Moves pairs the caller guarantees are sorted by name with non-empty
    /// values out of `scratch` into a label set, leaving `scratch` empty with
    /// its capacity. Parsers reuse one scratch vector for every series, so a
    /// label set costs one allocation for the shared slice and nothing more.
    pub fn from_sorted_scratch(scratch: &mut Vec<Label>) -> Self {
        debug_assert!(scratch.windows(2).all(|w| w[0].name <= w[1].name));
        if scratch.is_empty() {
            return Labels::EMPTY;
        }
        // `Drain` knows its exact length, so this allocates the Arc once
        // instead of collecting into a vector first.
        Labels {
            pairs: Some(scratch.drain(..).collect()),
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.as_slice().iter()
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_none()
    }

    /// The value of `name`, or `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        let pairs = self.as_slice();
        match pairs.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => Some(pairs[i].value.as_str()),
            Err(_) => None,
        }
    }

    /// The metric name, when present.
    pub fn metric_name(&self) -> Option<&str> {
        // `__name__` sorts before every lowercase label name, so it is
        // nearly always the first pair: look there before searching.
        match self.as_slice().first() {
            Some(first) if first.name == METRIC_NAME => Some(first.value.as_str()),
            _ => self.get(METRIC_NAME),
        }
    }

    /// The first label name that occurs twice, if any.
    pub fn duplicate_name(&self) -> Option<&str> {
        self.as_slice()
            .windows(2)
            .find(|w| w[0].name == w[1].name)
            .map(|w| w[0].name.as_str())
    }

    /// A stable 64-bit hash of the label set (xxh3 over name/value bytes with
    /// separators that cannot occur in valid UTF-8).
    pub fn hash64(&self) -> u64 {
        hash_pairs(self.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.as_slice().to_vec()
    }

    pub fn as_slice(&self) -> &[Label] {
        self.pairs.as_deref().unwrap_or(&[])
    }
}

thread_local! {
    static HASH_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hash of sorted (name, value) pairs: xxh3 over `name 0xff value 0xff …`
/// (0xff never occurs in UTF-8, so distinct sets cannot collide by concatenation).
/// One-shot hashing of a reused buffer is much faster than feeding the
/// streaming hasher many short pieces.
pub fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    hash_byte_pairs(pairs.map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

/// [`hash_pairs`] over the bytes of UTF-8 strings.
pub fn hash_byte_pairs<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    HASH_SCRATCH.with(|scratch| {
        let mut buffer = scratch.borrow_mut();
        buffer.clear();
        for (name, value) in pairs {
            buffer.extend_from_slice(name);
            buffer.push(0xff);
            buffer.extend_from_slice(value);
            buffer.push(0xff);
        }
        xxhash_rust::xxh3::xxh3_64(&buffer)
    })
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Prometheus' notation: `name{a="b", c="d"}`, with values escaped as Go does.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for label in self.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}={:?}", label.name, label.value)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sorts_drops_empty_and_displays() {
        let labels = Labels::from_pairs([("job", "api"), ("__name__", "up"), ("empty", "")]);
        assert_eq!(labels.len(), 2);
        assert_eq!(labels.metric_name(), Some("up"));
        assert_eq!(labels.get("empty"), None);
        assert_eq!(labels.to_string(), "up{job=\"api\"}");
    }

    #[test]
    fn finds_duplicate_names() {
        let labels = Labels::from_pairs([("a", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(labels.duplicate_name(), Some("a"));
        assert_eq!(Labels::from_pairs([("a", "1")]).duplicate_name(), None);
    }

    proptest! {
        #[test]
        fn canonical_form_ignores_input_order(
            pairs in proptest::collection::btree_map("[a-z_]{1,6}", "[ -~]{0,6}", 0..8)
        ) {
            let forward = Labels::from_pairs(pairs.iter().map(|(n, v)| (n.clone(), v.clone())));
            let backward = Labels::from_pairs(pairs.iter().rev().map(|(n, v)| (n.clone(), v.clone())));
            prop_assert_eq!(forward.hash64(), backward.hash64());
            prop_assert_eq!(&forward, &backward);
            for (name, value) in &pairs {
                let expected = if value.is_empty() { None } else { Some(value.as_str()) };
                prop_assert_eq!(forward.get(name), expected);
            }
        }
    }
}
