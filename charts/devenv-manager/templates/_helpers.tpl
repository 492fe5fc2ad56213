{{/*
The labels Helm conventionally adds to every object. The test that keeps the
chart equal to `kubectl kustomize deploy/` removes exactly these (and nothing
else) before comparing, so every other label is in both.
*/}}
{{- define "devenv-manager.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The manager's image: image.repository:image.tag (appVersion when empty), or @digest. */}}
{{- define "devenv-manager.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/*
The label matchers that pick the manager's series out of everything Prometheus
scrapes (monitoring.prometheusRule.selector): the metric names alone
(api_requests_total, ...) are not unique to this project.
*/}}
{{- define "devenv-manager.selector" -}}
{{ .Values.monitoring.prometheusRule.selector }}
{{- end }}
