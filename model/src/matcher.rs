//! Label matchers: `=`, `!=`, `=~`, `!~`, with Prometheus' semantics.
//!
//! A matcher tests a label's value; a missing label has the value `""`, so
//! `{foo=""}` selects series without `foo`. Regular expressions are fully anchored.

use regex::Regex;
use std::fmt;

use crate::error::Error;

/// The four matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        }
    }

    /// Whether the operator selects on a positive condition (`=`, `=~`).
    pub fn is_positive(self) -> bool {
        matches!(self, MatchOp::Equal | MatchOp::RegexMatch)
    }
}

/// How a regex matcher is answered: cheap shapes are recognised once, when the
/// matcher is built, so the index can avoid running the regex engine.
#[derive(Debug, Clone)]
pub enum RegexShape {
    /// `.*`: anything, including the empty value.
    Any,
    /// `.+`: anything but the empty value.
    NonEmpty,
    /// `a|b|c` with literal alternatives (sorted, deduplicated).
    Literals(Vec<String>),
    /// `prefix.*`.
    Prefix(String),
    /// Everything else: the anchored regex.
    General,
}

/// A label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
    shape: RegexShape,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Builds a matcher; regex operators compile the pattern fully anchored.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        let value = value.into();
        let (regex, shape) = match op {
            MatchOp::Equal | MatchOp::NotEqual => (None, RegexShape::General),
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => {
                let anchored = format!("^(?s:{value})$");
                let regex = Regex::new(&anchored).map_err(|e| Error::Regex {
                    pattern: value.clone(),
                    message: e.to_string(),
                })?;
                (Some(regex), classify_regex(&value))
            }
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
            shape,
        })
    }

    /// Shorthand for an `=` matcher, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            regex: None,
            shape: RegexShape::General,
        }
    }

    /// The recognised shape of a regex matcher (meaningless for `=`/`!=`).
    pub fn regex_shape(&self) -> &RegexShape {
        &self.shape
    }

    /// Whether the matcher accepts `value` (use `""` for a missing label).
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::RegexMatch => self.regex_matches(value),
            MatchOp::RegexNoMatch => !self.regex_matches(value),
        }
    }

    fn regex_matches(&self, value: &str) -> bool {
        match &self.shape {
            RegexShape::Any => true,
            RegexShape::NonEmpty => !value.is_empty(),
            RegexShape::Literals(set) => set.binary_search_by(|s| s.as_str().cmp(value)).is_ok(),
            RegexShape::Prefix(prefix) => value.starts_with(prefix.as_str()),
            RegexShape::General => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether the matcher accepts the empty value, i.e. series lacking the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

const REGEX_META: &[char] = &['\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$'];

fn is_literal(s: &str) -> bool {
    !s.contains(REGEX_META)
}

fn classify_regex(pattern: &str) -> RegexShape {
    match pattern {
        ".*" => return RegexShape::Any,
        ".+" => return RegexShape::NonEmpty,
        _ => {}
    }
    if let Some(prefix) = pattern.strip_suffix(".*")
        && is_literal(prefix)
    {
        return RegexShape::Prefix(prefix.to_string());
    }
    let alternatives: Vec<&str> = pattern.split('|').collect();
    if alternatives.iter().all(|alt| is_literal(alt)) {
        let mut set: Vec<String> = alternatives.into_iter().map(str::to_string).collect();
        set.sort();
        set.dedup();
        return RegexShape::Literals(set);
    }
    RegexShape::General
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(op: MatchOp, value: &str) -> Matcher {
        Matcher::new(op, "l", value).unwrap()
    }

    #[test]
    fn regexes_are_fully_anchored() {
        assert!(m(MatchOp::RegexMatch, "a.c").matches("abc"));
        assert!(!m(MatchOp::RegexMatch, "b").matches("abc"));
        assert!(m(MatchOp::RegexNoMatch, "b").matches("abc"));
        assert!(m(MatchOp::RegexMatch, "a|").matches(""));
    }

    #[test]
    fn recognises_cheap_shapes() {
        assert!(matches!(m(MatchOp::RegexMatch, "foo.*").regex_shape(), RegexShape::Prefix(p) if p == "foo"));
        assert!(matches!(m(MatchOp::RegexMatch, "b|a|b").regex_shape(), RegexShape::Literals(s) if s == &["a", "b"]));
        assert!(matches!(m(MatchOp::RegexMatch, ".*").regex_shape(), RegexShape::Any));
        assert!(matches!(
            m(MatchOp::RegexMatch, "a+").regex_shape(),
            RegexShape::General
        ));
    }

    #[test]
    fn rejects_bad_regex() {
        assert!(Matcher::new(MatchOp::RegexMatch, "l", "(").is_err());
    }

    proptest! {
        // The fast paths must agree with the regex engine on every input.
        #[test]
        fn fast_paths_agree_with_regex(
            pattern in prop_oneof![
                "[a-c]{0,3}(\\|[a-c]{0,3}){0,3}",
                "[a-c]{0,3}\\.\\*",
                Just(".*".to_string()),
                Just(".+".to_string()),
            ],
            value in "[a-c]{0,4}",
        ) {
            let fast = Matcher::new(MatchOp::RegexMatch, "l", pattern.clone()).unwrap();
            let slow = Regex::new(&format!("^(?s:{pattern})$")).unwrap();
            prop_assert_eq!(fast.matches(&value), slow.is_match(&value));
        }
    }
}
