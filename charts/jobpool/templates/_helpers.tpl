{{/* _helpers.tpl: names, labels and the rendered controller configuration. */}}

{{- define "jobpool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name; 63 characters at most (a DNS-1123 label). */}}
{{- define "jobpool.fullname" -}}
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

{{- define "jobpool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The immutable subset: the Deployment's selector must never change across upgrades. */}}
{{- define "jobpool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jobpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "jobpool.labels" -}}
{{ include "jobpool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: jobpool
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "jobpool.chart" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "jobpool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "jobpool.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "jobpool.secretName" -}}
{{- default (include "jobpool.fullname" .) .Values.rabbitmq.auth.existingSecret -}}
{{- end -}}

{{- define "jobpool.image" -}}
{{- $repo := .Values.image.repository -}}
{{- if .Values.image.registry -}}{{- $repo = printf "%s/%s" .Values.image.registry $repo -}}{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the workers live in, as a list; the release namespace when none is given. */}}
{{- define "jobpool.namespaces" -}}
{{- $ns := .Values.watchNamespaces | default (list .Release.Namespace) | uniq -}}
{{- toJson $ns -}}
{{- end -}}

{{- define "jobpool.leaderElection" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.leaderElection.enabled -}}true{{- end -}}
{{- end -}}

{{/*
Checks the schema cannot express, with messages that name the value to fix. The schema
(values.schema.json) already rejects unknown keys, wrong types and out-of-range numbers.
*/}}
{{- define "jobpool.validate" -}}
{{- $names := dict -}}
{{- range $i, $p := .Values.pools -}}
{{- if hasKey $names $p.name -}}
{{- fail (printf "pools[%d].name: %q is used by another pool; pool names must be unique" $i $p.name) -}}
{{- end -}}
{{- $_ := set $names $p.name true -}}
{{- if and (hasKey $p "minActive") (gt (int $p.minActive) (int $p.maxActive)) -}}
{{- fail (printf "pools[%d].minActive: %d is more than maxActive (%d)" $i (int $p.minActive) (int $p.maxActive)) -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.rabbitmq.auth.existingSecret) (not .Values.rabbitmq.auth.password) -}}
{{- fail "rabbitmq.auth: set existingSecret, or a password for the chart-created Secret" -}}
{{- end -}}
{{- end -}}

{{/* The controller's config file (docs/config.md), rendered from the values, in the order of
the docs. Credentials are never written here: they come from the Secret through the env. */}}
{{- define "jobpool.config" -}}
pollInterval: {{ .Values.pollInterval | quote }}
maxActiveTotal: {{ int .Values.maxActiveTotal }}
backend: kube
log:
  format: {{ .Values.log.format }}
  level: {{ .Values.log.level }}
metrics:
  address: {{ printf ":%d" (int .Values.metrics.port) | quote }}
rabbitmq:
  managementUrl: {{ .Values.rabbitmq.managementUrl | quote }}
  amqpUrl: {{ .Values.rabbitmq.amqpUrl | quote }}
  vhost: {{ .Values.rabbitmq.vhost | quote }}
  username: {env: RABBITMQ_USERNAME}
  password: {env: RABBITMQ_PASSWORD}
  {{- if .Values.rabbitmq.caSecret }}
  caFile: /etc/jobpool/ca/ca.crt
  {{- end }}
  timeout: {{ .Values.rabbitmq.timeout | quote }}
  depthSource: {{ .Values.rabbitmq.depthSource }}
kubernetes:
  inCluster: true
  namespace: {{ first (include "jobpool.namespaces" . | fromJsonArray) }}
{{- if include "jobpool.leaderElection" . }}
leaderElection:
  enabled: true
  leaseName: {{ default (include "jobpool.fullname" .) .Values.leaderElection.leaseName }}
  leaseDuration: {{ .Values.leaderElection.leaseDuration | quote }}
  renewDeadline: {{ .Values.leaderElection.renewDeadline | quote }}
  retryPeriod: {{ .Values.leaderElection.retryPeriod | quote }}
{{- end }}
pools:
{{- range .Values.pools }}
  - name: {{ .name }}
    {{- $p := omit . "name" }}
    {{- toYaml $p | nindent 4 }}
{{- end }}
{{- end -}}

{{/* RBAC: the controller needs exactly these rules; nothing cluster-wide, no Secrets. */}}
{{- define "jobpool.rules.workers" }}
# Workers are Jobs: the controller starts one per waiting message (create), finds its pools'
# Jobs by label (list, watch; get to re-read one) and removes finished or stuck ones (delete).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
# A Job is "pending" until one of its Pods runs: the controller reads Pod phases, never writes.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Scaling decisions and errors are reported as Events (patch: a repeated event is updated in
# place with a higher count instead of piling up new objects).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
{{- define "jobpool.rules.leases" }}
# Leader election with more than one replica: a coordination.k8s.io Lease is read, created
# once and renewed. (create cannot be limited by resourceNames, so no name is given.)
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}
