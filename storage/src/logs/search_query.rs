//! Search queries in Tantivy's query syntax, answered by us rather than by
//! Tantivy's `QueryParser` in two steps: a block's index names candidate
//! rows ([`SearchQuery::candidate_query`]: the query loosened so that it
//! holds for a whole group of rows whenever it holds for one of its lines),
//! and each candidate line is then checked ([`SearchQuery::matches`]), so
//! hits and totals are exactly those of the query over every line.
//!
//! Labels are not in the index: a block's index holds the lines' words and
//! each document's stream id, and `labels.<name>:<value>` is answered from
//! the block's streams table, as the set of stream ids whose labels satisfy
//! it. Indexing the labels of every line cost a fifth of a block's index
//! build for facts the streams table already holds once per stream.
//!
//! What a query can say (and what each part means):
//! - on the line (no field, or `line:`): a word (`error`), a phrase of words
//!   (`"connection refused"`, or a literal with separators such as
//!   `10.0.0.12` or `/api/v1/users`, which are phrases of their words), a
//!   phrase prefix (`"connection ref"*`, its last word a prefix of the
//!   line's word), a word prefix (`conn*`), a set (`line: IN [GET PUT]`), a
//!   range of words (`line:[a TO c]`), a regular expression every word is
//!   matched against whole (`line:/err.*/`) and `line:*` (has a word);
//! - on a label (`labels.app:`): a value, a value prefix (`labels.app:api*`),
//!   a set, a range, a regular expression (whole value), `labels.app:*`
//!   (the stream has the label);
//! - `AND`, `OR`, `NOT`, `+`, `-`, parentheses; terms are joined by `AND`
//!   when nothing is said. Boosts are accepted and mean nothing (hits come
//!   newest first, never by score). A phrase with slop (`"a b"~2`) finds
//!   its words in order with at most that many other words between them in
//!   all (Tantivy also accepts some words out of order; we do not).
//!
//! Words are cut as the index cuts lines ([`super::index::WordTokenizer`]),
//! so matching is case-sensitive, as LogQL's line filters are.

use std::ops::Bound;

use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, Query, RangeQuery, RegexQuery, TermQuery, TermSetQuery,
};
use tantivy::query_grammar::{Delimiter, UserInputAst, UserInputBound, UserInputLeaf, UserInputLiteral};
use tantivy::schema::{Field, IndexRecordOption};
use tidewatch_model::Labels;

use super::id_words::{IdWords, Walk, is_id_word, may_be_in_id_word};
use super::index::{OVERLONG_TERM, token_ends, tokens, words};
use crate::error::{Error, Result};

/// What a candidate query is built against: a block index's fields, and
/// its id word list (`None`: every word is a Tantivy term).
pub(crate) struct IndexTerms<'a> {
    pub(crate) line: Field,
    pub(crate) stream: Field,
    /// The first row of each document, indexed: id word lookups name
    /// documents by it.
    pub(crate) row: Field,
    pub(crate) ids: Option<&'a IdWords>,
}

/// The field a leaf of the query is about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Line,
    Label(String),
}

/// What a leaf asks of its target.
#[derive(Debug, Clone)]
enum Predicate {
    /// Line: `words` (the text cut as lines are) in order, at most `slop`
    /// other words between them, the last one a prefix when `prefix`.
    /// Label: the value `text`, or a value prefix.
    Literal {
        text: String,
        words: Vec<String>,
        /// Finds the first word in a line (boxed: a finder is ~350 bytes).
        first: Box<memchr::memmem::Finder<'static>>,
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

    /// The index query naming every document (a group of one stream's
    /// rows) that may hold a hit, for an index whose stream `id` has labels
    /// `streams[id]`. `None`: the index cannot narrow (every document is a
    /// candidate).
    pub(crate) fn candidate_query(
        &self,
        terms: &IndexTerms<'_>,
        streams: &[&Labels],
    ) -> Result<Option<Box<dyn Query>>> {
        candidate_query(&self.root, terms, streams)
    }

    /// Whether the entry `line` of a stream with `labels` is a hit.
    pub(crate) fn matches(&self, labels: &Labels, line: &str) -> bool {
        let mut words: Option<Vec<&str>> = None;
        node_matches(&self.root, labels, line, &mut words)
    }
}

/// What a search does with `query` and one `line` of a stream labelled
/// `app="web"`, for the fuzz target: parses the query (a bad one is an
/// error), builds its index query, and checks the line, asserting that
/// every word or phrase found by substring search is found by comparing the
/// line's words too. Returns whether the line is a hit.
#[doc(hidden)]
pub fn check_search_on_line(query: &str, line: &str) -> Result<bool> {
    let parsed = SearchQuery::parse(query)?;
    let labels = Labels::from_pairs([("app", "web")]);
    parsed.candidate_query(&super::index::terms_for_queries(), &[&labels])?;
    let words_of_line: Vec<&str> = words(line).collect();
    fn literals_agree(node: &Node, line: &str, words_of_line: &[&str]) {
        match node {
            Node::All => {}
            Node::Leaf(Target::Line, predicate) => {
                if let Some(found) = literal_matches(predicate, line) {
                    assert_eq!(
                        found,
                        line_matches(predicate, words_of_line),
                        "{predicate:?} on {line:?}"
                    );
                }
            }
            Node::Leaf(..) => {}
            Node::Clause(children) => children
                .iter()
                .for_each(|(_, child)| literals_agree(child, line, words_of_line)),
        }
    }
    literals_agree(&parsed.root, line, &words_of_line);
    Ok(parsed.matches(&labels, line))
}

/// Whether `node` holds for the line; `words` are the line's words, cut on
/// first need (a query on labels alone never cuts them).
fn node_matches<'a>(node: &Node, labels: &Labels, line: &'a str, words_of_line: &mut Option<Vec<&'a str>>) -> bool {
    match node {
        Node::All => true,
        Node::Leaf(Target::Label(name), predicate) => LabelMatcher::new(predicate).matches(labels.get(name)),
        Node::Leaf(Target::Line, predicate) => {
            if let Some(found) = literal_matches(predicate, line) {
                return found;
            }
            let words = words_of_line.get_or_insert_with(|| words(line).collect());
            line_matches(predicate, words)
        }
        Node::Clause(children) => {
            // Tantivy's boolean semantics: every Must, no MustNot, and at
            // least one Should when there is no Must.
            let mut has_must = false;
            let mut any_should = false;
            for (occur, child) in children {
                match occur {
                    Occur::Must => {
                        has_must = true;
                        if !node_matches(child, labels, line, words_of_line) {
                            return false;
                        }
                    }
                    Occur::MustNot => {
                        if node_matches(child, labels, line, words_of_line) {
                            return false;
                        }
                    }
                    Occur::Should => {}
                }
            }
            if has_must {
                return true;
            }
            for (occur, child) in children {
                if *occur == Occur::Should && node_matches(child, labels, line, words_of_line) {
                    any_should = true;
                    break;
                }
            }
            any_should
        }
    }
}

/// A word or an exact phrase found by a substring search for its first
/// word and a look at the words after it, without cutting the whole line:
/// a search for a common word checks most lines of a block, and cutting
/// each into words was half of its time. `None`: not such a literal.
fn literal_matches(predicate: &Predicate, line: &str) -> Option<bool> {
    let Predicate::Literal {
        words: phrase,
        first: finder,
        slop: 0,
        prefix,
        ..
    } = predicate
    else {
        return None;
    };
    let (first, rest) = phrase.split_first()?;
    if phrase.iter().any(|w| w == OVERLONG_TERM) {
        return None;
    }
    let first_is_prefix = *prefix && rest.is_empty();
    Some(token_ends(line, first, finder, first_is_prefix).any(|end| {
        // `end` is a token's end: the rest of the line cuts as the line does.
        let mut following = words(&line[end..]);
        rest.iter().enumerate().all(|(at, wanted)| {
            following.next().is_some_and(|word| {
                if *prefix && at == rest.len() - 1 {
                    word.starts_with(wanted.as_str())
                } else {
                    word == wanted
                }
            })
        })
    }))
}

fn line_matches(predicate: &Predicate, line: &[&str]) -> bool {
    match predicate {
        Predicate::Literal {
            words, slop, prefix, ..
        } => match (words.as_slice(), prefix) {
            ([], _) => false,
            ([word], false) => line.contains(&word.as_str()),
            ([word], true) => line.iter().any(|w| w.starts_with(word.as_str())),
            (_, _) => phrase_matches(line, words, *slop, *prefix),
        },
        Predicate::Set(elements) => line.iter().any(|w| elements.iter().any(|e| e == w)),
        Predicate::Range { lower, upper } => line.iter().any(|w| in_bounds(w, lower, upper)),
        Predicate::Regex { whole, .. } => line.iter().any(|w| whole.is_match(w)),
        Predicate::Exists => !line.is_empty(),
    }
}

fn in_bounds(value: &str, lower: &Bound<String>, upper: &Bound<String>) -> bool {
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

/// Whether `phrase` occurs in `line` in order with at most `slop` other
/// words between its words in all; the last word a prefix when `prefix`.
fn phrase_matches(line: &[&str], phrase: &[String], slop: u32, prefix: bool) -> bool {
    let last = phrase.len() - 1;
    let fits = |at: usize, word: usize| {
        if prefix && word == last {
            line[at].starts_with(phrase[word].as_str())
        } else {
            line[at] == phrase[word]
        }
    };
    if slop == 0 {
        return line.len() >= phrase.len()
            && (0..=line.len() - phrase.len()).any(|start| (0..phrase.len()).all(|word| fits(start + word, word)));
    }
    // spent[at]: the least slop spent to end the phrase's words so far at
    // word `at` of the line (lines have tens of words: quadratic is fine).
    let mut spent: Vec<Option<u32>> = (0..line.len()).map(|at| fits(at, 0).then_some(0)).collect();
    for word in 1..phrase.len() {
        spent = (0..line.len())
            .map(|at| {
                if !fits(at, word) {
                    return None;
                }
                (0..at)
                    .filter_map(|before| spent[before].map(|s| s + (at - before - 1) as u32))
                    .filter(|&s| s <= slop)
                    .min()
            })
            .collect();
    }
    spent.iter().any(Option::is_some)
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
            let words = tokens(&phrase);
            // A literal without words is dropped, as Tantivy's parser drops it.
            if target == Target::Line && words.is_empty() {
                return Ok(None);
            }
            Node::Leaf(
                target,
                Predicate::Literal {
                    text: phrase,
                    first: Box::new(memchr::memmem::Finder::new(words.first().map_or("", String::as_str)).into_owned()),
                    words,
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

/// Whether `node` speaks of labels only: then it holds for all of a
/// document's rows or for none (a document is one stream's rows), and its
/// index query is exact, so it may exclude.
fn labels_only(node: &Node) -> bool {
    match node {
        Node::All => true,
        Node::Leaf(target, _) => matches!(target, Target::Label(_)),
        Node::Clause(children) => children.iter().all(|(_, child)| labels_only(child)),
    }
}

/// The stream ids whose labels satisfy a label leaf.
fn label_query(name: &str, predicate: &Predicate, stream: Field, streams: &[&Labels]) -> Box<dyn Query> {
    let matcher = LabelMatcher::new(predicate);
    let ids = streams
        .iter()
        .enumerate()
        .filter(|(_, labels)| matcher.matches(labels.get(name)))
        .map(|(id, _)| Term::from_field_u64(stream, id as u64));
    Box::new(TermSetQuery::new(ids))
}

/// An index query holding for every document one of whose lines `node`
/// holds for (`None`: every document). Words hold for a document when one
/// of its lines has them, so a phrase becomes its words, and an exclusion
/// of words (which another line of the group may lack) is dropped; label
/// conditions are kept whole, exclusions included.
fn candidate_query(node: &Node, terms: &IndexTerms<'_>, streams: &[&Labels]) -> Result<Option<Box<dyn Query>>> {
    Ok(match node {
        Node::All => None,
        Node::Leaf(Target::Label(name), predicate) => Some(label_query(name, predicate, terms.stream, streams)),
        Node::Leaf(Target::Line, predicate) => line_candidates(predicate, terms)?,
        Node::Clause(children) => {
            let has_must = children.iter().any(|(occur, _)| *occur == Occur::Must);
            let has_should = children.iter().any(|(occur, _)| *occur == Occur::Should);
            if !has_must && !has_should {
                // Only exclusions: matches nothing, as in Tantivy.
                return Ok(Some(Box::new(EmptyQuery)));
            }
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            let mut shoulds: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            let mut any_should_unbounded = false;
            for (occur, child) in children {
                match occur {
                    Occur::Must => {
                        if let Some(query) = candidate_query(child, terms, streams)? {
                            clauses.push((Occur::Must, query));
                        }
                    }
                    // With a Must, Shoulds only rank; without, one must hold.
                    Occur::Should if !has_must => match candidate_query(child, terms, streams)? {
                        Some(query) => shoulds.push((Occur::Should, query)),
                        None => any_should_unbounded = true,
                    },
                    Occur::Should => {}
                    Occur::MustNot if labels_only(child) => {
                        let query = candidate_query(child, terms, streams)?.unwrap_or_else(|| Box::new(AllQuery));
                        clauses.push((Occur::MustNot, query));
                    }
                    Occur::MustNot => {}
                }
            }
            if !any_should_unbounded && !shoulds.is_empty() {
                clauses.push((Occur::Must, Box::new(BooleanQuery::new(shoulds))));
            }
            if clauses.is_empty() {
                return Ok(None);
            }
            if clauses.iter().all(|(occur, _)| *occur == Occur::MustNot) {
                // Tantivy finds nothing for exclusions alone: exclude from all.
                clauses.push((Occur::Must, Box::new(AllQuery)));
            }
            Some(Box::new(BooleanQuery::new(clauses)))
        }
    })
}

fn line_term(line: Field, word: &str) -> Term {
    Term::from_field_text(line, word)
}

fn index_error(error: impl std::fmt::Display) -> Error {
    Error::Task(format!("full-text index: building the query: {error}"))
}

/// The documents holding an id word `wanted` accepts, walking the list from
/// `from` until `past` says a word is beyond what `wanted` can accept.
fn id_word_query(
    terms: &IndexTerms<'_>,
    from: &str,
    mut wanted: impl FnMut(&str) -> bool,
    mut past: impl FnMut(&str) -> bool,
) -> Result<Box<dyn Query>> {
    let Some(ids) = terms.ids else {
        return Ok(Box::new(EmptyQuery));
    };
    let mut groups: Vec<u32> = Vec::new();
    ids.walk(from.as_bytes(), |word, found| {
        if past(word) {
            return Walk::Stop;
        }
        if wanted(word) {
            groups.extend_from_slice(found);
        }
        Walk::Continue
    })?;
    groups.sort_unstable();
    groups.dedup();
    let mut rows = Vec::with_capacity(groups.len());
    for group in groups {
        rows.push(Term::from_field_u64(terms.row, u64::from(ids.group_rows(group)?.start)));
    }
    if rows.is_empty() {
        return Ok(Box::new(EmptyQuery));
    }
    // A term set query runs an automaton over the whole dictionary of the
    // `row` field (one term per document: ~0.3 ms per 1M lines); a few
    // terms are cheaper looked up one by one.
    if rows.len() > ROW_TERMS_LOOKED_UP_ONE_BY_ONE {
        return Ok(Box::new(TermSetQuery::new(rows)));
    }
    Ok(any_of(
        rows.into_iter()
            .map(|row| Box::new(TermQuery::new(row, IndexRecordOption::Basic)) as Box<dyn Query>)
            .collect(),
    ))
}

/// Above this many documents, an id word lookup's documents are found by
/// one pass over the `row` dictionary rather than a lookup each.
const ROW_TERMS_LOOKED_UP_ONE_BY_ONE: usize = 64;

/// Documents matching any of `queries`.
fn any_of(queries: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    Box::new(BooleanQuery::new(
        queries.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

/// The documents whose lines may satisfy a line predicate. Id words are
/// looked up in the id word list, where the index has one (see
/// [`super::id_words`]); the other words are Tantivy terms.
fn line_candidates(predicate: &Predicate, terms: &IndexTerms<'_>) -> Result<Option<Box<dyn Query>>> {
    let line = terms.line;
    let has_ids = terms.ids.is_some();
    let word = |w: &str| -> Result<Box<dyn Query>> {
        if has_ids && is_id_word(w) {
            id_word_query(terms, w, |word| word == w, |word| word != w)
        } else {
            Ok(Box::new(TermQuery::new(line_term(line, w), IndexRecordOption::Basic)))
        }
    };
    Ok(Some(match predicate {
        Predicate::Literal { words, prefix, .. } => {
            // A phrase's words, each somewhere in the group; a final prefix
            // of several words is left to the lines (its expansions may be
            // many, and the other words narrow enough).
            let whole: &[String] = match (words.len(), prefix) {
                (0, _) => return Ok(Some(Box::new(EmptyQuery))),
                (1, true) => {
                    let prefix = words[0].as_str();
                    let pattern = format!("{}.*", regex::escape(prefix));
                    let terms_query: Box<dyn Query> =
                        Box::new(RegexQuery::from_pattern(&pattern, line).map_err(index_error)?);
                    if !has_ids || !may_be_in_id_word(prefix) {
                        return Ok(Some(terms_query));
                    }
                    let ids_query = id_word_query(terms, prefix, |_| true, |word| !word.starts_with(prefix))?;
                    return Ok(Some(any_of(vec![terms_query, ids_query])));
                }
                (_, true) => &words[..words.len() - 1],
                (_, false) => words,
            };
            let mut distinct: Vec<&String> = whole.iter().collect();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() == 1 {
                word(distinct[0])?
            } else {
                let mut clauses = Vec::with_capacity(distinct.len());
                for w in distinct {
                    clauses.push((Occur::Must, word(w)?));
                }
                Box::new(BooleanQuery::new(clauses))
            }
        }
        Predicate::Set(elements) => {
            let (ids, others): (Vec<&String>, Vec<&String>) = elements.iter().partition(|e| has_ids && is_id_word(e));
            let terms_query: Box<dyn Query> = Box::new(TermSetQuery::new(others.iter().map(|e| line_term(line, e))));
            if ids.is_empty() {
                terms_query
            } else {
                let mut queries = vec![terms_query];
                for id in ids {
                    queries.push(word(id)?);
                }
                any_of(queries)
            }
        }
        Predicate::Range { lower, upper } => {
            let term = |b: &Bound<String>| match b {
                Bound::Included(t) => Bound::Included(line_term(line, t)),
                Bound::Excluded(t) => Bound::Excluded(line_term(line, t)),
                Bound::Unbounded => Bound::Unbounded,
            };
            let terms_query: Box<dyn Query> = Box::new(RangeQuery::new(term(lower), term(upper)));
            if !has_ids {
                return Ok(Some(terms_query));
            }
            let from = match lower {
                Bound::Included(t) | Bound::Excluded(t) => t.as_str(),
                Bound::Unbounded => "",
            };
            let past = |word: &str| match upper {
                Bound::Included(t) => word > t.as_str(),
                Bound::Excluded(t) => word >= t.as_str(),
                Bound::Unbounded => false,
            };
            let ids_query = id_word_query(terms, from, |word| in_bounds(word, lower, upper), past)?;
            any_of(vec![terms_query, ids_query])
        }
        Predicate::Regex { pattern, whole } => {
            let terms_query: Box<dyn Query> = Box::new(RegexQuery::from_pattern(pattern, line).map_err(index_error)?);
            if !has_ids {
                return Ok(Some(terms_query));
            }
            let ids_query = id_word_query(terms, "", |word| whole.is_match(word), |_| false)?;
            any_of(vec![terms_query, ids_query])
        }
        // Nearly every line has a word: walking the whole dictionary to
        // find the few without would cost more than it saves.
        Predicate::Exists => return Ok(None),
    }))
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
            LabelMatcher::Range(lower, upper) => in_bounds(value, lower, upper),
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

    /// In-order positions of `phrase`'s words in `line` whose gaps add up
    /// to at most `slop`, found by trying every choice.
    fn phrase_by_enumeration(
        line: &[&str],
        phrase: &[String],
        slop: u32,
        prefix: bool,
        from: usize,
        word: usize,
        spent: u32,
    ) -> bool {
        if word == phrase.len() {
            return true;
        }
        (from..line.len()).any(|at| {
            let gap = if word == 0 { 0 } else { (at - from) as u32 };
            let fits = if prefix && word == phrase.len() - 1 {
                line[at].starts_with(phrase[word].as_str())
            } else {
                line[at] == phrase[word]
            };
            fits && spent + gap <= slop
                && phrase_by_enumeration(line, phrase, slop, prefix, at + 1, word + 1, spent + gap)
        })
    }

    proptest::proptest! {
        #[test]
        fn phrases_match_as_enumerating_every_choice_of_positions_does(
            line in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "ab", "c"]), 0..10),
            phrase in proptest::collection::vec(proptest::sample::select(vec!["a".to_string(), "b".to_string(), "c".to_string()]), 2..4),
            slop in 0u32..4,
            prefix: bool,
        ) {
            proptest::prop_assert_eq!(
                phrase_matches(&line, &phrase, slop, prefix),
                phrase_by_enumeration(&line, &phrase, slop, prefix, 0, 0, 0)
            );
        }
    }

    proptest::proptest! {
        /// The substring search for a word or phrase finds exactly what
        /// comparing the line's words does, around any characters.
        #[test]
        fn literals_found_by_substring_search_are_the_words_of_the_line(
            parts in proptest::collection::vec(proptest::sample::select(vec!["ab", "a", "b", "é", "ab_c", " ", "-", ".", "日本", "\u{301}", "x"]), 0..16),
            phrase in proptest::collection::vec(proptest::sample::select(vec!["a", "ab", "b", "é", "日本", "ab_c"]), 1..4),
            prefix: bool,
        ) {
            let line: String = parts.concat();
            let words_of_line: Vec<&str> = words(&line).collect();
            let predicate = Predicate::Literal {
                text: phrase.join(" "),
                first: Box::new(memchr::memmem::Finder::new(phrase[0]).into_owned()),
                words: phrase.iter().map(|w| w.to_string()).collect(),
                slop: 0,
                prefix,
            };
            proptest::prop_assert_eq!(literal_matches(&predicate, &line), Some(line_matches(&predicate, &words_of_line)));
        }
    }
}
