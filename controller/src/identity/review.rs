//! Checking a proxy's proof of its ServiceAccount: a local token (the `file` provider and the
//! local cluster) or, in Kubernetes, a projected, audience-bound token checked with TokenReview.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::token::{unverified_exp, Claims, TokenKey, AUDIENCE};

/// How the controller checks tokens.
pub enum Proof {
    Local(TokenKey),
    Kubernetes(TokenReviewer),
}

impl Proof {
    /// The claims a token proves. Errors never contain the token. With TokenReview the API server
    /// is asked again at every call (so a deleted pod's token stops working).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Claims, String> {
        match self {
            Proof::Local(key) => key.verify(token, now).map_err(|e| e.to_string()),
            Proof::Kubernetes(reviewer) => reviewer.review(token).await,
        }
    }
}

/// Asks the API server who a token belongs to.
pub struct TokenReviewer {
    client: kube::Client,
}

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        TokenReviewer { client }
    }

    pub async fn review(&self, token: &str) -> Result<Claims, String> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let status = answer
            .status
            .ok_or("TokenReview answered without a status")?;
        if status.authenticated != Some(true) {
            return Err(format!(
                "the API server did not authenticate the token: {}",
                status.error.unwrap_or_else(|| "no reason given".into())
            ));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == AUDIENCE)
        {
            return Err(format!("the token is not bound to audience {AUDIENCE:?}"));
        }
        let user = status.user.ok_or("TokenReview answered without a user")?;
        let username = user.username.unwrap_or_default();
        let Some((ns, sa)) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
        else {
            return Err(format!("{username:?} is not a ServiceAccount"));
        };
        let pod = user
            .extra
            .as_ref()
            .and_then(|extra| extra.get(POD_NAME))
            .and_then(|values| values.first())
            .cloned()
            .ok_or("the token is not bound to a pod (use a projected ServiceAccount token)")?;
        Ok(Claims {
            ns: ns.to_string(),
            sa: sa.to_string(),
            pod,
            aud: AUDIENCE.to_string(),
            // The API server checked the token; its exp (when it has one) bounds certificates.
            exp: unverified_exp(token).unwrap_or(u64::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};

    /// A client whose API server answers every TokenReview with `status`, after checking the
    /// request is a TokenReview create carrying the token and our audience.
    fn reviewer(status: serde_json::Value) -> TokenReviewer {
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let status = status.clone();
            async move {
                assert_eq!(req.method(), http::Method::POST);
                assert_eq!(
                    req.uri().path(),
                    "/apis/authentication.k8s.io/v1/tokenreviews"
                );
                let body = req.into_body().collect().await?.to_bytes();
                let sent: serde_json::Value = serde_json::from_slice(&body)?;
                assert_eq!(sent["spec"]["token"], "the-token");
                assert_eq!(sent["spec"]["audiences"][0], AUDIENCE);
                let answer = serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "metadata": {"creationTimestamp": null},
                    "spec": sent["spec"],
                    "status": status,
                });
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(Full::new(
                    Bytes::from(serde_json::to_vec(&answer)?),
                )))
            }
        });
        TokenReviewer::new(kube::Client::new(service, "default"))
    }

    #[tokio::test]
    async fn a_projected_token_names_its_service_account_and_pod() {
        let r = reviewer(serde_json::json!({
            "authenticated": true,
            "audiences": [AUDIENCE],
            "user": {
                "username": "system:serviceaccount:shop:checkout",
                "extra": {"authentication.kubernetes.io/pod-name": ["checkout-7d9f"]},
            },
        }));
        let claims = r.review("the-token").await.expect("admitted");
        assert_eq!(
            (claims.ns.as_str(), claims.sa.as_str(), claims.pod.as_str()),
            ("shop", "checkout", "checkout-7d9f")
        );
    }

    #[tokio::test]
    async fn unauthenticated_unbound_or_foreign_tokens_are_refused() {
        let refused =
            reviewer(serde_json::json!({"authenticated": false, "error": "token expired"}));
        let e = refused.review("the-token").await.expect_err("refused");
        assert!(
            e.contains("token expired") && !e.contains("the-token"),
            "{e}"
        );

        let other_audience = reviewer(serde_json::json!({
            "authenticated": true, "audiences": ["https://kubernetes.default.svc"],
            "user": {"username": "system:serviceaccount:shop:checkout"},
        }));
        assert!(other_audience.review("the-token").await.is_err());

        let a_person = reviewer(serde_json::json!({
            "authenticated": true, "audiences": [AUDIENCE], "user": {"username": "alice"},
        }));
        assert!(a_person.review("the-token").await.is_err());

        let no_pod = reviewer(serde_json::json!({
            "authenticated": true, "audiences": [AUDIENCE],
            "user": {"username": "system:serviceaccount:shop:checkout"},
        }));
        let e = no_pod.review("the-token").await.expect_err("refused");
        assert!(e.contains("not bound to a pod"), "{e}");
    }
}
