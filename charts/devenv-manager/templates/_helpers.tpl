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

{{/*
"true" when the manager serves a certificate from mounted files (Secret
devenv-manager-tls, CERTS_MODE=files) rather than its self-managed ones:
cert-manager's, or the user's own whose CA is webhook.caBundle. Both at once
would have two writers of the webhooks' caBundle: refused.
*/}}
{{- define "devenv-manager.certFiles" -}}
{{- if and .Values.certManager.enabled .Values.webhook.caBundle -}}
{{- fail "webhook.caBundle and certManager.enabled=true exclude each other: cert-manager's CA injector writes the webhooks' caBundle; set only one" -}}
{{- end -}}
{{- if or .Values.certManager.enabled .Values.webhook.caBundle -}}
true
{{- end -}}
{{- end }}

{{/*
The pod and container security contexts of every pod the chart runs (the
manager, the test Pod, the uninstall Job): restricted Pod Security, as
devenv-system enforces.
*/}}
{{- define "devenv-manager.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  # Group of mounted files (Secret devenv-manager-tls, 0440).
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "devenv-manager.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end }}
