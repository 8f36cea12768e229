{{- define "cellplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cellplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cellplane.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cellplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cellplane
{{- end }}

{{- define "cellplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cellplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cellplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cellplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's ServiceAccount, as the subject of a binding. */}}
{{- define "cellplane.subjects" -}}
subjects:
  - kind: ServiceAccount
    name: {{ include "cellplane.serviceAccountName" . }}
    namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "cellplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
"true" when the controllers elect a leader: leaderElection.enabled=auto means exactly
when more than one replica runs.
*/}}
{{- define "cellplane.leaderElection" -}}
{{- $enabled := .Values.leaderElection.enabled }}
{{- if eq (toString $enabled) "auto" }}
{{- if gt (int .Values.replicaCount) 1 }}true{{ else }}false{{ end }}
{{- else }}
{{- toString $enabled }}
{{- end }}
{{- end }}

{{/*
Rejects combinations the schema cannot express. Included by the Deployment, so every
render runs it.
*/}}
{{- define "cellplane.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if and (eq .Values.journal.type "sqlite") (gt $replicas 1) }}
{{- fail (printf "replicaCount=%d needs journal.type=postgres: the sqlite journal is one file on a ReadWriteOnce volume that only one replica may open. Set replicaCount=1 or use journal.type=postgres with journal.postgres.existingSecret." $replicas) }}
{{- end }}
{{- if and (gt $replicas 1) (ne (include "cellplane.leaderElection" .) "true") }}
{{- fail (printf "replicaCount=%d needs leader election (leaderElection.enabled=auto or true), otherwise every replica runs the controllers." $replicas) }}
{{- end }}
{{- if eq .Values.journal.type "postgres" }}
{{- if not .Values.journal.postgres.existingSecret }}
{{- fail "journal.type=postgres needs journal.postgres.existingSecret: the name of a Secret in the release namespace whose key journal.postgres.key holds the postgres:// URL." }}
{{- end }}
{{- end }}
{{- if .Values.podDisruptionBudget.enabled }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set either minAvailable or maxUnavailable, not both (set the other to null)." }}
{{- end }}
{{- if and (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "string" $pdb.minAvailable)) }}
{{- if ge (int $pdb.minAvailable) $replicas }}
{{- fail (printf "podDisruptionBudget.minAvailable=%d with replicaCount=%d would block every voluntary eviction, so nodes could never be drained. Lower minAvailable or use maxUnavailable." (int $pdb.minAvailable) $replicas) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels and annotations of the CRDs. scripts/sync-chart-crds.sh inserts this include into
each copy of crds/*.yaml under templates/crds/.
*/}}
{{- define "cellplane.crdMetadata" -}}
labels:
  {{- include "cellplane.labels" . | nindent 2 }}
{{- $annotations := dict }}
{{- if .Values.crds.keep }}
{{- $_ := set $annotations "helm.sh/resource-policy" "keep" }}
{{- end }}
{{- with .Values.crds.annotations }}
{{- $annotations = merge $annotations . }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
