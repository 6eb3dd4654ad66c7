{{- define "rill.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "rill.labels" -}}
app.kubernetes.io/name: rill-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rill.selectorLabels" -}}
app.kubernetes.io/name: rill-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The rules the operator needs wherever it reconciles Clusters and Topics. */}}
{{- define "rill.rules" -}}
- apiGroups: ["rill.dev"]
  resources: ["clusters"]
  verbs: ["get", "list", "watch"]
# Topics carry the operator's finalizer (added and removed by patch).
- apiGroups: ["rill.dev"]
  resources: ["topics"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["rill.dev"]
  resources: ["clusters/status", "topics/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion need update on the owner's finalizers.
- apiGroups: ["rill.dev"]
  resources: ["clusters/finalizers"]
  verbs: ["update"]
# Server-side apply creates what is missing: create and patch.
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Storage growth replaces the StatefulSet (orphan delete: its pods keep running).
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Rolling restarts delete one broker pod at a time.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# Storage growth patches each broker's claim; a scale-down with
# storage.deleteClaimsOnScaleDown deletes the claims of removed brokers.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "patch", "delete"]
{{- end -}}
