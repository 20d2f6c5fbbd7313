//! The collector end to end: real `tidewatch collector` processes tail files
//! laid out like a Kubernetes node's (`containers/*.log` symlinks into
//! `pods/<ns>_<pod>_<uid>/<container>/0.log`) and ship to a real server.
//! Every test ends by reading every line back through the Loki API and
//! checking each written line arrived exactly once.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Api, Server};
use serde_json::Value;

const NAMESPACE: &str = "shop";

/// A node's log directories under a temporary directory.
struct Node {
    root: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("containers")).unwrap();
        Node { root }
    }

    fn glob(&self) -> String {
        format!("{}/containers/*.log", self.root.path().display())
    }

    /// Creates the pod directory and the kubelet's symlink; returns the
    /// path the runtime writes (`…/0.log`).
    fn container(&self, pod: &str, container: &str) -> PathBuf {
        let dir = self
            .root
            .path()
            .join("pods")
            .join(format!("{NAMESPACE}_{pod}_uid-{pod}"))
            .join(container);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("0.log");
        File::create(&target).unwrap();
        let id = format!("{:0>64}", pod.len() * 7 + container.len());
        let link = self
            .root
            .path()
            .join("containers")
            .join(format!("{pod}_{NAMESPACE}_{container}-{id}.log"));
        std::os::unix::fs::symlink(&target, link).unwrap();
        target
    }
}

/// A `tidewatch collector` process, killed on drop.
struct Collector {
    child: Option<Child>,
    state_dir: PathBuf,
    config: PathBuf,
    server: String,
    glob: String,
    log: PathBuf,
}

impl Collector {
    /// `logs_extra` is added to the `logs:` map (", key: value" pairs).
    fn start(server: &str, glob: &str, state_dir: &Path, logs_extra: &str) -> Collector {
        let config = state_dir.with_extension("yaml");
        std::fs::write(
            &config,
            format!(
                "logs: {{ poll_interval: 50ms, batch_wait: 100ms, max_line_size: 64KB{logs_extra} }}\n\
                 metrics: {{ enabled: false }}\n\
                 server: {{ min_backoff: 50ms, max_backoff: 500ms, timeout: 5s }}\n"
            ),
        )
        .unwrap();
        let mut collector = Collector {
            child: None,
            state_dir: state_dir.to_path_buf(),
            config,
            server: server.to_string(),
            glob: glob.to_string(),
            log: state_dir.with_extension("log"),
        };
        collector.spawn();
        collector
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tidewatch"))
            .arg("collector")
            .args(["--server", &self.server, "--log-glob", &self.glob, "--node", "node-a"])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning tidewatch collector");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lines a test wrote, by pod.
#[derive(Default)]
struct Written {
    lines: BTreeMap<String, Vec<String>>,
    next_ns: i64,
}

impl Written {
    fn new() -> Written {
        Written {
            lines: BTreeMap::new(),
            // Unique, increasing timestamps a minute in the past.
            next_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap() - 60_000_000_000,
        }
    }

    fn timestamp(&mut self) -> String {
        self.next_ns += 1_000;
        chrono::DateTime::from_timestamp_nanos(self.next_ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    }

    /// Appends one complete CRI line and remembers it.
    fn cri(&mut self, file: &mut File, pod: &str, content: &str) {
        let ts = self.timestamp();
        writeln!(file, "{ts} stdout F {content}").unwrap();
        self.lines.entry(pod.to_string()).or_default().push(content.to_string());
    }

    fn expect(&mut self, pod: &str, content: &str) {
        self.lines.entry(pod.to_string()).or_default().push(content.to_string());
    }

    fn total(&self) -> usize {
        self.lines.values().map(Vec::len).sum()
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new().append(true).open(path).unwrap()
}

/// Every line of the namespace through `/loki/api/v1/query_range`, paged
/// forward by time: (pod, line) pairs, in time order per pod.
async fn stored_lines(api: &Api) -> BTreeMap<String, Vec<String>> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let mut start = now - 3_600_000_000_000;
    let end = (now + 60_000_000_000).to_string();
    let mut by_pod: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    loop {
        let reply = api
            .get(
                "/loki/api/v1/query_range",
                &[
                    ("query", &format!("{{namespace=\"{NAMESPACE}\"}}")),
                    ("start", &start.to_string()),
                    ("end", &end),
                    ("limit", "5000"),
                    ("direction", "forward"),
                ],
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let json: Value = reply.json();
        let mut page = 0;
        let mut last = start;
        for stream in json["data"]["result"].as_array().unwrap() {
            let pod = stream["stream"]["pod"].as_str().unwrap().to_string();
            assert_eq!(stream["stream"]["node"], "node-a", "{}", stream["stream"]);
            for value in stream["values"].as_array().unwrap() {
                let ts: i64 = value[0].as_str().unwrap().parse().unwrap();
                by_pod
                    .entry(pod.clone())
                    .or_default()
                    .push((ts, value[1].as_str().unwrap().to_string()));
                last = last.max(ts);
                page += 1;
            }
        }
        if page < 5000 {
            break;
        }
        start = last + 1;
    }
    by_pod
        .into_iter()
        .map(|(pod, mut lines)| {
            lines.sort();
            (pod, lines.into_iter().map(|(_, line)| line).collect())
        })
        .collect()
}

/// Waits (bounded) until the server holds as many lines as were written,
/// then checks each pod's lines are exactly the written ones, once each.
async fn assert_exactly_once(api: &Api, written: &Written, collector: &Collector) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored;
    loop {
        stored = stored_lines(api).await;
        let count: usize = stored.values().map(Vec::len).sum();
        if count >= written.total() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (pod, lines) in &written.lines {
        let mut expected = lines.clone();
        expected.sort();
        let mut got = stored.get(pod).cloned().unwrap_or_default();
        got.sort();
        if got != expected {
            let missing: Vec<_> = expected.iter().filter(|l| !got.contains(l)).take(5).collect();
            let mut duplicated = got.clone();
            duplicated.dedup();
            panic!(
                "pod {pod}: expected {} lines, stored {} ({} distinct); first missing: {missing:?}\ncollector log:\n{}",
                expected.len(),
                got.len(),
                duplicated.len(),
                collector.log()
            );
        }
    }
    let unexpected: Vec<_> = stored.keys().filter(|pod| !written.lines.contains_key(*pod)).collect();
    assert!(unexpected.is_empty(), "lines from pods never written: {unexpected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_and_docker_lines_arrive_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    server.wait_ready().await;
    let node = Node::new();
    let state = tempfile::tempdir().unwrap();
    let mut written = Written::new();

    // Written before the collector starts: read from the beginning.
    let cri_path = node.container("web-1", "nginx");
    let mut cri = append(&cri_path);
    for i in 0..200 {
        written.cri(&mut cri, "web-1", &format!("GET /item/{i} 200"));
    }
    let collector = Collector::start(&server.base, &node.glob(), &state.path().join("c"), "");

    // Partial pieces make one line; interleaved stderr keeps its own pieces.
    let (a, b) = (written.timestamp(), written.timestamp());
    write!(cri, "{a} stdout P first half, \n{b} stderr F an error\n").unwrap();
    let c = written.timestamp();
    writeln!(cri, "{c} stdout F second half").unwrap();
    written.expect("web-1", "first half, second half");
    written.expect("web-1", "an error");
    // Empty content, and content with spaces kept byte for byte.
    let d = written.timestamp();
    writeln!(cri, "{d} stdout F").unwrap();
    written.cri(&mut cri, "web-1", "  indented  twice ");
    // Longer than max_line_size (64 KiB): split into pieces, nothing lost.
    let huge = "x".repeat(150 * 1024);
    written.cri(&mut cri, "web-1", &huge);
    *written.lines.get_mut("web-1").unwrap().last_mut().unwrap() = "x".repeat(64 * 1024);
    written.expect("web-1", &"x".repeat(64 * 1024));
    written.expect("web-1", &"x".repeat(22 * 1024));
    // Invalid UTF-8 arrives with replacement characters.
    let e = written.timestamp();
    cri.write_all(format!("{e} stdout F bad \u{0}").as_bytes()).unwrap();
    cri.write_all(b"\xff\xfe bytes\n").unwrap();
    written.expect("web-1", "bad \u{0}\u{fffd}\u{fffd} bytes");
    // A garbage line in a CRI file is shipped as it is, and counted.
    writeln!(cri, "this is not a CRI line").unwrap();
    written.expect("web-1", "this is not a CRI line");
    drop(cri);

    // Docker json-file: escapes, and a line the daemon split in two.
    let docker_path = node.container("api-1", "app");
    let mut docker = append(&docker_path);
    for i in 0..100 {
        let ts = written.timestamp();
        let line = format!("{{\"level\":\"info\",\"n\":{i}}}\t\"quoted\"");
        writeln!(
            docker,
            "{}",
            serde_json::json!({"log": format!("{line}\n"), "stream": "stdout", "time": ts})
        )
        .unwrap();
        written.expect("api-1", &line);
    }
    let (f, g) = (written.timestamp(), written.timestamp());
    writeln!(
        docker,
        "{}",
        serde_json::json!({"log": "split ", "stream": "stderr", "time": f})
    )
    .unwrap();
    writeln!(
        docker,
        "{}",
        serde_json::json!({"log": "line\n", "stream": "stderr", "time": g})
    )
    .unwrap();
    written.expect("api-1", "split line");
    drop(docker);

    // The empty CRI line is stored as an empty line.
    written.expect("web-1", "");
    assert_exactly_once(&server.api(), &written, &collector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_and_by_copytruncate_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    server.wait_ready().await;
    let node = Node::new();
    let state = tempfile::tempdir().unwrap();
    let collector = Collector::start(&server.base, &node.glob(), &state.path().join("c"), "");
    let mut written = Written::new();

    let renamed = node.container("rename-1", "app");
    let truncated = node.container("truncate-1", "app");
    let mut renamed_file = append(&renamed);
    let mut truncated_file = append(&truncated);
    for round in 0..6 {
        for i in 0..300 {
            written.cri(&mut renamed_file, "rename-1", &format!("round={round} line={i} rename"));
            written.cri(
                &mut truncated_file,
                "truncate-1",
                &format!("round={round} line={i} truncate"),
            );
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        // Let the collector read the round (copytruncate loses what was
        // written between the copy and the truncation: that is the method's
        // own window, not the collector's, so the writer pauses).
        tokio::time::sleep(Duration::from_millis(400)).await;
        // kubelet's rotation: rename, the runtime reopens a new 0.log.
        std::fs::rename(&renamed, renamed.with_extension(format!("log.{round}"))).unwrap();
        renamed_file = OpenOptions::new().create(true).append(true).open(&renamed).unwrap();
        // logrotate's copytruncate: same inode, emptied.
        std::fs::copy(&truncated, truncated.with_extension(format!("log.{round}"))).unwrap();
        truncated_file.set_len(0).unwrap();
    }
    // After the last truncation the file grows again well past where it was.
    for i in 0..500 {
        written.cri(&mut truncated_file, "truncate-1", &format!("after line={i} truncate"));
    }
    assert_exactly_once(&server.api(), &written, &collector).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_resume_from_checkpoints() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    server.wait_ready().await;
    let node = Node::new();
    let state = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(&server.base, &node.glob(), &state.path().join("c"), "");
    let mut written = Written::new();
    let paths: Vec<(String, PathBuf)> = (0..4)
        .map(|p| {
            let pod = format!("kill-{p}");
            let path = node.container(&pod, "app");
            (pod, path)
        })
        .collect();
    let mut files: Vec<File> = paths.iter().map(|(_, path)| append(path)).collect();
    for round in 0..5 {
        for i in 0..2000 {
            let p = i % files.len();
            let pod = paths[p].0.clone();
            written.cri(
                &mut files[p],
                &pod,
                &format!("round={round} i={i} {}", "payload ".repeat(8)),
            );
            if i % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Killed in the middle of reading and shipping, then started again.
        tokio::time::sleep(Duration::from_millis(50 * round)).await;
        collector.kill();
        collector.spawn();
    }
    assert_exactly_once(&server.api(), &written, &collector).await;
    assert!(
        state.path().join("c").join("positions.json").exists(),
        "positions are saved in the state directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outage_is_spooled_and_delivered_after() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    server.wait_ready().await;
    let address = server.address.clone();
    let node = Node::new();
    let state = tempfile::tempdir().unwrap();
    let collector = Collector::start(&server.base, &node.glob(), &state.path().join("c"), "");
    let mut written = Written::new();
    let path = node.container("outage-1", "app");
    let mut file = append(&path);
    for i in 0..500 {
        written.cri(&mut file, "outage-1", &format!("before outage {i}"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    for i in 0..3000 {
        written.cri(&mut file, "outage-1", &format!("during outage {i}"));
        if i % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The collector retried, gave up for now, and spooled to disk.
    let spool = state.path().join("c").join("spool").join("logs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&spool).map_or(0, |d| d.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing spooled during the outage:\n{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = Server::start_listening("server", data.path(), None, &address);
    server.wait_ready().await;
    for i in 0..500 {
        written.cri(&mut file, "outage-1", &format!("after outage {i}"));
    }
    assert_exactly_once(&server.api(), &written, &collector).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&spool).map_or(0, |d| d.count()) > 0 {
        assert!(
            Instant::now() < deadline,
            "the spool did not drain:\n{}",
            collector.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_stack_traces_are_joined_into_one_entry() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    server.wait_ready().await;
    let node = Node::new();
    let state = tempfile::tempdir().unwrap();
    let collector = Collector::start(
        &server.base,
        &node.glob(),
        &state.path().join("c"),
        ", multiline: { preset: java, timeout: 300ms }",
    );
    let mut written = Written::new();
    let path = node.container("java-1", "app");
    let mut file = append(&path);
    for i in 0..20 {
        let record = [
            format!("2024-01-01 12:00:{i:02} ERROR request {i} failed"),
            "java.lang.IllegalStateException: boom".to_string(),
            format!("\tat com.example.Handler.handle(Handler.java:{i})"),
            "\tat com.example.Main.main(Main.java:5)".to_string(),
            "Caused by: java.io.IOException: closed".to_string(),
            "\t... 2 more".to_string(),
        ];
        // Each physical line is its own CRI line; the trace's lines join.
        for line in &record {
            let ts = written.timestamp();
            writeln!(file, "{ts} stderr F {line}").unwrap();
        }
        written.expect("java-1", &record[0]);
        written.expect("java-1", &record[1..].join("\n"));
        let ts = written.timestamp();
        writeln!(file, "{ts} stdout F INFO request {i} retried").unwrap();
        written.expect("java-1", &format!("INFO request {i} retried"));
    }
    assert_exactly_once(&server.api(), &written, &collector).await;
}
