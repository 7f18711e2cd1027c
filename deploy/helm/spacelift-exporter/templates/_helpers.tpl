{{/* Names and labels, as every prometheus-community chart defines them. */}}
{{- define "spacelift-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spacelift-exporter.fullname" -}}
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

{{- define "spacelift-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spacelift-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spacelift-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "spacelift-exporter.labels" -}}
helm.sh/chart: {{ include "spacelift-exporter.chart" . }}
{{ include "spacelift-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spacelift-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "spacelift-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spacelift-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with the Spacelift credentials: the user's, or the chart's when it has a key. */}}
{{- define "spacelift-exporter.credentialsSecret" -}}
{{- if .Values.spacelift.existingSecret }}
{{- .Values.spacelift.existingSecret }}
{{- else if .Values.spacelift.apiKeyId }}
{{- include "spacelift-exporter.fullname" . }}
{{- end }}
{{- end }}

{{/* The Secret with web-config.yml, if any. */}}
{{- define "spacelift-exporter.webConfigSecret" -}}
{{- if .Values.webConfig.existingSecret }}
{{- .Values.webConfig.existingSecret }}
{{- else if .Values.webConfig.config }}
{{- printf "%s-web-config" (include "spacelift-exporter.fullname" .) }}
{{- end }}
{{- end }}

{{/* http or https: what the probes and the ServiceMonitor use. */}}
{{- define "spacelift-exporter.scheme" -}}
{{- if .Values.webConfig.scheme }}
{{- .Values.webConfig.scheme }}
{{- else if or .Values.webConfig.tlsSecret (hasKey .Values.webConfig.config "tls_server_config") }}
{{- "https" }}
{{- else }}
{{- "http" }}
{{- end }}
{{- end }}

{{/* Whether a ConfigMap (config file and/or CA) is mounted. */}}
{{- define "spacelift-exporter.hasConfigMap" -}}
{{- if or .Values.config .Values.spacelift.caCert }}true{{ end }}
{{- end }}
