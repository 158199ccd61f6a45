{{/* Names, labels and the settings every template derives from the values. */}}

{{- define "cost-model.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-cost-model, or the release name when it already contains the chart name. */}}
{{- define "cost-model.fullname" -}}
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

{{- define "cost-model.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cost-model.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cost-model.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cost-model.labels" -}}
helm.sh/chart: {{ include "cost-model.chart" . }}
{{ include "cost-model.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cost-model.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cost-model.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A boolean value read strictly: only true (or the string "true") is true, so a --set-string
     "false" is not taken for true as a non-empty string would be. */}}
{{- define "cost-model.true" -}}
{{- if eq (toString .) "true" }}true{{- end }}
{{- end }}

{{/* "true" when the replicas elect a leader (kubecostDeployment.leaderFollower.enabled). */}}
{{- define "cost-model.leaderFollower" -}}
{{- include "cost-model.true" ((.Values.kubecostDeployment).leaderFollower).enabled }}
{{- end }}

{{- define "cost-model.replicas" -}}
{{- $r := (.Values.kubecostDeployment).replicas }}
{{- if kindIs "invalid" $r }}1{{ else }}{{ int $r }}{{ end }}
{{- end }}

{{/* "true" when each replica's file store is a PersistentVolumeClaim of a StatefulSet. */}}
{{- define "cost-model.statefulSet" -}}
{{- if and (include "cost-model.true" .Values.kubecostModel.etlFileStoreEnabled) (include "cost-model.true" .Values.persistentVolume.enabled) (not .Values.persistentVolume.existingClaim) }}true{{- end }}
{{- end }}

{{- define "cost-model.leaseName" -}}
{{- default (printf "%s-leader" (include "cost-model.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "cost-model.image" -}}
{{- $tag := default .Chart.AppVersion (toString .Values.image.tag) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Prometheus endpoint Kubecost's chart would pass: global.prometheus.fqdn when Kubecost's
     bundled Prometheus is off, or when fqdn is set; empty otherwise. */}}
{{- define "cost-model.prometheusEndpoint" -}}
{{- $p := (.Values.global).prometheus | default dict }}
{{- if or (not (include "cost-model.true" $p.enabled)) $p.fqdn }}
{{- $p.fqdn }}
{{- end }}
{{- end }}
