//! The trust material stored in the cluster: `--identity-generate` creates the identity Secret
//! when it is missing (create-only, so replicas racing each other all end up reading the
//! winner's), and the controller keeps the public ConfigMap `smidge-trust-anchor` (`ca.crt`)
//! equal to the anchor it serves. Both are owned by the ConfigMap `smidge-config` when it exists
//! (the chart's), so uninstalling the chart removes them through garbage collection.
//!
//! The objects are built by pure functions; the `ensure_*` functions do the API calls.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::trust::{Generated, ANCHOR_FILE};

/// The public ConfigMap with the trust anchor (key `ca.crt`), for the injector and `smidge check`.
pub const TRUST_ANCHOR_CONFIGMAP: &str = "smidge-trust-anchor";
/// The chart's ConfigMap, the owner of what the controller creates.
pub const OWNER_CONFIGMAP: &str = "smidge-config";
/// The field manager of the controller's writes.
const FIELD_MANAGER: &str = "smidge-controller";

/// How the identity Secret came to be there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// It was there already.
    Existing,
    /// This process created it.
    Created,
    /// Another replica created it between this one's read and its create.
    CreatedByAnother,
}

/// The labels of what the controller creates.
fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/part-of".into(), "smidge".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "smidge-controller".into(),
        ),
    ])
}

/// An ownerReference to `owner` (the chart's ConfigMap); `None` when it has no name or uid.
/// `blockOwnerDeletion` stays unset: setting it needs update rights on the owner.
pub fn owner_reference(owner: &ConfigMap) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.metadata.name.clone()?,
        uid: owner.metadata.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

fn meta(namespace: &str, name: &str, owner: Option<OwnerReference>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels()),
        owner_references: owner.map(|o| vec![o]),
        ..Default::default()
    }
}

/// The identity Secret holding `set` (keys as `smidge identity gen` writes files).
pub fn identity_secret(
    namespace: &str,
    name: &str,
    set: &Generated,
    owner: Option<OwnerReference>,
) -> Secret {
    Secret {
        metadata: meta(namespace, name, owner),
        type_: Some("Opaque".into()),
        data: Some(
            set.files
                .iter()
                .map(|(file, text, _)| (file.to_string(), ByteString(text.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The public trust-anchor ConfigMap.
pub fn trust_anchor_configmap(
    namespace: &str,
    anchor_pem: &str,
    owner: Option<OwnerReference>,
) -> ConfigMap {
    ConfigMap {
        metadata: meta(namespace, TRUST_ANCHOR_CONFIGMAP, owner),
        data: Some(BTreeMap::from([(ANCHOR_FILE.into(), anchor_pem.into())])),
        ..Default::default()
    }
}

/// Whether `live` lacks `anchor_pem` under `ca.crt`.
pub fn anchor_differs(live: &ConfigMap, anchor_pem: &str) -> bool {
    live.data
        .as_ref()
        .and_then(|d| d.get(ANCHOR_FILE))
        .map(String::as_str)
        != Some(anchor_pem)
}

/// The SHA-256 of a certificate's DER, hex: how logs and `smidge check` name an anchor.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The chart's ConfigMap as an owner, when it exists.
async fn owner(client: &kube::Client, namespace: &str) -> anyhow::Result<Option<OwnerReference>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let found = api
        .get_opt(OWNER_CONFIGMAP)
        .await
        .with_context(|| format!("reading ConfigMap {namespace}/{OWNER_CONFIGMAP}"))?;
    Ok(found.as_ref().and_then(owner_reference))
}

/// The identity Secret `namespace/name`, created with fresh trust material for `trust_domain`
/// when it is missing. Never overwrites: when another replica creates it first (the create
/// answers 409 Conflict), that replica's Secret is read and used.
pub async fn ensure_identity_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    trust_domain: &str,
) -> anyhow::Result<(Secret, Origin)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = format!("Secret {namespace}/{name}");
    if let Some(found) = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading {what}"))?
    {
        return Ok((found, Origin::Existing));
    }
    let set = super::trust::generate_set(trust_domain)?;
    let secret = identity_secret(namespace, name, &set, owner(client, namespace).await?);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&params, &secret).await {
        Ok(created) => Ok((created, Origin::Created)),
        Err(e) if is_status(&e, 409) => {
            let winner = api
                .get(name)
                .await
                .with_context(|| format!("reading {what}, which another replica created"))?;
            Ok((winner, Origin::CreatedByAnother))
        }
        Err(e) => Err(e).with_context(|| format!("creating {what} (--identity-generate)")),
    }
}

/// Makes ConfigMap `namespace/smidge-trust-anchor` hold `anchor_pem`; `true` when it wrote.
pub async fn ensure_trust_anchor(
    client: &kube::Client,
    namespace: &str,
    anchor_pem: &str,
) -> anyhow::Result<bool> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let what = format!("ConfigMap {namespace}/{TRUST_ANCHOR_CONFIGMAP}");
    match api
        .get_opt(TRUST_ANCHOR_CONFIGMAP)
        .await
        .with_context(|| format!("reading {what}"))?
    {
        Some(live) if !anchor_differs(&live, anchor_pem) => Ok(false),
        Some(_) => {
            let patch = serde_json::json!({"data": {ANCHOR_FILE: anchor_pem}});
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.patch(TRUST_ANCHOR_CONFIGMAP, &params, &Patch::Merge(&patch))
                .await
                .with_context(|| format!("patching {what}"))?;
            Ok(true)
        }
        None => {
            let cm = trust_anchor_configmap(namespace, anchor_pem, owner(client, namespace).await?);
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&params, &cm).await {
                Ok(_) => Ok(true),
                // Another replica created it: the next check compares it.
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(e).with_context(|| format!("creating {what}")),
            }
        }
    }
}

/// Keeps the trust-anchor ConfigMap at `anchor_pem` for as long as it runs: checks every
/// `every`, retrying failures with a backoff from 1 s to `every`. Every replica runs it; a check
/// writes only when the ConfigMap is missing or differs.
pub async fn maintain_trust_anchor(
    client: kube::Client,
    namespace: String,
    anchor_pem: String,
    every: std::time::Duration,
) {
    let first_backoff = std::time::Duration::from_secs(1).min(every);
    let mut backoff = first_backoff;
    loop {
        match ensure_trust_anchor(&client, &namespace, &anchor_pem).await {
            Ok(wrote) => {
                if wrote {
                    tracing::info!(namespace = %namespace, configmap = TRUST_ANCHOR_CONFIGMAP, "wrote the trust anchor");
                }
                backoff = first_backoff;
                tokio::time::sleep(every).await;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot write the trust-anchor ConfigMap");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(every);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::trust::{generate_set, SecretData, Trust};

    fn config_map(name: Option<&str>, uid: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: name.map(Into::into),
                uid: uid.map(Into::into),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_generated_secret_loads_as_trust_material_with_its_owner() {
        let set = generate_set("cluster.local").expect("generate");
        let owner = owner_reference(&config_map(Some("smidge-config"), Some("u-1")));
        let secret = identity_secret("smidge-system", "smidge-identity", &set, owner);
        assert_eq!(secret.metadata.namespace.as_deref(), Some("smidge-system"));
        let refs = secret.metadata.owner_references.clone().expect("owned");
        assert_eq!(
            (
                refs[0].kind.as_str(),
                refs[0].name.as_str(),
                refs[0].uid.as_str()
            ),
            ("ConfigMap", "smidge-config", "u-1")
        );
        assert_eq!(refs[0].block_owner_deletion, None);
        let data = secret.data.clone().expect("data");
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["ca.crt", "issuer.crt", "issuer.key", "token.key"]);
        let trust = Trust::from_source(&SecretData {
            name: "smidge-system/smidge-identity".into(),
            data: &data,
        })
        .expect("the Secret is valid trust material");
        assert_eq!(Some(trust.anchor_pem.as_str()), set.get(ANCHOR_FILE));
    }

    #[test]
    fn two_generated_sets_differ() {
        let a = generate_set("cluster.local").expect("a");
        let b = generate_set("cluster.local").expect("b");
        assert_ne!(a.get(ANCHOR_FILE), b.get(ANCHOR_FILE));
        assert_ne!(a.get("token.key"), b.get("token.key"));
    }

    #[test]
    fn no_owner_without_a_name_and_uid() {
        assert!(owner_reference(&config_map(Some("smidge-config"), None)).is_none());
        assert!(owner_reference(&config_map(None, Some("u"))).is_none());
        let set = generate_set("cluster.local").expect("generate");
        let secret = identity_secret("ns", "s", &set, None);
        assert!(secret.metadata.owner_references.is_none());
    }

    #[test]
    fn the_anchor_configmap_differs_until_it_holds_the_anchor() {
        let cm = trust_anchor_configmap("ns", "PEM-A", None);
        assert_eq!(cm.metadata.name.as_deref(), Some(TRUST_ANCHOR_CONFIGMAP));
        assert!(!anchor_differs(&cm, "PEM-A"));
        assert!(anchor_differs(&cm, "PEM-B"));
        assert!(anchor_differs(
            &config_map(Some(TRUST_ANCHOR_CONFIGMAP), None),
            "PEM-A"
        ));
        let mut other_key = cm.clone();
        other_key.data = Some(BTreeMap::from([("ca-bundle.crt".into(), "PEM-A".into())]));
        assert!(anchor_differs(&other_key, "PEM-A"));
    }

    /// One scripted API-server answer: the method and path expected, the status and body sent.
    type Step = (http::Method, &'static str, u16, serde_json::Value);

    /// A client whose API server answers `script` in order (failing on anything else); the
    /// request bodies it got are in the returned list.
    fn scripted(
        script: Vec<Step>,
    ) -> (
        kube::Client,
        std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    ) {
        use http_body_util::{BodyExt, Full};
        let script = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
            script,
        )));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = bodies.clone();
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let (script, seen) = (script.clone(), seen.clone());
            async move {
                let (method, path, status, answer) = script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or_else(|| panic!("unexpected {} {}", req.method(), req.uri()));
                assert_eq!(req.method(), method, "{}", req.uri());
                assert_eq!(req.uri().path(), path);
                let body = req.into_body().collect().await?.to_bytes();
                if !body.is_empty() {
                    seen.lock().unwrap().push(serde_json::from_slice(&body)?);
                }
                let mut response = http::Response::new(Full::new(bytes::Bytes::from(
                    serde_json::to_vec(&answer)?,
                )));
                *response.status_mut() = http::StatusCode::from_u16(status)?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response)
            }
        });
        (kube::Client::new(service, "default"), bodies)
    }

    fn status(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{reason} (scripted)"), "reason": reason, "code": code})
    }

    const SECRETS: &str = "/api/v1/namespaces/smidge-system/secrets";
    const SECRET: &str = "/api/v1/namespaces/smidge-system/secrets/smidge-identity";
    const CONFIG: &str = "/api/v1/namespaces/smidge-system/configmaps/smidge-config";
    const CONFIGMAPS: &str = "/api/v1/namespaces/smidge-system/configmaps";
    const ANCHOR: &str = "/api/v1/namespaces/smidge-system/configmaps/smidge-trust-anchor";

    fn secret_json(anchor: &str) -> serde_json::Value {
        use base64::Engine;
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "smidge-identity", "namespace": "smidge-system"},
            "data": {"ca.crt": b64(anchor), "issuer.crt": b64("i"), "issuer.key": b64("k"), "token.key": b64("t")}})
    }

    fn anchor_of(secret: &Secret) -> String {
        let data = secret.data.as_ref().expect("data");
        String::from_utf8(data[ANCHOR_FILE].0.clone()).expect("utf-8")
    }

    #[tokio::test]
    async fn a_missing_secret_is_created_owned_by_smidge_config() {
        use http::Method;
        let config = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "smidge-config", "namespace": "smidge-system", "uid": "cfg-uid"}});
        let (client, bodies) = scripted(vec![
            (Method::GET, SECRET, 404, status(404, "NotFound")),
            (Method::GET, CONFIG, 200, config),
            (Method::POST, SECRETS, 201, secret_json("created")),
        ]);
        let (_, origin) =
            ensure_identity_secret(&client, "smidge-system", "smidge-identity", "cluster.local")
                .await
                .expect("created");
        assert_eq!(origin, Origin::Created);
        let posted = bodies.lock().unwrap()[0].clone();
        assert_eq!(posted["metadata"]["ownerReferences"][0]["uid"], "cfg-uid");
        assert_eq!(
            posted["metadata"]["ownerReferences"][0]["kind"],
            "ConfigMap"
        );
        let data = posted["data"].as_object().expect("data");
        assert_eq!(data.len(), 4, "{posted}");
    }

    #[tokio::test]
    async fn a_replica_that_loses_the_race_uses_the_winners_secret() {
        use http::Method;
        let (client, _) = scripted(vec![
            (Method::GET, SECRET, 404, status(404, "NotFound")),
            (Method::GET, CONFIG, 404, status(404, "NotFound")),
            (Method::POST, SECRETS, 409, status(409, "AlreadyExists")),
            (Method::GET, SECRET, 200, secret_json("the winner's anchor")),
        ]);
        let (secret, origin) =
            ensure_identity_secret(&client, "smidge-system", "smidge-identity", "cluster.local")
                .await
                .expect("the winner's");
        assert_eq!(origin, Origin::CreatedByAnother);
        assert_eq!(anchor_of(&secret), "the winner's anchor");
    }

    #[tokio::test]
    async fn an_existing_secret_is_used_and_never_written() {
        let (client, bodies) = scripted(vec![(
            http::Method::GET,
            SECRET,
            200,
            secret_json("existing"),
        )]);
        let (secret, origin) =
            ensure_identity_secret(&client, "smidge-system", "smidge-identity", "cluster.local")
                .await
                .expect("existing");
        assert_eq!(origin, Origin::Existing);
        assert_eq!(anchor_of(&secret), "existing");
        assert!(bodies.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_refused_create_names_the_secret_and_the_flag() {
        use http::Method;
        let (client, _) = scripted(vec![
            (Method::GET, SECRET, 404, status(404, "NotFound")),
            (Method::GET, CONFIG, 404, status(404, "NotFound")),
            (Method::POST, SECRETS, 403, status(403, "Forbidden")),
        ]);
        let e =
            ensure_identity_secret(&client, "smidge-system", "smidge-identity", "cluster.local")
                .await
                .expect_err("refused");
        let e = format!("{e:#}");
        assert!(
            e.contains("creating Secret smidge-system/smidge-identity (--identity-generate)")
                && e.contains("Forbidden"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_anchor_configmap_is_created_patched_or_left_alone() {
        use http::Method;
        let cm = |pem: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": TRUST_ANCHOR_CONFIGMAP, "namespace": "smidge-system"},
                "data": {"ca.crt": pem}})
        };
        // Missing: created (no owner without smidge-config).
        let (client, bodies) = scripted(vec![
            (Method::GET, ANCHOR, 404, status(404, "NotFound")),
            (Method::GET, CONFIG, 404, status(404, "NotFound")),
            (Method::POST, CONFIGMAPS, 201, cm("PEM")),
        ]);
        assert!(ensure_trust_anchor(&client, "smidge-system", "PEM")
            .await
            .expect("created"));
        let posted = bodies.lock().unwrap()[0].clone();
        assert_eq!(posted["data"]["ca.crt"], "PEM");
        assert!(posted["metadata"]["ownerReferences"].is_null());
        // Different: patched to the anchor.
        let (client, bodies) = scripted(vec![
            (Method::GET, ANCHOR, 200, cm("OLD")),
            (Method::PATCH, ANCHOR, 200, cm("PEM")),
        ]);
        assert!(ensure_trust_anchor(&client, "smidge-system", "PEM")
            .await
            .expect("patched"));
        assert_eq!(
            bodies.lock().unwrap()[0],
            serde_json::json!({"data": {"ca.crt": "PEM"}})
        );
        // Equal: no write.
        let (client, bodies) = scripted(vec![(Method::GET, ANCHOR, 200, cm("PEM"))]);
        assert!(!ensure_trust_anchor(&client, "smidge-system", "PEM")
            .await
            .expect("equal"));
        assert!(bodies.lock().unwrap().is_empty());
    }

    #[test]
    fn fingerprints_are_sha256_hex() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
