//! Query parameters of Loki's HTTP API, read the way Loki reads them.
//!
//! Times are nanosecond integers, seconds (ten digits or fewer, or with a
//! fraction), or RFC 3339; ranges default to the last hour before `end`
//! (or before now, when `end` lies in the future); steps are float seconds
//! or Prometheus durations. Grafana sends every one of these spellings.

use chrono::DateTime;
use tidewatch_model::logs::{Direction, TimestampNs};

use crate::error::Error;

/// Entries a log query returns unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// How far back a range reaches when `start` is missing.
pub const DEFAULT_SINCE_NS: i64 = 3_600 * 1_000_000_000;

const NS_PER_SECOND: i64 = 1_000_000_000;

/// A timestamp parameter: `None` when absent or empty.
pub fn parse_time(name: &str, value: Option<&str>) -> Result<Option<TimestampNs>, Error> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        Error::bad_data(format!(
            "could not parse '{name}' parameter: invalid timestamp {value:?}"
        ))
    };
    if value.contains('.')
        && let Ok(seconds) = value.parse::<f64>()
    {
        if !seconds.is_finite() || seconds.abs() > (i64::MAX / NS_PER_SECOND) as f64 {
            return Err(bad());
        }
        // Loki keeps milliseconds of a fractional second.
        let whole = seconds.trunc();
        let millis = ((seconds - whole) * 1000.0).round();
        return Ok(Some(whole as i64 * NS_PER_SECOND + millis as i64 * 1_000_000));
    }
    if let Ok(number) = value.parse::<i64>() {
        // Ten digits or fewer are seconds (Unix time in seconds has ten digits until 2286).
        if value.trim_start_matches('-').len() <= 10 {
            return number.checked_mul(NS_PER_SECOND).map(Some).ok_or_else(bad);
        }
        return Ok(Some(number));
    }
    let parsed = DateTime::parse_from_rfc3339(value).map_err(|_| bad())?;
    parsed.timestamp_nanos_opt().map(Some).ok_or_else(bad)
}

/// `start` and `end` of a range request, with Loki's defaults: `end` is now,
/// `start` is `since` (default one hour) before `end` or now, whichever is
/// earlier.
pub fn parse_bounds(
    start: Option<&str>,
    end: Option<&str>,
    since: Option<&str>,
    now: TimestampNs,
) -> Result<(TimestampNs, TimestampNs), Error> {
    let since = match since.filter(|s| !s.is_empty()) {
        Some(since) => parse_prometheus_duration_ns(since)
            .ok_or_else(|| Error::bad_data(format!("could not parse 'since' parameter: invalid duration {since:?}")))?,
        None => DEFAULT_SINCE_NS,
    };
    let end = parse_time("end", end)?.unwrap_or(now);
    let start = match parse_time("start", start)? {
        Some(start) => start,
        None => end.min(now).saturating_sub(since),
    };
    Ok((start, end))
}

/// `step` (or `interval`): float seconds or a Prometheus duration, in ns.
pub fn parse_step(name: &str, value: &str) -> Result<i64, Error> {
    if let Ok(seconds) = value.parse::<f64>() {
        let ns = seconds * NS_PER_SECOND as f64;
        if !ns.is_finite() || ns.abs() > i64::MAX as f64 {
            return Err(Error::bad_data(format!(
                "cannot parse {value:?} to a valid duration. It overflows int64"
            )));
        }
        return Ok(ns as i64);
    }
    parse_prometheus_duration_ns(value)
        .ok_or_else(|| Error::bad_data(format!("invalid {name}: cannot parse {value:?} to a valid duration")))
}

/// The step a range query takes when none is given: a 250th of the range,
/// whole seconds, at least one.
pub fn default_step(start: TimestampNs, end: TimestampNs) -> i64 {
    let seconds = ((end - start) as f64 / NS_PER_SECOND as f64 / 250.0).floor().max(1.0);
    seconds as i64 * NS_PER_SECOND
}

/// `limit`: a positive count, [`DEFAULT_LIMIT`] when absent.
pub fn parse_limit(value: Option<&str>) -> Result<usize, Error> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_LIMIT);
    };
    let limit: i64 = value
        .parse()
        .map_err(|_| Error::bad_data(format!("invalid limit {value:?}: not an integer")))?;
    if limit <= 0 {
        return Err(Error::bad_data("limit must be a positive value"));
    }
    usize::try_from(limit).map_err(|_| Error::bad_data(format!("limit value {limit} is out of range")))
}

/// `direction`: `forward` or `backward` in any case; backward by default.
pub fn parse_direction(value: Option<&str>) -> Result<Direction, Error> {
    match value.filter(|v| !v.is_empty()).map(str::to_ascii_uppercase).as_deref() {
        None | Some("BACKWARD") => Ok(Direction::Backward),
        Some("FORWARD") => Ok(Direction::Forward),
        Some(_) => Err(Error::bad_data(format!(
            "invalid direction '{}'",
            value.unwrap_or_default()
        ))),
    }
}

/// A Prometheus duration (`1h30m`, `5m`, `250ms`, `2d`, `1w`, `1y`) in ns,
/// read by the same parser PromQL's parameters use.
pub fn parse_prometheus_duration_ns(value: &str) -> Option<i64> {
    // Prometheus' `model.ParseDuration` (what Loki calls) wants a unit;
    // promql-parser also reads a bare number as seconds.
    if value != "0" && value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    promql_parser::util::parse_duration(value)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_spelling_loki_reads() {
        let t = |v: &str| parse_time("t", Some(v)).unwrap().unwrap();
        assert_eq!(t("4000000000"), 4_000_000_000 * NS_PER_SECOND, "ten digits are seconds");
        assert_eq!(t("1700000000123456789"), 1_700_000_000_123_456_789);
        assert_eq!(t("1700000000.25"), 1_700_000_000_250_000_000);
        assert_eq!(t("1700000000.0004"), 1_700_000_000_000_000_000, "milliseconds are kept");
        assert_eq!(t("2026-01-01T00:00:00Z"), 1_767_225_600 * NS_PER_SECOND);
        assert_eq!(
            t("2026-01-01T00:00:00.5+01:00"),
            1_767_222_000 * NS_PER_SECOND + 500_000_000
        );
        assert_eq!(parse_time("t", Some("")).unwrap(), None);
        let err = parse_time("start", Some("yesterday")).unwrap_err().to_string();
        assert!(err.contains("'start'") && err.contains("yesterday"), "{err}");
    }

    #[test]
    fn bounds_default_to_the_hour_before_end_or_now() {
        let now = 10_000 * NS_PER_SECOND;
        assert_eq!(
            parse_bounds(None, None, None, now).unwrap(),
            (now - DEFAULT_SINCE_NS, now)
        );
        let future = Some("20000");
        assert_eq!(
            parse_bounds(None, future, None, now).unwrap(),
            (now - DEFAULT_SINCE_NS, 20_000 * NS_PER_SECOND),
            "a future end counts back from now"
        );
        assert_eq!(
            parse_bounds(None, Some("5000"), Some("10m"), now).unwrap(),
            (4_400 * NS_PER_SECOND, 5_000 * NS_PER_SECOND)
        );
        assert!(parse_bounds(None, None, Some("soon"), now).is_err());
    }

    #[test]
    fn steps_limits_and_directions() {
        assert_eq!(parse_step("step", "15").unwrap(), 15 * NS_PER_SECOND);
        assert_eq!(parse_step("step", "0.5").unwrap(), NS_PER_SECOND / 2);
        assert_eq!(parse_step("step", "1m30s").unwrap(), 90 * NS_PER_SECOND);
        assert!(parse_step("step", "1e300").is_err());
        assert!(parse_step("step", "fast").is_err());
        assert_eq!(default_step(0, 3_600 * NS_PER_SECOND), 14 * NS_PER_SECOND);
        assert_eq!(default_step(0, 10 * NS_PER_SECOND), NS_PER_SECOND);
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("5000")).unwrap(), 5000);
        assert!(parse_limit(Some("0")).is_err());
        assert!(parse_limit(Some("-3")).is_err());
        assert!(parse_limit(Some("ten")).is_err());
        assert_eq!(parse_direction(Some("forward")).unwrap(), Direction::Forward);
        assert_eq!(parse_direction(Some("BACKWARD")).unwrap(), Direction::Backward);
        assert_eq!(parse_direction(None).unwrap(), Direction::Backward);
        assert_eq!(
            parse_direction(Some("up")).unwrap_err().to_string(),
            "invalid direction 'up'"
        );
    }

    #[test]
    fn prometheus_durations() {
        let d = parse_prometheus_duration_ns;
        assert_eq!(d("5m"), Some(300 * NS_PER_SECOND));
        assert_eq!(d("1h30m"), Some(5_400 * NS_PER_SECOND));
        assert_eq!(d("250ms"), Some(250_000_000));
        assert_eq!(d("1m500ms"), Some(60_500_000_000));
        assert_eq!(d("1w2d"), Some(9 * 86_400 * NS_PER_SECOND));
        assert_eq!(d("30m1h"), None, "units must decrease");
        assert_eq!(d("5"), None);
        assert_eq!(d("m"), None);
        assert_eq!(d(""), None);
    }
}
