//! Go's `time.Time` as templates see it: formatting and parsing with Go's
//! reference-time layouts (`2006-01-02 15:04:05.999999999 -0700 MST`).
//!
//! Loki's date functions (`date`, `toDate`, `toDateInZone`, `__timestamp__`)
//! hand users Go layouts, so queries written for Loki must format the same
//! here. The layout is split into chunks exactly where Go splits it, then
//! each chunk is written or read.
//!
//! Time zones: a Loki server formats in its local zone, which is UTC in the
//! usual container image; Tidewatch always treats "Local" as UTC so output
//! does not depend on the host. Named IANA zones other than UTC are not
//! available (no zone database is bundled) and fall back to UTC, which is
//! what Loki does for a zone name it cannot load.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, Timelike};

/// Seconds from 0001-01-01 to 1970-01-01: Go's zero `time.Time` is year 1.
const ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// A point in time with the zone it is shown in.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GoTime {
    /// Seconds since the Unix epoch (UTC).
    pub(super) secs: i64,
    /// Nanoseconds within the second, `0..1e9`.
    pub(super) nanos: u32,
    /// Offset east of UTC, in seconds.
    pub(super) offset: i32,
    /// Zone abbreviation; empty for a fixed offset read from text, which Go
    /// prints as the numeric offset.
    pub(super) zone: &'static str,
}

impl GoTime {
    /// Go's `time.Time{}`: 0001-01-01 00:00:00 UTC, what a failed `toDate` returns.
    pub(super) fn zero() -> GoTime {
        GoTime {
            secs: ZERO_TIME_UNIX,
            nanos: 0,
            offset: 0,
            zone: "UTC",
        }
    }

    /// `time.Unix(0, ns)` in UTC.
    pub(super) fn from_unix_nanos(ns: i64) -> GoTime {
        GoTime {
            secs: ns.div_euclid(1_000_000_000),
            nanos: ns.rem_euclid(1_000_000_000) as u32,
            offset: 0,
            zone: "UTC",
        }
    }

    pub(super) fn from_unix(secs: i64, nanos: i64) -> GoTime {
        let extra = nanos.div_euclid(1_000_000_000);
        GoTime {
            secs: secs.saturating_add(extra),
            nanos: nanos.rem_euclid(1_000_000_000) as u32,
            offset: 0,
            zone: "UTC",
        }
    }

    pub(super) fn unix(&self) -> i64 {
        self.secs
    }

    /// Go's `UnixNano`: wraps silently outside ±292 years like Go's does.
    pub(super) fn unix_nanos(&self) -> i64 {
        self.secs
            .wrapping_mul(1_000_000_000)
            .wrapping_add(i64::from(self.nanos))
    }

    pub(super) fn unix_millis(&self) -> i64 {
        self.secs
            .saturating_mul(1000)
            .saturating_add(i64::from(self.nanos / 1_000_000))
    }

    /// The same instant shown in UTC, as Go's `In(time.UTC)`.
    pub(super) fn in_utc(&self) -> GoTime {
        GoTime {
            offset: 0,
            zone: "UTC",
            ..self.clone()
        }
    }

    /// Wall-clock fields in the time's own zone; `None` only beyond chrono's
    /// ±262143-year range, which callers treat like Go's overflow (year 0).
    fn civil(&self) -> Option<chrono::NaiveDateTime> {
        let local = self.secs.checked_add(i64::from(self.offset))?;
        DateTime::from_timestamp(local, self.nanos).map(|t| t.naive_utc())
    }

    /// `Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`.
    pub(super) fn to_go_string(&self) -> String {
        format(self, "2006-01-02 15:04:05.999999999 -0700 MST")
    }
}

/// One piece of a Go layout.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk<'a> {
    Literal(&'a str),
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PmUpper,
    PmLower,
    /// `MST`
    Tz,
    /// Offsets: `Z` variants print `Z` for UTC; `colon` and `parts` say
    /// how many fields (1 = hours, 2 = hh mm, 3 = hh mm ss).
    Offset {
        iso: bool,
        colon: bool,
        parts: u8,
    },
    /// `.000` (`zeros`) or `.999` (trailing zeros dropped); `sep` is `.` or `,`.
    Frac {
        digits: usize,
        zeros: bool,
        sep: char,
    },
}

/// Splits a layout where Go's `nextStdChunk` does.
fn chunks(layout: &str) -> Vec<Chunk<'_>> {
    let bytes = layout.as_bytes();
    let mut out = Vec::new();
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &layout[i..];
        let found: Option<(Chunk<'_>, usize)> = match bytes[i] {
            b'J' if rest.starts_with("January") => Some((Chunk::LongMonth, 7)),
            b'J' if rest.starts_with("Jan") => Some((Chunk::Month, 3)),
            b'M' if rest.starts_with("Monday") => Some((Chunk::LongWeekDay, 6)),
            b'M' if rest.starts_with("Mon") => Some((Chunk::WeekDay, 3)),
            b'M' if rest.starts_with("MST") => Some((Chunk::Tz, 3)),
            b'0' if rest.starts_with("002") => Some((Chunk::ZeroYearDay, 3)),
            b'0' if rest.len() >= 2 && (b'1'..=b'6').contains(&bytes[i + 1]) => {
                let chunk = match bytes[i + 1] {
                    b'1' => Chunk::ZeroMonth,
                    b'2' => Chunk::ZeroDay,
                    b'3' => Chunk::ZeroHour12,
                    b'4' => Chunk::ZeroMinute,
                    b'5' => Chunk::ZeroSecond,
                    _ => Chunk::Year,
                };
                Some((chunk, 2))
            }
            b'1' if rest.starts_with("15") => Some((Chunk::Hour, 2)),
            b'1' => Some((Chunk::NumMonth, 1)),
            b'2' if rest.starts_with("2006") => Some((Chunk::LongYear, 4)),
            b'2' => Some((Chunk::Day, 1)),
            b'_' if rest.starts_with("_2") => {
                // "_2006" is a literal underscore and a year, as in Go.
                if rest.starts_with("_2006") {
                    out.push(Chunk::Literal(&layout[literal_start..i + 1]));
                    literal_start = i + 1;
                    i += 1;
                    continue;
                }
                Some((Chunk::UnderDay, 2))
            }
            b'_' if rest.starts_with("__2") => Some((Chunk::UnderYearDay, 3)),
            b'3' => Some((Chunk::Hour12, 1)),
            b'4' => Some((Chunk::Minute, 1)),
            b'5' => Some((Chunk::Second, 1)),
            b'P' if rest.starts_with("PM") => Some((Chunk::PmUpper, 2)),
            b'p' if rest.starts_with("pm") => Some((Chunk::PmLower, 2)),
            b'-' | b'Z' => offset_chunk(rest),
            b'.' | b',' => frac_chunk(rest),
            _ => None,
        };
        match found {
            Some((chunk, len)) => {
                if literal_start < i {
                    out.push(Chunk::Literal(&layout[literal_start..i]));
                }
                out.push(chunk);
                i += len;
                literal_start = i;
            }
            None => i += 1,
        }
    }
    if literal_start < layout.len() {
        out.push(Chunk::Literal(&layout[literal_start..]));
    }
    out
}

fn offset_chunk(rest: &str) -> Option<(Chunk<'static>, usize)> {
    let iso = rest.starts_with('Z');
    let body = &rest[1..];
    // Longest first, as Go checks them.
    let forms: [(&str, bool, u8); 5] = [
        ("07:00:00", true, 3),
        ("070000", false, 3),
        ("07:00", true, 2),
        ("0700", false, 2),
        ("07", false, 1),
    ];
    for (form, colon, parts) in forms {
        if body.starts_with(form) {
            return Some((Chunk::Offset { iso, colon, parts }, 1 + form.len()));
        }
    }
    None
}

fn frac_chunk(rest: &str) -> Option<(Chunk<'static>, usize)> {
    let bytes = rest.as_bytes();
    let digit = *bytes.get(1)?;
    if digit != b'0' && digit != b'9' {
        return None;
    }
    let mut j = 1;
    while j < bytes.len() && bytes[j] == digit {
        j += 1;
    }
    // "..0001" style runs followed by a digit are not fractions (Go: `!isDigit`).
    if bytes.get(j).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let sep = if bytes[0] == b',' { ',' } else { '.' };
    Some((
        Chunk::Frac {
            digits: j - 1,
            zeros: digit == b'0',
            sep,
        },
        j,
    ))
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// `Time.Format(layout)`.
pub(super) fn format(time: &GoTime, layout: &str) -> String {
    let mut out = String::with_capacity(layout.len() + 10);
    let Some(civil) = time.civil() else {
        // Beyond any calendar chrono knows; Go would print a wrapped year.
        return layout.to_string();
    };
    let year = civil.year();
    let month = civil.month() as usize;
    let day = civil.day();
    let hour = civil.hour();
    for chunk in chunks(layout) {
        match chunk {
            Chunk::Literal(text) => out.push_str(text),
            Chunk::LongMonth => out.push_str(LONG_MONTHS[month - 1]),
            Chunk::Month => out.push_str(&LONG_MONTHS[month - 1][..3]),
            Chunk::NumMonth => push_num(&mut out, month as i64, 0, '0'),
            Chunk::ZeroMonth => push_num(&mut out, month as i64, 2, '0'),
            Chunk::LongWeekDay => out.push_str(LONG_DAYS[civil.weekday().num_days_from_sunday() as usize]),
            Chunk::WeekDay => out.push_str(&LONG_DAYS[civil.weekday().num_days_from_sunday() as usize][..3]),
            Chunk::Day => push_num(&mut out, i64::from(day), 0, '0'),
            Chunk::UnderDay => push_num(&mut out, i64::from(day), 2, ' '),
            Chunk::ZeroDay => push_num(&mut out, i64::from(day), 2, '0'),
            Chunk::UnderYearDay => push_num(&mut out, i64::from(civil.ordinal()), 3, ' '),
            Chunk::ZeroYearDay => push_num(&mut out, i64::from(civil.ordinal()), 3, '0'),
            Chunk::Hour => push_num(&mut out, i64::from(hour), 2, '0'),
            Chunk::Hour12 | Chunk::ZeroHour12 => {
                let h12 = match hour % 12 {
                    0 => 12,
                    h => h,
                };
                let width = if chunk == Chunk::Hour12 { 0 } else { 2 };
                push_num(&mut out, i64::from(h12), width, '0');
            }
            Chunk::Minute => push_num(&mut out, i64::from(civil.minute()), 0, '0'),
            Chunk::ZeroMinute => push_num(&mut out, i64::from(civil.minute()), 2, '0'),
            Chunk::Second => push_num(&mut out, i64::from(civil.second()), 0, '0'),
            Chunk::ZeroSecond => push_num(&mut out, i64::from(civil.second()), 2, '0'),
            Chunk::LongYear => push_num(&mut out, i64::from(year), 4, '0'),
            Chunk::Year => push_num(&mut out, i64::from(year.rem_euclid(100)), 2, '0'),
            Chunk::PmUpper => out.push_str(if hour >= 12 { "PM" } else { "AM" }),
            Chunk::PmLower => out.push_str(if hour >= 12 { "pm" } else { "am" }),
            Chunk::Tz => {
                if time.zone.is_empty() {
                    let minutes = time.offset / 60;
                    out.push(if minutes < 0 { '-' } else { '+' });
                    push_num(&mut out, i64::from(minutes.abs() / 60), 2, '0');
                    push_num(&mut out, i64::from(minutes.abs() % 60), 2, '0');
                } else {
                    out.push_str(time.zone);
                }
            }
            Chunk::Offset { iso, colon, parts } => {
                if iso && time.offset == 0 {
                    out.push('Z');
                    continue;
                }
                let abs = time.offset.abs();
                out.push(if time.offset < 0 { '-' } else { '+' });
                push_num(&mut out, i64::from(abs / 3600), 2, '0');
                if parts >= 2 {
                    if colon {
                        out.push(':');
                    }
                    push_num(&mut out, i64::from(abs / 60 % 60), 2, '0');
                }
                if parts == 3 {
                    if colon {
                        out.push(':');
                    }
                    push_num(&mut out, i64::from(abs % 60), 2, '0');
                }
            }
            Chunk::Frac { digits, zeros, sep } => push_frac(&mut out, time.nanos, digits, zeros, sep),
        }
    }
    out
}

fn push_num(out: &mut String, value: i64, width: usize, pad: char) {
    if value < 0 {
        out.push('-');
    }
    let digits = value.unsigned_abs().to_string();
    for _ in digits.len()..width {
        out.push(pad);
    }
    out.push_str(&digits);
}

fn push_frac(out: &mut String, nanos: u32, digits: usize, zeros: bool, sep: char) {
    let mut text = String::with_capacity(9);
    let _ = write!(text, "{nanos:09}");
    text.truncate(digits.min(9));
    while text.len() < digits {
        text.push('0');
    }
    if !zeros {
        let trimmed = text.trim_end_matches('0');
        if trimmed.is_empty() {
            return;
        }
        text.truncate(trimmed.len());
    }
    out.push(sep);
    out.push_str(&text);
}

/// `time.ParseInLocation(layout, value, UTC)`. Errors carry no text: every
/// Loki caller (`toDate`, `toDateInZone`) drops them and uses the zero time.
pub(super) fn parse(layout: &str, value: &str) -> Option<GoTime> {
    let mut rest = value;
    let mut year: i64 = 1;
    let mut month: u32 = 1;
    let mut day: u32 = 1;
    let mut year_day: Option<u32> = None;
    let mut hour: u32 = 0;
    let mut minute: u32 = 0;
    let mut second: u32 = 0;
    let mut nanos: u32 = 0;
    let mut pm: Option<bool> = None;
    let mut offset: Option<i32> = None;
    let mut zone_name: Option<&'static str> = None;
    let layout_chunks = chunks(layout);
    for (index, chunk) in layout_chunks.iter().enumerate() {
        match *chunk {
            Chunk::Literal(text) => {
                rest = skip_literal(rest, text)?;
            }
            Chunk::LongYear => {
                let (digits, tail) = take_digits(rest, 4, 4)?;
                year = digits;
                rest = tail;
            }
            Chunk::Year => {
                let (digits, tail) = take_digits(rest, 2, 2)?;
                year = if digits >= 69 { 1900 + digits } else { 2000 + digits };
                rest = tail;
            }
            Chunk::LongMonth | Chunk::Month => {
                let (found, tail) = take_name(rest, &LONG_MONTHS, *chunk == Chunk::Month)?;
                month = found as u32 + 1;
                rest = tail;
            }
            Chunk::LongWeekDay | Chunk::WeekDay => {
                // Read and ignored: the date decides the weekday, as in Go.
                let (_, tail) = take_name(rest, &LONG_DAYS, *chunk == Chunk::WeekDay)?;
                rest = tail;
            }
            Chunk::NumMonth | Chunk::ZeroMonth => {
                let min = if *chunk == Chunk::ZeroMonth { 2 } else { 1 };
                let (digits, tail) = take_digits(rest, min, 2)?;
                month = u32::try_from(digits).ok()?;
                rest = tail;
            }
            Chunk::Day | Chunk::UnderDay | Chunk::ZeroDay => {
                if *chunk == Chunk::UnderDay {
                    rest = rest.strip_prefix(' ').unwrap_or(rest);
                }
                let min = if *chunk == Chunk::ZeroDay { 2 } else { 1 };
                let (digits, tail) = take_digits(rest, min, 2)?;
                day = u32::try_from(digits).ok()?;
                rest = tail;
            }
            Chunk::UnderYearDay | Chunk::ZeroYearDay => {
                if *chunk == Chunk::UnderYearDay {
                    rest = rest.trim_start_matches(' ');
                }
                let (digits, tail) = take_digits(rest, 1, 3)?;
                year_day = Some(u32::try_from(digits).ok()?);
                rest = tail;
            }
            Chunk::Hour => {
                let (digits, tail) = take_digits(rest, 1, 2)?;
                hour = u32::try_from(digits).ok()?;
                rest = tail;
            }
            Chunk::Hour12 | Chunk::ZeroHour12 => {
                let min = if *chunk == Chunk::ZeroHour12 { 2 } else { 1 };
                let (digits, tail) = take_digits(rest, min, 2)?;
                hour = u32::try_from(digits).ok()?;
                if hour > 12 {
                    return None;
                }
                rest = tail;
            }
            Chunk::Minute | Chunk::ZeroMinute => {
                let min = if *chunk == Chunk::ZeroMinute { 2 } else { 1 };
                let (digits, tail) = take_digits(rest, min, 2)?;
                minute = u32::try_from(digits).ok()?;
                rest = tail;
            }
            Chunk::Second | Chunk::ZeroSecond => {
                let min = if *chunk == Chunk::ZeroSecond { 2 } else { 1 };
                let (digits, tail) = take_digits(rest, min, 2)?;
                second = u32::try_from(digits).ok()?;
                rest = tail;
                // Go reads a fraction after the seconds even when the layout
                // has none, unless the layout's next chunk is a fraction itself.
                let next_is_frac = matches!(layout_chunks.get(index + 1), Some(Chunk::Frac { .. }));
                if !next_is_frac && rest.len() >= 2 {
                    let bytes = rest.as_bytes();
                    if (bytes[0] == b'.' || bytes[0] == b',') && bytes[1].is_ascii_digit() {
                        let (value, tail) = take_fraction(&rest[1..])?;
                        nanos = value;
                        rest = tail;
                    }
                }
            }
            Chunk::Frac { digits, zeros, .. } => {
                let bytes = rest.as_bytes();
                if bytes.first().is_some_and(|b| *b == b'.' || *b == b',') {
                    let (value, tail) = take_fraction(&rest[1..])?;
                    if zeros && rest.len() - tail.len() - 1 != digits {
                        return None;
                    }
                    nanos = value;
                    rest = tail;
                } else if zeros {
                    return None;
                }
            }
            Chunk::PmUpper | Chunk::PmLower => {
                let head = rest.get(..2)?;
                pm = Some(match head.to_ascii_uppercase().as_str() {
                    "PM" => true,
                    "AM" => false,
                    _ => return None,
                });
                rest = &rest[2..];
            }
            Chunk::Tz => {
                if let Some(tail) = rest.strip_prefix("UTC") {
                    offset = Some(0);
                    zone_name = Some("UTC");
                    rest = tail;
                } else {
                    // An abbreviation Go cannot place is kept with offset 0.
                    let letters = rest.bytes().take_while(u8::is_ascii_uppercase).count();
                    if letters < 3 {
                        return None;
                    }
                    offset = Some(0);
                    zone_name = Some("");
                    rest = &rest[letters..];
                }
            }
            Chunk::Offset { iso, colon, parts } => {
                if iso && rest.starts_with('Z') {
                    offset = Some(0);
                    rest = &rest[1..];
                    continue;
                }
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let mut tail = &rest[1..];
                let (hh, after) = take_digits(tail, 2, 2)?;
                tail = after;
                let mut total = hh * 3600;
                for field_scale in [60, 1].into_iter().take(usize::from(parts) - 1) {
                    if colon {
                        tail = tail.strip_prefix(':')?;
                    }
                    let (field, after) = take_digits(tail, 2, 2)?;
                    tail = after;
                    total += field * field_scale;
                }
                offset = Some(sign * i32::try_from(total).ok()?);
                rest = tail;
            }
        }
    }
    if !rest.is_empty() {
        return None;
    }
    if let Some(is_pm) = pm {
        if is_pm && hour < 12 {
            hour += 12;
        } else if !is_pm && hour == 12 {
            hour = 0;
        }
    }
    let year = i32::try_from(year).ok()?;
    let date = match year_day {
        Some(ordinal) => NaiveDate::from_yo_opt(year, ordinal)?,
        None => NaiveDate::from_ymd_opt(year, month, day)?,
    };
    let civil = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    let offset_secs = offset.unwrap_or(0);
    let secs = civil.and_utc().timestamp() - i64::from(offset_secs);
    let zone = match (offset_secs, zone_name) {
        (0, None | Some("UTC")) => "UTC",
        (_, _) => "",
    };
    Some(GoTime {
        secs,
        nanos,
        offset: offset_secs,
        zone,
    })
}

fn skip_literal<'v>(value: &'v str, literal: &str) -> Option<&'v str> {
    // Go lets runs of spaces in the layout match any amount of leading space.
    value.strip_prefix(literal)
}

fn take_digits(value: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let count = value.bytes().take(max).take_while(u8::is_ascii_digit).count();
    if count < min {
        return None;
    }
    let number = value[..count].parse().ok()?;
    Some((number, &value[count..]))
}

fn take_fraction(value: &str) -> Option<(u32, &str)> {
    let count = value.bytes().take_while(u8::is_ascii_digit).count();
    if count == 0 {
        return None;
    }
    let mut nanos: u32 = 0;
    for (position, digit) in value.bytes().take(count).enumerate() {
        if position < 9 {
            nanos = nanos * 10 + u32::from(digit - b'0');
        }
    }
    for _ in count..9 {
        nanos *= 10;
    }
    Some((nanos, &value[count..]))
}

fn take_name<'v>(value: &'v str, names: &[&str], short: bool) -> Option<(usize, &'v str)> {
    for (index, name) in names.iter().enumerate() {
        let name = if short { &name[..3] } else { name };
        if let Some(head) = value.get(..name.len())
            && head.eq_ignore_ascii_case(name)
        {
            return Some((index, &value[name.len()..]));
        }
    }
    None
}

/// Go's `time.ParseDuration`, in seconds: `1h2m3.5s`, `-300ms`, `1us`/`1µs`.
pub(super) fn parse_duration_seconds(text: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration \"{text}\"");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration \"{text}\"")),
            _ => return Err(format!("time: unknown unit \"{unit}\" in duration \"{text}\"")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Ok(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> GoTime {
        let parsed = DateTime::parse_from_rfc3339(rfc3339).unwrap();
        GoTime {
            secs: parsed.timestamp(),
            nanos: parsed.timestamp_subsec_nanos(),
            offset: parsed.offset().local_minus_utc(),
            zone: if parsed.offset().local_minus_utc() == 0 {
                "UTC"
            } else {
                ""
            },
        }
    }

    #[test]
    fn formats_every_layout_element() {
        let t = at("2009-03-07T16:05:09.120400000Z");
        assert_eq!(format(&t, "2006-01-02 15:04:05"), "2009-03-07 16:05:09");
        assert_eq!(format(&t, "Jan _2 06 3:4:5 PM"), "Mar  7 09 4:5:9 PM");
        assert_eq!(format(&t, "January Monday Mon 1/2 03pm"), "March Saturday Sat 3/7 04pm");
        assert_eq!(format(&t, "002 __2"), "066  66");
        assert_eq!(format(&t, ".000 .999 ,00 .999999999"), ".120 .12 ,12 .1204");
        assert_eq!(format(&t, "Z07:00 -0700 -07 MST"), "Z +0000 +00 UTC");
        assert_eq!(format(&t, "_2006"), "_2009");
        let east = at("2021-11-02T23:30:00+05:30");
        assert_eq!(
            format(&east, "15:04 Z07:00 -07:00:00 Z0700 MST"),
            "23:30 +05:30 +05:30:00 +0530 +0530"
        );
    }

    #[test]
    fn string_matches_go() {
        assert_eq!(GoTime::zero().to_go_string(), "0001-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            GoTime::from_unix_nanos(1_673_798_889_902_000_000).to_go_string(),
            "2023-01-15 16:08:09.902 +0000 UTC"
        );
    }

    #[test]
    fn parses_what_it_formats() {
        let layouts = [
            "2006-01-02T15:04:05.999999999Z07:00",
            "Mon Jan _2 15:04:05 2006",
            "02 Jan 06 15:04 -0700",
            "2006-01-02 3:04:05.000 PM",
        ];
        let t = at("2021-11-02T08:09:10.123000000+02:00");
        for layout in layouts {
            let text = format(&t, layout);
            let back = parse(layout, &text).unwrap_or_else(|| panic!("{layout}: {text}"));
            assert_eq!(format(&back, layout), text, "{layout}");
        }
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert_eq!(parse("2006-01-02", "2021-02-30"), None);
        assert_eq!(parse("2006-01-02", "2021-11-02x"), None);
        assert_eq!(parse("15:04", "25:00"), None);
        assert_eq!(parse("2006-01-02", "21-11-02"), None);
        let t = parse("2006-01-02 15:04:05", "2021-11-02 01:02:03.5").unwrap();
        assert_eq!(t.nanos, 500_000_000);
        assert_eq!(
            parse("2006-01-02T15:04:05Z07:00", "2021-11-02T00:00:00Z")
                .unwrap()
                .unix(),
            1_635_811_200
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_seconds("1h2m3.5s"), Ok(3723.5));
        assert_eq!(parse_duration_seconds("-300ms"), Ok(-0.3));
        assert_eq!(parse_duration_seconds("0"), Ok(0.0));
        assert_eq!(
            parse_duration_seconds("5"),
            Err("time: missing unit in duration \"5\"".into())
        );
        assert!(parse_duration_seconds("1x").is_err());
        assert!(parse_duration_seconds("").is_err());
    }
}
