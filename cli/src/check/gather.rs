//! The only I/O of `smidge check`: reads what each category judges from the cluster (and, for
//! the webhook's certificate, from the controller pod itself) and hands it to [`super::checks`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use smidge_controller::labels;
use smidge_controller::push::connected::ProxyStatus;

use super::checks::{self, Access, DataPlane, Existence, Served, Webhook, CONTROLLER};
use super::{check, Outcome};

/// The controller's admin port (where `/proxies` is served).
pub const ADMIN_PORT: u16 = 9996;
/// The webhook's container port, when the EndpointSlice names none.
pub const WEBHOOK_PORT: u16 = 8443;
/// How long one TLS probe of the webhook may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The categories, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    KubernetesApi,
    KubernetesVersion,
    Pre,
    Crds,
    Existence,
    Identity,
    Webhook,
    DataPlane,
}

/// The categories `smidge check` (or `--pre`) runs, with their names.
pub fn categories(pre: bool) -> Vec<(&'static str, Category)> {
    let mut list = vec![
        ("kubernetes-api", Category::KubernetesApi),
        ("kubernetes-version", Category::KubernetesVersion),
    ];
    if pre {
        list.push(("pre-kubernetes-setup", Category::Pre));
    } else {
        list.extend([
            ("smidge-crds", Category::Crds),
            ("smidge-existence", Category::Existence),
            ("smidge-identity", Category::Identity),
            ("smidge-webhook", Category::Webhook),
            ("smidge-data-plane", Category::DataPlane),
        ]);
    }
    list
}

/// The client (or why there is none) and the control plane's namespace.
pub struct Gatherer {
    pub client: Result<Client, String>,
    pub namespace: String,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What the install creates: (shown as, API group, resource, namespaced).
pub const INSTALL_KINDS: &[(&str, &str, &str, bool)] = &[
    ("Namespaces", "", "namespaces", false),
    (
        "CustomResourceDefinitions",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        false,
    ),
    (
        "ClusterRoles",
        "rbac.authorization.k8s.io",
        "clusterroles",
        false,
    ),
    (
        "ClusterRoleBindings",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        false,
    ),
    (
        "MutatingWebhookConfigurations",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        false,
    ),
    ("ServiceAccounts", "", "serviceaccounts", true),
    ("Deployments", "apps", "deployments", true),
    ("Services", "", "services", true),
    ("Secrets", "", "secrets", true),
    ("ConfigMaps", "", "configmaps", true),
];

impl Gatherer {
    /// Reads and judges one category.
    pub async fn evaluate(&self, category: Category) -> Vec<Outcome> {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return checks::kubernetes_api(Err(e.clone()), &Err(String::new())),
        };
        let ns = self.namespace.as_str();
        match category {
            Category::KubernetesApi => {
                checks::kubernetes_api(Ok(()), &client.apiserver_version().await.map_err(err))
            }
            Category::KubernetesVersion => match client.apiserver_version().await {
                Ok(info) => checks::kubernetes_version(&info),
                Err(e) => vec![check(
                    "is running the minimum Kubernetes API version",
                    "k8s-version",
                )
                .result(Err(e.to_string()))],
            },
            Category::Pre => {
                let exists = Api::<Namespace>::all(client.clone())
                    .get_opt(ns)
                    .await
                    .map(|n| n.is_some())
                    .map_err(err);
                let mut access = Vec::new();
                for (label, group, resource, namespaced) in INSTALL_KINDS {
                    let answer = can_create(&client, group, resource, namespaced.then_some(ns));
                    access.push((*label, answer.await));
                }
                checks::pre(ns, &exists, &access)
            }
            Category::Crds => checks::crds(ns, &smi_crds(&client).await, &expected_crds()),
            Category::Existence => checks::existence(ns, &existence(&client, ns).await),
            Category::Identity => {
                let secret = Api::<Secret>::namespaced(client, ns)
                    .get_opt(checks::IDENTITY_SECRET)
                    .await
                    .map_err(err);
                checks::identity(ns, &secret, now())
            }
            Category::Webhook => checks::webhook(ns, &webhook(&client, ns).await),
            Category::DataPlane => checks::data_plane(&data_plane(&client, ns).await),
        }
    }
}

async fn can_create(
    client: &Client,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> Result<Access, String> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                verb: Some("create".into()),
                namespace: namespace.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| format!("asking whether {resource} may be created: {e}"))?;
    let status = answer
        .status
        .ok_or("the SelfSubjectAccessReview came back without a status")?;
    Ok(Access {
        allowed: status.allowed,
        reason: status.reason.unwrap_or_default(),
    })
}

/// The CRDs smidge ships.
fn expected_crds() -> Vec<CustomResourceDefinition> {
    smidge_controller::crds::all()
        .into_iter()
        .map(|(_, crd)| crd)
        .collect()
}

/// The installed CRDs with the names of smidge's.
async fn smi_crds(client: &Client) -> Result<Vec<CustomResourceDefinition>, String> {
    let names: Vec<String> = expected_crds()
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let all = Api::<CustomResourceDefinition>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing CustomResourceDefinitions: {e}"))?;
    Ok(all
        .items
        .into_iter()
        .filter(|c| c.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
        .collect())
}

fn controller_selector() -> String {
    format!("{}=controller", labels::COMPONENT)
}

async fn controller_pods(client: &Client, ns: &str) -> Result<Vec<Pod>, String> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&controller_selector()))
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing the controller's pods: {e}"))
}

async fn existence(client: &Client, ns: &str) -> Existence {
    Existence {
        namespace: Api::<Namespace>::all(client.clone())
            .get_opt(ns)
            .await
            .map_err(err),
        deployment: Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt(CONTROLLER)
            .await
            .map_err(err),
        pods: controller_pods(client, ns).await,
        lease: Api::<Lease>::namespaced(client.clone(), ns)
            .get_opt(checks::LEASE)
            .await
            .map_err(err),
        now: now(),
    }
}

fn bundle_text(bytes: &k8s_openapi::ByteString) -> Option<String> {
    String::from_utf8(bytes.0.clone()).ok()
}

/// The ready addresses of the controller Service's EndpointSlices, with the webhook's port.
async fn webhook_endpoints(client: &Client, ns: &str) -> Result<Vec<(String, u16)>, String> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={CONTROLLER}")))
        .await
        .map_err(|e| format!("listing the EndpointSlices of {ns}/{CONTROLLER}: {e}"))?;
    let mut out = Vec::new();
    for slice in slices.items {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("webhook"))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(WEBHOOK_PORT);
        for endpoint in slice.endpoints.into_iter().flatten() {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if ready {
                out.extend(endpoint.addresses.into_iter().map(|a| (a, port)));
            }
        }
    }
    Ok(out)
}

async fn webhook(client: &Client, ns: &str) -> Webhook {
    let endpoints = webhook_endpoints(client, ns).await;
    let injector_bundle = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(checks::INJECTOR_MWC)
        .await
        .map(|mwc| {
            mwc.map(|m| {
                m.webhooks
                    .iter()
                    .flatten()
                    .find_map(|w| w.client_config.ca_bundle.as_ref().and_then(bundle_text))
                    .unwrap_or_default()
            })
        })
        .map_err(err);
    let crd_bundles = match smi_crds(client).await {
        Ok(crds) => crds
            .into_iter()
            .filter(|c| {
                c.spec
                    .conversion
                    .as_ref()
                    .is_some_and(|c| c.strategy == "Webhook")
            })
            .map(|c| {
                let bundle = c
                    .spec
                    .conversion
                    .as_ref()
                    .and_then(|c| c.webhook.as_ref())
                    .and_then(|w| w.client_config.as_ref())
                    .and_then(|c| c.ca_bundle.as_ref())
                    .and_then(bundle_text);
                (c.metadata.name.unwrap_or_default(), bundle)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let served = match endpoints.as_ref().ok().and_then(|e| e.first()) {
        Some((ip, port)) => probe(ip, *port, &format!("{CONTROLLER}.{ns}.svc")).await,
        None => Err("no ready endpoint to probe".into()),
    };
    Webhook {
        endpoints: endpoints.map(|e| {
            e.into_iter()
                .map(|(ip, port)| format!("{ip}:{port}"))
                .collect()
        }),
        injector_bundle,
        crd_bundles,
        served,
        now: now(),
    }
}

/// Accepts any server certificate and keeps the chain, which [`checks::webhook`] then verifies
/// against each caBundle. The handshake's signatures are still checked, so the chain belongs to
/// the server that answered.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.to_vec())
                .collect();
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS handshake with the webhook's pod, straight from this machine to the pod IP (the API
/// server's service proxy would hide the certificate), presenting `name` as SNI.
async fn probe(ip: &str, port: u16, name: &str) -> Result<Served, String> {
    let addr = format!("{ip}:{port}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(name.to_string()).map_err(err)?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| {
            format!(
                "cannot reach the webhook at {addr} from this machine ({e}); the check dials the \
                 pod IP directly, so run it where pod IPs are routable"
            )
        })?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))
    };
    tokio::time::timeout(PROBE_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("no TLS handshake with {addr} within {PROBE_TIMEOUT:?}"))??;
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(Served {
        from: format!("{addr}, directly from this machine"),
        chain,
    })
}

/// `/proxies` of one controller pod, read through the API server's pod proxy.
async fn proxies_of(client: &Client, ns: &str, pod: &str) -> Result<Vec<ProxyStatus>, String> {
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:{ADMIN_PORT}/proxy/proxies");
    let request = http::Request::get(&path).body(Vec::new()).map_err(err)?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("GET {path}: not the expected JSON: {e}"))
}

async fn data_plane(client: &Client, ns: &str) -> DataPlane {
    let meshed = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}={ns}", labels::MESHED)))
        .await
        .map(|l| l.items)
        .map_err(|e| format!("listing meshed pods: {e}"));
    // Each proxy is connected to one replica: every ready replica's list, merged.
    let proxies = match controller_pods(client, ns).await {
        Err(e) => Err(e),
        Ok(pods) => {
            let mut all = Vec::new();
            let mut result = Ok(());
            let ready = pods.iter().filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            });
            let mut asked = 0;
            for pod in ready {
                asked += 1;
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                match proxies_of(client, ns, name).await {
                    Ok(list) => all.extend(list),
                    Err(e) => result = Err(e),
                }
            }
            match (result, asked) {
                (Err(e), _) => Err(e),
                (Ok(()), 0) => Err("no ready controller pod to ask".into()),
                (Ok(()), _) => Ok(all),
            }
        }
    };
    let in_injected_namespaces = injected_namespace_pods(client).await;
    DataPlane {
        meshed,
        proxies,
        in_injected_namespaces,
    }
}

/// The pods of every namespace with injection enabled (label or annotation).
async fn injected_namespace_pods(client: &Client) -> Result<Vec<Pod>, String> {
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing namespaces: {e}"))?;
    let enabled = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get(labels::INJECT))
            .is_some_and(|v| v == labels::INJECT_ENABLED)
    };
    let mut pods = Vec::new();
    for n in namespaces.items {
        if !(enabled(&n.metadata.labels) || enabled(&n.metadata.annotations)) {
            continue;
        }
        let Some(name) = n.metadata.name else {
            continue;
        };
        let list = Api::<Pod>::namespaced(client.clone(), &name)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing the pods of {name}: {e}"))?;
        pods.extend(list.items);
    }
    Ok(pods)
}
