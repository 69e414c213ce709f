{{- define "hpcc.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hpcc.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "hpcc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hpcc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hpcc.labels" -}}
{{ include "hpcc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "hpcc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hpcc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The rules the operator needs on its own API, wherever it watches. */}}
{{- define "hpcc.hpccacheRules" -}}
- apiGroups: [hpccache.io]
  resources: [hpccaches, amlfilesystems]
  verbs: [get, list, watch, patch, update]
- apiGroups: [hpccache.io]
  resources: [hpccaches/status, amlfilesystems/status]
  verbs: [get, patch, update]
- apiGroups: [hpccache.io]
  resources: [hpccaches/finalizers, amlfilesystems/finalizers]
  verbs: [update]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# A namespace's own Azure credential: one Secret by name, read with a GET (no list, no watch, no other Secret).
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [hpccache-credential]
  verbs: [get]
{{- end }}
