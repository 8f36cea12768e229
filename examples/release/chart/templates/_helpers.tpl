{{- define "cell-service.selector" -}}
app.kubernetes.io/name: cell-service
app.kubernetes.io/component: frontend
{{- end }}

{{- define "cell-service.cell" -}}
{{ required "cellplane.cell is set by cellplane for each cell" .Values.cellplane.cell }}
{{- end }}
