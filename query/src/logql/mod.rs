//! LogQL, Loki's query language: the grammar, the log pipeline and the
//! evaluator ([`evaluate`]).
//!
//! [`parse`] turns a query into an [`Expr`] or a [`ParseError`] worded and
//! positioned as Loki words them (`parse error at line 1, col 20: syntax
//! error: unexpected RANGE`), because Grafana shows those messages to users
//! verbatim. The tree prints back as canonical LogQL (`Display`), and what
//! it prints parses back to the same tree.
//!
//! The grammar is Loki's (`pkg/logql/syntax/syntax.y`), including the checks
//! Loki makes right after parsing — a stream selector needs a matcher that
//! cannot match the empty string, `count_over_time` takes no `unwrap`,
//! `topk` needs an integer `k` — since Loki reports those as parse errors too.

pub mod ast;
pub(crate) mod conv;
pub mod detect;
mod eval;
mod json;
mod lexer;
mod live;
mod parser;
pub mod pipeline;
mod template;

use std::fmt;

pub use ast::*;
pub use eval::{
    DEFAULT_MAX_SAMPLES, ERR_INSTANT_LOG_QUERY, LogQueryParams, LogQueryResult, MatrixSeries, StreamResult,
    VectorSample, evaluate,
};
pub use live::LiveFilter;
pub use parser::MAX_INPUT_SIZE;

/// Parses a LogQL query (a log query or a metric query).
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    parser::parse(input)
}

/// Where a syntax error was found: 1-based line and column, the column
/// counted in characters as Loki (Go's `text/scanner`) counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// A query Loki would refuse to parse, with Loki's message.
///
/// Syntax and lexical errors carry the position of the offending token.
/// Errors found when checking the parsed tree (an invalid regex, a missing
/// `unwrap`, …) have none, as in Loki, whose text then reads
/// `parse error : <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    message: String,
    position: Option<Position>,
}

impl ParseError {
    pub(crate) fn at(position: Position, message: impl Into<String>) -> Self {
        ParseError {
            message: message.into(),
            position: Some(position),
        }
    }

    pub(crate) fn unpositioned(message: impl Into<String>) -> Self {
        ParseError {
            message: message.into(),
            position: None,
        }
    }

    /// The message without the `parse error …:` prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn position(&self) -> Option<Position> {
        self.position
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, column }) => {
                write!(f, "parse error at line {line}, col {column}: {}", self.message)
            }
            None => write!(f, "parse error : {}", self.message),
        }
    }
}

/// A query that does not parse is the client's mistake: a 400 with Loki's text.
impl From<ParseError> for crate::error::Error {
    fn from(error: ParseError) -> Self {
        crate::error::Error::bad_data(error.to_string())
    }
}
