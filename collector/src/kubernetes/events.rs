//! The event center: Kubernetes Events about this node's pods, shipped as log
//! lines next to the pods' own logs.
//!
//! Every collector watches the core/v1 Events of kind Pod in the whole cluster
//! (Events have no field for the node), and ships only those whose pod is in
//! its own node's cache — including pods deleted less than
//! `deleted_pod_grace` ago, so the `Killing` and `FailedKillPod` events of a
//! pod that just went away still arrive. Since a pod runs on exactly one
//! node, exactly one collector ships each event: no leader election is
//! needed, and no event is shipped twice by two collectors. (Events of
//! objects other than pods — Nodes, Deployments — are not shipped by
//! anyone; that would need one cluster-wide shipper.)
//!
//! core/v1 rather than events.k8s.io/v1: they are two views of the same
//! objects, but core/v1 carries `count`, `lastTimestamp` and `source` for
//! events written by both the old and the new recorder, serves the
//! `involvedObject.kind` field selector, and is what `kubectl get events`,
//! kube-state-metrics' users and Grafana Alloy's
//! `loki.source.kubernetes_events` read — so lines look the way operators
//! know them.
//!
//! An event is one log entry in the stream `{job="kubernetes-events",
//! namespace, pod, node, cluster}` plus the pod's own labels (`pod_uid`,
//! `workload_kind`, `workload` and the configured pod labels), so
//! `{workload="web", job="kubernetes-events"}` finds a deployment's events.
//! The line is logfmt:
//!
//! ```text
//! type=Warning reason=BackOff object=Pod/web-1 count=3 source=kubelet message="Back-off restarting failed container"
//! ```
//!
//! An event that just happened to a pod not yet in the cache waits up to
//! [`PENDING_HOLD_MS`] for it: the scheduler's `Scheduled` event can arrive
//! before the pod watch has seen the pod bound to this node.
//!
//! An event is shipped again only when it changed (a new `resourceVersion`,
//! typically a higher `count`): a re-list after a watch error does not ship
//! it twice. The memory of shipped events is bounded ([`SHIPPED_MEMORY`]); an
//! event forgotten and then re-listed produces exactly the same entry
//! (timestamp and line derive from the event alone), which the server stores
//! once.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as KubeEvent;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tidewatch_model::logs::{LogEntry, LogPush, LogStream, TimestampNs};
use tidewatch_model::{Clock, Label, Labels, TimestampMs};
use tokio::sync::{mpsc, watch};

use super::pods::KubePods;
use super::shutdown_requested;
use crate::PodDirectory;
use crate::labels::{CLUSTER, JOB, NAMESPACE, NODE, POD};

/// The `job` label of event streams. A name of its own, not a pod's job, so
/// events never mix with container logs in one stream.
pub const EVENTS_JOB: &str = "kubernetes-events";
/// How many shipped events are remembered for de-duplication (about an hour
/// of events of a busy node; Kubernetes keeps events for an hour by default).
pub const SHIPPED_MEMORY: usize = 8192;
const POD_KIND: &str = "Pod";
/// Narrows the cluster-wide watch to pod events on the API server's side.
const EVENT_FIELD_SELECTOR: &str = "involvedObject.kind=Pod";
const NS_PER_MS: i64 = 1_000_000;
/// How long an event about a pod not yet in the cache waits for the pod.
pub const PENDING_HOLD_MS: i64 = 30_000;
/// At most this many events wait for their pod; beyond, the oldest is dropped.
const PENDING_CAPACITY: usize = 1024;
/// How often held events are tried again.
const PENDING_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Remembers the `resourceVersion` last shipped per event UID, forgetting
/// the oldest event beyond the capacity.
#[derive(Debug)]
struct ShippedEvents {
    versions: HashMap<String, String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl ShippedEvents {
    fn new(capacity: usize) -> Self {
        ShippedEvents {
            versions: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn already_shipped(&self, uid: &str, version: &str) -> bool {
        self.versions.get(uid).is_some_and(|shipped| shipped == version)
    }

    fn remember(&mut self, uid: &str, version: &str) {
        if let Some(shipped) = self.versions.get_mut(uid) {
            version.clone_into(shipped);
            return;
        }
        self.versions.insert(uid.to_string(), version.to_string());
        self.order.push_back(uid.to_string());
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.versions.remove(&oldest);
            }
        }
    }
}

/// Turns events into log pushes for the pods this node knows.
#[derive(Debug)]
pub(crate) struct EventShipper {
    pods: Arc<KubePods>,
    node: String,
    cluster: String,
    clock: Arc<dyn Clock>,
    shipped: ShippedEvents,
    /// Events about pods not in the cache yet, with when they were held.
    pending: VecDeque<(TimestampMs, KubeEvent)>,
}

impl EventShipper {
    pub(crate) fn new(pods: Arc<KubePods>, node: &str, cluster: &str, clock: Arc<dyn Clock>) -> Self {
        EventShipper {
            pods,
            node: node.to_string(),
            cluster: cluster.to_string(),
            clock,
            shipped: ShippedEvents::new(SHIPPED_MEMORY),
            pending: VecDeque::new(),
        }
    }

    /// The push for `event`, or `None` when it is not about a pod of this
    /// node or was shipped already (same UID and resourceVersion). A recent
    /// event about a pod not (yet) in the cache is held for
    /// [`PENDING_HOLD_MS`] and tried again by [`EventShipper::retry_pending`]:
    /// the scheduler's `Scheduled` event can arrive before the pod watch has
    /// seen the pod bound to this node.
    pub(crate) fn offer(&mut self, event: KubeEvent) -> Option<LogPush> {
        match self.resolve(&event) {
            Resolution::Pod(labels) => self.push_for(&event, &labels),
            Resolution::UnknownPod if self.is_recent(&event) => {
                self.hold(event);
                None
            }
            Resolution::UnknownPod | Resolution::NotAPod => None,
        }
    }

    /// Pushes for held events whose pod is now known; drops held events
    /// older than [`PENDING_HOLD_MS`] (they were about another node's pods).
    pub(crate) fn retry_pending(&mut self) -> Vec<LogPush> {
        let now = self.clock.now_ms();
        let mut pushes = Vec::new();
        for (held_at, event) in std::mem::take(&mut self.pending) {
            match self.resolve(&event) {
                Resolution::Pod(labels) => pushes.extend(self.push_for(&event, &labels)),
                Resolution::UnknownPod if now < held_at.saturating_add(PENDING_HOLD_MS) => {
                    self.pending.push_back((held_at, event));
                }
                Resolution::UnknownPod | Resolution::NotAPod => {}
            }
        }
        pushes
    }

    fn hold(&mut self, event: KubeEvent) {
        if self.pending.len() >= PENDING_CAPACITY {
            self.pending.pop_front();
        }
        self.pending.push_back((self.clock.now_ms(), event));
    }

    /// Whether the event happened within the hold window: old events of
    /// unknown pods (most of a re-list) are not worth holding.
    fn is_recent(&self, event: &KubeEvent) -> bool {
        let since = self
            .clock
            .now_ms()
            .saturating_sub(PENDING_HOLD_MS)
            .saturating_mul(NS_PER_MS);
        event_timestamp_ns(event).is_some_and(|timestamp| timestamp >= since)
    }

    fn resolve(&self, event: &KubeEvent) -> Resolution {
        let object = &event.involved_object;
        if object.kind.as_deref() != Some(POD_KIND) {
            return Resolution::NotAPod;
        }
        let (Some(namespace), Some(pod_name)) = (event_namespace(event), event_pod_name(event)) else {
            return Resolution::NotAPod;
        };
        let pod_uid = object.uid.as_deref().filter(|u| !u.is_empty());
        match self.pods.pod_labels(namespace, pod_name, pod_uid) {
            Some(labels) => Resolution::Pod(labels),
            None => Resolution::UnknownPod,
        }
    }

    /// The push for an event about a known pod with `pod_labels`, unless it
    /// was shipped already.
    fn push_for(&mut self, event: &KubeEvent, pod_labels: &[Label]) -> Option<LogPush> {
        let namespace = event_namespace(event)?;
        let pod_name = event_pod_name(event)?;
        let event_uid = event.metadata.uid.as_deref().unwrap_or_default();
        let version = event.metadata.resource_version.as_deref().unwrap_or_default();
        let deduplicated = !event_uid.is_empty() && !version.is_empty();
        if deduplicated && self.shipped.already_shipped(event_uid, version) {
            return None;
        }

        let mut stream_labels: Vec<Label> = pod_labels.to_vec();
        stream_labels.push(Label::new(JOB, EVENTS_JOB));
        stream_labels.push(Label::new(NAMESPACE, namespace));
        stream_labels.push(Label::new(POD, pod_name));
        stream_labels.push(Label::new(NODE, self.node.clone()));
        stream_labels.push(Label::new(CLUSTER, self.cluster.clone()));
        let labels = Labels::from_pairs(stream_labels.into_iter().map(|l| (l.name, l.value)));
        let timestamp = event_timestamp_ns(event).unwrap_or_else(|| self.clock.now_ms().saturating_mul(NS_PER_MS));
        let entry = LogEntry::new(timestamp, event_line(event, pod_name));

        if deduplicated {
            self.shipped.remember(event_uid, version);
        }
        Some(LogPush {
            streams: vec![LogStream {
                labels,
                entries: vec![entry],
            }],
        })
    }
}

/// What an event is about, as far as this node is concerned.
enum Resolution {
    /// Not a pod, or no usable namespace and name.
    NotAPod,
    /// A pod this node does not know (now).
    UnknownPod,
    /// A pod of this node, with its labels.
    Pod(Arc<[Label]>),
}

/// The pod's namespace: the object reference's, else the event's own (a
/// pod's events live in the pod's namespace).
fn event_namespace(event: &KubeEvent) -> Option<&str> {
    event
        .involved_object
        .namespace
        .as_deref()
        .or(event.metadata.namespace.as_deref())
        .filter(|n| !n.is_empty())
}

fn event_pod_name(event: &KubeEvent) -> Option<&str> {
    event.involved_object.name.as_deref().filter(|n| !n.is_empty())
}

/// When the event (last) happened: `lastTimestamp`, else `eventTime`, else
/// `firstTimestamp`, else when the object was created.
pub(crate) fn event_timestamp_ns(event: &KubeEvent) -> Option<TimestampNs> {
    let timestamp = event
        .last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.first_timestamp.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    i64::try_from(timestamp.as_nanosecond()).ok()
}

/// `type=… reason=… object=Pod/<name> count=… [source=…] message=…`.
pub(crate) fn event_line(event: &KubeEvent, pod_name: &str) -> String {
    let count = event.count.or(event.series.as_ref().and_then(|s| s.count)).unwrap_or(1);
    let source = event
        .reporting_component
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(event.source.as_ref().and_then(|s| s.component.as_deref()))
        .filter(|s| !s.is_empty());
    let mut line = String::with_capacity(128);
    push_field(&mut line, "type", event.type_.as_deref().unwrap_or_default());
    push_field(&mut line, "reason", event.reason.as_deref().unwrap_or_default());
    push_field(&mut line, "object", &format!("{POD_KIND}/{pod_name}"));
    push_field(&mut line, "count", &count.to_string());
    if let Some(source) = source {
        push_field(&mut line, "source", source);
    }
    push_field(
        &mut line,
        "message",
        event.message.as_deref().unwrap_or_default().trim_end(),
    );
    line
}

/// Appends ` key=value`, quoting the value as go-logfmt does when it is
/// empty or holds a space, `=`, `"` or a control character.
fn push_field(line: &mut String, key: &str, value: &str) {
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(key);
    line.push('=');
    let needs_quotes = value.is_empty() || value.chars().any(|c| c <= ' ' || c == '=' || c == '"' || c == '\u{7f}');
    if !needs_quotes {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{:04x}", u32::from(c));
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

/// Ships pod events into `sink` until shutdown or until the sink is closed.
/// Waits for the pod cache's first sync, so the events listed at start find
/// their pods. Blocks (backpressure) when the sink is full.
pub(crate) async fn watch_events(
    client: Client,
    mut shipper: EventShipper,
    sink: mpsc::Sender<LogPush>,
    mut pods_synced: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = shutdown_requested(&mut shutdown) => return,
        synced = pods_synced.wait_for(|synced| *synced) => {
            if synced.is_err() {
                // The pod watcher is gone: no pods will ever be known.
                return;
            }
        }
    }
    let api: Api<KubeEvent> = Api::all(client);
    let config = watcher::Config::default().fields(EVENT_FIELD_SELECTOR);
    let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    let mut retry = tokio::time::interval(PENDING_RETRY_INTERVAL);
    loop {
        let event = tokio::select! {
            _ = shutdown_requested(&mut shutdown) => break,
            _ = retry.tick() => {
                if !send_all(&sink, shipper.retry_pending(), &mut shutdown).await {
                    break;
                }
                continue;
            }
            event = stream.next() => event,
        };
        let kube_event = match event {
            Some(Ok(Event::Apply(kube_event) | Event::InitApply(kube_event))) => kube_event,
            Some(Ok(Event::Delete(_) | Event::Init | Event::InitDone)) => continue,
            Some(Err(error)) => {
                tracing::warn!(node = %shipper.node, %error, "event watch failed, retrying");
                continue;
            }
            None => {
                tracing::error!(node = %shipper.node, "event watch ended");
                break;
            }
        };
        let pushes = shipper.offer(kube_event).into_iter().collect();
        if !send_all(&sink, pushes, &mut shutdown).await {
            break;
        }
    }
    tracing::debug!(node = %shipper.node, "event watch stopped");
}

/// Sends `pushes` in order; `false` when shutdown came first or the sink is
/// closed, and the event task should stop.
async fn send_all(sink: &mpsc::Sender<LogPush>, pushes: Vec<LogPush>, shutdown: &mut watch::Receiver<bool>) -> bool {
    for push in pushes {
        tokio::select! {
            _ = shutdown_requested(shutdown) => return false,
            sent = sink.send(push) => {
                if sent.is_err() {
                    tracing::info!("event sink closed, no longer shipping events");
                    return false;
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: serde_json::Value) -> KubeEvent {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn lines_are_logfmt_with_quoting() {
        let backoff = event(serde_json::json!({
            "type": "Warning", "reason": "BackOff", "count": 3,
            "source": {"component": "kubelet"},
            "message": "Back-off restarting failed container",
            "involvedObject": {"kind": "Pod", "name": "web-1"}
        }));
        assert_eq!(
            event_line(&backoff, "web-1"),
            r#"type=Warning reason=BackOff object=Pod/web-1 count=3 source=kubelet message="Back-off restarting failed container""#
        );
        let awkward = event(serde_json::json!({
            "message": "say \"hi\"\\\n\ta=b\u{1}\n",
            "involvedObject": {"kind": "Pod", "name": "p"}
        }));
        assert_eq!(
            event_line(&awkward, "p"),
            r#"type="" reason="" object=Pod/p count=1 message="say \"hi\"\\\n\ta=b\u0001""#
        );
    }

    #[test]
    fn timestamps_prefer_the_last_occurrence() {
        let all = event(serde_json::json!({
            "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"},
            "firstTimestamp": "2024-01-01T00:00:01Z",
            "eventTime": "2024-01-01T00:00:02.000005Z",
            "lastTimestamp": "2024-01-01T00:00:03Z",
            "involvedObject": {}
        }));
        let base = 1_704_067_200_000_000_000i64;
        assert_eq!(event_timestamp_ns(&all), Some(base + 3_000_000_000));
        let micro = event(serde_json::json!({
            "firstTimestamp": "2024-01-01T00:00:01Z",
            "eventTime": "2024-01-01T00:00:02.000005Z",
            "involvedObject": {}
        }));
        assert_eq!(event_timestamp_ns(&micro), Some(base + 2_000_005_000));
        let created =
            event(serde_json::json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}, "involvedObject": {}}));
        assert_eq!(event_timestamp_ns(&created), Some(base));
        assert_eq!(
            event_timestamp_ns(&event(serde_json::json!({"involvedObject": {}}))),
            None
        );
    }

    #[test]
    fn events_wait_a_while_for_their_pod() {
        use crate::kubernetes::owners::Workload;
        use crate::kubernetes::pods::PodFacts;
        use tidewatch_model::ManualClock;

        let now_ms = 1_704_067_260_000;
        let clock = ManualClock::new(now_ms);
        let config = crate::config::KubernetesConfig::default();
        let pods = Arc::new(KubePods::new(&config, Arc::new(clock.clone())));
        let mut shipper = EventShipper::new(pods.clone(), "node-a", "", Arc::new(clock.clone()));
        let about = |pod: &str, uid: &str| {
            event(serde_json::json!({
                "metadata": {"namespace": "ns", "uid": uid, "resourceVersion": "1"},
                "involvedObject": {"kind": "Pod", "namespace": "ns", "name": pod},
                "reason": "Scheduled", "lastTimestamp": "2024-01-01T00:01:00Z"
            }))
        };
        let mut old = about("late", "e-old");
        old.last_timestamp = None;
        old.first_timestamp = None;
        assert!(shipper.offer(old).is_none());
        assert!(shipper.offer(about("late", "e1")).is_none());
        assert!(shipper.offer(about("never", "e2")).is_none());
        assert_eq!(shipper.pending.len(), 2, "an event without time is not held");

        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "late", "uid": "u-late"}}))
        .unwrap();
        let workload = Workload {
            kind: "Pod".into(),
            name: "late".into(),
        };
        pods.apply(PodFacts::of(&pod, pods.copied_metadata()).unwrap(), &workload);
        let shipped = shipper.retry_pending();
        assert_eq!(shipped.len(), 1);
        assert!(shipped[0].streams[0].entries[0].line.contains("reason=Scheduled"));
        assert_eq!(shipper.pending.len(), 1, "the other pod's event still waits");
        clock.advance(PENDING_HOLD_MS);
        assert!(shipper.retry_pending().is_empty());
        assert!(shipper.pending.is_empty(), "given up after the hold");
    }

    #[test]
    fn shipped_memory_is_bounded() {
        let mut shipped = ShippedEvents::new(2);
        shipped.remember("a", "1");
        shipped.remember("b", "1");
        shipped.remember("a", "2");
        assert!(shipped.already_shipped("a", "2") && !shipped.already_shipped("a", "1"));
        shipped.remember("c", "1");
        assert!(!shipped.already_shipped("a", "2"), "the oldest is forgotten");
        assert!(shipped.already_shipped("b", "1") && shipped.already_shipped("c", "1"));
        assert_eq!(shipped.versions.len(), 2);
    }
}
