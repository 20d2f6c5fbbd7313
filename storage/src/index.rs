//! The inverted index: label pair → postings (a bitmap of series ids), shared by
//! the head and by loaded blocks.

use std::collections::{BTreeMap, HashMap};

use roaring::RoaringBitmap;
use tidewatch_model::matcher::RegexShape;
use tidewatch_model::{Labels, MatchOp, Matcher};

/// Postings for every label pair of a set of series.
#[derive(Debug, Default, Clone)]
pub struct Postings {
    by_name: HashMap<String, BTreeMap<String, RoaringBitmap>>,
    all: RoaringBitmap,
}

impl Postings {
    pub fn add(&mut self, id: u32, labels: &Labels) {
        self.all.insert(id);
        for label in labels {
            self.by_name
                .entry(label.name.clone())
                .or_default()
                .entry(label.value.clone())
                .or_default()
                .insert(id);
        }
    }

    /// Forgets series `id` (used to roll back series whose WAL write failed).
    pub fn remove(&mut self, id: u32, labels: &Labels) {
        self.all.remove(id);
        for label in labels {
            if let Some(values) = self.by_name.get_mut(&label.name) {
                if let Some(postings) = values.get_mut(&label.value) {
                    postings.remove(id);
                    if postings.is_empty() {
                        values.remove(&label.value);
                    }
                }
                if values.is_empty() {
                    self.by_name.remove(&label.name);
                }
            }
        }
    }

    pub fn all(&self) -> &RoaringBitmap {
        &self.all
    }

    /// Ids of the series satisfying every matcher. No matchers select nothing.
    pub fn select(&self, matchers: &[Matcher]) -> RoaringBitmap {
        if matchers.is_empty() {
            return RoaringBitmap::new();
        }
        let mut result: Option<RoaringBitmap> = None;
        // Matchers that reject the empty value narrow fastest: take them first.
        for matcher in matchers.iter().filter(|m| !m.matches_empty()) {
            let selected = self.union_matching(matcher, true);
            result = Some(match result {
                Some(current) => current & selected,
                None => selected,
            });
            if result.as_ref().is_some_and(RoaringBitmap::is_empty) {
                return RoaringBitmap::new();
            }
        }
        // A matcher accepting "" keeps series without the label and removes
        // those whose value it rejects.
        for matcher in matchers.iter().filter(|m| m.matches_empty()) {
            let rejected = self.union_matching(matcher, false);
            let current = result.take().unwrap_or_else(|| self.all.clone());
            result = Some(current - rejected);
        }
        result.unwrap_or_default()
    }

    /// Union of the postings of `matcher.name`'s values whose `matches()` equals `wanted`.
    fn union_matching(&self, matcher: &Matcher, wanted: bool) -> RoaringBitmap {
        let mut union = RoaringBitmap::new();
        let Some(values) = self.by_name.get(&matcher.name) else {
            return union;
        };
        // Fast paths: look up exactly the values that can match.
        let exact: Option<Vec<&str>> = match (matcher.op, wanted) {
            (MatchOp::Equal, true) | (MatchOp::NotEqual, false) => Some(vec![matcher.value.as_str()]),
            (MatchOp::RegexMatch, true) | (MatchOp::RegexNoMatch, false) => match matcher.regex_shape() {
                RegexShape::Literals(set) => Some(set.iter().map(String::as_str).collect()),
                _ => None,
            },
            _ => None,
        };
        if let Some(exact) = exact {
            for value in exact {
                if let Some(postings) = values.get(value) {
                    union |= postings;
                }
            }
            return union;
        }
        let prefix = match (matcher.op, matcher.regex_shape()) {
            (MatchOp::RegexMatch | MatchOp::RegexNoMatch, RegexShape::Prefix(prefix)) => Some(prefix.as_str()),
            _ => None,
        };
        match prefix {
            Some(prefix) if (matcher.op == MatchOp::RegexMatch) == wanted => {
                for (_, postings) in values
                    .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
                    .take_while(|(v, _)| v.starts_with(prefix))
                {
                    union |= postings;
                }
            }
            _ => {
                for (value, postings) in values {
                    if matcher.matches(value) == wanted {
                        union |= postings;
                    }
                }
            }
        }
        union
    }

    /// Distinct label names, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }

    /// Distinct values of `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.by_name
            .get(name)
            .map(|values| values.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// (label name, values map) pairs, for statistics.
    pub fn iter_names(&self) -> impl Iterator<Item = (&String, &BTreeMap<String, RoaringBitmap>)> {
        self.by_name.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tidewatch_model::seam::matches_all;

    fn matcher_strategy() -> impl Strategy<Value = Matcher> {
        let op = prop_oneof![
            Just(MatchOp::Equal),
            Just(MatchOp::NotEqual),
            Just(MatchOp::RegexMatch),
            Just(MatchOp::RegexNoMatch),
        ];
        let value = prop_oneof![
            "[ab]{0,2}",
            "[ab]{0,2}\\|[ab]{1,2}",
            "[ab]\\.\\*",
            Just(".*".to_string()),
            Just(".+".to_string()),
            Just("a+".to_string())
        ];
        (op, "[xyz]", value).prop_map(|(op, name, value)| {
            let value = if matches!(op, MatchOp::Equal | MatchOp::NotEqual) {
                value.replace(['|', '.', '*', '+'], "")
            } else {
                value
            };
            Matcher::new(op, name, value).unwrap()
        })
    }

    proptest! {
        // The index selects exactly what a brute-force scan of every series selects.
        #[test]
        fn index_agrees_with_brute_force(
            series in proptest::collection::vec(proptest::collection::btree_map("[xyz]", "[ab]{0,2}", 0..4), 0..30),
            matchers in proptest::collection::vec(matcher_strategy(), 0..4),
        ) {
            let mut postings = Postings::default();
            let all: Vec<Labels> = series.iter().map(|pairs| Labels::from_pairs(pairs.clone())).collect();
            for (id, labels) in all.iter().enumerate() {
                postings.add(id as u32, labels);
            }
            let selected: Vec<u32> = postings.select(&matchers).iter().collect();
            let expected: Vec<u32> = if matchers.is_empty() {
                Vec::new()
            } else {
                all.iter().enumerate().filter(|(_, l)| matches_all(l, &matchers)).map(|(i, _)| i as u32).collect()
            };
            prop_assert_eq!(selected, expected);
        }
    }

    #[test]
    fn remove_forgets_a_series() {
        let mut postings = Postings::default();
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        postings.add(0, &labels);
        postings.remove(0, &labels);
        assert!(postings.select(&[Matcher::equal("job", "a")]).is_empty());
        assert!(postings.label_names().is_empty());
    }
}
