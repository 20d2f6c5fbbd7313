//! The Kubernetes metadata module against an in-process fake API server: a
//! `tower` service answering list, watch and get requests from in-memory
//! objects, with watches streamed as newline-delimited JSON the way the API
//! server sends them.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use serde_json::{Value, json};
use tidewatch_collector::PodDirectory;
use tidewatch_collector::config::KubernetesConfig;
use tidewatch_collector::kubernetes::KubeMetadata;
use tidewatch_model::logs::LogPush;
use tidewatch_model::{Label, ManualClock};
use tokio::sync::{mpsc, watch};

const NODE: &str = "node-a";
const OTHER_NODE: &str = "node-b";
const PODS: &str = "/api/v1/pods";
const EVENTS: &str = "/api/v1/events";
/// Every wait for the watches to catch up is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);
const START_MS: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------- fake API

/// A response body: whole, or a watch stream fed by the fake API.
enum FakeBody {
    Whole(Option<Bytes>),
    Watch(mpsc::UnboundedReceiver<Bytes>),
}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FakeBody::Whole(body) => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
            FakeBody::Watch(lines) => lines.poll_recv(cx).map(|line| line.map(|b| Ok(Frame::data(b)))),
        }
    }
}

struct Watcher {
    collection: &'static str,
    selector: Option<(String, String)>,
    lines: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct State {
    version: u64,
    /// collection path → uid → object
    collections: HashMap<&'static str, BTreeMap<String, Value>>,
    /// (collection, version, watch event type, object)
    history: Vec<(&'static str, u64, &'static str, Value)>,
    /// path → object, or an HTTP status to fail with
    singles: HashMap<String, Result<Value, u16>>,
    watchers: Vec<Watcher>,
    requests: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

fn field<'a>(object: &'a Value, dotted: &str) -> Option<&'a str> {
    dotted
        .split('.')
        .try_fold(object, |value, key| value.get(key))?
        .as_str()
}

fn selected(object: &Value, selector: &Option<(String, String)>) -> bool {
    match selector {
        None => true,
        Some((key, value)) => field(object, key) == Some(value.as_str()),
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

impl FakeApi {
    fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(&request)) }
        });
        kube::Client::new(service, "default")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn answer(&self, request: &http::Request<kube::client::Body>) -> http::Response<FakeBody> {
        let uri = request.uri();
        let path = uri.path().to_string();
        let query: HashMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
        let mut state = self.lock();
        state.requests.push(uri.to_string());
        let collection = [PODS, EVENTS].into_iter().find(|c| *c == path);
        let Some(collection) = collection else {
            return match state.singles.get(&path) {
                Some(Ok(object)) => respond(200, object),
                Some(Err(code)) => respond(*code, &status(*code, "Refused")),
                None => respond(404, &status(404, "NotFound")),
            };
        };
        let selector = query
            .get("fieldSelector")
            .and_then(|s| s.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()));
        if query.get("watch").map(String::as_str) != Some("true") {
            let items: Vec<Value> = state
                .collections
                .get(collection)
                .into_iter()
                .flat_map(|objects| objects.values())
                .filter(|o| selected(o, &selector))
                .cloned()
                .collect();
            let list = json!({"kind": "List", "apiVersion": "v1",
                "metadata": {"resourceVersion": state.version.to_string()}, "items": items});
            return respond(200, &list);
        }
        let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (lines, receiver) = mpsc::unbounded_channel();
        for (c, version, kind, object) in &state.history {
            if *c == collection && *version > since && selected(object, &selector) {
                let _ = lines.send(watch_line(kind, object));
            }
        }
        state.watchers.push(Watcher {
            collection,
            selector,
            lines,
        });
        http::Response::builder()
            .status(200)
            .body(FakeBody::Watch(receiver))
            .unwrap()
    }

    /// Creates or replaces an object (by uid), as ADDED or MODIFIED.
    fn put(&self, collection: &'static str, mut object: Value) {
        let mut state = self.lock();
        state.version += 1;
        let version = state.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let uid = field(&object, "metadata.uid").unwrap_or_default().to_string();
        let objects = state.collections.entry(collection).or_default();
        let kind = if objects.insert(uid, object.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.history.push((collection, version, kind, object.clone()));
        state.notify(collection, kind, &object);
    }

    fn delete(&self, collection: &'static str, uid: &str) {
        let mut state = self.lock();
        state.version += 1;
        let version = state.version;
        let Some(mut object) = state.collections.entry(collection).or_default().remove(uid) else {
            return;
        };
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        state.history.push((collection, version, "DELETED", object.clone()));
        state.notify(collection, "DELETED", &object);
    }

    /// Removes an object without telling the watchers: only a re-list shows it.
    fn forget(&self, collection: &'static str, uid: &str) {
        let mut state = self.lock();
        state.version += 1;
        state.collections.entry(collection).or_default().remove(uid);
    }

    /// Ends the collection's watches with 410 Gone, as an API server does
    /// when the watcher's resourceVersion is too old: the watcher must re-list.
    fn expire_watches(&self, collection: &'static str) {
        let mut state = self.lock();
        let gone = watch_line("ERROR", &status(410, "Expired"));
        state.watchers.retain(|w| {
            if w.collection != collection {
                return true;
            }
            let _ = w.lines.send(gone.clone());
            false
        });
    }

    fn set_single(&self, path: &str, answer: Result<Value, u16>) {
        self.lock().singles.insert(path.to_string(), answer);
    }

    fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn watch_count(&self, collection: &str) -> usize {
        self.lock()
            .watchers
            .iter()
            .filter(|w| w.collection == collection && !w.lines.is_closed())
            .count()
    }
}

impl State {
    fn notify(&mut self, collection: &'static str, kind: &str, object: &Value) {
        let line = watch_line(kind, object);
        self.watchers.retain(|w| {
            if w.collection != collection || !selected(object, &w.selector) {
                return true;
            }
            w.lines.send(line.clone()).is_ok()
        });
    }
}

fn respond(code: u16, body: &Value) -> http::Response<FakeBody> {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(FakeBody::Whole(Some(Bytes::from(serde_json::to_vec(body).unwrap()))))
        .unwrap()
}

// ---------------------------------------------------------------- objects

fn owner(kind: &str, name: &str) -> Value {
    json!([{"apiVersion": "v1", "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true}])
}

fn pod(namespace: &str, name: &str, uid: &str, node: &str, owned_by: Option<(&str, &str)>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "uid": uid, "labels": {}, "annotations": {}},
        "spec": {"nodeName": node, "containers": [{"name": "main"}]},
        "status": {"phase": "Running", "podIP": "10.1.2.3"}
    });
    if let Some((kind, owner_name)) = owned_by {
        pod["metadata"]["ownerReferences"] = owner(kind, owner_name);
    }
    pod
}

fn owned_object(kind: &str, namespace: &str, name: &str, owned_by: Option<(&str, &str)>) -> Value {
    let mut object =
        json!({"kind": kind, "metadata": {"namespace": namespace, "name": name, "uid": format!("uid-{name}")}});
    if let Some((owner_kind, owner_name)) = owned_by {
        object["metadata"]["ownerReferences"] = owner(owner_kind, owner_name);
    }
    object
}

fn replica_set_path(namespace: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{namespace}/replicasets/{name}")
}

fn job_path(namespace: &str, name: &str) -> String {
    format!("/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
}

fn event(uid: &str, pod_namespace: &str, pod_name: &str, pod_uid: &str, reason: &str, count: i32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"namespace": pod_namespace, "name": format!("{pod_name}.{uid}"), "uid": uid},
        "involvedObject": {"kind": "Pod", "namespace": pod_namespace, "name": pod_name, "uid": pod_uid},
        "type": "Warning", "reason": reason, "count": count,
        "message": "Back-off restarting failed container",
        "source": {"component": "kubelet", "host": NODE},
        "firstTimestamp": "2024-01-01T00:00:00Z",
        "lastTimestamp": "2024-01-01T00:01:00Z"
    })
}

// ---------------------------------------------------------------- harness

struct Harness {
    api: FakeApi,
    clock: ManualClock,
    metadata: KubeMetadata,
    shutdown: watch::Sender<bool>,
    events: mpsc::Receiver<LogPush>,
}

fn config() -> KubernetesConfig {
    KubernetesConfig {
        enabled: Some(true),
        pod_labels: vec!["app.kubernetes.io/name".into(), "job".into()],
        pod_annotations: vec!["team".into()],
        events: true,
        deleted_pod_grace: Duration::from_secs(60),
    }
}

async fn start(api: &FakeApi) -> Harness {
    let clock = ManualClock::new(START_MS);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (events_tx, events) = mpsc::channel(16);
    let metadata = KubeMetadata::start(
        api.client(),
        &config(),
        NODE,
        "prod-eu",
        Arc::new(clock.clone()),
        Some(events_tx),
        shutdown_rx,
    );
    tokio::time::timeout(PATIENCE, metadata.wait_synced())
        .await
        .expect("the pod list syncs");
    Harness {
        api: api.clone(),
        clock,
        metadata,
        shutdown,
        events,
    }
}

impl Harness {
    fn labels(&self, namespace: &str, pod: &str, uid: Option<&str>) -> Option<Vec<(String, String)>> {
        let labels = self.metadata.pods().pod_labels(namespace, pod, uid)?;
        Some(labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect())
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(PATIENCE, self.metadata.join())
            .await
            .expect("tasks stop on shutdown");
    }
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

async fn next_push(events: &mut mpsc::Receiver<LogPush>) -> LogPush {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event is shipped")
        .expect("the channel is open")
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn workloads_are_resolved_through_owner_chains() {
    let api = FakeApi::default();
    let ns = "shop";
    api.set_single(
        &replica_set_path(ns, "web-7d4"),
        Ok(owned_object("ReplicaSet", ns, "web-7d4", Some(("Deployment", "web")))),
    );
    api.set_single(
        &replica_set_path(ns, "lone"),
        Ok(owned_object("ReplicaSet", ns, "lone", None)),
    );
    api.set_single(&replica_set_path(ns, "secret-rs"), Err(403));
    api.set_single(
        &job_path(ns, "backup-28001"),
        Ok(owned_object("Job", ns, "backup-28001", Some(("CronJob", "backup")))),
    );
    // `gone-job` answers 404: the owner lookup falls back to the Job.

    let mut web = pod(ns, "web-7d4-x2x", "u-web", NODE, Some(("ReplicaSet", "web-7d4")));
    web["metadata"]["labels"] = json!({"app.kubernetes.io/name": "web", "job": "frontend", "ignored": "x"});
    web["metadata"]["annotations"] = json!({"team": "payments"});
    api.put(PODS, web);
    api.put(
        PODS,
        pod(ns, "web-7d4-y3y", "u-web2", NODE, Some(("ReplicaSet", "web-7d4"))),
    );
    api.put(PODS, pod(ns, "db-0", "u-db", NODE, Some(("StatefulSet", "db"))));
    api.put(PODS, pod(ns, "agent-zz", "u-agent", NODE, Some(("DaemonSet", "agent"))));
    api.put(
        PODS,
        pod(ns, "backup-28001-q", "u-backup", NODE, Some(("Job", "backup-28001"))),
    );
    api.put(PODS, pod(ns, "debug", "u-bare", NODE, None));
    api.put(PODS, pod(ns, "lone-a", "u-lone", NODE, Some(("ReplicaSet", "lone"))));
    api.put(
        PODS,
        pod(ns, "secret-a", "u-secret", NODE, Some(("ReplicaSet", "secret-rs"))),
    );
    api.put(PODS, pod(ns, "oneoff-a", "u-oneoff", NODE, Some(("Job", "gone-job"))));
    api.put(
        PODS,
        pod("kube-system", "etcd-node-a", "u-etcd", NODE, Some(("Node", NODE))),
    );
    api.put(PODS, pod(ns, "elsewhere", "u-else", OTHER_NODE, None));

    let h = start(&api).await;
    assert_eq!(
        h.labels(ns, "web-7d4-x2x", Some("u-web")),
        Some(pairs(&[
            ("app_kubernetes_io_name", "web"),
            ("exported_job", "frontend"),
            ("pod_uid", "u-web"),
            ("team", "payments"),
            ("workload", "web"),
            ("workload_kind", "Deployment"),
        ]))
    );
    let workload = |pod: &str| {
        let namespace = if pod.starts_with("etcd") { "kube-system" } else { ns };
        let labels = h
            .labels(namespace, pod, None)
            .unwrap_or_else(|| panic!("{pod} is known"));
        let get = |name: &str| labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
        (get("workload_kind"), get("workload"))
    };
    let expect = |kind: &str, name: &str| (kind.to_string(), name.to_string());
    assert_eq!(workload("web-7d4-y3y"), expect("Deployment", "web"));
    assert_eq!(workload("db-0"), expect("StatefulSet", "db"));
    assert_eq!(workload("agent-zz"), expect("DaemonSet", "agent"));
    assert_eq!(workload("backup-28001-q"), expect("CronJob", "backup"));
    assert_eq!(workload("debug"), expect("Pod", "debug"));
    assert_eq!(workload("lone-a"), expect("ReplicaSet", "lone"));
    assert_eq!(
        workload("secret-a"),
        expect("ReplicaSet", "secret-rs"),
        "forbidden lookup falls back"
    );
    assert_eq!(
        workload("oneoff-a"),
        expect("Job", "gone-job"),
        "missing owner falls back"
    );
    assert_eq!(workload("etcd-node-a"), expect("StaticPod", "etcd-node-a"));
    assert_eq!(h.labels(ns, "elsewhere", None), None, "another node's pod is not ours");
    assert_eq!(h.labels(ns, "db-0", Some("u-other")), None, "a UID must match");

    let requests = h.api.requests();
    let pod_requests: Vec<&String> = requests.iter().filter(|r| r.starts_with(PODS)).collect();
    assert!(!pod_requests.is_empty());
    for request in &pod_requests {
        let query = request.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let selector: Vec<String> = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "fieldSelector")
            .map(|(_, v)| v.into_owned())
            .collect();
        assert_eq!(selector, vec![format!("spec.nodeName={NODE}")], "{request}");
    }
    let web_rs = replica_set_path(ns, "web-7d4");
    assert_eq!(
        requests.iter().filter(|r| r.starts_with(&web_rs)).count(),
        1,
        "two pods of one ReplicaSet cost one lookup"
    );
    h.stop().await;
}

#[tokio::test]
async fn reused_names_and_deleted_pods_keep_their_labels_for_the_grace() {
    let api = FakeApi::default();
    let ns = "db";
    let mut old = pod(ns, "pg-0", "u-old", NODE, Some(("StatefulSet", "pg")));
    old["metadata"]["labels"] = json!({"app.kubernetes.io/name": "pg-v1"});
    api.put(PODS, old);
    api.put(PODS, pod(ns, "pg-1", "u-pg1", NODE, Some(("StatefulSet", "pg"))));
    let h = start(&api).await;
    let app = |uid: Option<&str>| {
        h.labels(ns, "pg-0", uid).map(|labels| {
            labels
                .into_iter()
                .find(|(n, _)| n == "app_kubernetes_io_name")
                .unwrap()
                .1
        })
    };
    assert_eq!(app(None).as_deref(), Some("pg-v1"));

    api.delete(PODS, "u-old");
    let mut new = pod(ns, "pg-0", "u-new", NODE, Some(("StatefulSet", "pg")));
    new["metadata"]["labels"] = json!({"app.kubernetes.io/name": "pg-v2"});
    api.put(PODS, new);
    eventually("the new pg-0", || app(None).as_deref() == Some("pg-v2")).await;
    assert_eq!(
        app(Some("u-old")).as_deref(),
        Some("pg-v1"),
        "old files drain with old labels"
    );
    assert_eq!(app(Some("u-new")).as_deref(), Some("pg-v2"));

    // pg-1 disappears while the watch is down: the re-list notices.
    api.forget(PODS, "u-pg1");
    api.expire_watches(PODS);
    eventually("pg-1 marked deleted by the re-list", || {
        h.metadata.pods().live_pods() == 1
    })
    .await;
    assert!(h.labels(ns, "pg-1", Some("u-pg1")).is_some(), "still within the grace");

    h.clock.advance(59_999);
    assert_eq!(app(Some("u-old")).as_deref(), Some("pg-v1"));
    h.clock.advance(1);
    assert_eq!(app(Some("u-old")), None, "grace over");
    assert_eq!(h.labels(ns, "pg-1", None), None);
    assert_eq!(app(Some("u-new")).as_deref(), Some("pg-v2"), "live pods never expire");
    h.clock.advance(3_600_000);
    assert_eq!(app(None).as_deref(), Some("pg-v2"));
    h.stop().await;
}

#[tokio::test]
async fn annotated_running_pods_are_scrape_targets() {
    let api = FakeApi::default();
    let ns = "apps";
    let annotated = |name: &str, uid: &str, annotations: Value, ports: Value| {
        let mut p = pod(ns, name, uid, NODE, None);
        p["metadata"]["annotations"] = annotations;
        p["spec"]["containers"] = json!([{"name": "main", "ports": ports}]);
        p
    };
    api.put(
        PODS,
        annotated(
            "declared",
            "u1",
            json!({"prometheus.io/scrape": "true"}),
            json!([{"containerPort": 8080}]),
        ),
    );
    api.put(
        PODS,
        annotated(
            "explicit",
            "u2",
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9100",
                   "prometheus.io/path": "/custom", "prometheus.io/scheme": "https"}),
            json!([]),
        ),
    );
    api.put(
        PODS,
        annotated(
            "bad-port",
            "u3",
            json!({"prometheus.io/scrape": "true", "prometheus.io/port": "metrics"}),
            json!([]),
        ),
    );
    api.put(
        PODS,
        annotated("no-port", "u4", json!({"prometheus.io/scrape": "true"}), json!([])),
    );
    api.put(
        PODS,
        annotated(
            "opted-out",
            "u5",
            json!({"prometheus.io/scrape": "false"}),
            json!([{"containerPort": 1}]),
        ),
    );
    let mut pending = annotated(
        "pending",
        "u6",
        json!({"prometheus.io/scrape": "true"}),
        json!([{"containerPort": 1}]),
    );
    pending["status"] = json!({"phase": "Pending"});
    api.put(PODS, pending);
    // Bad input: no uid, no namespace, nothing at all.
    api.put(
        PODS,
        json!({"metadata": {"namespace": ns, "name": "no-uid"}, "spec": {"nodeName": NODE}}),
    );
    api.put(
        PODS,
        json!({"metadata": {"name": "no-ns", "uid": "u7"}, "spec": {"nodeName": NODE}}),
    );
    let h = start(&api).await;

    let targets: Vec<(String, String, String, String)> = h
        .metadata
        .pods()
        .scrape_targets()
        .into_iter()
        .map(|t| (t.pod, t.scheme, t.address, t.path))
        .collect();
    let expected = |pod: &str, scheme: &str, address: &str, path: &str| {
        (
            pod.to_string(),
            scheme.to_string(),
            address.to_string(),
            path.to_string(),
        )
    };
    assert_eq!(
        targets,
        vec![
            expected("declared", "http", "10.1.2.3:8080", "/metrics"),
            expected("explicit", "https", "10.1.2.3:9100", "/custom"),
        ]
    );
    assert!(
        h.labels(ns, "bad-port", None).is_some(),
        "a pod with bad annotations still labels its logs"
    );
    assert_eq!(h.labels(ns, "no-uid", None), None);

    // A pod that stops running stops being a target.
    api.delete(PODS, "u1");
    eventually("the deleted pod leaves the targets", || {
        h.metadata.pods().scrape_targets().len() == 1
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn events_of_this_nodes_pods_are_shipped_once() {
    let api = FakeApi::default();
    let ns = "shop";
    api.set_single(
        &replica_set_path(ns, "web-7d4"),
        Ok(owned_object("ReplicaSet", ns, "web-7d4", Some(("Deployment", "web")))),
    );
    api.put(PODS, pod(ns, "web-1", "u-web1", NODE, Some(("ReplicaSet", "web-7d4"))));
    api.put(PODS, pod(ns, "far", "u-far", OTHER_NODE, None));
    api.put(EVENTS, event("e1", ns, "web-1", "u-web1", "BackOff", 3));
    api.put(EVENTS, event("e-far", ns, "far", "u-far", "BackOff", 1));
    let mut node_event = event("e-node", "", NODE, "u-node", "NodeNotReady", 1);
    node_event["involvedObject"]["kind"] = json!("Node");
    api.put(EVENTS, node_event);
    let mut h = start(&api).await;

    let push = next_push(&mut h.events).await;
    assert_eq!(push.streams.len(), 1);
    let stream = &push.streams[0];
    let labels: Vec<(String, String)> = stream
        .labels
        .iter()
        .map(|l: &Label| (l.name.clone(), l.value.clone()))
        .collect();
    assert_eq!(
        labels,
        pairs(&[
            ("cluster", "prod-eu"),
            ("job", "kubernetes-events"),
            ("namespace", ns),
            ("node", NODE),
            ("pod", "web-1"),
            ("pod_uid", "u-web1"),
            ("workload", "web"),
            ("workload_kind", "Deployment"),
        ])
    );
    assert_eq!(stream.entries.len(), 1);
    assert_eq!(
        stream.entries[0].line,
        r#"type=Warning reason=BackOff object=Pod/web-1 count=3 source=kubelet message="Back-off restarting failed container""#
    );
    assert_eq!(stream.entries[0].timestamp, 1_704_067_260_000_000_000);

    // The event repeats: a new resourceVersion, a higher count, shipped again.
    api.put(EVENTS, event("e1", ns, "web-1", "u-web1", "BackOff", 4));
    let again = next_push(&mut h.events).await;
    assert!(again.streams[0].entries[0].line.contains("count=4"), "{again:?}");

    // A re-list after 410 Gone lists e1 and e-far again; neither is shipped.
    let watches_before = h.api.requests().iter().filter(|r| r.starts_with(EVENTS)).count();
    api.expire_watches(EVENTS);
    eventually("the event re-list", || {
        h.api.requests().iter().filter(|r| r.starts_with(EVENTS)).count() >= watches_before + 2
            && h.api.watch_count(EVENTS) == 1
    })
    .await;
    // A deleted pod's events still ship during the grace.
    api.delete(PODS, "u-web1");
    eventually("web-1 deleted", || h.metadata.pods().live_pods() == 0).await;
    api.put(EVENTS, event("e2", ns, "web-1", "u-web1", "Killing", 1));
    let marker = next_push(&mut h.events).await;
    assert!(
        marker.streams[0].entries[0].line.contains("reason=Killing"),
        "the next push after the re-list is the new event, not a repeat: {marker:?}"
    );
    assert!(h.events.try_recv().is_err(), "nothing else was shipped");

    // The scheduler's event can come before the pod watch sees the pod.
    let mut scheduled = event("e3", ns, "web-2", "u-web2", "Scheduled", 1);
    scheduled["lastTimestamp"] = json!("2023-11-14T22:13:20Z"); // START_MS: it just happened
    api.put(EVENTS, scheduled);
    api.put(PODS, pod(ns, "web-2", "u-web2", NODE, Some(("ReplicaSet", "web-7d4"))));
    let late = next_push(&mut h.events).await;
    assert!(late.streams[0].entries[0].line.contains("reason=Scheduled"), "{late:?}");
    assert_eq!(late.streams[0].labels.get("workload"), Some("web"));
    h.stop().await;
}

#[tokio::test]
async fn api_errors_are_retried_and_shutdown_stops_the_tasks() {
    // No pods collection at all for a while: lists answer 500 until one exists.
    #[derive(Clone)]
    struct Flaky(FakeApi, Arc<Mutex<u32>>);
    let api = FakeApi::default();
    let flaky = Flaky(api.clone(), Arc::new(Mutex::new(0)));
    let service = {
        let flaky = flaky.clone();
        tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let flaky = flaky.clone();
            async move {
                let mut failures = flaky.1.lock().unwrap();
                if *failures < 2 {
                    *failures += 1;
                    return Ok::<_, Infallible>(respond(500, &status(500, "InternalError")));
                }
                drop(failures);
                Ok(flaky.0.answer(&request))
            }
        })
    };
    api.put(PODS, pod("ns", "p", "u-p", NODE, None));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let metadata = KubeMetadata::start(
        kube::Client::new(service, "default"),
        &config(),
        NODE,
        "",
        Arc::new(ManualClock::new(START_MS)),
        None,
        shutdown_rx,
    );
    tokio::time::timeout(Duration::from_secs(30), metadata.wait_synced())
        .await
        .expect("the watch recovers from API errors");
    assert!(metadata.pods().pod_labels("ns", "p", Some("u-p")).is_some());
    shutdown.send_replace(true);
    tokio::time::timeout(PATIENCE, metadata.join())
        .await
        .expect("tasks stop on shutdown");
}
