//! The deployment under `deploy/`: every manifest in `deploy/kubernetes/`
//! parses into the Kubernetes API's own types (k8s-openapi), with no field
//! those types do not know (a typo such as `volumeMount` would otherwise be
//! dropped silently by the API server too), and the objects fit together: the
//! collector DaemonSet mounts what its configuration reads, its role is
//! read-only, the server keeps its data on a claim, the Service selects the
//! server, the configurations parse. When `helm` is installed (or `$HELM`
//! names it), the Helm chart's rendering passes the same checks and holds the
//! same objects; without it that part says it was skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tidewatch_collector::CollectorConfig;

const LABEL_NAME: &str = "app.kubernetes.io/name";
const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
const PART_OF: &str = "tidewatch";
const COMPONENT_SERVER: &str = "server";
const COMPONENT_COLLECTOR: &str = "collector";

/// The key of the collector's configuration in its ConfigMap.
const COLLECTOR_CONFIG_KEY: &str = "collector.yaml";
/// The key of the server's configuration in its ConfigMap.
const SERVER_CONFIG_KEY: &str = "tidewatch.yaml";
/// The top-level keys of the server's configuration file (`src/config.rs`).
const SERVER_CONFIG_SECTIONS: [&str; 4] = ["storage", "limits", "query", "logs"];
/// The server's health routes (`src/server.rs`).
const SERVER_HEALTH_PATHS: [&str; 2] = ["/-/healthy", "/-/ready"];
const SERVER_PORT: i32 = 9470;
const SERVER_DATA_DIR: &str = "/data";
const SERVER_CLAIM: &str = "data";

/// Verbs the collector may have: it reads, never writes.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];
/// What the collector's ClusterRole must grant, and all it may grant:
/// (API group, resource, verbs).
const COLLECTOR_GRANTS: [(&str, &str, &[&str]); 11] = [
    ("", "pods", &READ_VERBS),
    ("", "nodes", &READ_VERBS),
    ("", "events", &READ_VERBS),
    ("", "nodes/metrics", &["get"]),
    ("", "nodes/proxy", &["get"]),
    ("apps", "replicasets", &READ_VERBS),
    ("apps", "deployments", &READ_VERBS),
    ("apps", "statefulsets", &READ_VERBS),
    ("apps", "daemonsets", &READ_VERBS),
    ("batch", "jobs", &READ_VERBS),
    ("batch", "cronjobs", &READ_VERBS),
];

/// The host's log directories the collector tails, mounted at the same paths.
const LOG_DIRS: [&str; 2] = ["/var/log/pods", "/var/log/containers"];

/// Release name the chart is rendered with: the same as in the README's
/// `helm install tidewatch deploy/helm/tidewatch`, so object names match the
/// plain manifests.
const HELM_RELEASE: &str = "tidewatch";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn kubernetes_dir() -> PathBuf {
    deploy_dir().join("kubernetes")
}

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/tidewatch")
}

/// One Kubernetes object of a kind the deployment uses.
#[derive(Debug)]
enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    ConfigMap(Box<ConfigMap>),
    Service(Box<Service>),
    DaemonSet(Box<DaemonSet>),
    StatefulSet(Box<StatefulSet>),
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Service(_) => "Service",
            Object::DaemonSet(_) => "DaemonSet",
            Object::StatefulSet(_) => "StatefulSet",
        }
    }

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::ClusterRole(o) => &o.metadata,
            Object::ClusterRoleBinding(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::DaemonSet(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
        }
    }

    fn is_cluster_scoped(&self) -> bool {
        matches!(
            self,
            Object::Namespace(_) | Object::ClusterRole(_) | Object::ClusterRoleBinding(_)
        )
    }

    fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }
}

/// An object and where it was read, for messages.
#[derive(Debug)]
struct Sourced {
    source: String,
    object: Object,
}

impl Sourced {
    fn place(&self) -> String {
        format!("{} ({} {})", self.source, self.object.kind(), self.object.name())
    }
}

/// A set of objects: the plain manifests or a Helm rendering.
#[derive(Debug)]
struct Manifests {
    /// `deploy/kubernetes` or `helm template …`, for messages.
    origin: String,
    objects: Vec<Sourced>,
}

impl Manifests {
    /// (kind, namespace, name) of every object.
    fn identities(&self) -> BTreeSet<(String, String, String)> {
        let mut identities = BTreeSet::new();
        for sourced in &self.objects {
            let metadata = sourced.object.metadata();
            identities.insert((
                sourced.object.kind().to_string(),
                metadata.namespace.clone().unwrap_or_default(),
                sourced.object.name().to_string(),
            ));
        }
        identities
    }

    /// The one object of a kind the deployment has exactly one of.
    fn only<'a, T>(&self, objects: Vec<&'a T>, kind: &str) -> &'a T {
        assert_eq!(objects.len(), 1, "{}: expected exactly one {kind}", self.origin);
        objects[0]
    }

    fn config_map(&self, namespace: &str, name: &str) -> &ConfigMap {
        for config_map in self.config_maps() {
            if config_map.metadata.name.as_deref() == Some(name)
                && config_map.metadata.namespace.as_deref() == Some(namespace)
            {
                return config_map;
            }
        }
        panic!("{}: no ConfigMap {namespace}/{name}", self.origin)
    }
}

/// `Manifests::<method>()`: every object of one kind (the enum's variants are
/// named after their types).
macro_rules! objects_of_kind {
    ($($method:ident => $kind:ident),* $(,)?) => {
        impl Manifests {
            $(
                fn $method(&self) -> Vec<&$kind> {
                    let mut found = Vec::new();
                    for sourced in &self.objects {
                        if let Object::$kind(object) = &sourced.object {
                            found.push(&**object);
                        }
                    }
                    found
                }
            )*
        }
    };
}

objects_of_kind! {
    namespaces => Namespace,
    service_accounts => ServiceAccount,
    cluster_roles => ClusterRole,
    cluster_role_bindings => ClusterRoleBinding,
    config_maps => ConfigMap,
    services => Service,
    daemon_sets => DaemonSet,
    stateful_sets => StatefulSet,
}

/// Splits multi-document YAML and reads each document into the type its
/// `kind` names. Errors name the source, the document and the field.
fn parse_documents(source: &str, text: &str) -> Result<Vec<Sourced>, String> {
    let mut objects = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let place = format!("{source}: document {}", index + 1);
        let value = serde_norway::Value::deserialize(document).map_err(|e| format!("{place}: {e}"))?;
        // `---` followed by nothing (or only comments), as `helm template`
        // writes for a template that renders empty.
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(serde_norway::Value::as_str)
            .ok_or_else(|| format!("{place}: no `kind`"))?
            .to_string();
        let place = format!("{place} ({kind})");
        let object = match kind.as_str() {
            "Namespace" => Object::Namespace(typed(&place, &value)?),
            "ServiceAccount" => Object::ServiceAccount(typed(&place, &value)?),
            "ClusterRole" => Object::ClusterRole(typed(&place, &value)?),
            "ClusterRoleBinding" => Object::ClusterRoleBinding(typed(&place, &value)?),
            "ConfigMap" => Object::ConfigMap(typed(&place, &value)?),
            "Service" => Object::Service(typed(&place, &value)?),
            "DaemonSet" => Object::DaemonSet(typed(&place, &value)?),
            "StatefulSet" => Object::StatefulSet(typed(&place, &value)?),
            other => return Err(format!("{place}: kind {other:?} is not one this test knows")),
        };
        objects.push(Sourced {
            source: source.to_string(),
            object,
        });
    }
    Ok(objects)
}

/// Reads a document into `T`, then writes `T` back and fails on any field of
/// the document that did not survive: k8s-openapi, like the API server,
/// ignores fields it does not know, so a misspelt field would vanish.
fn typed<T: DeserializeOwned + Serialize>(place: &str, document: &serde_norway::Value) -> Result<Box<T>, String> {
    let written = serde_json::to_value(document).map_err(|e| format!("{place}: {e}"))?;
    let object: T = serde_json::from_value(written.clone()).map_err(|e| format!("{place}: {e}"))?;
    let read_back = serde_json::to_value(&object).map_err(|e| format!("{place}: {e}"))?;
    compare_fields(place, "", &written, &read_back)?;
    Ok(Box::new(object))
}

/// Every field of `written` is in `read_back` with the same value.
fn compare_fields(
    place: &str,
    path: &str,
    written: &serde_json::Value,
    read_back: &serde_json::Value,
) -> Result<(), String> {
    match (written, read_back) {
        (serde_json::Value::Object(written), serde_json::Value::Object(read_back)) => {
            for (key, value) in written {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let Some(kept) = read_back.get(key) else {
                    return Err(format!(
                        "{place}: `{field}` is not a field of this type (misspelt or misplaced?)"
                    ));
                };
                compare_fields(place, &field, value, kept)?;
            }
            Ok(())
        }
        (serde_json::Value::Array(written), serde_json::Value::Array(read_back))
            if written.len() == read_back.len() =>
        {
            for (index, (value, kept)) in written.iter().zip(read_back).enumerate() {
                compare_fields(place, &format!("{path}[{index}]"), value, kept)?;
            }
            Ok(())
        }
        _ if written == read_back => Ok(()),
        _ => Err(format!("{place}: `{path}` was {written} but reads as {read_back}")),
    }
}

/// Every `*.yaml` in `deploy/kubernetes/` except the kustomization.
fn manifest_files() -> Vec<PathBuf> {
    let dir = kubernetes_dir();
    let mut files = Vec::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml");
        if is_yaml && path.file_name().is_some_and(|n| n != "kustomization.yaml") {
            files.push(path);
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

fn plain_manifests() -> Manifests {
    let mut objects = Vec::new();
    for path in manifest_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let source = format!("deploy/kubernetes/{}", path.file_name().unwrap().to_string_lossy());
        objects.extend(parse_documents(&source, &text).unwrap_or_else(|e| panic!("{e}")));
    }
    Manifests {
        origin: "deploy/kubernetes".into(),
        objects,
    }
}

/// Renders the chart with `helm template`, or `None` (said on stderr, past the
/// test harness' capture) when helm is not installed.
fn helm_manifests(extra_args: &[&str]) -> Option<Manifests> {
    let helm = std::env::var("HELM").unwrap_or_else(|_| "helm".into());
    let chart = chart_dir();
    let mut command = Command::new(&helm);
    command.arg("template").arg(HELM_RELEASE).arg(&chart).args(extra_args);
    let output = match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = writeln!(
                std::io::stderr(),
                "deploy_manifests: `{helm}` is not installed: the Helm chart check was SKIPPED"
            );
            return None;
        }
        Err(e) => panic!("running {helm}: {e}"),
    };
    let origin = format!(
        "helm template {HELM_RELEASE} deploy/helm/tidewatch {}",
        extra_args.join(" ")
    );
    assert!(
        output.status.success(),
        "{origin} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let objects = parse_documents(&origin, &text).unwrap_or_else(|e| panic!("{e}"));
    Some(Manifests { origin, objects })
}

// ---------------------------------------------------------------------------
// Helpers over pod specs.

fn labels(metadata: &ObjectMeta) -> BTreeMap<String, String> {
    metadata.labels.clone().unwrap_or_default()
}

fn pod_spec<'a>(template: &'a PodTemplateSpec, place: &str) -> &'a PodSpec {
    template.spec.as_ref().unwrap_or_else(|| panic!("{place}: no pod spec"))
}

fn only_container<'a>(pod: &'a PodSpec, place: &str) -> &'a Container {
    assert_eq!(pod.containers.len(), 1, "{place}: expected one container");
    &pod.containers[0]
}

/// The value after `flag` in `args` (`--flag value` or `--flag=value`).
fn flag<'a>(container: &'a Container, flag: &str) -> Option<&'a str> {
    let args = container.args.as_deref().unwrap_or_default();
    let with_equals = format!("{flag}=");
    for (index, arg) in args.iter().enumerate() {
        if arg == flag {
            return args.get(index + 1).map(String::as_str);
        }
        if let Some(value) = arg.strip_prefix(&with_equals) {
            return Some(value);
        }
    }
    None
}

fn required_flag<'a>(container: &'a Container, name: &str, place: &str) -> &'a str {
    flag(container, name).unwrap_or_else(|| panic!("{place}: no {name} argument in {:?}", container.args))
}

/// The port number a probe or Service names, resolved through the
/// container's named ports.
fn resolve_port(container: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => {
            for declared in container.ports.as_deref().unwrap_or_default() {
                if declared.name.as_deref() == Some(name.as_str()) {
                    return Some(declared.container_port);
                }
            }
            None
        }
    }
}

/// A host path the pod mounts: (mount path, read-only, hostPath type).
fn host_mount(pod: &PodSpec, container: &Container, host_path: &str) -> Option<(String, bool, Option<String>)> {
    for volume in pod.volumes.as_deref().unwrap_or_default() {
        let Some(source) = &volume.host_path else { continue };
        if source.path != host_path {
            continue;
        }
        for mount in container.volume_mounts.as_deref().unwrap_or_default() {
            if mount.name == volume.name {
                return Some((
                    mount.mount_path.clone(),
                    mount.read_only == Some(true),
                    source.type_.clone(),
                ));
            }
        }
    }
    None
}

/// Where the container mounts the ConfigMap a volume of the pod takes, and
/// the ConfigMap's name.
fn config_map_mount(pod: &PodSpec, container: &Container, place: &str) -> (String, String) {
    for volume in pod.volumes.as_deref().unwrap_or_default() {
        let Some(source) = &volume.config_map else { continue };
        for mount in container.volume_mounts.as_deref().unwrap_or_default() {
            if mount.name == volume.name {
                return (mount.mount_path.clone(), source.name.clone());
            }
        }
    }
    panic!("{place}: mounts no ConfigMap")
}

fn assert_requests_and_limits(container: &Container, place: &str) {
    let resources = container
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("{place}: no resources"));
    for (what, quantities) in [("requests", &resources.requests), ("limits", &resources.limits)] {
        let quantities = quantities
            .as_ref()
            .unwrap_or_else(|| panic!("{place}: no resource {what}"));
        for resource in ["cpu", "memory"] {
            let quantity = quantities.get(resource);
            assert!(
                quantity.is_some_and(|q| !q.0.is_empty()),
                "{place}: no {resource} in resource {what}"
            );
        }
    }
}

fn assert_locked_down(container: &Container, place: &str) {
    let security = container
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{place}: no securityContext"));
    assert_eq!(
        security.read_only_root_filesystem,
        Some(true),
        "{place}: root filesystem writable"
    );
    assert_eq!(
        security.allow_privilege_escalation,
        Some(false),
        "{place}: privilege escalation allowed"
    );
    assert_ne!(security.privileged, Some(true), "{place}: privileged");
}

/// Every label of `selector` is on the pod template, so the workload owns its
/// pods.
fn assert_selects(selector: &BTreeMap<String, String>, template: &ObjectMeta, place: &str) {
    assert!(!selector.is_empty(), "{place}: empty selector");
    let pod_labels = labels(template);
    for (key, value) in selector {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "{place}: selector {key}={value} does not match the pod template"
        );
    }
}

// ---------------------------------------------------------------------------
// The checks, each run on the plain manifests and on the Helm rendering.

fn check_labels(manifests: &Manifests) {
    for sourced in &manifests.objects {
        let place = sourced.place();
        let metadata = sourced.object.metadata();
        let object_labels = labels(metadata);
        assert_eq!(
            object_labels.get(LABEL_PART_OF).map(String::as_str),
            Some(PART_OF),
            "{place}: no {LABEL_PART_OF}: {PART_OF} label"
        );
        assert!(object_labels.contains_key(LABEL_NAME), "{place}: no {LABEL_NAME} label");
        if !matches!(sourced.object, Object::Namespace(_)) {
            let component = object_labels.get(LABEL_COMPONENT).map(String::as_str);
            assert!(
                matches!(component, Some(COMPONENT_SERVER | COMPONENT_COLLECTOR)),
                "{place}: {LABEL_COMPONENT} is {component:?}, not server or collector"
            );
        }
    }
    let workloads = manifests
        .daemon_sets()
        .into_iter()
        .map(|d| {
            (
                "DaemonSet",
                &d.metadata,
                &d.spec.as_ref().unwrap().selector,
                &d.spec.as_ref().unwrap().template,
                COMPONENT_COLLECTOR,
            )
        })
        .chain(manifests.stateful_sets().into_iter().map(|s| {
            (
                "StatefulSet",
                &s.metadata,
                &s.spec.as_ref().unwrap().selector,
                &s.spec.as_ref().unwrap().template,
                COMPONENT_SERVER,
            )
        }));
    for (kind, metadata, selector, template, component) in workloads {
        let place = format!("{}: {kind} {:?}", manifests.origin, metadata.name);
        let selector = selector.match_labels.clone().unwrap_or_default();
        assert_selects(&selector, template.metadata.as_ref().unwrap(), &place);
        let pod_labels = labels(template.metadata.as_ref().unwrap());
        assert_eq!(
            pod_labels.get(LABEL_COMPONENT).map(String::as_str),
            Some(component),
            "{place}"
        );
        assert_eq!(
            pod_labels.get(LABEL_PART_OF).map(String::as_str),
            Some(PART_OF),
            "{place}"
        );
    }
}

fn check_namespaces(manifests: &Manifests) {
    let namespace = manifests.only(manifests.namespaces(), "Namespace");
    let namespace_name = namespace.metadata.name.as_deref().unwrap();
    for sourced in &manifests.objects {
        let place = sourced.place();
        let object_namespace = sourced.object.metadata().namespace.as_deref();
        if sourced.object.is_cluster_scoped() {
            assert_eq!(
                object_namespace, None,
                "{place}: a cluster-scoped object with a namespace"
            );
        } else {
            assert_eq!(
                object_namespace,
                Some(namespace_name),
                "{place}: not in the Namespace the deployment creates"
            );
        }
    }
}

fn check_collector_role(manifests: &Manifests) {
    let role = manifests.only(manifests.cluster_roles(), "ClusterRole");
    let place = format!("{}: ClusterRole {:?}", manifests.origin, role.metadata.name);
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role.rules.as_deref().unwrap_or_default() {
        assert!(
            rule.non_resource_urls.is_none(),
            "{place}: grants non-resource URLs {:?}",
            rule.non_resource_urls
        );
        for verb in &rule.verbs {
            assert!(
                READ_VERBS.contains(&verb.as_str()),
                "{place}: grants {verb:?}; the collector only reads"
            );
        }
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                let verbs = granted.entry((group.clone(), resource.clone())).or_default();
                verbs.extend(rule.verbs.iter().cloned());
            }
        }
    }
    let mut wanted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (group, resource, verbs) in COLLECTOR_GRANTS {
        let verbs = verbs.iter().map(|v| v.to_string()).collect();
        wanted.insert((group.to_string(), resource.to_string()), verbs);
    }
    assert_eq!(
        granted, wanted,
        "{place}: grants must be exactly what the collector reads"
    );
}

fn check_collector_binding(manifests: &Manifests) {
    let role = manifests.only(manifests.cluster_roles(), "ClusterRole");
    let binding = manifests.only(manifests.cluster_role_bindings(), "ClusterRoleBinding");
    let account = manifests.only(manifests.service_accounts(), "ServiceAccount");
    let daemon_set = manifests.only(manifests.daemon_sets(), "DaemonSet");
    let place = format!("{}: ClusterRoleBinding {:?}", manifests.origin, binding.metadata.name);

    assert_eq!(binding.role_ref.kind, "ClusterRole", "{place}");
    assert_eq!(
        Some(&binding.role_ref.name),
        role.metadata.name.as_ref(),
        "{place}: binds another role"
    );
    let subjects = binding.subjects.as_deref().unwrap_or_default();
    let bound = subjects.iter().any(|subject| {
        subject.kind == "ServiceAccount"
            && Some(&subject.name) == account.metadata.name.as_ref()
            && subject.namespace == account.metadata.namespace
    });
    assert!(
        bound,
        "{place}: does not bind the collector's ServiceAccount: {subjects:?}"
    );

    let pod = pod_spec(&daemon_set.spec.as_ref().unwrap().template, &place);
    assert_eq!(
        pod.service_account_name, account.metadata.name,
        "{place}: the DaemonSet runs as another ServiceAccount"
    );
}

/// The DaemonSet mounts what the collector reads, read-only, and its state
/// directory read-write; its arguments and configuration agree.
fn check_collector_daemon_set(manifests: &Manifests) {
    let daemon_set = manifests.only(manifests.daemon_sets(), "DaemonSet");
    let place = format!("{}: DaemonSet {:?}", manifests.origin, daemon_set.metadata.name);
    let pod = pod_spec(&daemon_set.spec.as_ref().unwrap().template, &place);
    let container = only_container(pod, &place);

    for dir in LOG_DIRS {
        let mount = host_mount(pod, container, dir).unwrap_or_else(|| panic!("{place}: no hostPath mount of {dir}"));
        // /var/log/containers holds symlinks into /var/log/pods: both must be
        // at their host paths for the links to resolve.
        assert_eq!(mount.0, dir, "{place}: {dir} mounted elsewhere");
        assert!(mount.1, "{place}: {dir} is not mounted read-only");
    }

    let args = container.args.as_deref().unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("collector"),
        "{place}: not `tidewatch collector`"
    );
    let state_dir = required_flag(container, "--state-dir", &place);
    let (state_mount, state_read_only, state_type) = host_mount(pod, container, state_dir)
        .unwrap_or_else(|| panic!("{place}: state dir {state_dir} not on the host"));
    assert_eq!(state_mount, state_dir, "{place}");
    assert!(!state_read_only, "{place}: the state directory must be writable");
    assert_eq!(
        state_type.as_deref(),
        Some("DirectoryOrCreate"),
        "{place}: state hostPath type"
    );
    assert_eq!(required_flag(container, "--node", &place), "$(NODE_NAME)", "{place}");

    let env = container.env.as_deref().unwrap_or_default();
    for (name, field_path) in [("NODE_NAME", "spec.nodeName"), ("NODE_IP", "status.hostIP")] {
        let from_field = env.iter().find(|var| var.name == name).and_then(|var| {
            let source = var.value_from.as_ref()?;
            Some(source.field_ref.as_ref()?.field_path.clone())
        });
        assert_eq!(
            from_field.as_deref(),
            Some(field_path),
            "{place}: {name} must come from the downward API's {field_path}"
        );
    }

    assert_requests_and_limits(container, &place);
    assert_locked_down(container, &place);
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    let tolerates_all = tolerations
        .iter()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none());
    assert!(
        tolerates_all,
        "{place}: no `operator: Exists` toleration, so tainted nodes go without a collector"
    );

    // The configuration reads the node through the host mounts.
    let config = collector_config(manifests);
    let node = &config.metrics.node;
    for (host_path, configured) in [
        ("/proc", &node.proc_path),
        ("/sys", &node.sys_path),
        ("/", &node.rootfs_path),
    ] {
        let (mount_path, read_only, _) =
            host_mount(pod, container, host_path).unwrap_or_else(|| panic!("{place}: host {host_path} not mounted"));
        assert_eq!(
            Path::new(&mount_path),
            configured.as_path(),
            "{place}: config reads another path than host {host_path}"
        );
        assert!(read_only, "{place}: host {host_path} is not mounted read-only");
    }
    assert_eq!(
        config.state_dir,
        Path::new(state_dir),
        "{place}: config and --state-dir disagree"
    );

    // Its own /metrics port is the one declared and probed.
    let listen = config
        .listen
        .as_deref()
        .unwrap_or_else(|| panic!("{place}: collector.yaml sets no listen"));
    let listen_port: i32 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let declared = container.ports.as_deref().unwrap_or_default();
    assert!(
        declared.iter().any(|p| p.container_port == listen_port),
        "{place}: listen {listen} is not a container port"
    );
    if let Some(probe) = &container.liveness_probe {
        let http = probe.http_get.as_ref().unwrap();
        assert_eq!(
            resolve_port(container, &http.port),
            Some(listen_port),
            "{place}: probe port"
        );
    }
}

/// The collector's configuration from its ConfigMap, parsed and validated by
/// the collector itself; it and `--server` point at the server's Service.
fn collector_config(manifests: &Manifests) -> CollectorConfig {
    let daemon_set = manifests.only(manifests.daemon_sets(), "DaemonSet");
    let place = format!("{}: DaemonSet {:?}", manifests.origin, daemon_set.metadata.name);
    let pod = pod_spec(&daemon_set.spec.as_ref().unwrap().template, &place);
    let container = only_container(pod, &place);
    let (mount_path, config_map_name) = config_map_mount(pod, container, &place);
    assert_eq!(
        required_flag(container, "--config", &place),
        format!("{mount_path}/{COLLECTOR_CONFIG_KEY}"),
        "{place}: --config is not the ConfigMap's file"
    );
    let namespace = daemon_set.metadata.namespace.as_deref().unwrap();
    let config_map = manifests.config_map(namespace, &config_map_name);
    let text = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(COLLECTOR_CONFIG_KEY))
        .unwrap_or_else(|| panic!("{place}: ConfigMap {config_map_name} has no {COLLECTOR_CONFIG_KEY}"));
    let config = CollectorConfig::parse(text).unwrap_or_else(|e| panic!("{place}: {COLLECTOR_CONFIG_KEY}: {e}"));

    let service = manifests.only(manifests.services(), "Service");
    let service_url = format!(
        "http://{}.{}.svc:{}",
        service.metadata.name.as_deref().unwrap(),
        service.metadata.namespace.as_deref().unwrap(),
        service.spec.as_ref().unwrap().ports.as_deref().unwrap()[0].port
    );
    assert_eq!(
        config.server.url, service_url,
        "{place}: collector.yaml ships elsewhere than the Service"
    );
    assert_eq!(
        required_flag(container, "--server", &place),
        service_url,
        "{place}: --server"
    );
    config
}

fn check_server(manifests: &Manifests) {
    let stateful_set = manifests.only(manifests.stateful_sets(), "StatefulSet");
    let service = manifests.only(manifests.services(), "Service");
    let place = format!("{}: StatefulSet {:?}", manifests.origin, stateful_set.metadata.name);
    let spec = stateful_set.spec.as_ref().unwrap();
    let pod = pod_spec(&spec.template, &place);
    let container = only_container(pod, &place);

    let args = container.args.as_deref().unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("server"),
        "{place}: not `tidewatch server`"
    );
    assert_eq!(
        required_flag(container, "--listen", &place),
        format!("0.0.0.0:{SERVER_PORT}"),
        "{place}"
    );
    assert_eq!(
        required_flag(container, "--data-dir", &place),
        SERVER_DATA_DIR,
        "{place}"
    );

    // The data directory is the claim.
    let claims = spec.volume_claim_templates.as_deref().unwrap_or_default();
    let claim = claims
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(SERVER_CLAIM))
        .unwrap_or_else(|| panic!("{place}: no volumeClaimTemplate {SERVER_CLAIM:?}"));
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(
        claim_spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..]),
        "{place}"
    );
    let storage = claim_spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    assert!(storage.is_some(), "{place}: the claim requests no storage");
    let data_mount = container
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|m| m.name == SERVER_CLAIM);
    assert_eq!(
        data_mount.map(|m| m.mount_path.as_str()),
        Some(SERVER_DATA_DIR),
        "{place}: the claim is not mounted at {SERVER_DATA_DIR}"
    );
    assert_ne!(data_mount.unwrap().read_only, Some(true), "{place}: data is read-only");

    // Configuration: a non-empty YAML mapping of the server's sections.
    let (mount_path, config_map_name) = config_map_mount(pod, container, &place);
    assert_eq!(
        required_flag(container, "--config", &place),
        format!("{mount_path}/{SERVER_CONFIG_KEY}"),
        "{place}: --config is not the ConfigMap's file"
    );
    let namespace = stateful_set.metadata.namespace.as_deref().unwrap();
    let config_map = manifests.config_map(namespace, &config_map_name);
    let text = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(SERVER_CONFIG_KEY))
        .unwrap_or_else(|| panic!("{place}: ConfigMap {config_map_name} has no {SERVER_CONFIG_KEY}"));
    let config: serde_norway::Value =
        serde_norway::from_str(text).unwrap_or_else(|e| panic!("{place}: {SERVER_CONFIG_KEY}: {e}"));
    let sections = config
        .as_mapping()
        .unwrap_or_else(|| panic!("{place}: {SERVER_CONFIG_KEY} is not a mapping"));
    assert!(!sections.is_empty(), "{place}: {SERVER_CONFIG_KEY} is empty");
    for key in sections.keys() {
        let key = key.as_str().unwrap_or_default();
        assert!(
            SERVER_CONFIG_SECTIONS.contains(&key),
            "{place}: {SERVER_CONFIG_KEY}: unknown section {key:?}"
        );
    }

    // Probes ask the server's health routes on its port.
    let probes = [
        ("readiness", &container.readiness_probe),
        ("liveness", &container.liveness_probe),
    ];
    for (what, probe) in probes {
        let probe = probe.as_ref().unwrap_or_else(|| panic!("{place}: no {what} probe"));
        let http = probe
            .http_get
            .as_ref()
            .unwrap_or_else(|| panic!("{place}: {what} probe is not httpGet"));
        let path = http.path.as_deref().unwrap_or_default();
        assert!(
            SERVER_HEALTH_PATHS.contains(&path),
            "{place}: {what} probe asks {path:?}"
        );
        assert_eq!(
            resolve_port(container, &http.port),
            Some(SERVER_PORT),
            "{place}: {what} probe port"
        );
    }

    // Not root, locked down, bounded.
    let pod_security = pod
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{place}: no pod securityContext"));
    assert_eq!(pod_security.run_as_non_root, Some(true), "{place}");
    assert_eq!(
        pod_security.run_as_user,
        Some(65532),
        "{place}: not the image's nonroot user"
    );
    assert_locked_down(container, &place);
    assert_requests_and_limits(container, &place);

    // The Service governs the StatefulSet and selects its pods, not the
    // collector's, on the server's port.
    assert_eq!(spec.service_name, service.metadata.name, "{place}: serviceName");
    let service_place = format!("{}: Service {:?}", manifests.origin, service.metadata.name);
    let service_spec = service.spec.as_ref().unwrap();
    let selector = service_spec.selector.clone().unwrap_or_default();
    assert_selects(&selector, spec.template.metadata.as_ref().unwrap(), &service_place);
    for daemon_set in manifests.daemon_sets() {
        let collector_labels = labels(daemon_set.spec.as_ref().unwrap().template.metadata.as_ref().unwrap());
        let selects_collector = selector.iter().all(|(k, v)| collector_labels.get(k) == Some(v));
        assert!(!selects_collector, "{service_place}: selects the collector's pods too");
    }
    let ports = service_spec.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1, "{service_place}: one port serves every API");
    assert_eq!(ports[0].port, SERVER_PORT, "{service_place}");
    let target = ports[0].target_port.clone().unwrap_or(IntOrString::Int(ports[0].port));
    assert_eq!(
        resolve_port(container, &target),
        Some(SERVER_PORT),
        "{service_place}: targetPort"
    );
}

fn check_everything(manifests: &Manifests) {
    check_labels(manifests);
    check_namespaces(manifests);
    check_collector_role(manifests);
    check_collector_binding(manifests);
    check_collector_daemon_set(manifests);
    check_server(manifests);
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn manifests_parse_into_kubernetes_types() {
    let manifests = plain_manifests();
    let kinds: BTreeSet<&str> = manifests.objects.iter().map(|s| s.object.kind()).collect();
    let expected: BTreeSet<&str> = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Service",
        "DaemonSet",
        "StatefulSet",
    ]
    .into();
    assert_eq!(kinds, expected);
    assert_eq!(
        manifests.config_maps().len(),
        2,
        "one ConfigMap for the server, one for the collector"
    );
    let namespace = manifests.only(manifests.namespaces(), "Namespace");
    assert_eq!(namespace.metadata.name.as_deref(), Some("tidewatch"));
}

#[test]
fn every_object_is_labelled_and_namespaced() {
    let manifests = plain_manifests();
    check_labels(&manifests);
    check_namespaces(&manifests);
}

#[test]
fn collector_role_is_read_only_and_bound() {
    let manifests = plain_manifests();
    check_collector_role(&manifests);
    check_collector_binding(&manifests);
}

#[test]
fn collector_daemon_set_mounts_what_it_reads() {
    check_collector_daemon_set(&plain_manifests());
}

#[test]
fn collector_config_parses_and_ships_to_the_service() {
    let config = collector_config(&plain_manifests());
    assert_eq!(config.metrics.node.proc_path, Path::new("/host/proc"));
}

#[test]
fn server_keeps_its_data_on_a_claim() {
    let manifests = plain_manifests();
    check_server(&manifests);
    let stateful_set = manifests.only(manifests.stateful_sets(), "StatefulSet");
    let claim = &stateful_set
        .spec
        .as_ref()
        .unwrap()
        .volume_claim_templates
        .as_ref()
        .unwrap()[0];
    let requests = claim
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap();
    assert_eq!(requests["storage"].0, "50Gi");
}

#[test]
fn kustomization_lists_every_manifest() {
    let path = kubernetes_dir().join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let kustomization: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    assert_eq!(
        kustomization.get("kind").and_then(serde_norway::Value::as_str),
        Some("Kustomization")
    );
    let mut listed = BTreeSet::new();
    let resources = kustomization
        .get("resources")
        .and_then(serde_norway::Value::as_sequence)
        .expect("kustomization.yaml: no resources list");
    for resource in resources {
        let name = resource
            .as_str()
            .expect("kustomization.yaml: a resource that is not a file name");
        assert!(
            kubernetes_dir().join(name).is_file(),
            "kustomization.yaml lists {name}, which does not exist"
        );
        assert!(listed.insert(name.to_string()), "kustomization.yaml lists {name} twice");
    }
    let mut files = BTreeSet::new();
    for file in manifest_files() {
        files.insert(file.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(listed, files, "kustomization.yaml must list exactly the manifests");
}

#[test]
fn misspelt_fields_and_unknown_kinds_are_refused() {
    let misspelt = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\ndatta: { a: b }\n";
    let error = parse_documents("test", misspelt).unwrap_err();
    assert!(error.contains("`datta`"), "{error}");
    let nested =
        "apiVersion: v1\nkind: Service\nmetadata: { name: x }\nspec: { ports: [ { port: 1, targetPrt: 2 } ] }\n";
    let error = parse_documents("test", nested).unwrap_err();
    assert!(error.contains("spec.ports[0].targetPrt"), "{error}");
    let wrong_type = "apiVersion: v1\nkind: Service\nmetadata: { name: x }\nspec: { ports: [ { port: http } ] }\n";
    assert!(parse_documents("test", wrong_type).is_err());
    let unknown = "apiVersion: v1\nkind: Secret\nmetadata: { name: x }\n";
    let error = parse_documents("test", unknown).unwrap_err();
    assert!(error.contains("Secret"), "{error}");
    let two = "---\napiVersion: v1\nkind: Namespace\nmetadata: { name: a }\n---\n# empty\n---\napiVersion: v1\nkind: Namespace\nmetadata: { name: b }\n";
    assert_eq!(parse_documents("test", two).unwrap().len(), 2);
}

/// With default values the chart renders the objects of the plain manifests,
/// and they pass the same checks.
#[test]
fn helm_chart_renders_the_same_objects() {
    let Some(rendered) = helm_manifests(&[]) else { return };
    check_everything(&rendered);
    let plain = plain_manifests();
    check_everything(&plain);
    assert_eq!(
        rendered.identities(),
        plain.identities(),
        "{} and deploy/kubernetes hold different objects",
        rendered.origin
    );
}

/// Values reach the objects they configure.
#[test]
fn helm_values_configure_the_objects() {
    let values =
        "collector.clusterName=prod,server.retention=30d,server.storage.size=10Gi,server.storage.storageClass=fast";
    let Some(rendered) = helm_manifests(&["--set", values, "--set", "collector.extraConfig.logs.batch_wait=2s"]) else {
        return;
    };
    check_everything(&rendered);
    let config = collector_config(&rendered);
    assert_eq!(config.cluster, "prod");
    assert_eq!(config.logs.batch_wait, std::time::Duration::from_secs(2));
    assert_eq!(
        config.metrics.node.proc_path,
        Path::new("/host/proc"),
        "extra config replaced the defaults"
    );

    let stateful_set = rendered.only(rendered.stateful_sets(), "StatefulSet");
    let claim = &stateful_set
        .spec
        .as_ref()
        .unwrap()
        .volume_claim_templates
        .as_ref()
        .unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "10Gi"
    );

    let namespace = stateful_set.metadata.namespace.as_deref().unwrap();
    let server_config = rendered.config_map(namespace, "tidewatch-config");
    let text = &server_config.data.as_ref().unwrap()[SERVER_CONFIG_KEY];
    let parsed: serde_norway::Value = serde_norway::from_str(text).unwrap();
    assert_eq!(parsed["storage"]["retention"].as_str(), Some("30d"), "{text}");
}
