{{/* Names and labels shared by every object of the chart. */}}
{{- define "ecg-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecg-worker.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ecg-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecg-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecg-worker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ecg-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end -}}

{{/*
The worker's config file (deploy/worker.yaml format): values.config plus what the chart owns
(brokers, group, topics, artifact, metrics endpoint), so that the worker, its Service and the
KEDA trigger agree. Credentials are never written here (environment, from a Secret).
*/}}
{{- define "ecg-worker.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $kafka := default dict $config.kafka -}}
{{- $_ := set $kafka "bootstrap_servers" .Values.kafka.bootstrapServers -}}
{{- $_ := set $kafka "group_id" .Values.kafka.groupId -}}
{{- $client := default dict $kafka.client -}}
{{- if .Values.kafka.sasl.enabled -}}
{{- $_ := set $client "security_protocol" .Values.kafka.sasl.securityProtocol -}}
{{- $_ := set $client "sasl_mechanism" .Values.kafka.sasl.mechanism -}}
{{- end -}}
{{- if .Values.kafka.tls.caSecret -}}
{{- $_ := set $client "ssl_cafile" (printf "/etc/ecg-kafka-ca/%s" .Values.kafka.tls.caKey) -}}
{{- end -}}
{{- $_ := set $kafka "client" $client -}}
{{- $_ := set $config "kafka" $kafka -}}
{{- $topics := default dict $config.topics -}}
{{- $_ := set $topics "input" .Values.kafka.topics.input -}}
{{- $_ := set $topics "scores" .Values.kafka.topics.scores -}}
{{- $_ := set $topics "anomalies" .Values.kafka.topics.anomalies -}}
{{- $_ := set $topics "dead_letter" .Values.kafka.topics.deadLetter -}}
{{- $_ := set $config "topics" $topics -}}
{{- $_ := set $config "artifact" (printf "%s/%s" .Values.model.mountPath .Values.model.path) -}}
{{- $metrics := default dict $config.metrics -}}
{{- $_ := set $metrics "host" "0.0.0.0" -}}
{{- $_ := set $metrics "port" (int .Values.metricsPort) -}}
{{- $_ := set $config "metrics" $metrics -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Fails the render when autoscaling could start workers that get no partition. */}}
{{- define "ecg-worker.checkReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- if gt (int .Values.autoscaling.maxReplicas) (int .Values.kafka.inputPartitions) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds kafka.inputPartitions (%d): a worker beyond the partition count gets no partition and stays idle; raise the topic's partitions first" (int .Values.autoscaling.maxReplicas) (int .Values.kafka.inputPartitions)) -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- else if gt (int .Values.replicaCount) (int .Values.kafka.inputPartitions) -}}
{{- fail (printf "replicaCount (%d) exceeds kafka.inputPartitions (%d): extra workers get no partition" (int .Values.replicaCount) (int .Values.kafka.inputPartitions)) -}}
{{- end -}}
{{- if and .Values.kafka.sasl.enabled (not .Values.kafka.sasl.existingSecret) -}}
{{- fail "kafka.sasl.enabled needs kafka.sasl.existingSecret (a Secret with the username and password keys)" -}}
{{- end -}}
{{- end -}}
