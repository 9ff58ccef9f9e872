{{/* Name of the chart (Chart.name, overridable by nameOverride is deliberately not offered). */}}
{{- define "nixcache-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, with the chart name appended unless it already contains it. */}}
{{- define "nixcache-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nixcache-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels selecting the operator pods (never change them: Deployment selectors are immutable). */}}
{{- define "nixcache-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nixcache-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "nixcache-operator.labels" -}}
helm.sh/chart: {{ include "nixcache-operator.chart" . }}
{{ include "nixcache-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: nixcache
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "nixcache-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nixcache-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "nixcache-operator.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "nixcache-operator.image" -}}
{{- include "nixcache-operator.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "nixcache-operator.proxyImage" -}}
{{- include "nixcache-operator.imageRef" (dict "image" .Values.proxyImage "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/* "true" when leader election is on: as set, else when more than one replica runs. */}}
{{- define "nixcache-operator.leaderElection" -}}
{{- $set := .Values.leaderElection.enabled -}}
{{- if kindIs "bool" $set -}}
{{- if and (not $set) (gt (int .Values.replicaCount) 1) -}}
{{- fail "leaderElection.enabled=false needs replicaCount <= 1: several operators would reconcile at once" -}}
{{- end -}}
{{- $set -}}
{{- else -}}
{{- gt (int .Values.replicaCount) 1 -}}
{{- end -}}
{{- end -}}

{{- define "nixcache-operator.leaseName" -}}
{{- default (include "nixcache-operator.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}
