//! Request parameters as Prometheus reads them: from the query string and, for
//! form-encoded POSTs, the body; times as float seconds or RFC 3339; durations
//! as float seconds or Prometheus duration strings.

use std::collections::HashMap;

use promql_parser::label::MatchOp as ParserMatchOp;
use promql_parser::parser::Expr;
use tidewatch_model::{MatchOp, Matcher, TimestampMs};

use crate::error::Error;

/// The earliest and latest times Prometheus accepts as "no bound" (its
/// `minTime`/`maxTime`, whole seconds so they survive a float round trip).
pub const MIN_TIME_MS: TimestampMs = -9_223_309_901_257_974_000;
pub const MAX_TIME_MS: TimestampMs = 9_223_309_901_257_974_000;

/// Parameters of one request, each name holding every value given.
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, Vec<String>>,
}

impl Params {
    /// Reads the query string and, when the body is a form, the body.
    pub fn from_request(query: Option<&str>, form_body: Option<&[u8]>) -> Params {
        let mut params = Params::default();
        if let Some(query) = query {
            params.extend(query.as_bytes());
        }
        if let Some(body) = form_body {
            params.extend(body);
        }
        params
    }

    fn extend(&mut self, encoded: &[u8]) {
        for (name, value) in form_urlencoded::parse(encoded) {
            self.values
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
    }

    /// The first value of `name`, if given and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// A time parameter, or `default` when absent.
    pub fn time(&self, name: &str, default: TimestampMs) -> Result<TimestampMs, Error> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => parse_time(raw).ok_or_else(|| {
                Error::bad_data(format!(
                    "invalid parameter {name:?}: cannot parse {raw:?} to a valid timestamp"
                ))
            }),
        }
    }

    /// A duration parameter in milliseconds.
    pub fn duration(&self, name: &str) -> Result<Option<i64>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => parse_duration(raw).map(Some).ok_or_else(|| {
                Error::bad_data(format!(
                    "invalid parameter {name:?}: cannot parse {raw:?} to a valid duration"
                ))
            }),
        }
    }

    /// A non-negative integer `limit`; 0 or absent means no limit.
    pub fn limit(&self) -> Result<Option<usize>, Error> {
        match self.get("limit") {
            None => Ok(None),
            Some(raw) => match raw.parse::<i64>() {
                Ok(0) => Ok(None),
                Ok(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(Error::bad_data(format!("limit must be a positive number, got {raw:?}"))),
            },
        }
    }
}

/// Float seconds (`1700000000.123`) or RFC 3339 (`2023-11-14T22:13:20Z`).
pub fn parse_time(raw: &str) -> Option<TimestampMs> {
    if let Ok(seconds) = raw.parse::<f64>() {
        if !seconds.is_finite() {
            return None;
        }
        let ms = (seconds * 1000.0).round();
        // Out-of-range seconds clamp the way Prometheus' min/max times do.
        return Some(ms.clamp(MIN_TIME_MS as f64, MAX_TIME_MS as f64) as TimestampMs);
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Float seconds (`15`, `0.5`) or a Prometheus duration (`5m`, `1h30m`).
pub fn parse_duration(raw: &str) -> Option<i64> {
    if let Ok(seconds) = raw.parse::<f64>() {
        if !seconds.is_finite() || seconds.abs() > (i64::MAX / 1000) as f64 {
            return None;
        }
        return Some((seconds * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(raw)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

/// Converts a parser matcher to ours.
pub fn convert_matcher(matcher: &promql_parser::label::Matcher) -> Result<Matcher, Error> {
    let op = match matcher.op {
        ParserMatchOp::Equal => MatchOp::Equal,
        ParserMatchOp::NotEqual => MatchOp::NotEqual,
        ParserMatchOp::Re(_) => MatchOp::RegexMatch,
        ParserMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
    };
    Matcher::new(op, matcher.name.clone(), matcher.value.clone()).map_err(|e| Error::bad_data(e.to_string()))
}

/// The matcher sets of a selector: one set, or several for `{a="1" or b="2"}`.
pub fn selector_matchers(selector: &promql_parser::parser::VectorSelector) -> Result<Vec<Vec<Matcher>>, Error> {
    let mut base = Vec::new();
    for matcher in &selector.matchers.matchers {
        base.push(convert_matcher(matcher)?);
    }
    let name_matcher = selector
        .name
        .as_ref()
        .map(|name| Matcher::equal(tidewatch_model::METRIC_NAME, name.clone()));
    let with_name = |mut set: Vec<Matcher>| {
        if let Some(name) = &name_matcher
            && !set.iter().any(|m| m == name)
        {
            set.push(name.clone());
        }
        set
    };
    if selector.matchers.or_matchers.is_empty() {
        return Ok(vec![with_name(base)]);
    }
    let mut sets = Vec::new();
    for group in &selector.matchers.or_matchers {
        let mut set = base.clone();
        for matcher in group {
            set.push(convert_matcher(matcher)?);
        }
        sets.push(with_name(set));
    }
    Ok(sets)
}

/// Parses a `match[]` value: it must be a plain series selector.
pub fn parse_match_param(raw: &str) -> Result<Vec<Vec<Matcher>>, Error> {
    let expr = promql_parser::parser::parse(raw)
        .map_err(|e| Error::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
    let Expr::VectorSelector(selector) = expr else {
        return Err(Error::bad_data(format!(
            "invalid parameter \"match[]\": {raw:?} is not a series selector"
        )));
    };
    let sets = selector_matchers(&selector)?;
    for set in &sets {
        if set.iter().all(Matcher::matches_empty) {
            return Err(Error::bad_data(
                "invalid parameter \"match[]\": match[] must contain at least one non-empty matcher",
            ));
        }
    }
    Ok(sets)
}

/// Every `match[]` of the request, flattened into alternative matcher sets.
pub fn match_sets(params: &Params) -> Result<Vec<Vec<Matcher>>, Error> {
    let mut sets = Vec::new();
    for raw in params.all("match[]") {
        sets.extend(parse_match_param(raw)?);
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(parse_time("1.5"), Some(1500));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z"), Some(1_435_781_451_781));
        assert_eq!(parse_time("2015-07-01T22:10:51.781+02:00"), Some(1_435_781_451_781));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("NaN"), None);
        assert_eq!(parse_duration("5m"), Some(300_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("15"), Some(15_000));
        assert_eq!(parse_duration("abc"), None);
    }

    #[test]
    fn match_params() {
        let sets = parse_match_param(r#"up{job=~"a|b"}"#).unwrap();
        assert_eq!(sets.len(), 1);
        assert!(sets[0].iter().any(|m| m.name == "__name__" && m.value == "up"));
        assert!(parse_match_param(r#"{job=""}"#).is_err());
        assert!(parse_match_param("sum(up)").is_err());
        assert!(parse_match_param("up{").is_err());
    }

    #[test]
    fn params_merge_query_and_form() {
        let params = Params::from_request(Some("match[]=a&limit=5"), Some(b"match[]=b&time=3"));
        assert_eq!(params.all("match[]"), ["a", "b"]);
        assert_eq!(params.limit().unwrap(), Some(5));
        assert_eq!(params.time("time", 0).unwrap(), 3000);
        assert!(Params::from_request(Some("limit=-1"), None).limit().is_err());
    }
}
