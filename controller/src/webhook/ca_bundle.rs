//! Puts the webhook's CA into every smidge CRD that converts through it, so the API server trusts
//! the webhook without a manual step. Only CRDs whose `caBundle` differs are patched (several
//! replicas agree without writing), with a JSON merge patch that leaves the rest of the
//! conversion settings (Service or URL) as installed.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
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

/// Keeps the `caBundle` of every converting SMI CRD at `ca_pem` for as long as it runs: checks
/// every `every` (a reinstall of the CRDs, by `helm upgrade` say, drops the bundle), and retries
/// failures with a backoff from 1 s to `every`. Run it as a task on every replica: the check
/// writes only when a bundle differs.
pub async fn maintain_ca_bundle(client: kube::Client, ca_pem: String, every: std::time::Duration) {
    let first_backoff = std::time::Duration::from_secs(1).min(every);
    let mut backoff = first_backoff;
    loop {
        match ensure_ca_bundle(client.clone(), &ca_pem).await {
            Ok(_) => {
                backoff = first_backoff;
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot set the conversion webhook's caBundle");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(every);
            }
        }
    }
}
