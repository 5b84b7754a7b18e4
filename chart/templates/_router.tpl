{{/*
Router mode: the slots are releases of another chart (RELEASE-blue, RELEASE-green) and this release
renders only the routing to them. bgslot records per slot the selector and ports of a Service that
chart renders (router.slots.SLOT), and the Services here copy them.
*/}}

{{/*
"true" in router mode. A release written by an earlier bgslot with the same chart version has no
router key at all (helm reuses the old chart's defaults with --reuse-values).
*/}}
{{- define "bgslot.router.enabled" -}}
{{- if (.Values.router | default dict).enabled }}true{{ end }}
{{- end }}

{{/*
The record of one slot, as JSON. Call with (dict "root" $ "slot" "blue").
*/}}
{{- define "bgslot.router.slot" -}}
{{- $slots := (.root.Values.router | default dict).slots | default dict }}
{{- toJson (index $slots .slot | default dict) }}
{{- end }}

{{/*
"true" when the slot runs a release bgslot recorded, with a selector and ports to route to.
*/}}
{{- define "bgslot.router.routable" -}}
{{- $s := include "bgslot.router.slot" . | fromJson }}
{{- if and (eq (toString ($s.state | default "")) "deployed") $s.selector $s.ports }}true{{ end }}
{{- end }}

{{/*
The selector of a Service that routes to the slot, as JSON: the slot's recorded selector, or, for a
slot that runs nothing, one that no pod matches (bgslot's own pods carry bgslot/slot blue or green,
other charts' pods none).
*/}}
{{- define "bgslot.router.selector" -}}
{{- if include "bgslot.router.routable" . }}
{{- toJson (include "bgslot.router.slot" . | fromJson).selector }}
{{- else }}
{{- toJson (dict "bgslot/slot" "none") }}
{{- end }}
{{- end }}

{{/*
The ports of a Service that routes to the slot, as JSON: the slot's recorded ports (each with its
protocol, TCP unless recorded otherwise); a slot that runs nothing gets production's, so its
Service keeps the same shape.
*/}}
{{- define "bgslot.router.ports" -}}
{{- $slot := .slot }}
{{- if not (include "bgslot.router.routable" .) }}
{{- $slot = .root.Values.productionSlot }}
{{- end }}
{{- $s := include "bgslot.router.slot" (dict "root" .root "slot" $slot) | fromJson }}
{{- include "bgslot.router.portList" ($s.ports | default list) }}
{{- end }}

{{/*
The names of the further routes either slot records (a route of only one slot still gets its pair
of Services, selecting nothing where the slot has no such route), as a JSON list.
*/}}
{{- define "bgslot.router.routeNames" -}}
{{- $names := list }}
{{- range $slot := list "blue" "green" }}
{{- $s := include "bgslot.router.slot" (dict "root" $.root "slot" $slot) | fromJson }}
{{- if include "bgslot.router.routable" (dict "root" $.root "slot" $slot) }}
{{- range $r := $s.routes | default list }}
{{- $names = append $names $r.route }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson ($names | uniq | sortAlpha) }}
{{- end }}

{{/*
A slot's record of a further route, as JSON ({} when it has none, or runs nothing). Call with
(dict "root" $ "slot" "blue" "route" "stream").
*/}}
{{- define "bgslot.router.route" -}}
{{- $found := dict }}
{{- if include "bgslot.router.routable" . }}
{{- $s := include "bgslot.router.slot" . | fromJson }}
{{- range $r := $s.routes | default list }}
{{- if eq $r.route $.route }}
{{- $found = $r }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $found }}
{{- end }}

{{/*
The selector and ports of a further route's Service that routes to a slot, as JSON: the slot's
recorded ones; where the slot has no such route, a selector no pod matches and the other slot's
ports.
*/}}
{{- define "bgslot.router.routeSelector" -}}
{{- $r := include "bgslot.router.route" . | fromJson }}
{{- if $r.selector }}
{{- toJson $r.selector }}
{{- else }}
{{- toJson (dict "bgslot/slot" "none") }}
{{- end }}
{{- end }}

{{- define "bgslot.router.routePorts" -}}
{{- $r := include "bgslot.router.route" . | fromJson }}
{{- if not $r.ports }}
{{- $other := ternary "green" "blue" (eq .slot "blue") }}
{{- $r = include "bgslot.router.route" (dict "root" .root "slot" $other "route" .route) | fromJson }}
{{- end }}
{{- include "bgslot.router.portList" ($r.ports | default list) }}
{{- end }}

{{/*
Recorded ports as a Service's port list, as JSON (each with its protocol, TCP unless recorded
otherwise).
*/}}
{{- define "bgslot.router.portList" -}}
{{- $out := list }}
{{- range $p := . }}
{{- $target := $p.targetPort | default $p.port }}
{{- if not (kindIs "string" $target) }}
{{- $target = $target | int }}
{{- end }}
{{- $port := dict "port" ($p.port | int) "targetPort" $target "protocol" ($p.protocol | default "TCP") }}
{{- with $p.name }}
{{- $_ := set $port "name" . }}
{{- end }}
{{- with $p.appProtocol }}
{{- $_ := set $port "appProtocol" . }}
{{- end }}
{{- $out = append $out $port }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The first port of the main Service with a role, as JSON. Call with (dict "root" $ "role" "stage").
*/}}
{{- define "bgslot.router.firstPort" -}}
{{- $slot := ternary .root.Values.productionSlot (include "bgslot.stageSlot" .root) (eq .role "production") }}
{{- first (include "bgslot.router.ports" (dict "root" .root "slot" $slot) | fromJsonArray) | toJson }}
{{- end }}

{{/*
The port an Ingress backend names on the main Service with a role: `name: http` (the bundled
chart's), or in router mode the first recorded port, by name when it has one.
*/}}
{{- define "bgslot.backendPort" -}}
{{- if include "bgslot.router.enabled" .root }}
{{- $p := include "bgslot.router.firstPort" . | fromJson }}
{{- if $p.name }}
name: {{ $p.name }}
{{- else }}
number: {{ $p.port | int }}
{{- end }}
{{- else }}
name: http
{{- end }}
{{- end }}

{{/*
The port number of the main Service with a role (HTTPRoute, Istio): service.port, or in router mode
the first recorded port.
*/}}
{{- define "bgslot.servicePortNumber" -}}
{{- if include "bgslot.router.enabled" .root }}
{{- (include "bgslot.router.firstPort" . | fromJson).port | int }}
{{- else }}
{{- .root.Values.service.port | int }}
{{- end }}
{{- end }}

{{/*
The labels an Istio subset picks a slot's pods by: bgslot/slot, or in router mode the slot's
recorded selector. Call with (dict "root" $ "slot" "blue").
*/}}
{{- define "bgslot.subsetLabels" -}}
{{- if include "bgslot.router.enabled" .root }}
{{- include "bgslot.router.selector" . | fromJson | toYaml }}
{{- else }}
bgslot/slot: {{ .slot }}
{{- end }}
{{- end }}

{{/*
The guards of router mode, one line each: production must route to a slot bgslot recorded, and the
routes the chart renders need what they attach to.
*/}}
{{- define "bgslot.router.validate" -}}
{{- $v := .Values }}
{{- $prod := $v.productionSlot }}
{{- if not (has $prod (list "blue" "green")) }}
{{- fail (printf "productionSlot is %q: it must be blue or green" (toString $prod)) }}
{{- end }}
{{- if not (include "bgslot.router.routable" (dict "root" . "slot" $prod)) }}
{{- $s := include "bgslot.router.slot" (dict "root" . "slot" $prod) | fromJson }}
{{- fail (printf "router.slots.%s records no deployed release with a selector and ports (state %q): production would route to no pods; deploy it with `bgslot deploy %s`" $prod (toString ($s.state | default "")) .Release.Name) }}
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
{{- range $key, $svc := $v.extraServices | default dict }}
{{- if or (has $key (list "main" "stage")) (hasSuffix "-stage" $key) }}
{{- fail (printf "extraServices.%s: the names main and stage and names ending in -stage are reserved (the main Services and every stage variant use them); rename it" $key) }}
{{- end }}
{{- if not ($svc | default dict).ports }}
{{- fail (printf "extraServices.%s.ports is empty: a Service needs at least one port" $key) }}
{{- end }}
{{- end }}
{{- range $route := include "bgslot.router.routeNames" (dict "root" .) | fromJsonArray }}
{{- if hasKey ($v.extraServices | default dict) $route }}
{{- fail (printf "extraServices.%s and the route %s would both name the Services %s-%s: rename the extraServices key, or route the Service under another name (--service NAME=ROUTE)" $route $route $.Release.Name $route) }}
{{- end }}
{{- if or (has $route (list "main" "stage")) (hasSuffix "-stage" $route) }}
{{- fail (printf "route %s: the names main and stage and names ending in -stage are reserved; route the Service under another name (--service NAME=ROUTE)" $route) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
NOTES.txt in router mode.
*/}}
{{- define "bgslot.router.notes" -}}
{{- $prod := .Values.productionSlot }}
{{- $stage := include "bgslot.stageSlot" . }}
{{- $ns := .Release.Namespace }}
{{- $app := (.Values.router | default dict).app | default dict }}
Release {{ .Release.Name }} in namespace {{ $ns }} is a router: it runs no workload of its own and
routes to releases of {{ $app.chart | default "another chart" }}{{ with $app.version }} {{ . }}{{ end }}.
{{- range $slot := list $prod $stage }}
{{- $s := include "bgslot.router.slot" (dict "root" $ "slot" $slot) | fromJson }}
{{- $label := ternary "production (live): " "stage:             " (eq $slot $prod) }}
{{- if include "bgslot.router.routable" (dict "root" $ "slot" $slot) }}
  {{ $label }}{{ $slot }} slot, release {{ $s.release }}, image {{ $s.image }}
{{- else }}
  {{ $label }}{{ $slot }} slot, runs nothing{{ if eq (toString ($s.state | default "")) "cleaned" }} (release {{ $s.release }} was uninstalled, its history kept){{ end }}; the stage Service selects no pod
{{- end }}
{{- end }}

URLs:
{{- range $role := list "production" "stage" }}
{{- $service := ternary (include "bgslot.productionServiceName" $) (include "bgslot.stageServiceName" $) (eq $role "production") }}
{{- $host := ternary $.Values.ingress.host $.Values.ingress.stageHost (eq $role "production") }}
{{- $label := ternary "production: " "stage:      " (eq $role "production") }}
{{- if and $.Values.ingress.enabled $host }}
  {{ $label }}http{{ if $.Values.ingress.tls }}s{{ end }}://{{ $host }}{{ $.Values.ingress.path }}
{{- else }}
  {{ $label }}http://{{ $service }}.{{ $ns }}.svc:{{ include "bgslot.servicePortNumber" (dict "root" $ "role" $role) }}/
{{- end }}
{{- end }}

Next:
{{- if include "bgslot.router.routable" (dict "root" . "slot" $stage) }}
  test stage, then make it live:   bgslot swap {{ .Release.Name }} -n {{ $ns }}{{ with (include "bgslot.router.slot" (dict "root" . "slot" $stage) | fromJson).tag }} --expect-tag {{ . }}{{ end }}
  or remove the stage slot:        bgslot clean {{ .Release.Name }} -n {{ $ns }}
{{- else }}
  deploy a new version to stage:   bgslot deploy {{ .Release.Name }} -n {{ $ns }} --tag <TAG>
{{- end }}
  see both slots:                  bgslot status {{ .Release.Name }} -n {{ $ns }}
{{- end }}
