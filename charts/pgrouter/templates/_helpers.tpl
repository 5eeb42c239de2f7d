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

{{/* config.shutdown_timeout in whole seconds ("30s", "2m", "1500ms"; default 30). */}}
{{- define "pgrouter.shutdownSeconds" -}}
{{- $t := toString (default "30s" .Values.config.shutdown_timeout) -}}
{{- if hasSuffix "ms" $t -}}{{ add1 (div (trimSuffix "ms" $t | atoi) 1000) }}
{{- else if hasSuffix "s" $t -}}{{ trimSuffix "s" $t | atoi }}
{{- else if hasSuffix "m" $t -}}{{ mul (trimSuffix "m" $t | atoi) 60 }}
{{- else if hasSuffix "h" $t -}}{{ mul (trimSuffix "h" $t | atoi) 3600 }}
{{- else -}}30{{- end -}}
{{- end -}}
