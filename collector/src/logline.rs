//! Container log lines as the runtimes write them, and container identity
//! from the files' names.
//!
//! - CRI (containerd, CRI-O): `<RFC 3339 nano time> <stdout|stderr> <P|F>[:more tags] <content>`.
//!   `P` marks a piece of a line the runtime split (at 16 KiB); the pieces up
//!   to the next `F` make one line.
//! - Docker json-file: `{"log":"content\n","stream":"stdout","time":"…"}`;
//!   a `log` without the trailing newline is a piece of a longer line.
//!
//! Parsing borrows from the read buffer; only Docker's escaped strings
//! allocate.

use std::borrow::Cow;
use std::path::Path;

use serde::Deserialize;

use crate::ContainerRef;

/// Which output stream a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }

    fn parse(text: &[u8]) -> Option<OutputStream> {
        match text {
            b"stdout" => Some(OutputStream::Stdout),
            b"stderr" => Some(OutputStream::Stderr),
            _ => None,
        }
    }
}

/// One parsed line of a container log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLine<'a> {
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
    pub stream: OutputStream,
    /// A piece of a longer line: the following pieces up to a non-partial one
    /// belong to the same line.
    pub partial: bool,
    /// The content, without the runtime's framing or trailing newline.
    pub content: Cow<'a, [u8]>,
}

/// Why a line is not in the file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    Timestamp,
    Stream,
    Tag,
    Json,
    Truncated,
}

impl LineError {
    pub fn as_str(self) -> &'static str {
        match self {
            LineError::Timestamp => "bad timestamp",
            LineError::Stream => "stream is neither stdout nor stderr",
            LineError::Tag => "tag is neither P nor F",
            LineError::Json => "not a docker json-file object",
            LineError::Truncated => "line ends before its content",
        }
    }
}

/// The framing of one file, decided from its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Cri,
    Docker,
    /// Neither: each line is an entry, timestamped when read.
    Plain,
}

impl LineFormat {
    /// Guesses from a file's first complete line.
    pub fn detect(first_line: &[u8]) -> LineFormat {
        if first_line.first() == Some(&b'{') && parse_docker(first_line).is_ok() {
            LineFormat::Docker
        } else if parse_cri(first_line).is_ok() {
            LineFormat::Cri
        } else {
            LineFormat::Plain
        }
    }

    /// Parses one line (without its `\n`) in this format; `Plain` lines are
    /// never an error and carry `now_ns`.
    pub fn parse<'a>(self, line: &'a [u8], now_ns: i64) -> Result<ContainerLine<'a>, LineError> {
        match self {
            LineFormat::Cri => parse_cri(line),
            LineFormat::Docker => parse_docker(line),
            LineFormat::Plain => Ok(ContainerLine {
                timestamp: now_ns,
                stream: OutputStream::Stdout,
                partial: false,
                content: Cow::Borrowed(strip_cr(line)),
            }),
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a CRI line (without its trailing `\n`).
pub fn parse_cri(line: &[u8]) -> Result<ContainerLine<'_>, LineError> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = fields.next().ok_or(LineError::Truncated)?;
    let timestamp = parse_rfc3339_nanos(time).ok_or(LineError::Timestamp)?;
    let stream = OutputStream::parse(fields.next().ok_or(LineError::Truncated)?).ok_or(LineError::Stream)?;
    let tags = fields.next().ok_or(LineError::Truncated)?;
    // Tags are `:`-separated; the first says whether the line is complete.
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(LineError::Tag),
    };
    // A line with empty content may end right after the tag.
    let content = fields.next().unwrap_or(b"");
    Ok(ContainerLine {
        timestamp,
        stream,
        partial,
        content: Cow::Borrowed(content),
    })
}

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// Parses a Docker json-file line.
pub fn parse_docker(line: &[u8]) -> Result<ContainerLine<'_>, LineError> {
    let parsed: DockerLine<'_> = serde_json::from_slice(line).map_err(|_| LineError::Json)?;
    let timestamp = parse_rfc3339_nanos(parsed.time.as_bytes()).ok_or(LineError::Timestamp)?;
    let stream = OutputStream::parse(parsed.stream.as_bytes()).ok_or(LineError::Stream)?;
    let (content, partial) = match parsed.log {
        Cow::Borrowed(log) => match log.strip_suffix('\n') {
            Some(full) => (Cow::Borrowed(full.as_bytes()), false),
            None => (Cow::Borrowed(log.as_bytes()), true),
        },
        Cow::Owned(mut log) => {
            let partial = !log.ends_with('\n');
            if !partial {
                log.pop();
            }
            (Cow::Owned(log.into_bytes()), partial)
        }
    };
    Ok(ContainerLine {
        timestamp,
        stream,
        partial,
        content,
    })
}

/// RFC 3339 with up to nine fractional digits and `Z` or `±hh:mm`, to
/// nanoseconds since the epoch. Written by hand: it runs once per line.
pub fn parse_rfc3339_nanos(text: &[u8]) -> Option<i64> {
    fn digits(text: &[u8], at: usize, len: usize) -> Option<i64> {
        let slice = text.get(at..at + len)?;
        let mut value = 0i64;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
        }
        Some(value)
    }
    if text.len() < 20 || text[4] != b'-' || text[7] != b'-' || !matches!(text[10], b'T' | b't') {
        return None;
    }
    if text[13] != b':' || text[16] != b':' {
        return None;
    }
    let year = digits(text, 0, 4)?;
    let month = digits(text, 5, 2)?;
    let day = digits(text, 8, 2)?;
    let hour = digits(text, 11, 2)?;
    let minute = digits(text, 14, 2)?;
    let second = digits(text, 17, 2)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if text.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < text.len() && text[at].is_ascii_digit() {
            at += 1;
        }
        let count = at - start;
        if count == 0 || count > 9 {
            return None;
        }
        nanos = digits(text, start, count)? * 10i64.pow(9 - count as u32);
    }
    let offset_seconds = match text.get(at)? {
        b'Z' | b'z' if at + 1 == text.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == text.len() && text[at + 3] == b':' => {
            let hours = digits(text, at + 1, 2)?;
            let minutes = digits(text, at + 4, 2)?;
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// What a container log file's path says about its container:
/// `/var/log/containers/<pod>_<namespace>_<container>-<64 hex id>.log`, or
/// the target of that symlink, `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`.
pub fn container_from_path(path: &Path) -> Option<ContainerRef> {
    let file_name = path.file_name()?.to_str()?;
    if let Some(stem) = file_name.strip_suffix(".log")
        && let Some(container) = from_containers_name(stem)
    {
        return Some(container);
    }
    from_pods_path(path)
}

fn from_containers_name(stem: &str) -> Option<ContainerRef> {
    let mut parts = stem.splitn(3, '_');
    let pod = parts.next()?;
    let namespace = parts.next()?;
    let rest = parts.next()?;
    let (container, id) = rest.rsplit_once('-')?;
    if pod.is_empty() || namespace.is_empty() || container.is_empty() {
        return None;
    }
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(ContainerRef {
        namespace: namespace.into(),
        pod: pod.into(),
        pod_uid: None,
        container: container.into(),
        container_id: Some(id.into()),
    })
}

fn from_pods_path(path: &Path) -> Option<ContainerRef> {
    // …/<namespace>_<pod>_<uid>/<container>/<n>.log
    let container_dir = path.parent()?;
    let container = container_dir.file_name()?.to_str()?;
    let pod_dir = container_dir.parent()?.file_name()?.to_str()?;
    let mut parts = pod_dir.splitn(3, '_');
    let namespace = parts.next()?;
    let pod = parts.next()?;
    let uid = parts.next()?;
    if namespace.is_empty() || pod.is_empty() || uid.is_empty() || container.is_empty() {
        return None;
    }
    Some(ContainerRef {
        namespace: namespace.into(),
        pod: pod.into(),
        pod_uid: Some(uid.into()),
        container: container.into(),
        container_id: None,
    })
}

/// Merges the two views of one file: the name under `/var/log/containers`
/// (container id) and its symlink target under `/var/log/pods` (pod UID).
pub fn container_from_link(link: &Path, target: &Path) -> Option<ContainerRef> {
    let from_link = container_from_path(link);
    let from_target = from_pods_path(target);
    match (from_link, from_target) {
        (Some(mut link), Some(target)) => {
            link.pod_uid = target.pod_uid;
            Some(link)
        }
        (link, target) => link.or(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_parse() {
        let line = parse_cri(b"2016-10-06T00:17:09.669794202Z stdout F log content here").unwrap();
        assert_eq!(line.timestamp, 1_475_713_029_669_794_202);
        assert_eq!(line.stream, OutputStream::Stdout);
        assert!(!line.partial);
        assert_eq!(&*line.content, b"log content here");

        let partial = parse_cri(b"2016-10-06T00:17:09.669794202Z stderr P part").unwrap();
        assert!(partial.partial);
        assert_eq!(partial.stream, OutputStream::Stderr);

        let empty = parse_cri(b"2016-10-06T00:17:09Z stdout F").unwrap();
        assert_eq!(&*empty.content, b"");
        let spaces = parse_cri(b"2016-10-06T00:17:09Z stdout F  two  spaces ").unwrap();
        assert_eq!(&*spaces.content, b" two  spaces ");

        let offset = parse_cri(b"2016-10-06T02:17:09.5+02:00 stdout F:x y").unwrap();
        assert_eq!(offset.timestamp, 1_475_713_029_500_000_000);
        assert_eq!(&*offset.content, b"y");
    }

    #[test]
    fn bad_cri_lines_say_why() {
        assert_eq!(parse_cri(b"garbage").unwrap_err(), LineError::Timestamp);
        assert_eq!(
            parse_cri(b"2016-10-06T00:17:09Z stdin F x").unwrap_err(),
            LineError::Stream
        );
        assert_eq!(
            parse_cri(b"2016-10-06T00:17:09Z stdout X x").unwrap_err(),
            LineError::Tag
        );
        assert_eq!(
            parse_cri(b"2016-10-06T00:17:09Z stdout").unwrap_err(),
            LineError::Truncated
        );
        assert_eq!(
            parse_cri(b"2016-13-06T00:17:09Z stdout F x").unwrap_err(),
            LineError::Timestamp
        );
        assert_eq!(
            parse_cri(b"2016-10-06T00:17:09.1234567890Z stdout F x").unwrap_err(),
            LineError::Timestamp
        );
        assert_eq!(parse_cri(b"").unwrap_err(), LineError::Timestamp);
    }

    #[test]
    fn docker_lines_parse() {
        let full =
            parse_docker(br#"{"log":"hello \"world\"\n","stream":"stderr","time":"2019-01-01T11:11:11.111111111Z"}"#)
                .unwrap();
        assert_eq!(&*full.content, br#"hello "world""#);
        assert!(!full.partial);
        assert_eq!(full.stream, OutputStream::Stderr);
        assert_eq!(full.timestamp, 1_546_341_071_111_111_111);
        let partial = parse_docker(br#"{"log":"piece","stream":"stdout","time":"2019-01-01T11:11:11Z"}"#).unwrap();
        assert!(partial.partial);
        assert_eq!(&*partial.content, b"piece");
        assert_eq!(parse_docker(b"{\"log\":1}").unwrap_err(), LineError::Json);
    }

    #[test]
    fn format_is_detected_from_the_first_line() {
        assert_eq!(LineFormat::detect(b"2016-10-06T00:17:09Z stdout F x"), LineFormat::Cri);
        assert_eq!(
            LineFormat::detect(br#"{"log":"x\n","stream":"stdout","time":"2019-01-01T11:11:11Z"}"#),
            LineFormat::Docker
        );
        assert_eq!(LineFormat::detect(b"just text"), LineFormat::Plain);
        let plain = LineFormat::Plain.parse(b"text\r", 7).unwrap();
        assert_eq!((plain.timestamp, &*plain.content), (7, &b"text"[..]));
    }

    #[test]
    fn timestamps_agree_with_the_calendar() {
        assert_eq!(parse_rfc3339_nanos(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos(b"2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        assert_eq!(parse_rfc3339_nanos(b"1969-12-31T23:59:59Z"), Some(-1_000_000_000));
        assert_eq!(
            parse_rfc3339_nanos(b"2024-03-01T00:00:00-01:00"),
            Some(1_709_254_800_000_000_000)
        );
        assert_eq!(parse_rfc3339_nanos(b"2024-03-01T00:00:00"), None);
        assert_eq!(parse_rfc3339_nanos(b"2024-03-01T00:00:00Zjunk"), None);
    }

    #[test]
    fn container_identity_from_file_names() {
        let id = "a".repeat(64);
        let link = format!("/var/log/containers/web-7d9f_shop_nginx-proxy-{id}.log");
        let target = "/var/log/pods/shop_web-7d9f_0e5c-11/nginx-proxy/0.log";
        let container = container_from_link(Path::new(&link), Path::new(target)).unwrap();
        assert_eq!(container.namespace, "shop");
        assert_eq!(container.pod, "web-7d9f");
        assert_eq!(container.container, "nginx-proxy");
        assert_eq!(container.container_id.as_deref(), Some(id.as_str()));
        assert_eq!(container.pod_uid.as_deref(), Some("0e5c-11"));
        assert!(container_from_path(Path::new("/var/log/syslog")).is_none());
        assert!(container_from_path(Path::new("/var/log/containers/x_y_z-short.log")).is_none());
    }
}
