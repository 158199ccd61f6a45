{{/*
What the replica cannot run, refused at install time with a message that names the value.
Included by the workload template, so `helm template`, `helm lint` and `helm install` all stop.
*/}}
{{- define "cost-model.validate" -}}
{{- $lf := include "cost-model.leaderFollower" . }}
{{- $replicas := int (include "cost-model.replicas" .) }}
{{- $m := .Values.kubecostModel }}

{{- if $lf }}
{{- if le $replicas 1 }}
{{- fail (printf "kubecostDeployment.leaderFollower.enabled=true needs kubecostDeployment.replicas > 1 (it is %d): one replica has nobody to fail over to. Set kubecostDeployment.replicas=3, or turn leader/follower off to run one standalone replica." $replicas) }}
{{- end }}
{{- if not $m.etlBucketConfigSecret }}
{{- fail "kubecostDeployment.leaderFollower.enabled=true needs kubecostModel.etlBucketConfigSecret: the name of an existing Secret with the key object-store.yaml (kubectl create secret generic NAME --from-file=object-store.yaml). The leader backs the ETL up there and followers serve from it." }}
{{- end }}
{{- if not (include "cost-model.true" $m.etlFileStoreEnabled) }}
{{- fail "kubecostDeployment.leaderFollower.enabled=true needs kubecostModel.etlFileStoreEnabled=true: every replica keeps its ETL in a file store of its own and restores it from the bucket." }}
{{- end }}
{{- if .Values.persistentVolume.existingClaim }}
{{- fail (printf "persistentVolume.existingClaim=%s cannot be used with kubecostDeployment.leaderFollower.enabled=true: every replica needs a volume of its own (replicas sharing one ReadWriteOnce claim fail with Multi-Attach errors). Unset it: the chart creates one claim per replica." .Values.persistentVolume.existingClaim) }}
{{- end }}
{{- else if gt $replicas 1 }}
{{- fail (printf "kubecostDeployment.replicas=%d needs kubecostDeployment.leaderFollower.enabled=true: standalone replicas would all write the ETL (and share a bucket). Set kubecostDeployment.leaderFollower.enabled=true with kubecostModel.etlBucketConfigSecret, or kubecostDeployment.replicas=1." $replicas) }}
{{- end }}
{{- if lt $replicas 0 }}
{{- fail (printf "kubecostDeployment.replicas=%d must not be negative." $replicas) }}
{{- end }}

{{- if not (include "cost-model.true" $m.etl) }}
{{- fail (printf "kubecostModel.etl=%v is not supported: this cost-model serves every query from its ETL; remove the value or set it to true." $m.etl) }}
{{- end }}

{{- $utc := toString (default "" $m.utcOffset) }}
{{- if not (has $utc (list "" "+00:00" "Z")) }}
{{- fail (printf "kubecostModel.utcOffset=%q is not supported: this cost-model builds its ETL in UTC only. Set it to \"+00:00\" (or \"Z\"), or remove it." $utc) }}
{{- end }}

{{- $days := int $m.etlDailyStoreDurationDays }}
{{- if or (lt $days 1) (gt $days 3660) }}
{{- fail (printf "kubecostModel.etlDailyStoreDurationDays=%v must be between 1 and 3660 (this cost-model cannot turn the daily ETL off)." $m.etlDailyStoreDurationDays) }}
{{- end }}
{{- $hours := int $m.etlHourlyStoreDurationHours }}
{{- if or (lt $hours 1) (gt $hours 8784) }}
{{- fail (printf "kubecostModel.etlHourlyStoreDurationHours=%v must be between 1 and 8784 (this cost-model cannot turn the hourly ETL off)." $m.etlHourlyStoreDurationHours) }}
{{- end }}

{{- $p := (.Values.global).prometheus | default dict }}
{{- if and (not (include "cost-model.true" $p.enabled)) (not $p.fqdn) }}
{{- fail "global.prometheus.enabled=false needs global.prometheus.fqdn: the URL of your Prometheus (as in Kubecost's chart)." }}
{{- end }}

{{- $shutdown := int .Values.shutdownTimeoutSeconds }}
{{- if lt $shutdown 1 }}
{{- fail (printf "shutdownTimeoutSeconds=%v must be at least 1." .Values.shutdownTimeoutSeconds) }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) $shutdown }}
{{- fail (printf "terminationGracePeriodSeconds=%v must be longer than shutdownTimeoutSeconds=%v: the kubelet would kill a leader in the middle of its hand-off." .Values.terminationGracePeriodSeconds .Values.shutdownTimeoutSeconds) }}
{{- end }}

{{- if not (has (toString .Values.podAntiAffinity) (list "soft" "hard" "none")) }}
{{- fail (printf "podAntiAffinity=%q must be soft, hard or none." (toString .Values.podAntiAffinity)) }}
{{- end }}
{{- end }}
