{{/* Names, labels and the RBAC rules, shared by the templates. */}}

{{- define "mro.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name: fullnameOverride, or <release>-<name>, where the name is not repeated when the
release name contains it.
*/}}
{{- define "mro.fullname" -}}
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

{{/* <fullname>-<suffix>, still within 63 characters. */}}
{{- define "mro.fullnameWith" -}}
{{- $fullname := include "mro.fullname" (index . 0) -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" ($fullname | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{- define "mro.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mro.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mro.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mro.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: model-release-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mro.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mro.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does in the namespaces it serves, and nothing more (docs/install.md explains each
rule; tests/chart checks them against the requests of a real operator run).
*/}}
{{- define "mro.namespacedRules" -}}
# ModelReleases: kopf lists and watches them, patches finalizers and its progress annotations; the
# reconcile loop reads one by name.
- apiGroups: ["modelrelease.io"]
  resources: ["modelreleases"]
  verbs: ["get", "list", "watch", "patch"]
# The status, written by the reconcile loop (merge patch with the resourceVersion read).
- apiGroups: ["modelrelease.io"]
  resources: ["modelreleases/status"]
  verbs: ["patch"]
# Training Jobs: created per stage, read back when a create answers 409, listed by label, watched to
# wake the release up, deleted when a running stage is aborted or rolled back.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
# The Jobs' pods: termination messages carry the training result and the exit reason.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# The stable and canary Deployments: created, adopted on 409, listed by label, watched, scaled and
# updated by merge patch.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "get", "list", "watch", "patch"]
# The Service in front of both Deployments (and a multi-worker Job's headless Service): created once,
# adopted on 409, watched by label.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "get", "list", "watch"]
# A multi-worker stage's NetworkPolicy (only its workers reach their port): created with its Job, adopted
# on 409; deleted with the Job by the garbage collector.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "get"]
# Events on ModelReleases (kopf posts core/v1 Events; it never patches them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.rbac.readSecrets }}
# Prometheus credentials and CA bundles named in spec.analysis.prometheus.
- apiGroups: [""]
  resources: ["secrets"]
  {{- with .Values.rbac.secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
  verbs: ["get"]
{{- end }}
{{- if .Values.trafficRouting.gatewayAPI.enabled }}
# The users' HTTPRoutes named in spec.serving.trafficRouting.gatewayAPI: read, and replaced with the
# resourceVersion read (update) to set the stable and canary weights, header rule and mirror. Never
# created, listed, watched or deleted: the route is the user's.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "update"]
{{- end }}
{{- end -}}

{{/* kopf's cluster-level observation: CRDs (to notice upgrades) and, when namespaces are listed, namespaces. */}}
{{- define "mro.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}

{{- define "mro.namespaceRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end -}}

{{/* The leader-election Lease's name: leaderElection.leaseName, or the full name. */}}
{{- define "mro.leaseName" -}}
{{- default (include "mro.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/*
Leader election, in the release namespace only: the operator reads its Lease, creates it when it is
missing, and replaces it (with the resourceVersion it read) to renew, take over or release it.
*/}}
{{- define "mro.leaderElectionRules" -}}
# Read, renew, take over and release the one Lease, by name.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "mro.leaseName" . | quote }}]
  verbs: ["get", "update"]
# Create it when it is missing. RBAC cannot restrict create by resourceNames (a create's URL names no
# object; the name is only in the body), so this rule allows creating any Lease in this namespace,
# and nothing more: the operator can neither read nor change a Lease of another name.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
{{- end -}}
