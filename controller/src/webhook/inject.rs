//! `POST /inject`: the mutating admission webhook for Pod CREATE. It reads the pod's namespace,
//! asks the pure injector ([`crate::inject`]) for the patch or the reason to skip, and always
//! allows the pod: a pod the injector cannot handle is created unchanged, with a warning. An
//! Event (`Injected` / `InjectionSkipped`) goes to the pod's owner in the background; it never
//! delays or fails the admission.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::inject::{self, Outcome, Settings};

/// How long the webhook waits for the namespace; the API server gives the whole call 10 s.
pub const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an Event may take before it is given up.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The injector as the webhook runs it.
#[derive(Clone)]
pub struct Injector {
    pub settings: Settings,
    /// The trust anchor (PEM) put into every proxy's environment.
    pub anchor_pem: String,
    /// For namespaces and Events; `None` treats every namespace as unlabelled and records no
    /// Events.
    pub client: Option<kube::Client>,
    pub recorder: Option<Arc<Recorder>>,
}

impl Injector {
    pub fn new(
        settings: Settings,
        anchor_pem: String,
        client: Option<kube::Client>,
        instance: Option<String>,
    ) -> Injector {
        let recorder = client.clone().map(|c| {
            Arc::new(Recorder::new(
                c,
                Reporter {
                    controller: "smidge-injector".into(),
                    instance,
                },
            ))
        });
        Injector {
            settings,
            anchor_pem,
            client,
            recorder,
        }
    }
}

/// What happened to one pod, for the Event and the log.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Injected,
    Skipped(String),
}

/// The answer to a review for `request`, given its namespace's metadata (`Err`: why it could not
/// be read). Pure.
pub fn answer(
    request: &AdmissionRequest<Pod>,
    namespace: Result<&ObjectMeta, &str>,
    settings: &Settings,
    anchor_pem: &str,
) -> (AdmissionResponse, Verdict) {
    let response = AdmissionResponse::from(request);
    let skipped = |response: AdmissionResponse, reason: String| {
        let mut response = response;
        response.warnings = Some(vec![format!(
            "smidge: the proxy was not injected: {reason}"
        )]);
        (response, Verdict::Skipped(reason))
    };
    let Some(pod) = request.object.as_ref() else {
        return skipped(response, "the request has no pod".into());
    };
    let namespace = match namespace {
        Ok(ns) => ns,
        Err(e) => return skipped(response, format!("cannot read the namespace: {e}")),
    };
    match inject::pod_patch(pod, namespace, settings, anchor_pem) {
        Ok(Outcome::Injected(patch)) => match response.with_patch(patch) {
            Ok(r) => (r, Verdict::Injected),
            Err(e) => skipped(
                AdmissionResponse::from(request),
                format!("cannot encode the patch: {e}"),
            ),
        },
        // Skips are the common case (every pod in an unlabelled namespace): no warning.
        Ok(Outcome::Skipped(skip)) => (response, Verdict::Skipped(skip.to_string())),
        Err(e) => skipped(response, format!("cannot encode the pod: {e}")),
    }
}

/// Answers one review body (JSON). Never fails: a body that is not a review gets an invalid
/// answer; everything else is allowed, with the patch or without.
pub async fn review(injector: Option<&Injector>, body: &[u8]) -> Vec<u8> {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return encode(
                AdmissionResponse::invalid(format!("not an AdmissionReview: {e}")).into_review(),
            )
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return encode(
                AdmissionResponse::invalid(format!("no request in the review: {e}")).into_review(),
            )
        }
    };
    let Some(injector) = injector else {
        let mut r = AdmissionResponse::from(&request);
        r.warnings = Some(vec!["smidge: the injector is off (the controller has no --inject-config); the pod is unchanged".into()]);
        tracing::warn!(namespace = ?request.namespace, "a pod reached /inject but the injector is off (no --inject-config)");
        return encode(r.into_review());
    };
    let ns_name = request.namespace.clone().unwrap_or_default();
    let namespace = read_namespace(injector.client.as_ref(), &ns_name).await;
    let (response, verdict) = answer(
        &request,
        namespace.as_ref().map_err(String::as_str),
        &injector.settings,
        &injector.anchor_pem,
    );
    let pod_meta = request
        .object
        .as_ref()
        .map(|p| p.metadata.clone())
        .unwrap_or_default();
    let pod_name = pod_meta
        .name
        .clone()
        .or(pod_meta.generate_name.clone())
        .unwrap_or_default();
    match &verdict {
        Verdict::Injected => {
            tracing::info!(namespace = ?ns_name, pod = ?pod_name, "injected the proxy")
        }
        Verdict::Skipped(reason) => {
            tracing::info!(namespace = ?ns_name, pod = ?pod_name, reason = ?reason, "left a pod alone")
        }
    }
    if !request.dry_run {
        if let (Some(client), Some(recorder)) = (injector.client.clone(), injector.recorder.clone())
        {
            tokio::spawn(async move {
                let published = tokio::time::timeout(EVENT_TIMEOUT, async {
                    let regarding = owner(&client, &ns_name, &pod_meta).await;
                    recorder.publish(&event(&verdict), &regarding).await
                })
                .await;
                match published {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the injection Event"),
                    Err(_) => tracing::warn!("recording the injection Event timed out"),
                }
            });
        }
    }
    encode(response.into_review())
}

/// The review as JSON, its patch base64 as the AdmissionReview API documents it (kube-core 5
/// serializes its `Vec<u8>` as an array of numbers).
fn encode(review: AdmissionReview<DynamicObject>) -> Vec<u8> {
    use base64::Engine;
    let mut value = match serde_json::to_value(&review) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an AdmissionReview");
            return b"{}".to_vec();
        }
    };
    if let Some(patch) = value.pointer_mut("/response/patch") {
        if let Some(bytes) = patch.as_array().map(|a| {
            a.iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Vec<u8>>()
        }) {
            *patch = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec())
}

/// The namespace's metadata, or why it could not be read. Without a client: an empty one.
async fn read_namespace(client: Option<&kube::Client>, name: &str) -> Result<ObjectMeta, String> {
    let Some(client) = client else {
        return Ok(ObjectMeta::default());
    };
    let api: Api<Namespace> = Api::all(client.clone());
    match tokio::time::timeout(NAMESPACE_TIMEOUT, api.get(name)).await {
        Ok(Ok(ns)) => Ok(ns.metadata),
        Ok(Err(e)) => Err(format!("namespace {name}: {e}")),
        Err(_) => Err(format!(
            "namespace {name}: no answer within {NAMESPACE_TIMEOUT:?}"
        )),
    }
}

fn event(verdict: &Verdict) -> Event {
    let (type_, reason, note) = match verdict {
        Verdict::Injected => (
            EventType::Normal,
            "Injected",
            "smidge proxy injected".to_string(),
        ),
        Verdict::Skipped(why) => (
            EventType::Normal,
            "InjectionSkipped",
            format!("smidge proxy not injected: {why}"),
        ),
    };
    Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Inject".into(),
        secondary: None,
    }
}

/// The controller owner reference of a pod (or its first owner).
fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    let owners = meta.owner_references.as_deref()?;
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first())
}

fn reference(namespace: &str, owner: &OwnerReference) -> ObjectReference {
    ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: Some(namespace.to_string()),
        uid: Some(owner.uid.clone()),
        ..ObjectReference::default()
    }
}

/// Whom the Event is about: the Deployment through its ReplicaSet, else the pod's owner, else
/// the pod itself (by name, or generateName while it has none).
pub async fn owner(client: &kube::Client, namespace: &str, pod: &ObjectMeta) -> ObjectReference {
    let Some(owner) = controller_of(pod) else {
        return ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.name.clone().or(pod.generate_name.clone()),
            namespace: Some(namespace.to_string()),
            uid: pod.uid.clone(),
            ..ObjectReference::default()
        };
    };
    if owner.kind == "ReplicaSet" && owner.api_version == "apps/v1" {
        let api: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
        match api.get(&owner.name).await {
            Ok(rs) => {
                if let Some(deployment) =
                    controller_of(&rs.metadata).filter(|o| o.kind == "Deployment")
                {
                    return reference(namespace, deployment);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, replicaset = %owner.name, "cannot read the pod's ReplicaSet; the Event goes to it")
            }
        }
    }
    reference(namespace, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::INJECT;

    fn request(annotations: serde_json::Value, host_network: bool) -> AdmissionRequest<Pod> {
        let review: AdmissionReview<Pod> = serde_json::from_value(serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": "CREATE", "userInfo": {},
                "object": {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "web-", "namespace": "shop", "annotations": annotations},
                    "spec": {"hostNetwork": host_network, "containers": [{"name": "app", "image": "smidge/echo:1"}]}}
            }
        }))
        .expect("review");
        review.try_into().expect("request")
    }

    fn labelled() -> ObjectMeta {
        ObjectMeta {
            labels: Some([(INJECT.to_string(), "enabled".to_string())].into()),
            ..ObjectMeta::default()
        }
    }

    fn as_json(r: AdmissionResponse) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&encode(r.into_review())).expect("json")
            ["response"]
            .clone()
    }

    #[test]
    fn an_opted_in_pod_is_allowed_with_a_json_patch() {
        let (r, verdict) = answer(
            &request(serde_json::json!({}), false),
            Ok(&labelled()),
            &Settings::default(),
            "PEM",
        );
        assert_eq!(verdict, Verdict::Injected);
        let r = as_json(r);
        assert_eq!(r["uid"], "u-1");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().expect("base64 text"))
            .expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        assert!(!patch.0.is_empty());
    }

    #[test]
    fn a_skipped_pod_is_allowed_unchanged_with_the_reason() {
        let (r, verdict) = answer(
            &request(serde_json::json!({}), false),
            Ok(&ObjectMeta::default()),
            &Settings::default(),
            "PEM",
        );
        assert_eq!(
            verdict,
            Verdict::Skipped(inject::Skip::NotOptedIn.to_string())
        );
        let r = as_json(r);
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none(), "{r}");

        let (r, verdict) = answer(
            &request(serde_json::json!({INJECT: "enabled"}), true),
            Ok(&labelled()),
            &Settings::default(),
            "PEM",
        );
        assert_eq!(verdict, Verdict::Skipped("hostNetwork is enabled".into()));
        assert!(as_json(r).get("patch").is_none());
    }

    #[test]
    fn an_unreadable_namespace_allows_the_pod_unchanged_with_a_warning() {
        let (r, verdict) = answer(
            &request(serde_json::json!({}), false),
            Err("forbidden"),
            &Settings::default(),
            "PEM",
        );
        assert_eq!(
            verdict,
            Verdict::Skipped("cannot read the namespace: forbidden".into())
        );
        let r = as_json(r);
        assert_eq!(r["allowed"], true);
        assert!(
            r["warnings"][0]
                .as_str()
                .is_some_and(|w| w.contains("forbidden")),
            "{r}"
        );
    }

    #[tokio::test]
    async fn without_settings_the_webhook_answers_allowed_and_unchanged_with_a_warning() {
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-2", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}, "namespace": "shop",
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}}
        });
        let out: serde_json::Value =
            serde_json::from_slice(&review(None, &serde_json::to_vec(&body).expect("json")).await)
                .expect("json");
        assert_eq!(out["response"]["uid"], "u-2");
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
        assert!(
            out["response"]["warnings"][0]
                .as_str()
                .is_some_and(|w| w.contains("--inject-config")),
            "{out}"
        );
        let garbage: serde_json::Value =
            serde_json::from_slice(&review(None, b"nope").await).expect("json");
        assert_eq!(garbage["response"]["allowed"], false);
    }

    #[tokio::test]
    async fn without_a_client_the_pods_own_opt_in_still_injects() {
        let injector = Injector::new(Settings::default(), "PEM".into(), None, None);
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-3", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE", "userInfo": {}, "namespace": "shop",
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {INJECT: "enabled"}},
                    "spec": {"containers": [{"name": "app"}]}}}
        });
        let out: serde_json::Value = serde_json::from_slice(
            &review(Some(&injector), &serde_json::to_vec(&body).expect("json")).await,
        )
        .expect("json");
        assert_eq!(out["response"]["patchType"], "JSONPatch", "{out}");
    }

    #[test]
    fn the_event_goes_to_the_controlling_owner() {
        let owner = |kind: &str, controller: Option<bool>| OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: kind.to_lowercase(),
            uid: "u".into(),
            controller,
            ..OwnerReference::default()
        };
        let meta = ObjectMeta {
            owner_references: Some(vec![owner("Other", None), owner("StatefulSet", Some(true))]),
            ..ObjectMeta::default()
        };
        assert_eq!(
            controller_of(&meta).map(|o| o.kind.as_str()),
            Some("StatefulSet")
        );
        let meta = ObjectMeta {
            owner_references: Some(vec![owner("Job", None)]),
            ..ObjectMeta::default()
        };
        assert_eq!(controller_of(&meta).map(|o| o.kind.as_str()), Some("Job"));
        assert!(controller_of(&ObjectMeta::default()).is_none());
        let r = reference("shop", &owner("Job", None));
        assert_eq!(
            (r.kind.as_deref(), r.namespace.as_deref(), r.name.as_deref()),
            (Some("Job"), Some("shop"), Some("job"))
        );
    }

    #[test]
    fn events_say_injected_or_why_skipped() {
        let e = event(&Verdict::Injected);
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("Injected", EventType::Normal)
        );
        let e = event(&Verdict::Skipped("hostNetwork is enabled".into()));
        assert_eq!(e.reason, "InjectionSkipped");
        assert!(e.note.is_some_and(|n| n.contains("hostNetwork")));
    }
}
