{{/* Names, labels and small pieces shared by the templates. */}}

{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>", or just the release name when it already contains the chart name. */}}
{{- define "tollgate.fullname" -}}
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

{{- define "tollgate.controller.fullname" -}}
{{- printf "%s-controller" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.proxy.fullname" -}}
{{- printf "%s-proxy" (include "tollgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.controller.serviceAccountName" -}}
{{- default (include "tollgate.controller.fullname" .) .Values.controller.serviceAccount.name -}}
{{- end -}}

{{- define "tollgate.proxy.serviceAccountName" -}}
{{- default (include "tollgate.proxy.fullname" .) .Values.proxy.serviceAccount.name -}}
{{- end -}}

{{- define "tollgate.leaseName" -}}
{{- default (include "tollgate.controller.fullname" .) .Values.controller.leaderElection.leaseName -}}
{{- end -}}

{{- define "tollgate.tlsSecretName" -}}
{{- default (printf "%s-controller-tls" (include "tollgate.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "tollgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects; same arguments as tollgate.selectorLabels. */}}
{{- define "tollgate.componentLabels" -}}
{{ include "tollgate.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* "repository:tag" or "repository@digest"; call with (dict "ctx" $ "image" .Values.controller.image). */}}
{{- define "tollgate.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* DNS names the controller's serving certificate must carry: its Service, in every usual form. */}}
{{- define "tollgate.controller.dnsNames" -}}
{{- $svc := include "tollgate.controller.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) -}}
{{- concat $names .Values.tls.extraDnsNames | uniq | toJson -}}
{{- end -}}

{{/* The URL proxies use to reach the controller. */}}
{{- define "tollgate.controller.url" -}}
{{- printf "https://%s.%s.svc:%d" (include "tollgate.controller.fullname" .) .Release.Namespace (int .Values.controller.snapshotPort) -}}
{{- end -}}

{{/* "<namespace>:<name>" of the proxies' ServiceAccount, the only identity the controller streams to. */}}
{{- define "tollgate.proxy.identity" -}}
{{- printf "%s:%s" .Release.Namespace (include "tollgate.proxy.serviceAccountName" .) -}}
{{- end -}}

{{/*
The chart-generated CA and certificate as JSON {ca, crt, key (base64), names}. Generated once per render
(the result is remembered in .Values, so the Secret and the pods' checksum see the same material) and
taken from the existing Secret when it was issued for the same DNS names.
*/}}
{{- define "tollgate.tls.chartMaterial" -}}
{{- if not (hasKey .Values.tls.chart "generated") -}}
{{- $dnsNames := include "tollgate.controller.dnsNames" . | fromJsonArray -}}
{{- $names := join "," $dnsNames -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "tollgate.tlsSecretName" .) -}}
{{- $data := dig "data" (dict) $existing -}}
{{- $issuedFor := dig "metadata" "annotations" "tollgate.dev/certificate-names" "" $existing -}}
{{- $material := dict -}}
{{- if and (eq $issuedFor $names) (get $data "ca.crt") (get $data "tls.crt") (get $data "tls.key") -}}
{{- $material = dict "ca" (get $data "ca.crt") "crt" (get $data "tls.crt") "key" (get $data "tls.key") "names" $names -}}
{{- else -}}
{{- $days := int .Values.tls.chart.validityDays -}}
{{- $ca := genCA (printf "%s-ca" (include "tollgate.fullname" .)) $days -}}
{{- $cert := genSignedCert (first $dnsNames) nil $dnsNames $days $ca -}}
{{- $material = dict "ca" ($ca.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) "names" $names -}}
{{- end -}}
{{- $_ := set .Values.tls.chart "generated" $material -}}
{{- end -}}
{{- toJson .Values.tls.chart.generated -}}
{{- end -}}

{{/* A checksum of the TLS material, so pods restart when the chart issues a new certificate. */}}
{{- define "tollgate.tls.checksum" -}}
{{- if eq .Values.tls.source "chart" -}}
{{- include "tollgate.tls.chartMaterial" . | sha256sum -}}
{{- else -}}
{{- printf "%s/%s" .Values.tls.source (include "tollgate.tlsSecretName" .) | sha256sum -}}
{{- end -}}
{{- end -}}

{{/*
The OTLP variables both binaries read alike, from a component's `tracing` values (proxy.tracing or
controller.tracing; "path" names them in error messages). The container must define POD_NAME before
them. Renders nothing while the endpoint is empty.
*/}}
{{- define "tollgate.otlp.env" -}}
{{- $t := .tracing -}}
{{- if $t.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $t.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
{{- if $t.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | quote }}
{{- end }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)%s" (ternary (printf ",%s" $t.resourceAttributes) "" (ne $t.resourceAttributes "")) | quote }}
{{- if and $t.ca.configMap $t.ca.secret }}
{{- fail (printf "set one of %s.ca.configMap and %s.ca.secret, not both" .path .path) }}
{{- end }}
{{- if or $t.ca.configMap $t.ca.secret }}
- name: OTEL_EXPORTER_OTLP_CERTIFICATE
  value: /etc/tollgate/otlp-ca/ca.crt
{{- end }}
{{- if $t.headersSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ $t.headersSecret }}
      key: headers
{{- end }}
{{- end }}
{{- end -}}

{{/* The volume holding an https:// collector's CA, from a component's `tracing` values. */}}
{{- define "tollgate.otlp.caVolume" -}}
{{- $t := .tracing -}}
{{- if $t.endpoint }}
{{- if $t.ca.configMap }}
- name: otlp-ca
  configMap:
    name: {{ $t.ca.configMap }}
    items:
      - {key: ca.crt, path: ca.crt}
{{- else if $t.ca.secret }}
- name: otlp-ca
  secret:
    secretName: {{ $t.ca.secret }}
    items:
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- end }}
{{- end -}}

{{/* Where that CA is mounted. */}}
{{- define "tollgate.otlp.caMount" -}}
{{- $t := .tracing -}}
{{- if and $t.endpoint (or $t.ca.configMap $t.ca.secret) }}
- name: otlp-ca
  mountPath: /etc/tollgate/otlp-ca
  readOnly: true
{{- end }}
{{- end -}}
