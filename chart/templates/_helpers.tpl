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
and never collides with the unsuffixed name. Call with (dict "root" $ "suffix" "stage"); "max" sets a
lower limit (a CronJob's name: its Jobs add 11 characters to it).
*/}}
{{- define "bgslot.suffixedName" -}}
{{- $max := sub (sub (.max | default 63) 1) (len .suffix) | int }}
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
Labels of an object that belongs to one slot (Deployment, HPA, PDB, config objects, Job).
*/}}
{{- define "bgslot.slotLabels" -}}
{{ include "bgslot.labels" .root }}
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

{{/*
The Service of one extraServices entry and role. Call with (dict "root" $ "key" "admin" "role" "stage").
*/}}
{{- define "bgslot.extraServiceName" -}}
{{- $suffix := ternary .key (printf "%s-stage" .key) (eq .role "production") }}
{{- include "bgslot.suffixedName" (dict "root" .root "suffix" $suffix) }}
{{- end }}

{{- define "bgslot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bgslot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
A list-valued setting of one slot: the slot's value when it sets one (null means "inherit"; an empty
list is a value), else the shared one. Returns JSON. Call with (dict "root" $ "slot" "blue" "key" "args").
*/}}
{{- define "bgslot.slotList" -}}
{{- $block := index .root.Values .slot | default dict }}
{{- $own := index $block .key }}
{{- if kindIs "invalid" $own }}
{{- toJson (index .root.Values .key | default list) }}
{{- else }}
{{- toJson $own }}
{{- end }}
{{- end }}

{{/*
The repository, tag and digest of one slot, as JSON. The repository falls back to image.repository
on its own. Tag and digest travel together: a slot that sets either uses only its own (a new tag
must never run under the shared digest, which pins another build); a slot that sets neither uses
image.tag and image.digest, and without a digest the tag finally falls back to the appVersion.
A tag starting with "sha256:" is read as a digest (the chart's earlier convention).
*/}}
{{- define "bgslot.slotImageRef" -}}
{{- $v := .root.Values }}
{{- $shared := $v.image | default dict }}
{{- $own := (index $v .slot | default dict).image | default dict }}
{{- $repository := $own.repository | default $shared.repository | toString }}
{{- $tag := "" }}
{{- $digest := "" }}
{{- if or $own.tag $own.digest }}
{{- $tag = $own.tag | default "" | toString }}
{{- $digest = $own.digest | default "" | toString }}
{{- else }}
{{- $tag = $shared.tag | default "" | toString }}
{{- $digest = $shared.digest | default "" | toString }}
{{- end }}
{{- if and (hasPrefix "sha256:" $tag) (not $digest) }}
{{- $digest = $tag }}
{{- $tag = "" }}
{{- end }}
{{- if and (not $tag) (not $digest) }}
{{- $tag = toString .root.Chart.AppVersion }}
{{- end }}
{{- toJson (dict "repository" $repository "tag" $tag "digest" $digest) }}
{{- end }}

{{/*
The tag a slot runs (empty when it is pinned by digest alone), e.g. for `--expect-tag`.
*/}}
{{- define "bgslot.slotTag" -}}
{{- (include "bgslot.slotImageRef" . | fromJson).tag }}
{{- end }}

{{- define "bgslot.slotImage" -}}
{{- $ref := include "bgslot.slotImageRef" . | fromJson }}
{{- $image := $ref.repository }}
{{- with $ref.tag }}{{ $image = printf "%s:%s" $image . }}{{ end }}
{{- with $ref.digest }}{{ $image = printf "%s@%s" $image . }}{{ end }}
{{- $image }}
{{- end }}

{{- define "bgslot.slotImagePullPolicy" -}}
{{- $slotImage := (index .root.Values .slot | default dict).image | default dict }}
{{- $slotImage.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{/*
The effective replica count of one slot. A null slot value falls back to replicaCount; 0 is a value,
so this tests for nil rather than using `default`. Call with (dict "root" $ "slot" "blue").
*/}}
{{- define "bgslot.slotReplicas" -}}
{{- $slotReplicas := (index .root.Values .slot | default dict).replicaCount }}
{{- if kindIs "invalid" $slotReplicas }}
{{- .root.Values.replicaCount | int }}
{{- else }}
{{- $slotReplicas | int }}
{{- end }}
{{- end }}

{{/*
"true" when the slot gets an HPA: autoscaling is on, the slot is not deliberately scaled to zero,
and it is not staged small (a preview runs replicaCount pods until swap promotes it).
*/}}
{{- define "bgslot.slotAutoscaled" -}}
{{- if and .root.Values.autoscaling.enabled (ne (include "bgslot.slotReplicas" .) "0") (not (index .root.Values .slot | default dict).preview) }}true{{ end }}
{{- end }}

{{- define "bgslot.replicasNote" -}}
{{- if include "bgslot.slotAutoscaled" . }}
{{- printf "autoscaled %d-%d replicas" (.root.Values.autoscaling.minReplicas | int) (.root.Values.autoscaling.maxReplicas | int) }}
{{- else }}
{{- printf "%s replica(s)" (include "bgslot.slotReplicas" .) }}
{{- end }}
{{- end }}

{{/*
A scalar value as the text a user wrote: values files reach templates with every number as a
float64, which toString would print as "1e+07"; a whole number prints as one.
*/}}
{{- define "bgslot.string" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
One EnvVar from an `env` map entry: a map value is the entry's body (valueFrom), anything else its
value as a string.
*/}}
{{- define "bgslot.envEntry" -}}
{{- if kindIs "map" .value }}
{{- toJson (merge (dict "name" .name) (deepCopy .value)) }}
{{- else }}
{{- toJson (dict "name" .name "value" (include "bgslot.string" .value)) }}
{{- end }}
{{- end }}

{{/*
The slot's container env as a JSON list without duplicate names (server-side apply refuses a list
entry twice). Later definitions win: shared env, shared extraEnv, the slot's env, the slot's
extraEnv, then the EnvVar lists in "envLayers" when the caller gives some (a worker's own extraEnv,
shared then the slot's). Names only in `env` maps come first, sorted; names any extraEnv defines
follow in the order they were first listed, so `$(NAME)` references in extraEnv can rely on the order.
*/}}
{{- define "bgslot.slotEnv" -}}
{{- $v := .root.Values }}
{{- $block := index $v .slot | default dict }}
{{- $defs := dict }}
{{- $listed := list }}
{{- $layers := list (dict "map" $v.env "list" $v.extraEnv) (dict "map" $block.env "list" $block.extraEnv) }}
{{- range $extra := .envLayers | default list }}
{{- $layers = append $layers (dict "list" $extra) }}
{{- end }}
{{- range $layer := $layers }}
{{- range $name, $value := $layer.map | default dict }}
{{- $_ := set $defs $name (include "bgslot.envEntry" (dict "name" $name "value" $value) | fromJson) }}
{{- end }}
{{- range $entry := $layer.list | default list }}
{{- $_ := set $defs $entry.name (deepCopy $entry) }}
{{- if not (has $entry.name $listed) }}
{{- $listed = append $listed $entry.name }}
{{- end }}
{{- end }}
{{- end }}
{{- $out := list }}
{{- range $name := keys $defs | sortAlpha }}
{{- if not (has $name $listed) }}
{{- $out = append $out (index $defs $name) }}
{{- end }}
{{- end }}
{{- range $name := $listed }}
{{- $out = append $out (index $defs $name) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The slot's config maps (shared merged with the slot's own, the slot winning), as JSON:
{"env": {...}, "files": {...}, "secretEnv": {...}}, every value a string.
*/}}
{{- define "bgslot.slotConfig" -}}
{{- $v := .root.Values }}
{{- $block := index $v .slot | default dict }}
{{- $shared := $v.config | default dict }}
{{- $own := $block.config | default dict }}
{{- $out := dict }}
{{- range $part := list (list "env" ($shared.env | default dict) ($own.env | default dict)) (list "files" ($shared.files | default dict) ($own.files | default dict)) (list "secretEnv" ($v.secretEnv | default dict) ($block.secretEnv | default dict)) }}
{{- $merged := dict }}
{{- range $k, $val := index $part 1 }}{{ $_ := set $merged $k (include "bgslot.string" $val) }}{{ end }}
{{- range $k, $val := index $part 2 }}{{ $_ := set $merged $k (include "bgslot.string" $val) }}{{ end }}
{{- $_ := set $out (index $part 0) $merged }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{- define "bgslot.configEnvName" -}}
{{- include "bgslot.suffixedName" (dict "root" .root "suffix" (printf "%s-config-env" .slot)) }}
{{- end }}

{{- define "bgslot.configFilesName" -}}
{{- include "bgslot.suffixedName" (dict "root" .root "suffix" (printf "%s-config-files" .slot)) }}
{{- end }}

{{- define "bgslot.secretEnvName" -}}
{{- include "bgslot.suffixedName" (dict "root" .root "suffix" (printf "%s-secret-env" .slot)) }}
{{- end }}

{{/*
A digest of exactly this slot's own config objects, for its pod template: a change restarts this
slot and no other. Empty when the slot has none.
*/}}
{{- define "bgslot.slotConfigChecksum" -}}
{{- $config := include "bgslot.slotConfig" . | fromJson }}
{{- if or $config.env $config.files $config.secretEnv }}
{{- include "bgslot.slotConfig" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
The slot's envFrom as JSON: its own (or the shared) list, then its config objects, so the values
this release sets win over what a referenced object brings.
*/}}
{{- define "bgslot.slotEnvFrom" -}}
{{- $config := include "bgslot.slotConfig" . | fromJson }}
{{- $out := include "bgslot.slotList" (merge (dict "key" "envFrom") .) | fromJsonArray }}
{{- if $config.env }}
{{- $out = append $out (dict "configMapRef" (dict "name" (include "bgslot.configEnvName" .))) }}
{{- end }}
{{- if $config.secretEnv }}
{{- $out = append $out (dict "secretRef" (dict "name" (include "bgslot.secretEnvName" .))) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The pod's volumes and the main container's mounts, as JSON lists.
*/}}
{{- define "bgslot.slotVolumes" -}}
{{- $config := include "bgslot.slotConfig" . | fromJson }}
{{- $out := list }}
{{- if $config.files }}
{{- $out = append $out (dict "name" "config-files" "configMap" (dict "name" (include "bgslot.configFilesName" .))) }}
{{- end }}
{{- toJson (concat $out (.root.Values.extraVolumes | default list)) }}
{{- end }}

{{- define "bgslot.slotVolumeMounts" -}}
{{- $config := include "bgslot.slotConfig" . | fromJson }}
{{- $out := list }}
{{- if $config.files }}
{{- $out = append $out (dict "name" "config-files" "mountPath" .root.Values.config.mountPath "readOnly" true) }}
{{- end }}
{{- toJson (concat $out (.root.Values.extraVolumeMounts | default list)) }}
{{- end }}

{{/*
The slot's resources: the shared ones with the slot's merged over them.
*/}}
{{- define "bgslot.slotResources" -}}
{{- $block := index .root.Values .slot | default dict }}
{{- toJson (mergeOverwrite (deepCopy (.root.Values.resources | default dict)) (deepCopy ($block.resources | default dict))) }}
{{- end }}

{{/*
The pod annotations of one slot: shared, then the slot's own, then the config checksum.
*/}}
{{- define "bgslot.slotPodAnnotations" -}}
{{- $block := index .root.Values .slot | default dict }}
{{- $out := mergeOverwrite (deepCopy (.root.Values.podAnnotations | default dict)) (deepCopy ($block.podAnnotations | default dict)) }}
{{- with include "bgslot.slotConfigChecksum" . }}
{{- $_ := set $out "checksum/config" . }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Renders a value that may contain templates: a string is a template; anything else is rendered as
YAML through tpl. Call with (dict "value" .Values.x "context" $ctx).
*/}}
{{- define "bgslot.tplvalues.render" -}}
{{- if kindIs "string" .value }}
{{- tpl .value .context }}
{{- else }}
{{- tpl (.value | toYaml) .context }}
{{- end }}
{{- end }}

{{/*
A list of user containers (sidecars, initContainers) rendered through tpl, each port given protocol
TCP when it states none (Helm 4 applies server-side, and an older API server rejects a port list
entry without its key field "protocol"). Besides the chart's root (.Values, .Release, ...) the
templates see the slot being rendered: .Slot, .SlotImage (its image reference) and .SlotTag.
Returns JSON. Call with (dict "root" $ "slot" "blue" "list" .Values.sidecars).
*/}}
{{- define "bgslot.userContainers" -}}
{{- $out := list }}
{{- if .list }}
{{- $ctx := dict "root" .root "slot" .slot }}
{{- $context := merge (dict "Slot" .slot "SlotImage" (include "bgslot.slotImage" $ctx) "SlotTag" (include "bgslot.slotTag" $ctx)) .root }}
{{- range $c := include "bgslot.tplvalues.render" (dict "value" .list "context" $context) | fromYamlArray }}
{{- if $c.ports }}
{{- $ports := list }}
{{- range $p := $c.ports }}
{{- $ports = append $ports (merge (dict) $p (dict "protocol" "TCP")) }}
{{- end }}
{{- $_ := set $c "ports" $ports }}
{{- end }}
{{- $out = append $out $c }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The main container's ports, and the main Services' ports, as JSON lists.
*/}}
{{- define "bgslot.containerPorts" -}}
{{- $out := list (dict "name" "http" "containerPort" (.Values.containerPort | int) "protocol" "TCP") }}
{{- range $p := .Values.extraPorts | default list }}
{{- $out = append $out (dict "name" $p.name "containerPort" ($p.containerPort | int) "protocol" ($p.protocol | default "TCP")) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{- define "bgslot.servicePorts" -}}
{{- $out := list (dict "name" "http" "port" (.Values.service.port | int) "targetPort" "http" "protocol" "TCP") }}
{{- range $p := .Values.extraPorts | default list }}
{{- $out = append $out (dict "name" $p.name "port" ($p.servicePort | default $p.containerPort | int) "targetPort" $p.name "protocol" ($p.protocol | default "TCP")) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The main container's lifecycle: the user's, or a preStop pause so endpoints and load balancers stop
sending requests before SIGTERM. The native sleep action (Kubernetes >= 1.30) needs nothing in the
image, so distroless images drain too; older clusters get `exec sleep`.
*/}}
{{- define "bgslot.lifecycle" -}}
{{- if .Values.lifecycle }}
{{- toJson .Values.lifecycle }}
{{- else if gt (.Values.preStopSleepSeconds | int) 0 }}
{{- if semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version }}
{{- toJson (dict "preStop" (dict "sleep" (dict "seconds" (.Values.preStopSleepSeconds | int)))) }}
{{- else }}
{{- toJson (dict "preStop" (dict "exec" (dict "command" (list "sleep" (.Values.preStopSleepSeconds | int | toString))))) }}
{{- end }}
{{- else }}
{{- toJson dict }}
{{- end }}
{{- end }}

{{/*
The pod spec fields both a slot's Deployment and its migration Job share.
*/}}
{{- define "bgslot.podCommon" -}}
{{- $v := .root.Values }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "bgslot.serviceAccountName" .root }}
automountServiceAccountToken: {{ $v.serviceAccount.automount }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The main container's fields both a slot's Deployment and its migration Job share: image, env and
config, volumes, security context.
*/}}
{{- define "bgslot.containerCommon" -}}
{{- $v := .root.Values }}
image: {{ include "bgslot.slotImage" . | quote }}
imagePullPolicy: {{ include "bgslot.slotImagePullPolicy" . }}
{{- with $v.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "bgslot.slotEnv" . | fromJsonArray }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "bgslot.slotEnvFrom" . | fromJsonArray }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "bgslot.slotVolumeMounts" . | fromJsonArray }}
volumeMounts:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The migration Job's pod template of one slot. Its labels are not the slot's selector (no
app.kubernetes.io/name), so neither the slot's Services nor its Deployment or PDB select it.
*/}}
{{- define "bgslot.migrationPodTemplate" -}}
{{- $v := .root.Values }}
{{- $m := $v.migrations }}
{{- $annotations := deepCopy ($m.podAnnotations | default dict) }}
{{- with include "bgslot.slotConfigChecksum" . }}
{{- $_ := set $annotations "checksum/config" . }}
{{- end }}
metadata:
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  labels:
    app.kubernetes.io/instance: {{ .root.Release.Name }}
    app.kubernetes.io/component: migration
    bgslot/slot: {{ .slot }}
spec:
  restartPolicy: Never
  {{- include "bgslot.podCommon" . | trim | nindent 2 }}
  containers:
    - name: migrate
      {{- include "bgslot.containerCommon" . | trim | nindent 6 }}
      {{- with $m.command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $m.args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with ($m.resources | default (include "bgslot.slotResources" . | fromJson)) }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- with include "bgslot.slotVolumes" . | fromJsonArray }}
  volumes:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
"<fullname>-<slot>-migrate-<hash>": the hash covers the whole pod template (the image, command and
args, and the env and config checksum it runs with). A Job's pod template is immutable, so anything
that changes it must make a new Job rather than an update helm cannot apply; an unchanged slot keeps
its finished Job and never reruns it.
*/}}
{{- define "bgslot.migrationJobName" -}}
{{- $hash := include "bgslot.migrationPodTemplate" . | sha256sum | trunc 10 }}
{{- include "bgslot.suffixedName" (dict "root" .root "suffix" (printf "%s-migrate-%s" .slot $hash)) }}
{{- end }}

{{/*
`over` merged into `base`, both maps, as JSON: maps merge key by key (recursively), anything else in
`over` replaces what `base` has, and a null in `over` inherits. Unlike mergeOverwrite, a 0, false,
"" or [] in `over` is a value and wins. Call with (dict "base" $a "over" $b).
*/}}
{{- define "bgslot.mergeOver" -}}
{{- $out := deepCopy (.base | default dict) }}
{{- range $k, $val := .over | default dict }}
{{- if kindIs "invalid" $val }}
{{- else if and (kindIs "map" $val) (kindIs "map" (index $out $k)) }}
{{- $_ := set $out $k (include "bgslot.mergeOver" (dict "base" (index $out $k) "over" $val) | fromJson) }}
{{- else }}
{{- $_ := set $out $k (deepCopy $val) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Workers and CronJobs. Each lives in a slot like the web pods and runs the slot's image, env and
config; what is theirs sits under workers.NAME / cronJobs.NAME, with the slot's own
<slot>.workers.NAME / <slot>.cronJobs.NAME merged over it. Call these with
(dict "root" $ "slot" "blue" "kind" "workers"|"cronJobs" "name" "consumer").
*/}}

{{/*
One worker's or CronJob's spec in one slot, as JSON: the shared map with the slot's merged over it.
*/}}
{{- define "bgslot.workloadSpec" -}}
{{- $shared := index (index .root.Values .kind | default dict) .name | default dict }}
{{- $own := index (index (index .root.Values .slot | default dict) .kind | default dict) .name | default dict }}
{{- include "bgslot.mergeOver" (dict "base" $shared "over" $own) }}
{{- end }}

{{- define "bgslot.workloadType" -}}
{{- ternary "worker" "cronjob" (eq .kind "workers") }}
{{- end }}

{{/*
FULLNAME-SLOT-NAME. A CronJob's name has at most 52 characters: its Jobs append 11.
*/}}
{{- define "bgslot.workloadName" -}}
{{- include "bgslot.suffixedName" (dict "root" .root "suffix" (printf "%s-%s" .slot .name) "max" (ternary 63 52 (eq .kind "workers"))) }}
{{- end }}

{{/*
The selector of a worker's Deployment, and the labels of its pods and of a CronJob's Jobs and pods.
No app.kubernetes.io/name: no Service, PDB or HPA of the web selects these pods, as with the
migration pods. bgslot/workload tells them from the web's at a glance and to a label selector.
*/}}
{{- define "bgslot.workloadSelectorLabels" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
bgslot/slot: {{ .slot }}
bgslot/workload: {{ include "bgslot.workloadType" . }}
app.kubernetes.io/component: {{ .name | quote }}
{{- end }}

{{/*
Labels of a worker's or CronJob's own objects (Deployment, HPA, PDB, CronJob): the standard ones
but app.kubernetes.io/name, so anything that finds the web by it finds none of these.
*/}}
{{- define "bgslot.workloadLabels" -}}
helm.sh/chart: {{ include "bgslot.chart" .root }}
{{ include "bgslot.workloadSelectorLabels" . }}
{{- if .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/*
What a worker runs in one slot, as JSON {"replicas": N, "autoscaled": bool, "runs": bool}. The
one thing about a worker that follows productionSlot: the production slot runs `replicas` (or
leaves them to the worker's HPA), the other slot `stageReplicas`; a worker in heldWorkers runs in
neither (bgslot's stop-first handover).
*/}}
{{- define "bgslot.workerState" -}}
{{- $v := .root.Values }}
{{- $w := include "bgslot.workloadSpec" . | fromJson }}
{{- $replicas := 0 }}
{{- $autoscaled := false }}
{{- if has .name ($v.heldWorkers | default list) }}
{{- else if eq .slot $v.productionSlot }}
{{- $replicas = ternary 1 ($w.replicas | int) (kindIs "invalid" $w.replicas) }}
{{- if and ($w.autoscaling | default dict).enabled (ne $replicas 0) }}
{{- $autoscaled = true }}
{{- end }}
{{- else }}
{{- $replicas = $w.stageReplicas | default 0 | int }}
{{- end }}
{{- toJson (dict "replicas" $replicas "autoscaled" $autoscaled "runs" (or $autoscaled (gt $replicas 0))) }}
{{- end }}

{{/*
The pod template of a worker (or a CronJob's Job) in one slot: the slot's image, env, envFrom,
config objects and their checksum, volumes, service account, security contexts and scheduling,
through the same helpers as the web pods, with the workload's own command, args, resources, probes,
grace period, extraEnv and pod annotations. Nothing in it depends on productionSlot.
*/}}
{{- define "bgslot.workloadPodTemplate" -}}
{{- $v := .root.Values }}
{{- $w := include "bgslot.workloadSpec" . | fromJson }}
{{- $shared := index (index $v .kind | default dict) .name | default dict }}
{{- $own := index (index (index $v .slot | default dict) .kind | default dict) .name | default dict }}
{{- $isWorker := eq .kind "workers" }}
{{- $annotations := include "bgslot.mergeOver" (dict "base" (include "bgslot.slotPodAnnotations" . | fromJson) "over" ($w.podAnnotations | default dict)) | fromJson }}
{{- with include "bgslot.slotConfigChecksum" . }}
{{- $_ := set $annotations "checksum/config" . }}
{{- end }}
{{- $labels := include "bgslot.workloadSelectorLabels" . | fromYaml }}
{{- $podLabels := omit ($v.podLabels | default dict) "app.kubernetes.io/name" }}
{{- $ctx := merge (dict "envLayers" (list ($shared.extraEnv | default list) ($own.extraEnv | default list))) . }}
metadata:
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  labels:
    {{- toYaml (merge $labels $podLabels) | nindent 4 }}
spec:
  {{- if not $isWorker }}
  {{- /* Never: each retry is a new pod, so a failed run's pod and logs stay for inspection and
  backoffLimit counts pods, as with the migration Job. */}}
  restartPolicy: Never
  {{- end }}
  {{- include "bgslot.podCommon" . | trim | nindent 2 }}
  {{- if $isWorker }}
  terminationGracePeriodSeconds: {{ ternary 60 ($w.terminationGracePeriodSeconds | int) (kindIs "invalid" $w.terminationGracePeriodSeconds) }}
  {{- else if not (kindIs "invalid" $w.terminationGracePeriodSeconds) }}
  terminationGracePeriodSeconds: {{ $w.terminationGracePeriodSeconds | int }}
  {{- end }}
  containers:
    - name: {{ .name | quote }}
      {{- include "bgslot.containerCommon" $ctx | trim | nindent 6 }}
      {{- with $w.command }}
      command:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.args }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $isWorker }}
      {{- range $probe := list "startupProbe" "livenessProbe" "readinessProbe" }}
      {{- with index $w $probe }}
      {{ $probe }}:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- end }}
      {{- end }}
      {{- with ($w.resources | default (include "bgslot.slotResources" . | fromJson)) }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- with include "bgslot.slotVolumes" . | fromJsonArray }}
  volumes:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
An HPA. Call with (dict "root" $ "name" NAME "labels" LABELS-YAML "min" N "max" N "metrics" LIST).
*/}}
{{- define "bgslot.hpa" -}}
apiVersion: {{ include "bgslot.hpa.apiVersion" .root }}
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  labels:
    {{- .labels | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ .min | int }}
  maxReplicas: {{ .max | int }}
  {{- with .metrics }}
  metrics:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
A PDB with podDisruptionBudget's budget. Call with (dict "root" $ "name" NAME "labels" LABELS-YAML
"selector" SELECTOR-YAML).
*/}}
{{- define "bgslot.pdb" -}}
{{- $pdb := .root.Values.podDisruptionBudget }}
apiVersion: {{ include "bgslot.pdb.apiVersion" .root }}
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- .labels | nindent 4 }}
spec:
  {{- if and (not (kindIs "invalid" $pdb.maxUnavailable)) (ne (toString $pdb.maxUnavailable) "") }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- else if and (not (kindIs "invalid" $pdb.minAvailable)) (ne (toString $pdb.minAvailable) "") }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  minAvailable: 1
  {{- end }}
  selector:
    matchLabels:
      {{- .selector | nindent 6 }}
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

{{- define "bgslot.cronJob.apiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version }}batch/v1{{ else }}batch/v1beta1{{ end }}
{{- end }}

{{- define "bgslot.ingress.apiVersion" -}}
networking.k8s.io/v1
{{- end }}

{{/*
"true" when the ServiceMonitor renders: asked for, and the Prometheus Operator's API is served (a
CRD, so here .Capabilities.APIVersions is the right question) or the check is overridden.
*/}}
{{- define "bgslot.serviceMonitor.enabled" -}}
{{- $sm := .Values.metrics.serviceMonitor }}
{{- if and $sm.enabled (or $sm.force (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) }}true{{ end }}
{{- end }}

{{/*
Guards the schema cannot express (and a second line of defence when schema validation is skipped).
Each failure is one line naming the value and what is allowed.
*/}}
{{- define "bgslot.validate" -}}
{{- $v := .Values }}
{{- $prod := $v.productionSlot }}
{{- if not (has $prod (list "blue" "green")) }}
{{- fail (printf "productionSlot is %q: it must be blue or green" (toString $prod)) }}
{{- end }}
{{- if not (index $v $prod).enabled }}
{{- $other := include "bgslot.stageSlot" . }}
{{- fail (printf "productionSlot is %s but %s.enabled is false: production would route to no pods; enable %s or set productionSlot=%s" $prod $prod $prod $other) }}
{{- end }}
{{- if and $v.gatewayAPI.enabled (not $v.gatewayAPI.parentRefs) }}
{{- fail "gatewayAPI.enabled is true but gatewayAPI.parentRefs is empty: the HTTPRoute would attach to no Gateway; set at least one parentRef" }}
{{- end }}
{{- if and $v.gatewayAPI.enabled (not ($v.gatewayAPI.stageHeader | default dict).name) (not $v.gatewayAPI.stageCookie) }}
{{- fail "gatewayAPI.enabled is true but neither gatewayAPI.stageHeader.name nor gatewayAPI.stageCookie is set: nothing would select the stage slot; set one of them" }}
{{- end }}
{{- if and $v.istio.enabled (not $v.istio.gateway.create) (not $v.istio.gateway.name) }}
{{- fail "istio.gateway.create is false but istio.gateway.name is empty: the VirtualService would bind to no Gateway; set istio.gateway.name or istio.gateway.create=true" }}
{{- end }}
{{- /* Server-side apply keys container ports by (containerPort, protocol) and Service ports by (port, protocol); a repeat is an apply error far from its cause. */}}
{{- $names := list "http" }}
{{- $containerKeys := list (printf "%d/TCP" ($v.containerPort | int)) }}
{{- $serviceKeys := list (printf "%d/TCP" ($v.service.port | int)) }}
{{- range $p := $v.extraPorts | default list }}
{{- if has $p.name $names }}
{{- fail (printf "extraPorts has the port name %q twice (\"http\" is the main port's): each port needs its own name" $p.name) }}
{{- end }}
{{- $names = append $names $p.name }}
{{- $ck := printf "%d/%s" ($p.containerPort | int) ($p.protocol | default "TCP") }}
{{- if has $ck $containerKeys }}
{{- fail (printf "extraPorts %s: containerPort %s is already used (containerPort or another extraPorts entry)" $p.name $ck) }}
{{- end }}
{{- $containerKeys = append $containerKeys $ck }}
{{- $sk := printf "%d/%s" ($p.servicePort | default $p.containerPort | int) ($p.protocol | default "TCP") }}
{{- if has $sk $serviceKeys }}
{{- fail (printf "extraPorts %s: servicePort %s is already used (service.port or another extraPorts entry); set a distinct servicePort" $p.name $sk) }}
{{- end }}
{{- $serviceKeys = append $serviceKeys $sk }}
{{- end }}
{{- range $key, $svc := $v.extraServices | default dict }}
{{- if or (has $key (list "main" "stage")) (hasSuffix "-stage" $key) }}
{{- fail (printf "extraServices.%s: the names main and stage and names ending in -stage are reserved (the main Services and every stage variant use them); rename it" $key) }}
{{- end }}
{{- if not ($svc | default dict).ports }}
{{- fail (printf "extraServices.%s.ports is empty: a Service needs at least one port" $key) }}
{{- end }}
{{- end }}
{{- if $v.migrations.enabled }}
{{- if and (not $v.migrations.command) (not $v.migrations.args) }}
{{- fail "migrations.enabled is true but migrations.command and migrations.args are empty: the Job would run the image's server instead of a migration; set migrations.command" }}
{{- end }}
{{- end }}
{{- include "bgslot.validateWorkloads" . }}
{{- $sm := $v.metrics.serviceMonitor }}
{{- if and $sm.enabled (not (has $sm.port $names)) }}
{{- fail (printf "metrics.serviceMonitor.port is %q, which is no port of the main Services; use http or an extraPorts name (%s)" (toString $sm.port) (join ", " $names)) }}
{{- end }}
{{- $mountPaths := list }}
{{- range $m := $v.extraVolumeMounts | default list }}{{ $mountPaths = append $mountPaths $m.mountPath }}{{ end }}
{{- $volumeNames := list }}
{{- range $vol := $v.extraVolumes | default list }}{{ $volumeNames = append $volumeNames $vol.name }}{{ end }}
{{- range $slot := list "blue" "green" }}
{{- if (index $v $slot).enabled }}
{{- $config := include "bgslot.slotConfig" (dict "root" $ "slot" $slot) | fromJson }}
{{- if $config.files }}
{{- if has "config-files" $volumeNames }}
{{- fail "extraVolumes has a volume named config-files, the name of the config.files volume; rename it" }}
{{- end }}
{{- if has $v.config.mountPath $mountPaths }}
{{- fail (printf "extraVolumeMounts mounts %s, where config.files are mounted (config.mountPath); use another path" $v.config.mountPath) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The guards of workers, cronJobs and heldWorkers.
*/}}
{{- define "bgslot.validateWorkloads" -}}
{{- $v := .Values }}
{{- $workers := $v.workers | default dict }}
{{- $cronJobs := $v.cronJobs | default dict }}
{{- range $kind := list "workers" "cronJobs" }}
{{- $shared := index $v $kind | default dict }}
{{- range $name, $spec := $shared }}
{{- if eq $name "migration" }}
{{- fail (printf "%s.migration: the name migration is reserved (the migration Job's app.kubernetes.io/component); rename it" $kind) }}
{{- end }}
{{- $spec = $spec | default dict }}
{{- if and (not $spec.command) (not $spec.args) }}
{{- fail (printf "%s.%s has neither command nor args: it would run the image's server; set %s.%s.command" $kind $name $kind $name) }}
{{- end }}
{{- end }}
{{- range $slot := list "blue" "green" }}
{{- range $name, $_ := index (index $v $slot | default dict) $kind | default dict }}
{{- if not (hasKey $shared $name) }}
{{- fail (printf "%s.%s.%s: there is no %s.%s; a slot can only change a %s the shared %s map defines" $slot $kind $name $kind $name (ternary "worker" "CronJob" (eq $kind "workers")) $kind) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name, $_ := $workers }}
{{- if hasKey $cronJobs $name }}
{{- fail (printf "workers.%s and cronJobs.%s share a name, so their objects would share app.kubernetes.io/component; rename one" $name $name) }}
{{- end }}
{{- end }}
{{- range $name := $v.heldWorkers | default list }}
{{- if not (hasKey $workers (toString $name)) }}
{{- fail (printf "heldWorkers names %s, which is no worker in workers; remove it from heldWorkers" (toString $name)) }}
{{- end }}
{{- end }}
{{- range $slot := list "blue" "green" }}
{{- if (index $v $slot).enabled }}
{{- range $name, $_ := $cronJobs }}
{{- $c := include "bgslot.workloadSpec" (dict "root" $ "slot" $slot "kind" "cronJobs" "name" $name) | fromJson }}
{{- if not $c.schedule }}
{{- fail (printf "cronJobs.%s.schedule is empty: a CronJob needs a schedule (e.g. \"0 3 * * *\")" $name) }}
{{- end }}
{{- if hasKey $c "suspend" }}
{{- fail (printf "cronJobs.%s.suspend is set: suspend is bgslot's (false in the production slot, true in the other); remove it" $name) }}
{{- end }}
{{- if and $c.timeZone (not (semverCompare ">=1.27-0" $.Capabilities.KubeVersion.Version)) }}
{{- fail (printf "cronJobs.%s.timeZone is set but this cluster runs Kubernetes %s: CronJob timeZone needs 1.27 or later; write the schedule in the controller's time zone (usually UTC) instead" $name $.Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
