//! Workload resolution: which controller a pod belongs to, as an operator
//! reading kube-state-metrics' `kube_pod_owner` and the kubernetes-mixin's
//! `namespace_workload_pod:kube_pod_owner:relabel` would name it.
//!
//! | the pod's controller                      | `workload_kind` | `workload`          |
//! |-------------------------------------------|-----------------|---------------------|
//! | ReplicaSet owned by a Deployment          | `Deployment`    | the Deployment      |
//! | ReplicaSet owned by anything else (e.g. an Argo `Rollout`) | that owner's kind | that owner |
//! | ReplicaSet with no owner                  | `ReplicaSet`    | the ReplicaSet      |
//! | Job owned by a CronJob                    | `CronJob`       | the CronJob         |
//! | Job with no owner                         | `Job`           | the Job             |
//! | StatefulSet, DaemonSet, any other kind    | that kind       | that object         |
//! | a Node (a static pod's mirror pod)        | `StaticPod`     | the pod's name      |
//! | nothing (a bare pod)                      | `Pod`           | the pod's name      |
//!
//! A bare pod is its own workload rather than having no workload: grouping by
//! `workload` then never lumps unrelated bare pods into one empty group, and
//! every pod has both labels (the mixin's `barepod`/`staticpod` types, in
//! Kubernetes' own capitalisation like the other kinds).
//!
//! Only ReplicaSets and Jobs need a second lookup; many pods share one, so
//! the answer is cached. A lookup that fails (RBAC forbids it, the object is
//! already gone, the API is down) falls back to the direct owner and is
//! retried only after [`FAILED_LOOKUP_RETRY_MS`], so a missing permission
//! costs one request per owner and minute, not one per pod update.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};
use tidewatch_model::{Clock, TimestampMs};

/// `workload_kind` of a pod no controller owns.
pub const KIND_BARE_POD: &str = "Pod";
/// `workload_kind` of a static pod (its mirror pod is owned by the Node).
pub const KIND_STATIC_POD: &str = "StaticPod";
const KIND_NODE: &str = "Node";
const KIND_REPLICA_SET: &str = "ReplicaSet";
const KIND_JOB: &str = "Job";

/// How long a successful lookup is trusted; re-reading now and then picks up
/// the rare adoption of a ReplicaSet by another Deployment and bounds the
/// cache to the owners seen recently.
pub(crate) const OWNER_CACHE_TTL_MS: i64 = 10 * 60 * 1000;
/// How long a failed lookup is remembered before it is tried again.
pub(crate) const FAILED_LOOKUP_RETRY_MS: i64 = 60 * 1000;
/// A lookup that takes longer is a failure: the pod watcher waits for it.
const OWNER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// An `ownerReferences` entry, as far as we need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerRef {
    pub(crate) kind: String,
    pub(crate) name: String,
}

/// What `workload_kind` and `workload` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    pub(crate) kind: String,
    pub(crate) name: String,
}

impl Workload {
    fn of(owner: &OwnerRef) -> Workload {
        Workload {
            kind: owner.kind.clone(),
            name: owner.name.clone(),
        }
    }
}

/// The controlling owner of an object: the reference with `controller: true`,
/// else the first one (objects created by hand may lack the flag). References
/// without a kind or name are ignored.
pub(crate) fn controller_owner(meta: &ObjectMeta) -> Option<OwnerRef> {
    let references = meta.owner_references.as_deref().unwrap_or_default();
    let usable = || references.iter().filter(|r| !r.kind.is_empty() && !r.name.is_empty());
    let chosen = usable()
        .find(|r| r.controller == Some(true))
        .or_else(|| usable().next())?;
    Some(OwnerRef {
        kind: chosen.kind.clone(),
        name: chosen.name.clone(),
    })
}

/// One cached lookup: the looked-up object's own controller (`None` when it
/// has none, or when the lookup failed).
#[derive(Debug, Clone)]
struct CachedParent {
    parent: Option<OwnerRef>,
    expires_at: TimestampMs,
}

/// Resolves a pod's direct owner to its workload, caching the second-level
/// lookups. Used by the pod watcher task only, so it needs no lock.
pub(crate) struct OwnerResolver {
    client: Client,
    clock: Arc<dyn Clock>,
    /// Keyed by `namespace/kind/name` of the ReplicaSet or Job.
    parents: HashMap<String, CachedParent>,
}

// `kube::Client` has no `Debug`; the cache size is what matters when debugging.
impl std::fmt::Debug for OwnerResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerResolver")
            .field("cached_owners", &self.parents.len())
            .finish_non_exhaustive()
    }
}

impl OwnerResolver {
    pub(crate) fn new(client: Client, clock: Arc<dyn Clock>) -> Self {
        OwnerResolver {
            client,
            clock,
            parents: HashMap::new(),
        }
    }

    /// The workload of pod `pod_name` in `namespace` whose controller is `owner`.
    pub(crate) async fn workload(&mut self, namespace: &str, pod_name: &str, owner: Option<&OwnerRef>) -> Workload {
        let Some(owner) = owner else {
            return Workload {
                kind: KIND_BARE_POD.into(),
                name: pod_name.into(),
            };
        };
        match owner.kind.as_str() {
            KIND_NODE => Workload {
                kind: KIND_STATIC_POD.into(),
                name: pod_name.into(),
            },
            KIND_REPLICA_SET | KIND_JOB => match self.parent(namespace, owner).await {
                Some(parent) => Workload::of(&parent),
                None => Workload::of(owner),
            },
            _ => Workload::of(owner),
        }
    }

    /// Drops expired entries, so the cache holds only recently seen owners.
    pub(crate) fn prune(&mut self) {
        let now = self.clock.now_ms();
        self.parents.retain(|_, cached| cached.expires_at > now);
    }

    /// The controller of the ReplicaSet or Job `owner`, from the cache or the API.
    async fn parent(&mut self, namespace: &str, owner: &OwnerRef) -> Option<OwnerRef> {
        let key = format!("{namespace}/{}/{}", owner.kind, owner.name);
        let now = self.clock.now_ms();
        if let Some(cached) = self.parents.get(&key)
            && cached.expires_at > now
        {
            return cached.parent.clone();
        }
        let lookup = tokio::time::timeout(OWNER_LOOKUP_TIMEOUT, self.fetch_owner_meta(namespace, owner)).await;
        let (parent, ttl) = match lookup {
            Ok(Ok(meta)) => (controller_owner(&meta), OWNER_CACHE_TTL_MS),
            Ok(Err(error)) => {
                tracing::warn!(
                    namespace,
                    kind = %owner.kind,
                    name = %owner.name,
                    %error,
                    "owner lookup failed, using the direct owner as the workload"
                );
                (None, FAILED_LOOKUP_RETRY_MS)
            }
            Err(_elapsed) => {
                tracing::warn!(
                    namespace,
                    kind = %owner.kind,
                    name = %owner.name,
                    timeout_secs = OWNER_LOOKUP_TIMEOUT.as_secs(),
                    "owner lookup timed out, using the direct owner as the workload"
                );
                (None, FAILED_LOOKUP_RETRY_MS)
            }
        };
        self.parents.insert(
            key,
            CachedParent {
                parent: parent.clone(),
                expires_at: now.saturating_add(ttl),
            },
        );
        parent
    }

    async fn fetch_owner_meta(&self, namespace: &str, owner: &OwnerRef) -> Result<ObjectMeta, kube::Error> {
        if owner.kind == KIND_JOB {
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
            Ok(jobs.get(&owner.name).await?.metadata)
        } else {
            let replica_sets: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
            Ok(replica_sets.get(&owner.name).await?.metadata)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn reference(kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            kind: kind.into(),
            name: name.into(),
            controller,
            ..OwnerReference::default()
        }
    }

    #[test]
    fn the_controller_reference_wins_over_order() {
        let meta = ObjectMeta {
            owner_references: Some(vec![
                reference("ConfigMap", "cm", None),
                reference("ReplicaSet", "web-7d4", Some(true)),
            ]),
            ..ObjectMeta::default()
        };
        let owner = controller_owner(&meta).unwrap();
        assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ReplicaSet", "web-7d4"));
    }

    #[test]
    fn references_without_kind_or_name_are_ignored() {
        let meta = ObjectMeta {
            owner_references: Some(vec![reference("", "x", Some(true)), reference("Job", "", None)]),
            ..ObjectMeta::default()
        };
        assert_eq!(controller_owner(&meta), None);
        assert_eq!(controller_owner(&ObjectMeta::default()), None);
    }
}
