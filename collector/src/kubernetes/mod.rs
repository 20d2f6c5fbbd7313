//! Kubernetes metadata for the collector: which pods run on this node, the
//! labels their logs and metrics get, which of them want to be scraped, and
//! the cluster's Events about them as log lines.
//!
//! What it guarantees:
//!
//! - [`KubePods`] answers [`PodDirectory`] from memory, never waiting on the
//!   API server. It watches only this node's pods (`spec.nodeName=<node>`),
//!   resolves each pod's workload ([`owners`] documents the rules), and keeps
//!   a deleted pod for `deleted_pod_grace` so its log files drain with its
//!   labels. A pod name reused by a new pod never yields the old pod's
//!   labels when the caller knows the UID, and the old UID keeps its labels
//!   during the grace.
//! - The API being down, slow, forbidding or answering garbage never stops
//!   the collector: watches log and retry with backoff (and re-list after a
//!   410 Gone), an owner lookup that fails falls back to the direct owner,
//!   and a pod or event missing fields is skipped.
//! - Events ([`events`]) are shipped once per change, only for this node's
//!   pods, into a bounded channel (backpressure, not memory growth).
//! - Every task stops when the shutdown signal fires.

pub mod events;
pub mod owners;
pub mod pods;

use std::ffi::OsStr;
use std::sync::Arc;

use kube::Client;
use tidewatch_model::logs::LogPush;
use tidewatch_model::{Clock, SystemClock};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use events::EVENTS_JOB;
pub use pods::{CopiedMetadata, KubePods, sanitize_label_name};

use crate::PodDirectory;
use crate::config::KubernetesConfig;
use crate::error::{Error, Result};

/// Set in every pod by the kubelet: its presence means "running in a cluster".
const SERVICE_HOST_ENV: &str = "KUBERNETES_SERVICE_HOST";

/// Whether Kubernetes metadata is on: as configured, else (`enabled` unset)
/// when the collector runs in a pod (`KUBERNETES_SERVICE_HOST` is set).
pub fn is_enabled(config: &KubernetesConfig) -> bool {
    enabled_given(config, std::env::var_os(SERVICE_HOST_ENV).as_deref())
}

fn enabled_given(config: &KubernetesConfig, service_host: Option<&OsStr>) -> bool {
    config
        .enabled
        .unwrap_or_else(|| service_host.is_some_and(|host| !host.is_empty()))
}

/// Connects with the in-cluster service account (or the local kubeconfig
/// outside a cluster) and starts watching; see [`KubeMetadata::start`].
/// Fails only when no API configuration can be found; an unreachable API
/// server is retried in the background.
pub async fn connect(
    config: &KubernetesConfig,
    node: &str,
    cluster: &str,
    events: Option<mpsc::Sender<LogPush>>,
    shutdown: watch::Receiver<bool>,
) -> Result<KubeMetadata> {
    let client = Client::try_default()
        .await
        .map_err(|error| Error::Kube(format!("no usable API configuration: {error}")))?;
    Ok(KubeMetadata::start(
        client,
        config,
        node,
        cluster,
        Arc::new(SystemClock),
        events,
        shutdown,
    ))
}

/// The running watches and the pod cache they fill.
#[derive(Debug)]
pub struct KubeMetadata {
    pods: Arc<KubePods>,
    synced: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeMetadata {
    /// Starts the pod watch (and, when `config.events` is on and `events` is
    /// given, the event watch) on `client`, with time from `clock`. `node` is
    /// this node's name; `cluster` the `cluster` label of event streams (none
    /// when empty). Must be called within a Tokio runtime.
    pub fn start(
        client: Client,
        config: &KubernetesConfig,
        node: &str,
        cluster: &str,
        clock: Arc<dyn Clock>,
        events: Option<mpsc::Sender<LogPush>>,
        shutdown: watch::Receiver<bool>,
    ) -> KubeMetadata {
        let pods = Arc::new(KubePods::new(config, clock.clone()));
        let (synced_tx, synced) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(pods::watch_pods(
            client.clone(),
            node.to_string(),
            pods.clone(),
            owners::OwnerResolver::new(client.clone(), clock.clone()),
            synced_tx,
            shutdown.clone(),
        )));
        if let Some(sink) = events.filter(|_| config.events) {
            let shipper = events::EventShipper::new(pods.clone(), node, cluster, clock);
            tasks.push(tokio::spawn(events::watch_events(
                client,
                shipper,
                sink,
                synced.clone(),
                shutdown,
            )));
        }
        KubeMetadata { pods, synced, tasks }
    }

    /// The pod cache.
    pub fn pods(&self) -> Arc<KubePods> {
        self.pods.clone()
    }

    /// The pod cache as the seam the tailer and scraper take.
    pub fn directory(&self) -> Arc<dyn PodDirectory> {
        self.pods.clone()
    }

    /// Whether the first full list of this node's pods is in the cache.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first full pod list is in the cache (or the watch
    /// stopped). Callers bound it with a timeout: log lines read before are
    /// shipped without pod labels rather than held back.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// Waits for the tasks to finish after the shutdown signal fired.
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "kubernetes task failed");
            }
        }
    }
}

/// Completes when shutdown is requested: the value turns true or the sender
/// is gone (the process is ending).
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_means_inside_a_cluster() {
        let auto = KubernetesConfig::default();
        assert!(enabled_given(&auto, Some(OsStr::new("10.96.0.1"))));
        assert!(!enabled_given(&auto, None));
        assert!(!enabled_given(&auto, Some(OsStr::new(""))));
        let off = KubernetesConfig {
            enabled: Some(false),
            ..KubernetesConfig::default()
        };
        assert!(!enabled_given(&off, Some(OsStr::new("10.96.0.1"))));
        let on = KubernetesConfig {
            enabled: Some(true),
            ..KubernetesConfig::default()
        };
        assert!(enabled_given(&on, None));
    }
}
