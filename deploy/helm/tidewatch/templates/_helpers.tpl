{{/* The app.kubernetes.io/name of every object. */}}
{{- define "tidewatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The server's objects' name; the collector's add "-collector". A release
named like the chart (`helm install tidewatch …`) gives "tidewatch", the
names of deploy/kubernetes. */}}
{{- define "tidewatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tidewatch.collectorName" -}}
{{- printf "%s-collector" (include "tidewatch.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tidewatch.serverConfigName" -}}
{{- printf "%s-config" (include "tidewatch.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tidewatch.collectorConfigName" -}}
{{- printf "%s-config" (include "tidewatch.collectorName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tidewatch.namespace" -}}
{{- default .Release.Namespace .Values.namespace.name -}}
{{- end -}}

{{- define "tidewatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The server's base URL, as the collector reaches it. */}}
{{- define "tidewatch.serverURL" -}}
{{- printf "http://%s.%s.svc:%v" (include "tidewatch.fullname" .) (include "tidewatch.namespace" .) .Values.server.service.port -}}
{{- end -}}

{{/* Labels of every object; pass (dict "root" $ "component" "server"). */}}
{{- define "tidewatch.labels" -}}
{{ include "tidewatch.selectorLabels" . }}
app.kubernetes.io/part-of: tidewatch
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* What a workload selects its pods by; `component` may be empty (the
Namespace belongs to both). */}}
{{- define "tidewatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidewatch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* The server's tidewatch.yaml: the chart's keys, then .Values.server.config. */}}
{{- define "tidewatch.serverConfig" -}}
{{- $base := dict "storage" (dict "retention" .Values.server.retention) -}}
{{- mustMergeOverwrite $base (deepCopy .Values.server.config) | toYaml -}}
{{- end -}}

{{/* The collector's collector.yaml: paths matching the DaemonSet's mounts,
then .Values.collector.extraConfig. */}}
{{- define "tidewatch.collectorConfig" -}}
{{- $node := dict "proc_path" "/host/proc" "sys_path" "/host/sys" "rootfs_path" "/host/root" -}}
{{- $kubelet := dict "enabled" true "tls" (dict "insecure_skip_verify" .Values.collector.kubelet.insecureSkipVerify) -}}
{{- $base := dict
    "server" (dict "url" (include "tidewatch.serverURL" .))
    "cluster" .Values.collector.clusterName
    "state_dir" .Values.collector.stateDir
    "listen" (printf "0.0.0.0:%v" .Values.collector.metricsPort)
    "logs" (dict "glob" "/var/log/containers/*.log")
    "metrics" (dict "node" $node "kubelet" $kubelet "annotated_pods" true)
    "kubernetes" (dict "enabled" true "events" true)
-}}
{{- mustMergeOverwrite $base (deepCopy .Values.collector.extraConfig) | toYaml -}}
{{- end -}}
