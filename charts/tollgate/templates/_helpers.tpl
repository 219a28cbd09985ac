{{/* The prefix of every resource name: the release name, or fullnameOverride. */}}
{{- define "tollgate.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The app.kubernetes.io/name of every object and selector: "tollgate", or nameOverride. */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.controller" -}}
{{- include "tollgate.fullname" . }}-controller
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "tollgate.labels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The controller pods' selector. */}}
{{- define "tollgate.controllerSelector" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "tollgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The namespaces never injected: the cluster's own, this release's, and the user's. */}}
{{- define "tollgate.excludedNamespaces" -}}
{{- $namespaces := list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace -}}
{{- range .Values.injection.excludedNamespaces -}}
{{- $namespaces = append $namespaces . -}}
{{- end -}}
{{- $namespaces | uniq | toJson -}}
{{- end -}}

{{/* The Service names the controller's certificate must hold. */}}
{{- define "tollgate.tlsSans" -}}
{{- $svc := include "tollgate.controller" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) "localhost" "127.0.0.1" -}}
{{- range .Values.controller.extraTlsSans -}}
{{- $names = append $names . -}}
{{- end -}}
{{- $names | uniq | join "," -}}
{{- end -}}

{{/* The URL the API server calls for one webhook path ("/mutate" or "/mutate/namespace"). */}}
{{- define "tollgate.webhookClientConfig" -}}
{{- $root := index . 0 -}}
{{- $path := index . 1 -}}
{{- if $root.Values.webhook.url }}
url: {{ printf "%s%s" ($root.Values.webhook.url | trimSuffix "/" | trimSuffix "/mutate") $path | quote }}
{{- else }}
service:
  name: {{ include "tollgate.controller" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ $path }}
  port: 9443
{{- end }}
{{- end -}}

{{/* The Redis URL of the bundled Redis. */}}
{{- define "tollgate.bundledRedisUrl" -}}
{{- printf "redis://%s-redis.%s.svc:6379" (include "tollgate.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The bundled Redis's password: the one in its Secret when the release already has it
(helm upgrade keeps it), else a new random one. */}}
{{- define "tollgate.bundledRedisPassword" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-redis" (include "tollgate.fullname" .)) -}}
{{- if and $existing $existing.data (hasKey $existing.data "password") -}}
{{- index $existing.data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 40 -}}
{{- end -}}
{{- end -}}

{{/* The bundled Redis pods' selector. */}}
{{- define "tollgate.redisSelector" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* Who may scrape :9090 (the controller's and the sidecars'), as a JSON list of
NetworkPolicy peers: networkPolicy.metricsFrom, and the namespaces of
networkPolicy.metricsNamespaceSelector (Prometheus's). */}}
{{- define "tollgate.metricsFrom" -}}
{{- $peers := list -}}
{{- range .Values.networkPolicy.metricsFrom -}}
{{- $peers = append $peers . -}}
{{- end -}}
{{- with .Values.networkPolicy.metricsNamespaceSelector -}}
{{- $peers = append $peers (dict "namespaceSelector" .) -}}
{{- end -}}
{{- $peers | toJson -}}
{{- end -}}

{{/* networkPolicy.extraPorts as NetworkPolicy ingress rules (a JSON list), one per port:
{port, protocol (TCP), from (anyone)}. */}}
{{- define "tollgate.extraIngress" -}}
{{- $rules := list -}}
{{- range .Values.networkPolicy.extraPorts -}}
{{- $rule := dict "ports" (list (dict "port" .port "protocol" (default "TCP" .protocol))) -}}
{{- with .from -}}
{{- $_ := set $rule "from" . -}}
{{- end -}}
{{- $rules = append $rules $rule -}}
{{- end -}}
{{- $rules | toJson -}}
{{- end -}}
