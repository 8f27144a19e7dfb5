//! Identity bootstrap: the trust material (from files or a Secret) and how proxies prove their
//! ServiceAccount (a local token, or TokenReview against the API server).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use smidge_controller::identity::{self, stored, trust::SecretData, Authority, Proof, Trust};
use smidge_controller::push::server::Secured;

/// The identity flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: Option<PathBuf>,
    /// `NAMESPACE/NAME` of a Secret with the trust material.
    pub secret: Option<String>,
    /// Create that Secret with fresh trust material when it is missing.
    pub generate: bool,
    pub token_review: bool,
    pub trust_domain: String,
    pub cert_lifetime: Duration,
    /// The DNS name in the controller's own certificate.
    pub name: String,
}

impl Settings {
    /// Whether bootstrap needs the Kubernetes API.
    pub fn needs_kubernetes(&self) -> bool {
        self.secret.is_some() || self.token_review
    }
}

/// The TLS and certificate authority of the push server, or `None` (plaintext, development
/// only) without trust material.
pub async fn bootstrap(
    settings: &Settings,
    client: Option<&kube::Client>,
) -> anyhow::Result<Option<Arc<Secured>>> {
    let trust = match (&settings.dir, &settings.secret, client) {
        (Some(dir), _, _) => {
            Some(Trust::load(dir).with_context(|| format!("--identity-dir {}", dir.display()))?)
        }
        (None, Some(secret), Some(client)) => Some(from_secret(secret, settings, client).await?),
        (None, Some(_), None) => anyhow::bail!("--identity-secret needs the Kubernetes API"),
        (None, None, _) => None,
    };
    let Some(trust) = trust else {
        if settings.token_review {
            anyhow::bail!(
                "--token-review needs trust material (--identity-dir or --identity-secret)"
            );
        }
        tracing::warn!(
            "no --identity-dir: the control channel is plaintext and proxies get no certificates"
        );
        return Ok(None);
    };
    let proof = match (client, settings.token_review) {
        (Some(client), true) => Proof::Kubernetes(identity::TokenReviewer::new(client.clone())),
        (None, true) => anyhow::bail!("--token-review needs the Kubernetes API"),
        (_, false) => Proof::Local(trust.token_key.clone()),
    };
    let authority = Arc::new(Authority::new(
        trust,
        &settings.trust_domain,
        settings.cert_lifetime,
    )?);
    let tls = tokio_rustls::TlsAcceptor::from(authority.server_config(&settings.name)?);
    Ok(Some(Arc::new(Secured {
        authority,
        tls,
        proof: Arc::new(proof),
    })))
}

/// `NAMESPACE/NAME` of `--identity-secret`.
fn split_secret(secret: &str) -> anyhow::Result<(&str, &str)> {
    secret
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .with_context(|| format!("--identity-secret {secret:?} must be NAMESPACE/NAME"))
}

/// Reads the trust material from the Secret `NAMESPACE/NAME`; with `--identity-generate`
/// creates it first when it is missing.
async fn from_secret(
    secret: &str,
    settings: &Settings,
    client: &kube::Client,
) -> anyhow::Result<Trust> {
    let (ns, name) = split_secret(secret)?;
    let found = if settings.generate {
        let (found, origin) =
            stored::ensure_identity_secret(client, ns, name, &settings.trust_domain).await?;
        tracing::info!(secret = %secret, ?origin, "identity Secret (--identity-generate)");
        found
    } else {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client.clone(), ns);
        api.get(name)
            .await
            .with_context(|| format!("reading Secret {secret}"))?
    };
    let data = found.data.unwrap_or_default();
    let trust = Trust::from_source(&SecretData {
        name: secret.to_string(),
        data: &data,
    })
    .with_context(|| format!("--identity-secret {secret}"))?;
    tracing::info!(secret = %secret, anchor_sha256 = %stored::fingerprint(&trust.anchor_der), "trust anchor");
    Ok(trust)
}

/// How often every replica checks the trust-anchor ConfigMap.
const TRUST_ANCHOR_EVERY: Duration = Duration::from_secs(10);

/// The task that keeps ConfigMap `smidge-trust-anchor` in the identity Secret's namespace equal to
/// the anchor served; `None` without a Secret (or a client).
pub fn trust_anchor_task(
    settings: &Settings,
    client: Option<&kube::Client>,
    secured: Option<&Secured>,
) -> anyhow::Result<Option<impl std::future::Future<Output = ()> + Send + 'static>> {
    let (Some(secret), Some(client), Some(secured)) = (&settings.secret, client, secured) else {
        return Ok(None);
    };
    let (ns, _) = split_secret(secret)?;
    Ok(Some(stored::maintain_trust_anchor(
        client.clone(),
        ns.to_string(),
        secured.authority.anchor_pem.clone(),
        TRUST_ANCHOR_EVERY,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_flag_needs_a_namespace_and_a_name() {
        assert_eq!(
            split_secret("smidge-system/smidge-identity").expect("ok"),
            ("smidge-system", "smidge-identity")
        );
        for bad in ["smidge-identity", "/x", "x/", ""] {
            let e = split_secret(bad).expect_err(bad).to_string();
            assert!(e.contains("NAMESPACE/NAME"), "{e}");
        }
    }
}
