//! Search queries in Tantivy's query syntax, turned into index queries by
//! us rather than by Tantivy's `QueryParser`, because labels are not in the
//! index: a block's index holds the lines and each document's stream id, and
//! `labels.<name>:<value>` is answered from the block's streams table, as
//! the set of stream ids whose labels satisfy it. Indexing the labels of
//! every line cost a fifth of a block's index build for facts the streams
//! table already holds once per stream.
//!
//! What a query can say (and what each part means):
//! - on the line (no field, or `line:`): a word (`error`), a phrase of words
//!   (`"connection refused"`, or a literal with separators such as
//!   `10.0.0.12` or `/api/v1/users`, which are phrases of their words), a
//!   phrase prefix (`"connection ref"*`, its last word expanding to at most
//!   [`PHRASE_PREFIX_EXPANSIONS`] words), a word prefix (`conn*`), a set (`line: IN [GET PUT]`), a
//!   range of words (`line:[a TO c]`), a regular expression every word is
//!   matched against whole (`line:/err.*/`) and `line:*` (has a word);
//! - on a label (`labels.app:`): a value, a value prefix (`labels.app:api*`),
//!   a set, a range, a regular expression (whole value), `labels.app:*`
//!   (the stream has the label);
//! - `AND`, `OR`, `NOT`, `+`, `-`, parentheses; terms are joined by `AND`
//!   when nothing is said. Boosts are accepted and mean nothing (hits come
//!   newest first, never by score). Phrase slop (`"a b"~2`) is kept as Tantivy
//!   reads it.
//!
//! Words are cut as the index cuts lines ([`super::index::WordTokenizer`]),
//! so matching is case-sensitive, as LogQL's line filters are.

use std::ops::Bound;

use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, RegexQuery,
    TermQuery, TermSetQuery,
};
use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputBound, UserInputLeaf, UserInputLiteral};
use tantivy::schema::{Field, IndexRecordOption};
use tidewatch_model::Labels;

use super::index::tokens;
use crate::error::{Error, Result};

/// Words a phrase prefix's last word expands to, at most, per index
/// segment (Tantivy's default is 50).
pub(crate) const PHRASE_PREFIX_EXPANSIONS: u32 = 1000;

/// The field a leaf of the query is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Line,
    Label(String),
}

/// What a leaf asks of its target.
#[derive(Debug, Clone)]
enum Predicate {
    /// Line: the words in order (slop as Tantivy's phrases have it), the last
    /// one a prefix when `prefix`. Label: the value, or a value prefix.
    Literal {
        text: String,
        slop: u32,
        prefix: bool,
    },
    Set(Vec<String>),
    Range {
        lower: Bound<String>,
        upper: Bound<String>,
    },
    /// Matched against a whole word (line, by Tantivy from `pattern`) or a
    /// whole value (label, by `whole`, compiled once per query).
    Regex {
        pattern: String,
        whole: regex::Regex,
    },
    Exists,
}

#[derive(Debug, Clone)]
enum Node {
    All,
    Leaf(Target, Predicate),
    /// Tantivy's boolean semantics: every `Must`, no `MustNot`, and when
    /// there is no `Must`, at least one `Should`.
    Clause(Vec<(Occur, Node)>),
}

/// A parsed, checked search query.
#[derive(Debug, Clone)]
pub(crate) struct SearchQuery {
    root: Node,
}

fn rejected(query: &str, why: impl std::fmt::Display) -> Error {
    Error::Rejected(format!("invalid search query {query:?}: {why}"))
}

impl SearchQuery {
    /// Parses `text`; a syntax error names the position Tantivy's grammar
    /// stopped at.
    pub(crate) fn parse(text: &str) -> Result<SearchQuery> {
        let ast = match tantivy::query_grammar::parse_query(text) {
            Ok(ast) => ast,
            Err(_) => {
                let (_, errors) = tantivy::query_grammar::parse_query_lenient(text);
                let why = errors
                    .first()
                    .map(|e| format!("syntax error at character {}: {}", e.pos, e.message))
                    .unwrap_or_else(|| "syntax error".to_string());
                return Err(rejected(text, why));
            }
        };
        let root = convert(text, ast)?.ok_or_else(|| rejected(text, "the query holds no word to search for"))?;
        if all_negative(&root) {
            return Err(rejected(
                text,
                "the query only excludes: say what to find too (e.g. `error -timeout`)",
            ));
        }
        Ok(SearchQuery { root })
    }

    /// The index query for a source whose stream `id` has labels
    /// `streams[id]`; `line` and `stream` are the index's fields.
    pub(crate) fn index_query(&self, line: Field, stream: Field, streams: &[&Labels]) -> Result<Box<dyn Query>> {
        to_index_query(&self.root, line, stream, streams)
    }
}

/// The node for `ast`, `None` when it holds nothing to search for (a
/// literal without words, an empty clause), which Tantivy's parser trims.
fn convert(query: &str, ast: UserInputAst) -> Result<Option<Node>> {
    match ast {
        UserInputAst::Boost(inner, _) => convert(query, *inner),
        UserInputAst::Clause(children) => {
            let mut kept = Vec::with_capacity(children.len());
            for (occur, child) in children {
                if let Some(node) = convert(query, child)? {
                    // Nothing said means AND, as `set_conjunction_by_default`.
                    kept.push((occur.unwrap_or(Occur::Must), node));
                }
            }
            Ok((!kept.is_empty()).then_some(Node::Clause(kept)))
        }
        UserInputAst::Leaf(leaf) => convert_leaf(query, *leaf),
    }
}

fn target(query: &str, field: Option<&str>) -> Result<Target> {
    match field {
        None | Some("line") => Ok(Target::Line),
        Some(name) => match name.strip_prefix("labels.") {
            Some(label) if !label.is_empty() => Ok(Target::Label(label.to_string())),
            _ => Err(rejected(
                query,
                format!("unknown field {name:?}: search the line (no field, or `line:`) or a label (`labels.<name>:`)"),
            )),
        },
    }
}

fn bound(bound: UserInputBound) -> Bound<String> {
    match bound {
        UserInputBound::Inclusive(text) => Bound::Included(text),
        UserInputBound::Exclusive(text) => Bound::Excluded(text),
        UserInputBound::Unbounded => Bound::Unbounded,
    }
}

fn convert_leaf(query: &str, leaf: UserInputLeaf) -> Result<Option<Node>> {
    Ok(Some(match leaf {
        UserInputLeaf::All => Node::All,
        UserInputLeaf::Literal(UserInputLiteral {
            field_name,
            phrase,
            slop,
            mut prefix,
            delimiter,
        }) => {
            let target = target(query, field_name.as_deref())?;
            // Tantivy's grammar reads a bare `conn*` as the word `conn`;
            // everyone typing it means a prefix, so it is one here.
            let mut phrase = phrase;
            if delimiter == Delimiter::None && phrase.len() > 1 && phrase.ends_with('*') {
                phrase.pop();
                prefix = true;
            }
            // A literal without words is dropped, as Tantivy's parser drops it.
            if target == Target::Line && tokens(&phrase).is_empty() {
                return Ok(None);
            }
            Node::Leaf(
                target,
                Predicate::Literal {
                    text: phrase,
                    slop,
                    prefix,
                },
            )
        }
        UserInputLeaf::Set { field, elements } => {
            Node::Leaf(target(query, field.as_deref())?, Predicate::Set(elements))
        }
        UserInputLeaf::Range { field, lower, upper } => Node::Leaf(
            target(query, field.as_deref())?,
            Predicate::Range {
                lower: bound(lower),
                upper: bound(upper),
            },
        ),
        UserInputLeaf::Regex { field, pattern } => {
            // Compiled here, so a bad pattern is the client's 400, not a failed search.
            let whole = regex::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| rejected(query, format!("invalid regular expression /{pattern}/: {e}")))?;
            Node::Leaf(target(query, field.as_deref())?, Predicate::Regex { pattern, whole })
        }
        UserInputLeaf::Exists { field } => Node::Leaf(target(query, Some(&field))?, Predicate::Exists),
    }))
}

/// Whether a node can only exclude (Tantivy refuses such a query whole).
fn all_negative(node: &Node) -> bool {
    match node {
        Node::All | Node::Leaf(..) => false,
        Node::Clause(children) => children
            .iter()
            .all(|(occur, child)| *occur == Occur::MustNot || all_negative(child)),
    }
}

fn to_index_query(node: &Node, line: Field, stream: Field, streams: &[&Labels]) -> Result<Box<dyn Query>> {
    Ok(match node {
        Node::All => Box::new(AllQuery),
        Node::Clause(children) => {
            let mut clauses = Vec::with_capacity(children.len());
            for (occur, child) in children {
                clauses.push((*occur, to_index_query(child, line, stream, streams)?));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Node::Leaf(Target::Line, predicate) => line_query(predicate, line)?,
        Node::Leaf(Target::Label(name), predicate) => {
            let matcher = LabelMatcher::new(predicate);
            let ids = streams
                .iter()
                .enumerate()
                .filter(|(_, labels)| matcher.matches(labels.get(name)))
                .map(|(id, _)| Term::from_field_u64(stream, id as u64));
            Box::new(TermSetQuery::new(ids))
        }
    })
}

fn line_term(line: Field, word: &str) -> Term {
    Term::from_field_text(line, word)
}

fn index_error(error: impl std::fmt::Display) -> Error {
    Error::Task(format!("full-text index: building the query: {error}"))
}

fn line_query(predicate: &Predicate, line: Field) -> Result<Box<dyn Query>> {
    Ok(match predicate {
        Predicate::Literal { text, slop, prefix } => {
            let words = tokens(text);
            match (words.len(), prefix) {
                (0, _) => Box::new(EmptyQuery),
                (1, false) => Box::new(TermQuery::new(line_term(line, &words[0]), IndexRecordOption::Basic)),
                // One word's prefix: every word starting with it, whatever
                // the count (a phrase prefix stops after 50 expansions).
                (1, true) => Box::new(
                    RegexQuery::from_pattern(&format!("{}.*", regex::escape(&words[0])), line).map_err(index_error)?,
                ),
                (_, false) => {
                    let terms = words
                        .iter()
                        .enumerate()
                        .map(|(at, w)| (at, line_term(line, w)))
                        .collect();
                    Box::new(PhraseQuery::new_with_offset_and_slop(terms, *slop))
                }
                (_, true) => {
                    let terms = words
                        .iter()
                        .enumerate()
                        .map(|(at, w)| (at, line_term(line, w)))
                        .collect();
                    let mut query = PhrasePrefixQuery::new_with_offset(terms);
                    // Tantivy reads the postings of every expansion up front
                    // (and reserves room for the cap), so the cap stays finite.
                    query.set_max_expansions(PHRASE_PREFIX_EXPANSIONS);
                    Box::new(query)
                }
            }
        }
        Predicate::Set(elements) => Box::new(TermSetQuery::new(elements.iter().map(|e| line_term(line, e)))),
        Predicate::Range { lower, upper } => {
            let term = |b: &Bound<String>| match b {
                Bound::Included(t) => Bound::Included(line_term(line, t)),
                Bound::Excluded(t) => Bound::Excluded(line_term(line, t)),
                Bound::Unbounded => Bound::Unbounded,
            };
            Box::new(RangeQuery::new(term(lower), term(upper)))
        }
        Predicate::Regex { pattern, .. } => Box::new(RegexQuery::from_pattern(pattern, line).map_err(index_error)?),
        Predicate::Exists => Box::new(RegexQuery::from_pattern(".*", line).map_err(index_error)?),
    })
}

/// A label predicate, ready to test values.
enum LabelMatcher<'a> {
    Equal(&'a str),
    Prefix(&'a str),
    Set(&'a [String]),
    Range(&'a Bound<String>, &'a Bound<String>),
    Regex(&'a regex::Regex),
    Exists,
}

impl<'a> LabelMatcher<'a> {
    fn new(predicate: &'a Predicate) -> LabelMatcher<'a> {
        match predicate {
            Predicate::Literal {
                text, prefix: false, ..
            } => LabelMatcher::Equal(text),
            Predicate::Literal { text, prefix: true, .. } => LabelMatcher::Prefix(text),
            Predicate::Set(values) => LabelMatcher::Set(values),
            Predicate::Range { lower, upper } => LabelMatcher::Range(lower, upper),
            Predicate::Regex { whole, .. } => LabelMatcher::Regex(whole),
            Predicate::Exists => LabelMatcher::Exists,
        }
    }

    /// Whether a stream whose label has `value` (`None`: no such label) matches.
    fn matches(&self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return false;
        };
        match self {
            LabelMatcher::Equal(wanted) => value == *wanted,
            LabelMatcher::Prefix(prefix) => value.starts_with(prefix),
            LabelMatcher::Set(values) => values.iter().any(|v| v == value),
            LabelMatcher::Range(lower, upper) => {
                let above = match lower {
                    Bound::Included(l) => value >= l.as_str(),
                    Bound::Excluded(l) => value > l.as_str(),
                    Bound::Unbounded => true,
                };
                let below = match upper {
                    Bound::Included(u) => value <= u.as_str(),
                    Bound::Excluded(u) => value < u.as_str(),
                    Bound::Unbounded => true,
                };
                above && below
            }
            LabelMatcher::Regex(regex) => regex.is_match(value),
            LabelMatcher::Exists => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        SearchQuery::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        assert!(
            parse_err("client AND (").contains("syntax error"),
            "{}",
            parse_err("client AND (")
        );
        assert!(parse_err("-error").contains("only excludes"));
        assert!(parse_err("host:web").contains("unknown field \"host\""));
        assert!(parse_err("line:/a(/").contains("invalid regular expression"));
        assert!(parse_err("\" - \"").contains("no word"));
        assert!(SearchQuery::parse("error -timeout labels.app:api*").is_ok());
    }

    #[test]
    fn label_predicates_test_values_as_tantivy_would_test_raw_terms() {
        let check = |query: &str, value: Option<&str>| {
            let parsed = SearchQuery::parse(query).unwrap();
            let Node::Leaf(Target::Label(_), predicate) = &parsed.root else {
                panic!("{query} is not one label leaf: {:?}", parsed.root)
            };
            LabelMatcher::new(predicate).matches(value)
        };
        assert!(check("labels.app:api", Some("api")));
        assert!(!check("labels.app:api", Some("api-2")));
        assert!(check("labels.app:api*", Some("api-2")));
        assert!(check("labels.app: IN [db api]", Some("api")));
        assert!(check("labels.app:[a TO b}", Some("api")));
        assert!(!check("labels.app:[a TO b}", Some("b")));
        assert!(check("labels.app:/a.i/", Some("api")));
        assert!(!check("labels.app:/a/", Some("api")), "regexes match whole values");
        assert!(check("labels.app:*", Some("")));
        assert!(!check("labels.app:*", None));
    }
}
