{{/* Labels on every object the chart makes. */}}
{{- define "smidge.labels" -}}
app.kubernetes.io/part-of: smidge
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The controller pods' labels (the Deployment's selector, the Service's, the PDB's). */}}
{{- define "smidge.controllerSelector" -}}
app.kubernetes.io/name: smidge-controller
smidge.io/control-plane-component: controller
{{- end }}

{{/* An image reference; an empty tag is the chart's appVersion. */}}
{{- define "smidge.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end }}

{{/* The Secret holding the trust material. */}}
{{- define "smidge.identitySecret" -}}
{{- .Values.identity.existingSecret | default "smidge-identity" -}}
{{- end }}

{{/* Whether the trust material is given inline (then the chart writes the Secret). */}}
{{- define "smidge.identityInline" -}}
{{- $i := .Values.identity -}}
{{- $given := list $i.trustAnchorPEM $i.issuer.crtPEM $i.issuer.keyPEM $i.tokenKey | compact -}}
{{- if and (gt (len $given) 0) (lt (len $given) 4) -}}
{{- fail "identity: give all of trustAnchorPEM, issuer.crtPEM, issuer.keyPEM and tokenKey (smidge identity gen writes them), or none" -}}
{{- end -}}
{{- if and (eq (len $given) 4) $i.existingSecret -}}
{{- fail "identity: give either existingSecret or the inline trust material, not both" -}}
{{- end -}}
{{- if eq (len $given) 4 }}true{{ end -}}
{{- end }}

{{/* The webhook Service's DNS names (the serving certificate's). */}}
{{- define "smidge.webhookNames" -}}
{{- printf "smidge-controller.%s.svc,smidge-controller.%s.svc.cluster.local" .Release.Namespace .Release.Namespace -}}
{{- end }}

{{/* The cert-manager Certificate of the webhooks (namespace/name), for inject-ca-from. */}}
{{- define "smidge.webhookCertificate" -}}
{{- printf "%s/smidge-controller-webhook" .Release.Namespace -}}
{{- end }}
