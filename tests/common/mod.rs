//! Helpers shared by the end-to-end tests: start the real `tidewatch` binary on
//! a loopback port, talk HTTP to it, and build remote-write bodies.
//!
//! Every server is killed when its [`Server`] guard drops, so a failing test
//! leaves no process behind.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidewatch_model::seam::{SeriesSamples, WriteBatch};
use tidewatch_model::{Labels, Sample};

pub const CONTENT_TYPE_V1: &str = "application/x-protobuf";
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";

/// A running `tidewatch` process, killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub address: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    /// Keeps the log directory alive as long as the server guard.
    _log_dir: tempfile::TempDir,
}

impl Server {
    /// `tidewatch server --listen 127.0.0.1:0 --data-dir DATA_DIR`.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with("server", data_dir, None)
    }

    /// `tidewatch SUBCOMMAND --listen 127.0.0.1:0 --data-dir DATA_DIR [--config FILE]`.
    pub fn start_with(subcommand: &str, data_dir: &Path, config: Option<&Path>) -> Server {
        Server::start_listening(subcommand, data_dir, config, "127.0.0.1:0")
    }

    /// Like [`Server::start_with`] on a chosen address (a restart on the same
    /// port, for clients that keep the URL).
    pub fn start_listening(subcommand: &str, data_dir: &Path, config: Option<&Path>, listen: &str) -> Server {
        let log_dir = tempfile::tempdir().expect("creating a log directory");
        let log_path = log_dir.path().join("stderr.log");
        let log = File::create(&log_path).expect("creating the server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tidewatch"));
        command
            .arg(subcommand)
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().expect("spawning the tidewatch binary");
        let stdout = child.stdout.take().expect("child stdout is piped");
        let (first_line_tx, first_line_rx) = mpsc::channel::<String>();
        // Drain stdout for the whole life of the process so the pipe never fills.
        std::thread::spawn(move || {
            let mut first = Some(first_line_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = first.take() {
                    let _ = tx.send(line);
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            base: String::new(),
            address: String::new(),
            data_dir: data_dir.to_path_buf(),
            log_path,
            _log_dir: log_dir,
        };
        let line = match first_line_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(e) => panic!(
                "tidewatch printed no banner ({e}); exit status {:?}; stderr:\n{}",
                server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()),
                server.log()
            ),
        };
        let prefix = "Tidewatch 0.1.0 listening on http://";
        let address = line
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}, expected {prefix:?}…"))
            .trim()
            .to_string();
        assert!(address.starts_with("127.0.0.1:"), "banner address {address:?}");
        let port: u16 = address["127.0.0.1:".len()..]
            .parse()
            .unwrap_or_else(|e| panic!("bad port in {address:?}: {e}"));
        assert_ne!(port, 0, "the banner must show the bound port, not 0");
        server.base = format!("http://{address}");
        server.address = address;
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }

    /// SIGKILL (no chance to clean up) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("sending SIGKILL");
            child.wait().expect("reaping the killed server");
        }
    }

    /// SIGTERM, then wait (at most 20 s) for the process to exit by itself.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("polling the server process") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within 20 s of SIGTERM; stderr:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/-/ready` until it answers 200 (bounded).
    pub async fn wait_ready(&self) {
        let api = self.api();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = api.client.get(format!("{}/-/ready", self.base)).send().await
                && response.status().as_u16() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready; stderr:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A finished HTTP exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a Prometheus success body and returns its `data`.
    pub fn success_data(&self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {}: {}", self.status, self.body);
        let json = self.json();
        assert_eq!(json["status"], "success", "{}", self.body);
        json["data"].clone()
    }

    /// Asserts a Prometheus error body with this status and `errorType`; returns the message.
    pub fn api_error(&self, status: u16, error_type: &str) -> String {
        assert_eq!(
            self.status, status,
            "expected {status}, got {}: {}",
            self.status, self.body
        );
        let json = self.json();
        assert_eq!(json["status"], "error", "{}", self.body);
        assert_eq!(json["errorType"], error_type, "{}", self.body);
        json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("error message is not a string: {}", self.body))
            .to_string()
    }
}

/// An HTTP client bound to one server.
#[derive(Debug, Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("building the HTTP client");
        Api {
            client,
            base: base.to_string(),
        }
    }

    async fn finish(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("sending the request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("reading the response body");
        Reply { status, headers, body }
    }

    /// POST /api/v1/write with explicit headers (`None` omits one).
    pub async fn write_raw(
        &self,
        body: Vec<u8>,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        tenant: Option<&str>,
    ) -> Reply {
        let mut request = self.client.post(format!("{}/api/v1/write", self.base)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        if let Some(encoding) = content_encoding {
            request = request.header("Content-Encoding", encoding);
        }
        if let Some(tenant) = tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        Api::finish(request).await
    }

    /// A well-formed snappy remote-write request.
    pub async fn write(&self, body: Vec<u8>, content_type: &str, tenant: Option<&str>) -> Reply {
        self.write_raw(body, Some(content_type), Some("snappy"), tenant).await
    }

    pub async fn write_v1(&self, batch: &WriteBatch, tenant: Option<&str>) -> Reply {
        self.write(tidewatch_model::remote_write::encode_v1(batch), CONTENT_TYPE_V1, tenant)
            .await
    }

    pub async fn write_v2(&self, batch: &WriteBatch, tenant: Option<&str>) -> Reply {
        self.write(tidewatch_model::remote_write::encode_v2(batch), CONTENT_TYPE_V2, tenant)
            .await
    }

    /// Writes and asserts 204 with the samples-written header equal to the batch's samples.
    pub async fn write_ok(&self, batch: &WriteBatch, tenant: Option<&str>) {
        let reply = self.write_v1(batch, tenant).await;
        assert_eq!(reply.status, 204, "write failed: {}", reply.body);
        assert_eq!(
            reply.header("X-Prometheus-Remote-Write-Samples-Written"),
            Some(batch.sample_count().to_string().as_str())
        );
    }

    /// POST /loki/api/v1/push, protobuf + snappy as Promtail sends it.
    pub async fn loki_push(&self, push: &tidewatch_model::logs::LogPush, tenant: Option<&str>) -> Reply {
        let mut request = self
            .client
            .post(format!("{}/loki/api/v1/push", self.base))
            .header("Content-Type", "application/x-protobuf")
            .body(tidewatch_model::loki_push::encode_push_protobuf(push));
        if let Some(tenant) = tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        Api::finish(request).await
    }

    /// GET `path` with `params` percent-encoded into the query string.
    pub async fn get(&self, path: &str, params: &[(&str, &str)], tenant: Option<&str>) -> Reply {
        let mut url = format!("{}{}", self.base, path);
        if !params.is_empty() {
            url.push('?');
            url.push_str(&encode_params(params));
        }
        let mut request = self.client.get(url);
        if let Some(tenant) = tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        Api::finish(request).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        Api::finish(self.client.post(format!("{}{}", self.base, path))).await
    }

    /// `/api/v1/query` at `time_ms` (now when `None`).
    pub async fn query(&self, query: &str, time_ms: Option<i64>, tenant: Option<&str>) -> Reply {
        let time = time_ms.map(seconds);
        let mut params = vec![("query", query)];
        if let Some(time) = &time {
            params.push(("time", time.as_str()));
        }
        self.get("/api/v1/query", &params, tenant).await
    }

    /// `/api/v1/query_range`.
    pub async fn query_range(&self, query: &str, start_ms: i64, end_ms: i64, step: &str) -> Reply {
        let (start, end) = (seconds(start_ms), seconds(end_ms));
        self.get(
            "/api/v1/query_range",
            &[("query", query), ("start", &start), ("end", &end), ("step", step)],
            None,
        )
        .await
    }

    /// Instant-vector result of a successful query: labels → (time ms, value string).
    pub async fn vector(&self, query: &str, time_ms: i64, tenant: Option<&str>) -> BTreeMap<Metric, (i64, String)> {
        let reply = self.query(query, Some(time_ms), tenant).await;
        let data = reply.success_data();
        assert_eq!(data["resultType"], "vector", "{}", reply.body);
        let mut out = BTreeMap::new();
        for entry in data["result"].as_array().expect("result array") {
            let metric = metric_of(&entry["metric"]);
            let point = parse_point(&entry["value"]);
            assert!(
                out.insert(metric, point).is_none(),
                "duplicate series in {}",
                reply.body
            );
        }
        out
    }

    /// Matrix result of a successful query (range selector or range query).
    pub fn matrix_of(reply: &Reply) -> BTreeMap<Metric, Vec<(i64, String)>> {
        let data = reply.success_data();
        assert_eq!(data["resultType"], "matrix", "{}", reply.body);
        let mut out = BTreeMap::new();
        for entry in data["result"].as_array().expect("result array") {
            let metric = metric_of(&entry["metric"]);
            let points: Vec<(i64, String)> = entry["values"]
                .as_array()
                .expect("values array")
                .iter()
                .map(parse_point)
                .collect();
            assert!(
                out.insert(metric, points).is_none(),
                "duplicate series in {}",
                reply.body
            );
        }
        out
    }

    /// `QUERY` (a range selector) evaluated at `time_ms`.
    pub async fn range_selector(
        &self,
        query: &str,
        time_ms: i64,
        tenant: Option<&str>,
    ) -> BTreeMap<Metric, Vec<(i64, String)>> {
        let reply = self.query(query, Some(time_ms), tenant).await;
        Api::matrix_of(&reply)
    }

    /// `/api/v1/series` with the given `match[]` selectors.
    pub async fn series(&self, matches: &[&str], tenant: Option<&str>) -> Vec<Metric> {
        let params: Vec<(&str, &str)> = matches.iter().map(|m| ("match[]", *m)).collect();
        let reply = self.get("/api/v1/series", &params, tenant).await;
        let data = reply.success_data();
        data.as_array()
            .unwrap_or_else(|| panic!("series data is not an array: {}", reply.body))
            .iter()
            .map(metric_of)
            .collect()
    }

    /// A list of strings from `/api/v1/labels` or `/api/v1/label/<name>/values`.
    pub async fn strings(&self, path: &str, params: &[(&str, &str)], tenant: Option<&str>) -> Vec<String> {
        let reply = self.get(path, params, tenant).await;
        let data = reply.success_data();
        data.as_array()
            .unwrap_or_else(|| panic!("data is not an array: {}", reply.body))
            .iter()
            .map(|v| v.as_str().expect("string entry").to_string())
            .collect()
    }

    /// Asserts the server still answers `/-/ready`.
    pub async fn assert_ready(&self) {
        let reply = self.get("/-/ready", &[], None).await;
        assert_eq!(reply.status, 200, "/-/ready: {}", reply.body);
    }
}

/// A series' labels as the API returns them.
pub type Metric = BTreeMap<String, String>;

pub fn metric_of(value: &Value) -> Metric {
    value
        .as_object()
        .unwrap_or_else(|| panic!("metric is not an object: {value}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("label value is a string").to_string()))
        .collect()
}

/// `{"__name__": name, pairs…}` as a [`Metric`].
pub fn metric(name: &str, pairs: &[(&str, &str)]) -> Metric {
    let mut out: Metric = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    out.insert("__name__".into(), name.into());
    out
}

/// `[<seconds>, "<value>"]` → (milliseconds, value string).
pub fn parse_point(value: &Value) -> (i64, String) {
    let pair = value
        .as_array()
        .unwrap_or_else(|| panic!("point is not an array: {value}"));
    assert_eq!(pair.len(), 2, "point {value}");
    let seconds = pair[0]
        .as_f64()
        .unwrap_or_else(|| panic!("point time is not a number: {value}"));
    let text = pair[1]
        .as_str()
        .unwrap_or_else(|| panic!("point value is not a string: {value}"));
    ((seconds * 1000.0).round() as i64, text.to_string())
}

/// Milliseconds as the float-seconds string the API accepts.
pub fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whole seconds, so expected timestamps are easy to read in failures.
pub fn now_s_ms() -> i64 {
    now_ms() / 1000 * 1000
}

/// One series with its samples.
pub fn series(name: &str, pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
    SeriesSamples {
        labels: Labels::from_pairs(std::iter::once(("__name__", name)).chain(pairs.iter().copied())),
        samples: samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
        histograms: Vec::new(),
        start_timestamps: Default::default(),
    }
}

pub fn batch(series: Vec<SeriesSamples>) -> WriteBatch {
    WriteBatch {
        series,
        metadata: Vec::new(),
    }
}

/// Percent-encodes `name=value` pairs for a URL query string.
pub fn encode_params(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A value as the API formats it (shortest round trip, Prometheus' specials).
pub fn fmt_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}
