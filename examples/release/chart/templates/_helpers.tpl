{{- define "cell-service.selector" -}}
app.kubernetes.io/name: cell-service
app.kubernetes.io/component: frontend
{{- end }}

{{- define "cell-service.cell" -}}
{{ required "cellplane.cell is set by cellplane for each cell" .Values.cellplane.cell }}
{{- end }}

{{- /* The version the cell runs (the release's), else the chart's. */}}
{{- define "cell-service.version" -}}
{{ .Values.cellplane.version | default .Chart.AppVersion }}
{{- end }}
