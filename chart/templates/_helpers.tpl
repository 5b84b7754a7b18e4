{{/*
The application name: the chart name unless nameOverride is set.
*/}}
{{- define "bgslot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The base object name: fullnameOverride, else the release name, so that `helm install web` gives the
Services `web` and `web-stage`.
*/}}
{{- define "bgslot.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
"<fullname>-<suffix>", with the base shortened so the whole name stays a valid 63-character DNS label
and never collides with the unsuffixed name. Call with (dict "root" $ "suffix" "stage").
*/}}
{{- define "bgslot.suffixedName" -}}
{{- $max := sub 62 (len .suffix) | int }}
{{- printf "%s-%s" (include "bgslot.fullname" .root | trunc $max | trimSuffix "-") .suffix }}
{{- end }}

{{- define "bgslot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels, on every object.
*/}}
{{- define "bgslot.labels" -}}
helm.sh/chart: {{ include "bgslot.chart" . }}
{{ include "bgslot.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels shared by the pods of both slots; a Service adds bgslot/slot to pick one slot.
*/}}
{{- define "bgslot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bgslot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The immutable selector of one slot's Deployment (and its pod template labels).
Call with (dict "root" $ "slot" "blue").
*/}}
{{- define "bgslot.slotSelectorLabels" -}}
{{ include "bgslot.selectorLabels" .root }}
bgslot/slot: {{ .slot }}
{{- end }}

{{/*
The slot that is not productionSlot.
*/}}
{{- define "bgslot.stageSlot" -}}
{{- if eq .Values.productionSlot "blue" }}green{{ else }}blue{{ end }}
{{- end }}

{{- define "bgslot.slotName" -}}
{{- include "bgslot.suffixedName" (dict "root" .root "suffix" .slot) }}
{{- end }}

{{- define "bgslot.productionServiceName" -}}
{{- include "bgslot.fullname" . }}
{{- end }}

{{- define "bgslot.stageServiceName" -}}
{{- include "bgslot.suffixedName" (dict "root" . "suffix" "stage") }}
{{- end }}

{{- define "bgslot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bgslot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The effective image of one slot: the slot's repository/tag, each falling back to image.*, the tag
finally to the chart's appVersion. A "sha256:" tag is a digest. Call with (dict "root" $ "slot" "blue").
*/}}
{{- define "bgslot.slotTag" -}}
{{- $v := .root.Values }}
{{- $slotImage := (index $v .slot).image | default dict }}
{{- toString ($slotImage.tag | default $v.image.tag | default .root.Chart.AppVersion) }}
{{- end }}

{{- define "bgslot.slotImage" -}}
{{- $v := .root.Values }}
{{- $slotImage := (index $v .slot).image | default dict }}
{{- $repository := $slotImage.repository | default $v.image.repository }}
{{- $tag := include "bgslot.slotTag" . }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" $repository $tag }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{- define "bgslot.slotImagePullPolicy" -}}
{{- $slotImage := (index .root.Values .slot).image | default dict }}
{{- $slotImage.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{/*
The effective replica count of one slot. A null slot value falls back to replicaCount; 0 is a value,
so this tests for nil rather than using `default`. Call with (dict "root" $ "slot" "blue").
*/}}
{{- define "bgslot.slotReplicas" -}}
{{- $slotReplicas := (index .root.Values .slot).replicaCount }}
{{- if kindIs "invalid" $slotReplicas }}
{{- .root.Values.replicaCount | int }}
{{- else }}
{{- $slotReplicas | int }}
{{- end }}
{{- end }}

{{/*
"true" when the slot gets an HPA: autoscaling is on and the slot is not deliberately scaled to zero.
*/}}
{{- define "bgslot.slotAutoscaled" -}}
{{- if and .root.Values.autoscaling.enabled (ne (include "bgslot.slotReplicas" .) "0") }}true{{ end }}
{{- end }}

{{- define "bgslot.replicasNote" -}}
{{- if include "bgslot.slotAutoscaled" . }}
{{- printf "autoscaled %d-%d replicas" (.root.Values.autoscaling.minReplicas | int) (.root.Values.autoscaling.maxReplicas | int) }}
{{- else }}
{{- printf "%s replica(s)" (include "bgslot.slotReplicas" .) }}
{{- end }}
{{- end }}

{{/*
The slot's container env: the shared env with the slot's env merged over it (slot wins), as a YAML
list sorted by name. A map value is used as the entry's body (e.g. valueFrom).
*/}}
{{- define "bgslot.slotEnv" -}}
{{- $slotEnv := (index .root.Values .slot).env | default dict }}
{{- $env := merge (dict) (deepCopy $slotEnv) (deepCopy (.root.Values.env | default dict)) }}
{{- range $name := keys $env | sortAlpha }}
{{- $value := index $env $name }}
- name: {{ $name | quote }}
{{- if kindIs "map" $value }}
  {{- toYaml $value | nindent 2 }}
{{- else }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
API versions by the cluster's version rather than .Capabilities.APIVersions, which `helm template
--kube-version` does not change.
*/}}
{{- define "bgslot.hpa.apiVersion" -}}
{{- if semverCompare ">=1.23-0" .Capabilities.KubeVersion.Version }}autoscaling/v2{{ else }}autoscaling/v2beta2{{ end }}
{{- end }}

{{- define "bgslot.pdb.apiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version }}policy/v1{{ else }}policy/v1beta1{{ end }}
{{- end }}

{{- define "bgslot.ingress.apiVersion" -}}
networking.k8s.io/v1
{{- end }}

{{/*
Guards the schema cannot express (and a second line of defence when schema validation is skipped).
Each failure is one line naming the value and what is allowed.
*/}}
{{- define "bgslot.validate" -}}
{{- $prod := .Values.productionSlot }}
{{- if not (has $prod (list "blue" "green")) }}
{{- fail (printf "productionSlot is %q: it must be blue or green" (toString $prod)) }}
{{- end }}
{{- if not (index .Values $prod).enabled }}
{{- $other := include "bgslot.stageSlot" . }}
{{- fail (printf "productionSlot is %s but %s.enabled is false: production would route to no pods; enable %s or set productionSlot=%s" $prod $prod $prod $other) }}
{{- end }}
{{- if and .Values.gatewayAPI.enabled (not .Values.gatewayAPI.parentRefs) }}
{{- fail "gatewayAPI.enabled is true but gatewayAPI.parentRefs is empty: the HTTPRoute would attach to no Gateway; set at least one parentRef" }}
{{- end }}
{{- if and .Values.gatewayAPI.enabled (not (.Values.gatewayAPI.stageHeader | default dict).name) (not .Values.gatewayAPI.stageCookie) }}
{{- fail "gatewayAPI.enabled is true but neither gatewayAPI.stageHeader.name nor gatewayAPI.stageCookie is set: nothing would select the stage slot; set one of them" }}
{{- end }}
{{- if and .Values.istio.enabled (not .Values.istio.gateway.create) (not .Values.istio.gateway.name) }}
{{- fail "istio.gateway.create is false but istio.gateway.name is empty: the VirtualService would bind to no Gateway; set istio.gateway.name or istio.gateway.create=true" }}
{{- end }}
{{- end }}
