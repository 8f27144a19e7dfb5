//! The sidecar injector's pure core, shared by the admission webhook and `smidge inject`:
//! [`config`] (the chart's settings), [`decide`] (inject, or why not), [`overrides`] (per-pod
//! annotations), [`patch`] (the mutation and the JSON Patch). No I/O here.

pub mod config;
pub mod decide;
pub mod overrides;
pub mod patch;
pub mod probes;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use config::{parse, Settings, SettingsError};
pub use decide::Skip;

/// A pod template (a Pod's or a workload's metadata and spec) with the proxy added, or why it was
/// left alone. `namespace` is the metadata of the pod's namespace (labels and annotations).
pub fn inject(
    meta: &ObjectMeta,
    spec: &PodSpec,
    namespace: &ObjectMeta,
    settings: &Settings,
    anchor_pem: &str,
) -> Result<(ObjectMeta, PodSpec), Skip> {
    let overrides = decide::decide(meta, spec, namespace, settings)?;
    let (mut meta, mut spec) = (meta.clone(), spec.clone());
    patch::mutate(&mut meta, &mut spec, settings, &overrides, anchor_pem);
    Ok((meta, spec))
}

/// What the webhook answers for a Pod.
#[derive(Debug)]
pub enum Outcome {
    /// The RFC 6902 patch from the pod as sent to the pod with its proxy.
    Injected(json_patch::Patch),
    Skipped(Skip),
}

/// [`inject`] for a whole Pod, as the patch between the pod before and after.
pub fn pod_patch(
    pod: &Pod,
    namespace: &ObjectMeta,
    settings: &Settings,
    anchor_pem: &str,
) -> Result<Outcome, serde_json::Error> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Outcome::Skipped(Skip::NoSpec));
    };
    match inject(&pod.metadata, spec, namespace, settings, anchor_pem) {
        Ok((meta, spec)) => {
            let after = Pod {
                metadata: meta,
                spec: Some(spec),
                status: pod.status.clone(),
            };
            let before = serde_json::to_value(pod)?;
            let after = serde_json::to_value(&after)?;
            Ok(Outcome::Injected(patch::json_patch(&before, &after)))
        }
        Err(skip) => Ok(Outcome::Skipped(skip)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{INJECT, MESHED};

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-", "namespace": "shop", "labels": {"app": "web"},
                "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>()},
            "spec": {"containers": [{"name": "app", "image": "smidge/echo:1"}]}
        }))
        .expect("pod")
    }

    #[test]
    fn the_webhook_patch_applied_to_the_pod_gives_the_injected_template() {
        let p = pod(&[(INJECT, "enabled")]);
        let ns = ObjectMeta::default();
        let Outcome::Injected(patch) =
            pod_patch(&p, &ns, &Settings::default(), "PEM").expect("encode")
        else {
            panic!("not injected");
        };
        let mut doc = serde_json::to_value(&p).expect("json");
        json_patch::patch(&mut doc, &patch).expect("the patch applies");
        let patched: Pod = serde_json::from_value(doc).expect("a pod");
        let (meta, spec) = inject(
            &p.metadata,
            p.spec.as_ref().expect("spec"),
            &ns,
            &Settings::default(),
            "PEM",
        )
        .expect("inject");
        assert_eq!(patched.metadata, meta);
        assert_eq!(patched.spec, Some(spec));
        assert_eq!(
            patched.metadata.labels.expect("labels")[MESHED],
            "smidge-system"
        );
        // Injecting the injected pod again changes nothing.
        let again =
            pod_patch(&patched_pod(&p, &patch), &ns, &Settings::default(), "PEM").expect("encode");
        assert!(
            matches!(again, Outcome::Skipped(Skip::AlreadyInjected(_))),
            "{again:?}"
        );
    }

    fn patched_pod(p: &Pod, patch: &json_patch::Patch) -> Pod {
        let mut doc = serde_json::to_value(p).expect("json");
        json_patch::patch(&mut doc, patch).expect("applies");
        serde_json::from_value(doc).expect("pod")
    }

    #[test]
    fn a_skipped_pod_gets_no_patch_and_the_reason() {
        let out = pod_patch(
            &pod(&[]),
            &ObjectMeta::default(),
            &Settings::default(),
            "PEM",
        )
        .expect("encode");
        assert!(matches!(out, Outcome::Skipped(Skip::NotOptedIn)), "{out:?}");
        let mut no_spec = pod(&[(INJECT, "enabled")]);
        no_spec.spec = None;
        let out = pod_patch(
            &no_spec,
            &ObjectMeta::default(),
            &Settings::default(),
            "PEM",
        )
        .expect("encode");
        assert!(matches!(out, Outcome::Skipped(Skip::NoSpec)), "{out:?}");
    }
}
