//! The cache of this node's pods behind [`PodDirectory`], and the task that
//! keeps it current from a watch on `spec.nodeName=<node>`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tidewatch_model::{Clock, Label, TimestampMs};
use tokio::sync::watch;

use super::owners::{OwnerRef, OwnerResolver, Workload, controller_owner};
use super::shutdown_requested;
use crate::config::KubernetesConfig;
use crate::labels::{
    CLUSTER, CONTAINER, FILENAME, INSTANCE, JOB, NAMESPACE, NODE, POD, POD_UID, STREAM, WORKLOAD, WORKLOAD_KIND,
};
use crate::{PodDirectory, PodScrapeTarget};

/// `"true"` opts a pod into scraping (exactly that value, as in the usual
/// Prometheus relabelling that keeps on the regex `true`).
pub const ANNOTATION_SCRAPE: &str = "prometheus.io/scrape";
pub const ANNOTATION_PORT: &str = "prometheus.io/port";
pub const ANNOTATION_PATH: &str = "prometheus.io/path";
pub const ANNOTATION_SCHEME: &str = "prometheus.io/scheme";
/// On a mirror pod: the UID the kubelet gave the static pod, which is the one
/// in its log directory's name (`/var/log/pods/<ns>_<pod>_<uid>/`).
const ANNOTATION_CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
const DEFAULT_METRICS_PATH: &str = "/metrics";
const DEFAULT_SCHEME: &str = "http";
const PHASE_RUNNING: &str = "Running";
/// A configured label whose name is taken gets this prefix, as Prometheus
/// does for scraped labels clashing with target labels (`honor_labels: false`).
const EXPORTED_PREFIX: &str = "exported_";
/// How often deleted pods past their grace (and stale owner lookups) are
/// dropped; reads already ignore them, this only frees memory.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Names a configured pod label or annotation may not take, because the
/// collector sets them itself.
const RESERVED_LABELS: &[&str] = &[
    CLUSTER,
    NAMESPACE,
    POD,
    POD_UID,
    CONTAINER,
    NODE,
    WORKLOAD_KIND,
    WORKLOAD,
    STREAM,
    FILENAME,
    JOB,
    INSTANCE,
];

/// Turns a Kubernetes label or annotation key into a Prometheus label name:
/// every character outside `[a-zA-Z0-9_]` becomes `_`, and a leading digit
/// gets a `_` in front (`app.kubernetes.io/name` → `app_kubernetes_io_name`).
pub fn sanitize_label_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len() + 1);
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        name.push('_');
    }
    for c in key.chars() {
        name.push(if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' });
    }
    name
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetadataSource {
    Label,
    Annotation,
}

#[derive(Debug, Clone)]
struct CopiedKey {
    source: MetadataSource,
    key: String,
    label: String,
}

/// The configured `pod_labels` and `pod_annotations` and the label names they
/// are copied to, with collisions settled once, at start:
///
/// - a name the collector sets itself (`namespace`, `pod`, `workload`, `job`,
///   …, see [`crate::labels`]) or one starting with `__` becomes
///   `exported_<name>`, as Prometheus renames scraped labels that clash with
///   target labels;
/// - two keys that sanitize to the same name (`app.kind` and `app_kind`): the
///   first wins, pod labels before annotations, each in configured order; the
///   later key is not copied, and a warning names both.
#[derive(Debug, Clone, Default)]
pub struct CopiedMetadata {
    keys: Vec<CopiedKey>,
}

impl CopiedMetadata {
    pub fn from_config(config: &KubernetesConfig) -> Self {
        let configured = config.pod_labels.iter().map(|key| (MetadataSource::Label, key)).chain(
            config
                .pod_annotations
                .iter()
                .map(|key| (MetadataSource::Annotation, key)),
        );
        let mut keys: Vec<CopiedKey> = Vec::new();
        for (source, key) in configured {
            if key.is_empty() {
                continue;
            }
            let mut label = sanitize_label_name(key);
            if RESERVED_LABELS.contains(&label.as_str()) || label.starts_with("__") {
                label = format!("{EXPORTED_PREFIX}{label}");
            }
            if let Some(earlier) = keys.iter().find(|k| k.label == label) {
                tracing::warn!(
                    key = %key,
                    label = %label,
                    earlier = %earlier.key,
                    "pod metadata key maps to a label name already taken, not copied"
                );
                continue;
            }
            keys.push(CopiedKey {
                source,
                key: key.clone(),
                label,
            });
        }
        CopiedMetadata { keys }
    }

    /// The configured labels this pod has (empty values are no label).
    fn labels_of(&self, pod: &Pod) -> Vec<Label> {
        let mut copied = Vec::new();
        for wanted in &self.keys {
            let map = match wanted.source {
                MetadataSource::Label => pod.metadata.labels.as_ref(),
                MetadataSource::Annotation => pod.metadata.annotations.as_ref(),
            };
            if let Some(value) = map.and_then(|m| m.get(&wanted.key))
                && !value.is_empty()
            {
                copied.push(Label::new(wanted.label.clone(), value.clone()));
            }
        }
        copied
    }
}

/// What the cache keeps from a pod, before its workload is resolved.
#[derive(Debug, Clone)]
pub(crate) struct PodFacts {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) owner: Option<OwnerRef>,
    mirror_uid: Option<String>,
    copied: Vec<Label>,
    scrape: Option<PodScrapeTarget>,
}

impl PodFacts {
    /// `None` for a pod without namespace, name or UID: nothing could find it.
    pub(crate) fn of(pod: &Pod, copied: &CopiedMetadata) -> Option<PodFacts> {
        let namespace = pod.metadata.namespace.clone().filter(|s| !s.is_empty())?;
        let name = pod.metadata.name.clone().filter(|s| !s.is_empty())?;
        let uid = pod.metadata.uid.clone().filter(|s| !s.is_empty())?;
        let mirror_uid = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CONFIG_MIRROR))
            .filter(|m| !m.is_empty() && **m != uid)
            .cloned();
        let scrape = scrape_target(pod, &namespace, &name);
        Some(PodFacts {
            owner: controller_owner(&pod.metadata),
            copied: copied.labels_of(pod),
            namespace,
            name,
            uid,
            mirror_uid,
            scrape,
        })
    }
}

/// The pod's metrics endpoint, when it is annotated for scraping, Running and
/// has an IP. A pod whose annotations cannot be used (a port that is no
/// number, a scheme other than http/https, no port at all) is skipped and
/// logged: a guess would scrape the wrong thing.
fn scrape_target(pod: &Pod, namespace: &str, name: &str) -> Option<PodScrapeTarget> {
    let annotations = pod.metadata.annotations.as_ref()?;
    if annotations.get(ANNOTATION_SCRAPE).map(String::as_str) != Some("true") {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some(PHASE_RUNNING) {
        return None;
    }
    let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
    let port = match annotations.get(ANNOTATION_PORT) {
        Some(text) => match text.trim().parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                tracing::warn!(namespace, pod = name, port = %text, "invalid prometheus.io/port annotation, not scraped");
                return None;
            }
        },
        None => {
            let declared = pod
                .spec
                .as_ref()
                .into_iter()
                .flat_map(|spec| spec.containers.iter())
                .flat_map(|container| container.ports.iter().flatten())
                .map(|port| port.container_port)
                .find(|&port| port > 0 && port <= i32::from(u16::MAX));
            match declared {
                Some(port) => port as u16,
                None => {
                    tracing::warn!(
                        namespace,
                        pod = name,
                        "pod annotated for scraping declares no port, not scraped"
                    );
                    return None;
                }
            }
        }
    };
    let scheme = match annotations.get(ANNOTATION_SCHEME).map(|s| s.trim()) {
        None | Some("") => DEFAULT_SCHEME.to_string(),
        Some(scheme) if scheme == "http" || scheme == "https" => scheme.to_string(),
        Some(scheme) => {
            tracing::warn!(
                namespace,
                pod = name,
                scheme,
                "invalid prometheus.io/scheme annotation, not scraped"
            );
            return None;
        }
    };
    let path = match annotations.get(ANNOTATION_PATH).map(|p| p.trim()) {
        None | Some("") => DEFAULT_METRICS_PATH.to_string(),
        Some(path) if path.starts_with('/') => path.to_string(),
        Some(path) => format!("/{path}"),
    };
    let address = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    Some(PodScrapeTarget {
        namespace: namespace.to_string(),
        pod: name.to_string(),
        scheme,
        address,
        path,
    })
}

#[derive(Debug)]
struct PodEntry {
    namespace: String,
    name: String,
    labels: Arc<[Label]>,
    scrape: Option<PodScrapeTarget>,
    mirror_uid: Option<String>,
    /// When the watch said the pod is gone; labels are kept for the grace period.
    deleted_at: Option<TimestampMs>,
}

impl PodEntry {
    fn known_at(&self, now: TimestampMs, grace_ms: i64) -> bool {
        match self.deleted_at {
            None => true,
            Some(deleted_at) => now < deleted_at.saturating_add(grace_ms),
        }
    }
}

#[derive(Debug, Default)]
struct PodIndex {
    by_uid: HashMap<String, PodEntry>,
    /// namespace → pod name → UID of the newest pod with that name.
    current: HashMap<String, HashMap<String, String>>,
    /// A static pod's kubelet UID → its mirror pod's API UID.
    aliases: HashMap<String, String>,
}

impl PodIndex {
    fn remove(&mut self, uid: &str) {
        let Some(entry) = self.by_uid.remove(uid) else {
            return;
        };
        if let Some(names) = self.current.get_mut(&entry.namespace) {
            if names.get(&entry.name).is_some_and(|current| current == uid) {
                names.remove(&entry.name);
            }
            if names.is_empty() {
                self.current.remove(&entry.namespace);
            }
        }
        if let Some(mirror) = &entry.mirror_uid
            && self.aliases.get(mirror).is_some_and(|target| target == uid)
        {
            self.aliases.remove(mirror);
        }
    }
}

/// This node's pods and their labels, kept current by the watch task that
/// [`super::KubeMetadata`] runs. Safe to share: reads take a read lock and
/// never wait on the network.
///
/// Pods are keyed by UID, with an index from (namespace, name) to the newest
/// UID. A deleted pod (a `Deleted` watch event, or absence from a re-list)
/// stays answerable for `deleted_pod_grace`, measured on the injected clock.
#[derive(Debug)]
pub struct KubePods {
    grace_ms: i64,
    clock: Arc<dyn Clock>,
    copied: CopiedMetadata,
    index: RwLock<PodIndex>,
}

impl KubePods {
    pub fn new(config: &KubernetesConfig, clock: Arc<dyn Clock>) -> Self {
        KubePods {
            grace_ms: i64::try_from(config.deleted_pod_grace.as_millis()).unwrap_or(i64::MAX),
            clock,
            copied: CopiedMetadata::from_config(config),
            index: RwLock::new(PodIndex::default()),
        }
    }

    /// Pods in the cache that are not deleted.
    pub fn live_pods(&self) -> usize {
        self.read().by_uid.values().filter(|e| e.deleted_at.is_none()).count()
    }

    pub(crate) fn copied_metadata(&self) -> &CopiedMetadata {
        &self.copied
    }

    // A poisoned lock means a panic elsewhere while writing a map of owned
    // strings; the maps are still consistent enough to keep labelling logs.
    fn read(&self) -> RwLockReadGuard<'_, PodIndex> {
        self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, PodIndex> {
        self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds or updates a pod; it becomes the current pod of its name.
    pub(crate) fn apply(&self, facts: PodFacts, workload: &Workload) {
        let mut labels = facts.copied;
        labels.push(Label::new(POD_UID, facts.uid.clone()));
        labels.push(Label::new(WORKLOAD_KIND, workload.kind.clone()));
        labels.push(Label::new(WORKLOAD, workload.name.clone()));
        labels.retain(|l| !l.value.is_empty());
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut index = self.write();
        index
            .current
            .entry(facts.namespace.clone())
            .or_default()
            .insert(facts.name.clone(), facts.uid.clone());
        if let Some(mirror) = &facts.mirror_uid {
            index.aliases.insert(mirror.clone(), facts.uid.clone());
        }
        index.by_uid.insert(
            facts.uid,
            PodEntry {
                namespace: facts.namespace,
                name: facts.name,
                labels: labels.into(),
                scrape: facts.scrape,
                mirror_uid: facts.mirror_uid,
                deleted_at: None,
            },
        );
    }

    /// Marks a pod deleted now; its labels stay for the grace period.
    pub(crate) fn delete(&self, uid: &str) {
        let now = self.clock.now_ms();
        if let Some(entry) = self.write().by_uid.get_mut(uid) {
            entry.deleted_at.get_or_insert(now);
        }
    }

    /// After a re-list: pods the list did not contain were deleted while the
    /// watch was down.
    pub(crate) fn retain_listed(&self, listed: &HashSet<String>) {
        let now = self.clock.now_ms();
        let mut index = self.write();
        for (uid, entry) in index.by_uid.iter_mut() {
            if entry.deleted_at.is_none() && !listed.contains(uid) {
                entry.deleted_at = Some(now);
            }
        }
    }

    /// Forgets deleted pods whose grace has passed.
    pub(crate) fn purge_expired(&self) {
        let now = self.clock.now_ms();
        let mut index = self.write();
        let expired: Vec<String> = index
            .by_uid
            .iter()
            .filter(|(_, entry)| !entry.known_at(now, self.grace_ms))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in expired {
            index.remove(&uid);
        }
    }
}

impl PodDirectory for KubePods {
    fn pod_labels(&self, namespace: &str, pod: &str, pod_uid: Option<&str>) -> Option<Arc<[Label]>> {
        let now = self.clock.now_ms();
        let index = self.read();
        let uid = match pod_uid {
            Some(uid) => index.aliases.get(uid).map(String::as_str).unwrap_or(uid),
            None => index.current.get(namespace)?.get(pod)?.as_str(),
        };
        let entry = index.by_uid.get(uid)?;
        // A UID from a file name must also agree on the name: a mismatch
        // means the caller's path and the cluster disagree, and no labels
        // are better than another pod's.
        if entry.namespace != namespace || entry.name != pod || !entry.known_at(now, self.grace_ms) {
            return None;
        }
        Some(entry.labels.clone())
    }

    fn scrape_targets(&self) -> Vec<PodScrapeTarget> {
        let index = self.read();
        let mut targets: Vec<PodScrapeTarget> = index
            .by_uid
            .values()
            .filter(|entry| entry.deleted_at.is_none())
            .filter_map(|entry| entry.scrape.clone())
            .collect();
        targets.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
        targets
    }
}

/// Watches this node's pods until shutdown, feeding `pods`. `synced` turns
/// true once the first full list is in the cache. API errors are logged and
/// retried with kube's default backoff (0.8 s doubling to 30 s, with jitter);
/// a 410 Gone makes the watcher re-list, and pods missing from a re-list are
/// treated as deleted.
pub(crate) async fn watch_pods(
    client: Client,
    node: String,
    pods: Arc<KubePods>,
    mut owners: OwnerResolver,
    synced: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut listed: HashSet<String> = HashSet::new();
    loop {
        let event = tokio::select! {
            _ = shutdown_requested(&mut shutdown) => break,
            _ = sweep.tick() => {
                pods.purge_expired();
                owners.prune();
                continue;
            }
            event = stream.next() => event,
        };
        match event {
            Some(Ok(Event::Init)) => listed.clear(),
            Some(Ok(Event::InitApply(pod))) => {
                if let Some(uid) = apply_pod(&pods, &mut owners, &pod).await {
                    listed.insert(uid);
                }
            }
            Some(Ok(Event::InitDone)) => {
                pods.retain_listed(&listed);
                listed.clear();
                tracing::info!(node = %node, pods = pods.live_pods(), "pod list synced");
                synced.send_replace(true);
            }
            Some(Ok(Event::Apply(pod))) => {
                apply_pod(&pods, &mut owners, &pod).await;
            }
            Some(Ok(Event::Delete(pod))) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    pods.delete(uid);
                }
            }
            Some(Err(error)) => {
                tracing::warn!(node = %node, %error, "pod watch failed, retrying");
            }
            None => {
                // The backoff-wrapped watcher never ends; if it did, there
                // is nothing left to watch.
                tracing::error!(node = %node, "pod watch ended");
                break;
            }
        }
    }
    tracing::debug!(node = %node, "pod watch stopped");
}

/// Resolves and caches one pod; returns its UID, `None` for an unusable pod.
async fn apply_pod(pods: &KubePods, owners: &mut OwnerResolver, pod: &Pod) -> Option<String> {
    let Some(facts) = PodFacts::of(pod, pods.copied_metadata()) else {
        tracing::warn!(
            namespace = pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod = pod.metadata.name.as_deref().unwrap_or_default(),
            "pod without namespace, name or uid, skipped"
        );
        return None;
    };
    let workload = owners
        .workload(&facts.namespace, &facts.name, facts.owner.as_ref())
        .await;
    let uid = facts.uid.clone();
    pods.apply(facts, &workload);
    Some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tidewatch_model::ManualClock;

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(sanitize_label_name("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(sanitize_label_name("team"), "team");
        assert_eq!(sanitize_label_name("9lives"), "_9lives");
        assert_eq!(sanitize_label_name("ünï-code"), "_n__code");
    }

    #[test]
    fn collisions_are_settled_once() {
        let config = KubernetesConfig {
            pod_labels: vec!["app.kind".into(), "job".into(), "".into()],
            pod_annotations: vec!["app_kind".into(), "owner/team".into(), "__meta".into()],
            ..KubernetesConfig::default()
        };
        let copied = CopiedMetadata::from_config(&config);
        let names: Vec<(&str, &str)> = copied.keys.iter().map(|k| (k.key.as_str(), k.label.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("app.kind", "app_kind"),
                ("job", "exported_job"),
                ("owner/team", "owner_team"),
                ("__meta", "exported___meta"),
            ]
        );
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn annotated(annotations: serde_json::Value, ports: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "p", "uid": "u1", "annotations": annotations},
            "spec": {"containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7"}
        }))
    }

    #[test]
    fn scrape_targets_follow_the_annotations() {
        let target = |p: &Pod| scrape_target(p, "ns", "p");
        let declared = annotated(
            serde_json::json!({"prometheus.io/scrape": "true"}),
            serde_json::json!([{"containerPort": 8080}]),
        );
        let got = target(&declared).unwrap();
        assert_eq!(
            (got.address.as_str(), got.path.as_str(), got.scheme.as_str()),
            ("10.0.0.7:8080", "/metrics", "http")
        );

        let explicit = annotated(
            serde_json::json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9102",
                "prometheus.io/path": "stats", "prometheus.io/scheme": "https"}),
            serde_json::json!([]),
        );
        let got = target(&explicit).unwrap();
        assert_eq!(
            (got.address.as_str(), got.path.as_str(), got.scheme.as_str()),
            ("10.0.0.7:9102", "/stats", "https")
        );

        for bad in ["http", "0", "70000", ""] {
            let invalid = annotated(
                serde_json::json!({"prometheus.io/scrape": "true", "prometheus.io/port": bad}),
                serde_json::json!([{"containerPort": 8080}]),
            );
            assert_eq!(target(&invalid), None, "port {bad:?}");
        }
        let no_port = annotated(
            serde_json::json!({"prometheus.io/scrape": "true"}),
            serde_json::json!([]),
        );
        assert_eq!(target(&no_port), None);
        let not_opted_in = annotated(
            serde_json::json!({"prometheus.io/scrape": "True"}),
            serde_json::json!([{"containerPort": 1}]),
        );
        assert_eq!(target(&not_opted_in), None);
        let bad_scheme = annotated(
            serde_json::json!({"prometheus.io/scrape": "true", "prometheus.io/scheme": "gopher"}),
            serde_json::json!([{"containerPort": 1}]),
        );
        assert_eq!(target(&bad_scheme), None);
    }

    #[test]
    fn pods_without_identity_are_not_cached() {
        let copied = CopiedMetadata::default();
        assert!(PodFacts::of(&pod(serde_json::json!({})), &copied).is_none());
        assert!(
            PodFacts::of(
                &pod(serde_json::json!({"metadata": {"namespace": "ns", "name": "p"}})),
                &copied
            )
            .is_none()
        );
        let pending = pod(
            serde_json::json!({"metadata": {"namespace": "ns", "name": "p", "uid": "u",
            "annotations": {"prometheus.io/scrape": "true"}}}),
        );
        let facts = PodFacts::of(&pending, &copied).unwrap();
        assert!(facts.scrape.is_none(), "no status, no IP: not a target");
    }

    #[test]
    fn deleted_pods_expire_after_the_grace() {
        let clock = ManualClock::new(1_000);
        let config = KubernetesConfig {
            deleted_pod_grace: Duration::from_secs(60),
            ..KubernetesConfig::default()
        };
        let pods = KubePods::new(&config, Arc::new(clock.clone()));
        let facts = PodFacts::of(
            &pod(
                serde_json::json!({"metadata": {"namespace": "ns", "name": "p", "uid": "u1",
                "labels": BTreeMap::from([("app", "x")])}}),
            ),
            &pods.copied,
        )
        .unwrap();
        let workload = Workload {
            kind: "Pod".into(),
            name: "p".into(),
        };
        pods.apply(facts, &workload);
        pods.delete("u1");
        clock.advance(59_999);
        pods.purge_expired();
        assert!(pods.pod_labels("ns", "p", Some("u1")).is_some());
        clock.advance(1);
        assert!(
            pods.pod_labels("ns", "p", None).is_none(),
            "reads ignore expired pods before the sweep"
        );
        pods.purge_expired();
        assert!(pods.read().by_uid.is_empty() && pods.read().current.is_empty());
    }
}
