{{/* _helpers.tpl: names, labels and the rendered controller configuration. */}}

{{- define "jobpool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* jobpool.fit (list NAME SUFFIX [MAX]): NAME+SUFFIX as a DNS-1123 label of MAX (63) characters
at most. A name that is too long keeps its start and gets 8 hex digits of its SHA-256 in place of
the rest, so two long names that share their first characters still differ (plain truncation
would give two releases the same objects, Lease and instance label). */}}
{{- define "jobpool.fit" -}}
{{- $name := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $max := 63 -}}
{{- if gt (len .) 2 -}}{{- $max = index . 2 | int -}}{{- end -}}
{{- if le (len (print $name $suffix)) $max -}}
{{- print $name $suffix -}}
{{- else -}}
{{- printf "%s-%s%s" ($name | trunc (int (sub (sub $max 9) (len $suffix))) | trimSuffix "-") (sha256sum $name | trunc 8) $suffix -}}
{{- end -}}
{{- end -}}

{{/* The release's full name, unique per release in its namespace; a DNS-1123 label. */}}
{{- define "jobpool.fullname" -}}
{{- $full := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $full = .Values.fullnameOverride -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- $full = ternary .Release.Name (printf "%s-%s" .Release.Name $name) (contains $name .Release.Name) -}}
{{- end -}}
{{- include "jobpool.fit" (list ($full | trimSuffix "-") "") -}}
{{- end -}}

{{/* The namespace the controller works in: its Lease, and the Jobs of the pools of its own file
(values.pools). A JobPool's Jobs live in the JobPool's namespace. */}}
{{- define "jobpool.namespace" -}}
{{- .Release.Namespace -}}
{{- end -}}

{{/* True ("true") when the controller works beyond the release namespace: JobPools in every
namespace (watchNamespaces empty), or a listed namespace other than the release's. */}}
{{- define "jobpool.beyond" -}}
{{- $beyond := not .Values.watchNamespaces -}}
{{- range .Values.watchNamespaces }}{{ if ne . $.Release.Namespace }}{{ $beyond = true }}{{ end }}{{ end -}}
{{- if $beyond }}true{{ end -}}
{{- end -}}

{{/* This release's name among the releases whose Jobs it may see: the controller's
kubernetes.instance (the label on its Jobs; the controller takes 56 characters at most), the
ClusterRole's name, and the base of the Role names. The full name; prefixed by the release
namespace when the controller works beyond it, so that a release of the same name in another
namespace, which may watch the same namespaces, never counts this one's Jobs as its own. */}}
{{- define "jobpool.instance" -}}
{{- $name := include "jobpool.fullname" . -}}
{{- if include "jobpool.beyond" . -}}
{{- $name = printf "%s-%s" .Release.Namespace $name -}}
{{- end -}}
{{- include "jobpool.fit" (list $name "" 56) -}}
{{- end -}}

{{/* The Lease: <full name>-leader in the release namespace. Not derived from the instance, so
that an upgrade which changes the instance still hands over through the same Lease (two
controllers never run at once). */}}
{{- define "jobpool.leaseName" -}}
{{- default (printf "%s-leader" (include "jobpool.fit" (list (include "jobpool.fullname" .) "" 56))) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* The workers' broker login, as rabbitmq.workerSecret: {name, usernameKey, passwordKey}. In order:
workers.auth.existingSecret; the chart's own worker Secret when workers.auth sets a user; else
the controller's own credentials (its Secret, or a copy in the Jobs' namespace when that is
another one, since a secretKeyRef reads the pod's own namespace). */}}
{{- define "jobpool.workerSecret" -}}
{{- $w := .Values.workers.auth -}}
{{- $r := .Values.rabbitmq.auth -}}
{{- if $w.existingSecret -}}
{{- toJson (dict "name" $w.existingSecret "usernameKey" $w.usernameKey "passwordKey" $w.passwordKey) -}}
{{- else if $w.username -}}
{{- toJson (dict "name" (include "jobpool.fit" (list (include "jobpool.fullname" .) "-worker")) "usernameKey" "username" "passwordKey" "password" "create" true "username" $w.username "password" $w.password) -}}
{{- else -}}
{{- toJson (dict "name" (include "jobpool.secretName" .) "usernameKey" $r.usernameKey "passwordKey" $r.passwordKey) -}}
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


{{/* jobpool.durationMs: a duration ("1m30s", "500ms", "0") in milliseconds; "" if it is none. */}}
{{- define "jobpool.durationMs" -}}
{{- $s := toString . -}}
{{- if eq $s "0" -}}0
{{- else if regexMatch "^([0-9]+(ms|s|m|h))+$" $s -}}
{{- $unit := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 -}}
{{- $t := int64 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" $s -1 -}}
{{- $n := regexFind "^[0-9]+" . -}}
{{- $t = add $t (mul (int64 $n) (get $unit (trimPrefix $n .))) -}}
{{- end -}}
{{- $t -}}
{{- end -}}
{{- end -}}

{{/* jobpool.durationText: milliseconds as the controller prints them (1h, 2m, 3s, 500ms). */}}
{{- define "jobpool.durationText" -}}
{{- $ms := int64 . -}}
{{- if and $ms (eq (mod $ms 3600000) 0) -}}{{ div $ms 3600000 }}h
{{- else if and $ms (eq (mod $ms 60000) 0) -}}{{ div $ms 60000 }}m
{{- else if and $ms (eq (mod $ms 1000) 0) -}}{{ div $ms 1000 }}s
{{- else -}}{{ $ms }}ms{{- end -}}
{{- end -}}

{{/*
Checks the schema cannot express, with the controller's own messages. The schema
(values.schema.json) rejects unknown keys, wrong types and numbers out of range; both it and
the duration limits here come from controller/src/config_limits.h (charts/limits.py), and
tests/integration/chart-limits.test.sh proves the chart and the controller agree at each limit.
*/}}
{{- define "jobpool.validate" -}}
{{- $v := toJson .Values | fromJson -}}
{{- /* Durations: every key of the table, at the top level or in each pool. */ -}}
{{- range $key, $mm := include "jobpool.durationLimits" . | fromJson -}}
{{- $parts := splitList "." $key -}}
{{- $found := list -}}
{{- if eq (first $parts) "pools" -}}
{{- range $i, $p := $v.pools -}}
{{- if hasKey $p (last $parts) -}}
{{- $found = append $found (list (printf "pools[%d].%s" $i (last $parts)) (get $p (last $parts))) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $m := $v -}}
{{- range initial $parts -}}{{- $m = get $m . | default dict -}}{{- end -}}
{{- if hasKey $m (last $parts) -}}{{- $found = append $found (list $key (get $m (last $parts))) -}}{{- end -}}
{{- end -}}
{{- range $found -}}
{{- $ms := include "jobpool.durationMs" (index . 1) -}}
{{- if and $ms (lt (int64 $ms) (int64 (index $mm 0))) -}}
{{- fail (printf "%s: must be at least %s, got %v" (index . 0) (include "jobpool.durationText" (index $mm 0)) (index . 1)) -}}
{{- end -}}
{{- if and $ms (gt (int64 $ms) (int64 (index $mm 1))) -}}
{{- fail (printf "%s: duration out of range (at most 8760h), got %v" (index . 0) (index . 1)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Leader election: renewDeadline < leaseDuration, retryPeriod < renewDeadline. */ -}}
{{- $le := .Values.leaderElection -}}
{{- if ge (int64 (include "jobpool.durationMs" $le.renewDeadline)) (int64 (include "jobpool.durationMs" $le.leaseDuration)) -}}
{{- fail (printf "leaderElection.renewDeadline: must be shorter than leaseDuration (%s), got %s" $le.leaseDuration $le.renewDeadline) -}}
{{- end -}}
{{- if ge (int64 (include "jobpool.durationMs" $le.retryPeriod)) (int64 (include "jobpool.durationMs" $le.renewDeadline)) -}}
{{- fail (printf "leaderElection.retryPeriod: must be shorter than renewDeadline (%s), got %s" $le.renewDeadline $le.retryPeriod) -}}
{{- end -}}
{{- /* Pools: unique names, minActive <= maxActive, one pool per queue and vhost. */ -}}
{{- $names := dict -}}
{{- $queues := dict -}}
{{- $minSum := 0 -}}
{{- range $i, $p := .Values.pools -}}
{{- if hasKey $names $p.name -}}
{{- fail (printf "pools[%d].name: %q is used by another pool; pool names must be unique" $i $p.name) -}}
{{- end -}}
{{- $_ := set $names $p.name true -}}
{{- if and (hasKey $p "minActive") (gt (int $p.minActive) (int $p.maxActive)) -}}
{{- fail (printf "pools[%d].minActive: %d is more than maxActive (%d)" $i (int $p.minActive) (int $p.maxActive)) -}}
{{- end -}}
{{- $minSum = add $minSum (int (default 0 $p.minActive)) -}}
{{- if $p.queue -}}
{{- $q := printf "%s\x00%s" (default $.Values.rabbitmq.vhost $p.vhost) $p.queue -}}
{{- if hasKey $queues $q -}}
{{- fail (printf "pools[%d].queue: queue %q in vhost %q is already served by pool %q" $i $p.queue (default $.Values.rabbitmq.vhost $p.vhost) (get $queues $q)) -}}
{{- end -}}
{{- $_ := set $queues $q $p.name -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int .Values.maxActiveTotal) 0) (gt (int $minSum) (int .Values.maxActiveTotal)) -}}
{{- fail (printf "maxActiveTotal: must be >= the sum of minActive over all pools (%d), got %d" (int $minSum) (int .Values.maxActiveTotal)) -}}
{{- end -}}
{{- if and (not .Values.rabbitmq.auth.existingSecret) (not .Values.rabbitmq.auth.password) -}}
{{- fail "rabbitmq.auth: set existingSecret, or a password for the chart-created Secret" -}}
{{- end -}}
{{- $w := .Values.workers.auth -}}
{{- if and (not $w.existingSecret) (ne (not $w.username) (not $w.password)) -}}
{{- fail "workers.auth: set both username and password (or existingSecret, or neither: the workers then use the controller's login)" -}}
{{- end -}}
{{- with .Values.rabbitmq.certSecret -}}
{{- if and .name (not (hasPrefix "amqps://" $.Values.rabbitmq.amqpUrl)) -}}
{{- fail (printf "rabbitmq.certSecret: workers present the client certificate on amqpUrl, which must then be amqps://, got %q" $.Values.rabbitmq.amqpUrl) -}}
{{- end -}}
{{- if and .name (eq .certKey .keyKey) -}}
{{- fail (printf "rabbitmq.certSecret.keyKey: must differ from certKey (%q)" .certKey) -}}
{{- end -}}
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
  {{- $ws := include "jobpool.workerSecret" . | fromJson }}
  # The workers' login: every Job gets it as secretKeyRef env, never as a literal.
  workerSecret:
    name: {{ $ws.name }}
    usernameKey: {{ $ws.usernameKey | quote }}
    passwordKey: {{ $ws.passwordKey | quote }}
  {{- with .Values.rabbitmq.caSecret }}
  {{- if .name }}
  caFile: /etc/jobpool/ca/ca.crt
  # The same CA, mounted into every worker (amqps://).
  caSecret:
    name: {{ .name }}
    key: {{ .key | quote }}
  {{- end }}
  {{- end }}
  {{- with .Values.rabbitmq.certSecret }}
  {{- if .name }}
  # Mutual TLS: the controller's certificate, and the same Secret mounted into every worker.
  certFile: /etc/jobpool/cert/tls.crt
  keyFile: /etc/jobpool/cert/tls.key
  certSecret:
    name: {{ .name }}
    certKey: {{ .certKey | quote }}
    keyKey: {{ .keyKey | quote }}
  {{- end }}
  {{- end }}
  timeout: {{ .Values.rabbitmq.timeout | quote }}
  depthSource: {{ .Values.rabbitmq.depthSource }}
  consumerTimeout: {{ .Values.rabbitmq.consumerTimeout | quote }}
  # How old the management API's figures can be: collect_statistics_interval plus the
  # smallest sample increment (5 s + 5 s by default; docs/rabbitmq.md tells how to lower it).
  managementLag: {{ .Values.rabbitmq.managementLag | quote }}
kubernetes:
  inCluster: true
  # Labels this release's Jobs; the controller counts and deletes only its own.
  instance: {{ include "jobpool.instance" . }}
  {{- with .Values.watchNamespaces }}
  # JobPools (and their Jobs) in these namespaces only; the RBAC is a Role in each.
  watchNamespaces:
    {{- toYaml . | nindent 4 }}
  {{- else }}
  # No watchNamespaces: JobPools in every namespace, each pool's Jobs in its JobPool's namespace
  # (a ClusterRole).
  {{- end }}
# Always on, even with one replica: during a rollout the new pod waits for the Lease while the
# old one still works, so an upgrade never runs two controllers at once, nor none.
leaderElection:
  enabled: true
  leaseName: {{ include "jobpool.leaseName" . }}
  leaseDuration: {{ .Values.leaderElection.leaseDuration | quote }}
  renewDeadline: {{ .Values.leaderElection.renewDeadline | quote }}
  retryPeriod: {{ .Values.leaderElection.retryPeriod | quote }}
pools:{{ if not .Values.pools }} []{{ end }}
{{- range .Values.pools }}
  - name: {{ .name }}
    {{- $p := omit . "name" }}
    {{- toYaml $p | nindent 4 }}
{{- end }}
{{- end -}}

{{/* RBAC: exactly the calls the controller makes (controller/src/kube.c); nothing cluster-wide,
no Secrets. */}}
{{/* What the controller does in a namespace where pools' workers run. */}}
{{- define "jobpool.workerRules" }}
# Workers are Jobs: the controller starts one per waiting message (create), keeps its pools'
# Jobs in a watch cache (list, watch), re-reads a Job it is about to delete for a pendingTimeout
# (get: the cache may be stale) and removes finished or stuck ones (delete).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
# A Job is "pending" until one of its Pods runs: the cache follows Pod phases, never writes.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Scaling decisions and errors are reported as new Events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* What the controller does in a namespace whose JobPools it serves. */}}
{{- define "jobpool.jobpoolRules" }}
# Pools may be JobPool objects: the controller watches them, lists them when one changed, and
# writes their status.
- apiGroups: ["jobpool.dev"]
  resources: ["jobpools"]
  verbs: ["list", "watch"]
- apiGroups: ["jobpool.dev"]
  resources: ["jobpools/status"]
  verbs: ["patch"]
{{- include "jobpool.connectionSecretRules" . }}
{{- end }}

{{/* spec.connectionSecretRef: the controller reads the Secrets JobPools name, by name only,
wherever JobPools are served (controller/src/conns.c). */}}
{{- define "jobpool.connectionSecretRules" }}
# JobPools' own broker connections (spec.connectionSecretRef): each named Secret is read by name;
# get only, so no Secret can be listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}

{{/* Leader election, in the release namespace only. */}}
{{- define "jobpool.leaseRules" }}
# Leader election: the chart creates the Lease (create cannot be limited by resourceNames, so the
# controller is given no create at all); the controller reads and renews that one Lease only.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "jobpool.leaseName" . | quote }}]
  verbs: ["get", "update"]
{{- end }}

{{/* labels and annotations of the RBAC objects (under metadata). */}}
{{- define "jobpool.rbacMeta" -}}
labels:
  {{- include "jobpool.labels" . | nindent 2 }}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "jobpool.rbacSubject" -}}
subjects:
  - kind: ServiceAccount
    name: {{ include "jobpool.serviceAccountName" . }}
    namespace: {{ .Release.Namespace }}
{{- end -}}
