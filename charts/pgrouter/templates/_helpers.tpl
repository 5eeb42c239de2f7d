{{/* Names and labels. */}}
{{- define "pgrouter.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pgrouter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pgrouter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgrouter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pgrouter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "pgrouter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pgrouter.secretName" -}}
{{- default (include "pgrouter.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "pgrouter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pgrouter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The environment variable holding a user's password. */}}
{{- define "pgrouter.passwordEnv" -}}
{{- printf "PGROUTER_PASSWORD_%s" (. | upper | replace "-" "_" | replace "." "_") -}}
{{- end -}}

{{/* pgrouter.yaml: the chart's keys over .Values.config. Passwords are ${ENV} references. */}}
{{- define "pgrouter.config" -}}
{{- $nodes := list -}}
{{- range .Values.nodes -}}
{{- $n := dict "name" .name "host" .host "port" (default 5432 .port) -}}
{{- if hasKey . "weight" }}{{ $_ := set $n "weight" .weight }}{{ end -}}
{{- if .patroniUrl }}{{ $_ := set $n "patroni_url" .patroniUrl }}{{ end -}}
{{- $nodes = append $nodes $n -}}
{{- end -}}
{{- $users := list -}}
{{- range .Values.users -}}
{{- $u := dict "name" .name "password" (printf "${%s}" (include "pgrouter.passwordEnv" .name)) "auth" (default "scram-sha-256" .auth) -}}
{{- if .poolMode }}{{ $_ := set $u "pool_mode" .poolMode }}{{ end -}}
{{- $users = append $users $u -}}
{{- end -}}
{{- $config := deepCopy (default dict .Values.config) -}}
{{- $topology := deepCopy (default dict $config.topology) -}}
{{- $_ := set $topology "discovery" .Values.discovery -}}
{{- $_ := set $config "topology" $topology -}}
{{- $_ := set $config "listen" (printf "0.0.0.0:%v" .Values.ports.postgres) -}}
{{- $_ := set $config "admin_listen" (printf "0.0.0.0:%v" .Values.ports.admin) -}}
{{- if .Values.endpoints.primary.enabled -}}
{{- $_ := set $config "primary_listen" (printf "0.0.0.0:%v" .Values.endpoints.primary.port) -}}
{{- end -}}
{{- if .Values.endpoints.readOnly.enabled -}}
{{- $_ := set $config "read_only_listen" (printf "0.0.0.0:%v" .Values.endpoints.readOnly.port) -}}
{{- end -}}
{{- if .Values.cancelForwarding.enabled -}}
{{- $_ := set $config "peers_dns" (printf "%s-peers.%s.svc:%v" (include "pgrouter.fullname" .) .Release.Namespace .Values.ports.postgres) -}}
{{- end -}}
{{- $_ := set $config "nodes" $nodes -}}
{{- $_ := set $config "users" $users -}}
{{- $_ := set $config "admin" (dict "users" .Values.adminUsers) -}}
{{- if .Values.access }}{{ $_ := set $config "access" .Values.access }}{{ end -}}
{{- if .Values.tls.secretName -}}
{{- $_ := set $config "tls" (dict "mode" (default "prefer" .Values.tls.mode) "cert_file" "/etc/pgrouter-tls/tls.crt" "key_file" "/etc/pgrouter-tls/tls.key" "min_version" (default "1.2" .Values.tls.minVersion | toString)) -}}
{{- end -}}
{{- $serverTls := dict "mode" (default "prefer" .Values.serverTls.mode) -}}
{{- if .Values.serverTls.caSecretName }}{{ $_ := set $serverTls "ca_file" "/etc/pgrouter-server-ca/ca.crt" }}{{ end -}}
{{- if .Values.serverTls.certSecretName -}}
{{- $_ := set $serverTls "cert_file" "/etc/pgrouter-server-cert/tls.crt" -}}
{{- $_ := set $serverTls "key_file" "/etc/pgrouter-server-cert/tls.key" -}}
{{- end -}}
{{- $_ := set $config "server_tls" (merge $serverTls (default (dict) $config.server_tls)) -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
config.shutdown_timeout in whole seconds, rounded up: every form pgrouter's configuration takes
("30s", "1m30s", "1500ms", "2min", "1h2m3s"; units us, ms, s, m or min, h; default 30s). Anything
else fails the render rather than giving pods a grace period shorter than their drain.
*/}}
{{- define "pgrouter.shutdownSeconds" -}}
{{- $t := trim (toString (default "30s" .Values.config.shutdown_timeout)) -}}
{{- if not (regexMatch "^([0-9]+(us|ms|s|min|m|h))+$" $t) -}}
{{- fail (printf "config.shutdown_timeout %q is not a duration: use a number with a unit (us, ms, s, m, min, h), e.g. 30s, 1m30s, 1500ms" $t) -}}
{{- end -}}
{{- $factors := dict "us" 1 "ms" 1000 "s" 1000000 "min" 60000000 "m" 60000000 "h" 3600000000 -}}
{{- $micros := 0 -}}
{{- range $part := regexFindAll "[0-9]+(us|ms|s|min|m|h)" $t -1 -}}
{{- $number := regexFind "^[0-9]+" $part -}}
{{- $unit := trimPrefix $number $part -}}
{{- $micros = add $micros (mul (atoi $number) (get $factors $unit)) -}}
{{- end -}}
{{- div (add $micros 999999) 1000000 -}}
{{- end -}}

{{/*
Fails the render when every pod at once could hold more server connections per node than
serverConnectionBudget: config.pool.max_server_connections (pgrouter's default 40) times the
most pods (autoscaling.maxReplicas or replicaCount, plus the rolling update's surge of one).
*/}}
{{- define "pgrouter.checkServerBudget" -}}
{{- $budget := int (default 0 .Values.serverConnectionBudget) -}}
{{- if gt $budget 0 -}}
{{- $pool := default (dict) .Values.config.pool -}}
{{- $perPod := int (default 40 $pool.max_server_connections) -}}
{{- $pods := int .Values.replicaCount -}}
{{- if .Values.autoscaling.enabled -}}{{- $pods = int .Values.autoscaling.maxReplicas -}}{{- end -}}
{{- $pods = add $pods 1 -}}
{{- $total := mul $perPod $pods -}}
{{- if gt (int $total) $budget -}}
{{- fail (printf "server connections: config.pool.max_server_connections %d per pod x %d pods at most (%s, plus one during a rolling update) = %d per PostgreSQL node, over serverConnectionBudget %d. Lower max_server_connections or the pod count, or raise serverConnectionBudget along with the servers' max_connections." $perPod $pods (ternary "autoscaling.maxReplicas" "replicaCount" .Values.autoscaling.enabled) (int $total) $budget) -}}
{{- end -}}
{{- end -}}
{{- end -}}
