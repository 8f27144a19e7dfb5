//! Identity bootstrap: the trust material (from files or a Secret) and how proxies prove their
//! ServiceAccount (a local token, or TokenReview against the API server).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use smidge_controller::identity::{self, trust::SecretData, Authority, Proof, Trust};
use smidge_controller::push::server::Secured;

/// The identity flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: Option<PathBuf>,
    /// `NAMESPACE/NAME` of a Secret with the trust material.
    pub secret: Option<String>,
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
        (None, Some(secret), Some(client)) => Some(from_secret(secret, client).await?),
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

/// Reads the trust material from the Secret `NAMESPACE/NAME`.
async fn from_secret(secret: &str, client: &kube::Client) -> anyhow::Result<Trust> {
    let (ns, name) = secret
        .split_once('/')
        .context("--identity-secret must be NAMESPACE/NAME")?;
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), ns);
    let found = api
        .get(name)
        .await
        .with_context(|| format!("reading Secret {secret}"))?;
    let data = found.data.unwrap_or_default();
    Trust::from_source(&SecretData {
        name: secret.to_string(),
        data: &data,
    })
    .with_context(|| format!("--identity-secret {secret}"))
}
