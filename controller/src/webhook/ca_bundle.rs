//! Puts the webhook's CA into every smidge CRD that converts through it and into the injector's
//! MutatingWebhookConfiguration, so the API server trusts the webhook without a manual step. Only
//! objects whose `caBundle` differs are patched (several replicas agree without writing): CRDs
//! with a JSON merge patch that leaves the rest of the conversion settings (Service or URL) as
//! installed, the webhook configuration with a JSON Patch of each webhook's bundle alone.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use crate::crds;

/// The field manager smidge writes CRDs with.
pub const FIELD_MANAGER: &str = "smidge-controller";

/// The `caBundle` a CRD has now, base64 as stored.
fn current_bundle(crd: &CustomResourceDefinition) -> Option<String> {
    let bundle = crd
        .spec
        .conversion
        .as_ref()?
        .webhook
        .as_ref()?
        .client_config
        .as_ref()?
        .ca_bundle
        .as_ref()?;
    Some(B64.encode(&bundle.0))
}

/// Patches `spec.conversion.webhook.clientConfig.caBundle` of every smidge CRD that converts
/// through the webhook to `ca_pem`. Returns the names of the CRDs it changed. Every CRD is tried;
/// the error names each that failed (missing CRDs included).
pub async fn ensure_ca_bundle(client: kube::Client, ca_pem: &str) -> anyhow::Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let wanted = B64.encode(ca_pem.as_bytes());
    let mut changed = Vec::new();
    let mut errors = Vec::new();
    for (_, crd) in crds::all() {
        let converts = crd
            .spec
            .conversion
            .as_ref()
            .is_some_and(|c| c.strategy == "Webhook");
        let Some(name) = crd.metadata.name.clone().filter(|_| converts) else {
            continue;
        };
        let result = async {
            let live = api
                .get(&name)
                .await
                .with_context(|| format!("reading CRD {name}"))?;
            if current_bundle(&live).as_deref() == Some(wanted.as_str()) {
                return Ok(false);
            }
            let patch = serde_json::json!({"spec": {"conversion": {
                "strategy": "Webhook",
                "webhook": {"clientConfig": {"caBundle": wanted}}
            }}});
            api.patch(
                &name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("patching the caBundle of CRD {name}"))?;
            anyhow::Ok(true)
        }
        .await;
        match result {
            Ok(true) => {
                tracing::info!(crd = %name, "set the conversion webhook's caBundle");
                changed.push(name);
            }
            Ok(false) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() {
        Ok(changed)
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}

/// The MutatingWebhookConfiguration of the injector (the chart's).
pub const INJECTOR_CONFIG: &str = "smidge-injector";

/// The JSON Patch that sets every webhook's `caBundle` in `config` to `ca_pem`, each guarded
/// by a test of the webhook's name (a concurrent reorder fails the patch instead of writing the
/// wrong entry). Empty when every bundle is current.
pub fn webhook_bundle_patch(
    config: &MutatingWebhookConfiguration,
    ca_pem: &str,
) -> json_patch::Patch {
    let wanted = B64.encode(ca_pem.as_bytes());
    let mut ops = Vec::new();
    for (i, hook) in config.webhooks.iter().flatten().enumerate() {
        let current = hook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| B64.encode(&b.0));
        if current.as_deref() == Some(wanted.as_str()) {
            continue;
        }
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": hook.name}));
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": wanted}));
    }
    serde_json::from_value(serde_json::Value::Array(ops)).unwrap_or_default()
}

/// Sets the `caBundle` of every webhook of [`INJECTOR_CONFIG`] to `ca_pem`; true when it
/// changed one. A missing configuration (the injector not installed) is not an error.
pub async fn ensure_injector_ca_bundle(client: kube::Client, ca_pem: &str) -> anyhow::Result<bool> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let Some(live) = api
        .get_opt(INJECTOR_CONFIG)
        .await
        .with_context(|| format!("reading MutatingWebhookConfiguration {INJECTOR_CONFIG}"))?
    else {
        tracing::debug!(
            name = INJECTOR_CONFIG,
            "no injector webhook configuration; nothing to keep"
        );
        return Ok(false);
    };
    let patch = webhook_bundle_patch(&live, ca_pem);
    if patch.0.is_empty() {
        return Ok(false);
    }
    api.patch(
        INJECTOR_CONFIG,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::<()>::Json(patch),
    )
    .await
    .with_context(|| {
        format!("patching the caBundle of MutatingWebhookConfiguration {INJECTOR_CONFIG}")
    })?;
    tracing::info!(
        name = INJECTOR_CONFIG,
        "set the injector webhook's caBundle"
    );
    Ok(true)
}

/// Keeps the `caBundle` of every converting SMI CRD and of the injector's webhooks at `ca_pem`
/// for as long as it runs: checks
/// every `every` (a reinstall of the CRDs, by `helm upgrade` say, drops the bundle), and retries
/// failures with a backoff from 1 s to `every`. Run it as a task on every replica: the check
/// writes only when a bundle differs.
pub async fn maintain_ca_bundle(client: kube::Client, ca_pem: String, every: std::time::Duration) {
    let first_backoff = std::time::Duration::from_secs(1).min(every);
    let mut backoff = first_backoff;
    loop {
        let crds = ensure_ca_bundle(client.clone(), &ca_pem).await;
        let injector = ensure_injector_ca_bundle(client.clone(), &ca_pem).await;
        let both = match (crds, injector) {
            (Ok(_), Ok(_)) => Ok(()),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(a), Err(b)) => Err(anyhow::anyhow!("{a:#}; {b:#}")),
        };
        match both {
            Ok(_) => {
                backoff = first_backoff;
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot set the webhooks' caBundle");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(every);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": INJECTOR_CONFIG},
            "webhooks": bundles.iter().enumerate().map(|(i, b)| {
                let mut cc = serde_json::json!({"service": {"name": "smidge-controller", "namespace": "smidge-system", "path": "/inject"}});
                if let Some(b) = b {
                    cc["caBundle"] = B64.encode(b).into();
                }
                serde_json::json!({"name": format!("inject{i}.smidge.io"), "clientConfig": cc,
                    "sideEffects": "None", "admissionReviewVersions": ["v1"]})
            }).collect::<Vec<_>>()
        }))
        .expect("config")
    }

    #[test]
    fn only_stale_bundles_are_patched_each_guarded_by_its_name() {
        let c = config(&[None, Some("CA"), Some("OLD")]);
        let patch = webhook_bundle_patch(&c, "CA");
        let ops = serde_json::to_value(&patch).expect("json");
        assert_eq!(ops.as_array().map(Vec::len), Some(4), "{ops}");
        assert_eq!(
            ops[0],
            serde_json::json!({"op": "test", "path": "/webhooks/0/name", "value": "inject0.smidge.io"})
        );
        assert_eq!(ops[1]["path"], "/webhooks/0/clientConfig/caBundle");
        assert_eq!(ops[3]["path"], "/webhooks/2/clientConfig/caBundle");
        let mut doc = serde_json::to_value(&c).expect("json");
        json_patch::patch(&mut doc, &patch).expect("applies");
        let after: MutatingWebhookConfiguration = serde_json::from_value(doc).expect("config");
        assert!(
            webhook_bundle_patch(&after, "CA").0.is_empty(),
            "current now"
        );
        assert!(webhook_bundle_patch(&config(&[]), "CA").0.is_empty());
    }
}
