{{/*
The pod template both workloads share (StatefulSet with a claim per replica, or Deployment with an
emptyDir or an existing claim). The file store is the volume "etl-store" at /var/configs/db:
ETL_DIR=/var/configs/db/etl, and a standalone replica without a bucket secret backs up to the
folder /var/configs/db/bucket on the same volume.
*/}}
{{- define "cost-model.podTemplate" -}}
{{- $lf := include "cost-model.leaderFollower" . }}
{{- $replicas := int (include "cost-model.replicas" .) }}
{{- $m := .Values.kubecostModel }}
{{- $secret := $m.etlBucketConfigSecret }}
{{- $prom := include "cost-model.prometheusEndpoint" . }}
{{- $clusterId := ((((.Values.prometheus).server).global).external_labels).cluster_id }}
metadata:
  labels:
    {{- include "cost-model.selectorLabels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "cost-model.serviceAccountName" . }}
  # Only a replica that campaigns for the Lease talks to the Kubernetes API.
  automountServiceAccountToken: {{ if $lf }}true{{ else }}false{{ end }}
  # Longer than SHUTDOWN_TIMEOUT: the ordered shutdown (the leader's last write, the Lease's
  # release) must finish before the kubelet's SIGKILL.
  terminationGracePeriodSeconds: {{ int .Values.terminationGracePeriodSeconds }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with (.Values.global).securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: cost-model
      image: {{ include "cost-model.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      ports:
        - name: tcp-model
          containerPort: 9003
          protocol: TCP
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: KUBECOST_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        {{- if $lf }}
        - name: LEADER_FOLLOWER_ENABLED
          value: "true"
        - name: LEASE_NAME
          value: {{ include "cost-model.leaseName" . | quote }}
        {{- with .Values.leaderElection.leaseDuration }}
        - name: LEASE_DURATION
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.leaderElection.renewDeadline }}
        - name: RENEW_DEADLINE
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.leaderElection.retryPeriod }}
        - name: RETRY_PERIOD
          value: {{ . | quote }}
        {{- end }}
        {{- end }}
        - name: ETL_DIR
          value: /var/configs/db/etl
        {{- if $secret }}
        - name: ETL_BUCKET_CONFIG
          value: /var/configs/etl/object-store.yaml
        {{- else }}
        - name: ETL_BUCKET_DIR
          value: /var/configs/db/bucket
        {{- end }}
        - name: ETL_DAILY_STORE_DURATION_DAYS
          value: {{ int $m.etlDailyStoreDurationDays | quote }}
        - name: ETL_HOURLY_STORE_DURATION_HOURS
          value: {{ int $m.etlHourlyStoreDurationHours | quote }}
        {{- if not (kindIs "invalid" $m.etlResolutionSeconds) }}
        - name: ETL_RESOLUTION_SECONDS
          value: {{ int $m.etlResolutionSeconds | quote }}
        {{- end }}
        - name: SHUTDOWN_TIMEOUT
          value: {{ printf "%ds" (int .Values.shutdownTimeoutSeconds) | quote }}
        {{- with $prom }}
        - name: PROMETHEUS_SERVER_ENDPOINT
          value: {{ . | quote }}
        {{- end }}
        {{- with ((.Values.global).prometheus).queryServiceBasicAuthSecretName }}
        - name: DB_BASIC_AUTH_USERNAME
          valueFrom:
            secretKeyRef:
              name: {{ . | quote }}
              key: USERNAME
        - name: DB_BASIC_AUTH_PW
          valueFrom:
            secretKeyRef:
              name: {{ . | quote }}
              key: PASSWORD
        {{- end }}
        {{- with ((.Values.global).prometheus).queryServiceBearerTokenSecretName }}
        - name: DB_BEARER_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ . | quote }}
              key: TOKEN
        {{- end }}
        {{- with $clusterId }}
        - name: CLUSTER_ID
          value: {{ . | quote }}
        {{- end }}
        {{- with $m.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $m.readinessProbe }}
      {{- if include "cost-model.true" .enabled }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: tcp-model
        initialDelaySeconds: {{ int .initialDelaySeconds }}
        periodSeconds: {{ int (.periodSeconds | default 5) }}
        timeoutSeconds: {{ int (.timeoutSeconds | default 3) }}
        failureThreshold: {{ int (.failureThreshold | default 3) }}
      {{- end }}
      {{- end }}
      {{- with $m.livenessProbe }}
      {{- if include "cost-model.true" .enabled }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: tcp-model
        initialDelaySeconds: {{ int .initialDelaySeconds }}
        periodSeconds: {{ int (.periodSeconds | default 10) }}
        timeoutSeconds: {{ int (.timeoutSeconds | default 5) }}
        failureThreshold: {{ int (.failureThreshold | default 3) }}
      {{- end }}
      {{- end }}
      {{- with $m.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (default (.Values.global).containerSecurityContext $m.securityContext) }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: etl-store
          mountPath: /var/configs/db
        {{- if $secret }}
        - name: etl-bucket-config
          mountPath: /var/configs/etl
          readOnly: true
        {{- end }}
  {{- if or $secret (not (include "cost-model.statefulSet" .)) }}
  volumes:
    {{- if $secret }}
    # Kubecost's bucket secret; only its key object-store.yaml is mounted, so a secret without
    # it fails the pod with an event that names the key.
    - name: etl-bucket-config
      secret:
        secretName: {{ $secret }}
        items:
          - key: object-store.yaml
            path: object-store.yaml
    {{- end }}
    {{- if not (include "cost-model.statefulSet" .) }}
    {{- if and .Values.persistentVolume.existingClaim (include "cost-model.true" $m.etlFileStoreEnabled) (include "cost-model.true" .Values.persistentVolume.enabled) }}
    - name: etl-store
      persistentVolumeClaim:
        claimName: {{ .Values.persistentVolume.existingClaim }}
    {{- else }}
    # Each pod's own store, filled again from the bucket when the replica starts.
    - name: etl-store
      {{- with .Values.emptyDir.sizeLimit }}
      emptyDir:
        sizeLimit: {{ . }}
      {{- else }}
      emptyDir: {}
      {{- end }}
    {{- end }}
    {{- end }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $affinity := deepCopy (.Values.affinity | default dict) }}
  {{- if and (gt $replicas 1) (ne (toString .Values.podAntiAffinity) "none") (not (hasKey $affinity "podAntiAffinity")) }}
  {{- $term := dict "labelSelector" (dict "matchLabels" (include "cost-model.selectorLabels" . | fromYaml)) "topologyKey" .Values.podAntiAffinityTopologyKey }}
  {{- if eq (toString .Values.podAntiAffinity) "hard" }}
  {{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
  {{- else }}
  {{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
  {{- end }}
  {{- end }}
  {{- with $affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
