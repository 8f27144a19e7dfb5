//! The only I/O of `smidge check`: reads what each category judges from the cluster, every
//! request through the API server (the controller's admin endpoint through its pod proxy), and
//! hands it to [`super::checks`].

use std::time::{SystemTime, UNIX_EPOCH};

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
use smidge_controller::labels;
use smidge_controller::push::connected::ProxyStatus;

use super::checks::{self, Access, DataPlane, Existence, Served, Webhook, CONTROLLER};
use super::{check, Outcome};

/// The controller's admin port (where `/proxies` is served).
pub const ADMIN_PORT: u16 = 9996;
/// The webhook's container port, when the EndpointSlice names none.
pub const WEBHOOK_PORT: u16 = 8443;

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

/// Whether category `c` still runs after the fatal failure `failed` in `stopped`: the data
/// plane's pods are read from the API server alone, so they are judged (un-meshed pods named)
/// when the installed controller or its webhook is down; not when smidge is not installed or the
/// API server did not answer.
pub fn runs_after_a_fatal_failure_in(
    stopped: Category,
    failed: &super::Outcome,
    c: Category,
) -> bool {
    c == Category::DataPlane
        && matches!(
            stopped,
            Category::Existence | Category::Identity | Category::Webhook
        )
        && failed.check.anchor != "smidge-ns"
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
    let served = match ready_controller_pods(client, ns).await {
        Err(e) => Err(e),
        Ok(pods) => {
            let mut all = Ok(Vec::new());
            for pod in pods {
                match webhook_cert_of(client, ns, &pod).await {
                    Ok(chain) => {
                        if let Ok(list) = all.as_mut() {
                            list.push(Served {
                                from: format!("pod {pod}"),
                                chain,
                            });
                        }
                    }
                    Err(e) => all = Err(e),
                }
            }
            all
        }
    };
    Webhook {
        endpoints: endpoints.map(|e| {
            e.into_iter()
                .map(|(ip, port)| format!("{ip}:{port}"))
                .collect()
        }),
        conversion: dry_run_conversion(client, ns).await,
        injector_bundle,
        crd_bundles,
        served,
        now: now(),
    }
}

/// Creates (dry run: nothing is stored) a TrafficSplit at v1alpha1, which the API server must
/// convert to the stored version through the webhook, dialling the Service and trusting the
/// CRD's caBundle for its name, as it does for every real conversion.
async fn dry_run_conversion(client: &Client, ns: &str) -> Result<(), String> {
    let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "split.smi-spec.io",
        "v1alpha1",
        "TrafficSplit",
    ));
    let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "split.smi-spec.io/v1alpha1",
        "kind": "TrafficSplit",
        "metadata": {"name": "smidge-check-conversion", "namespace": ns},
        "spec": {"service": "smidge-check", "backends": [{"service": "smidge-check", "weight": "1"}]}
    }))
    .map_err(err)?;
    Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .create(&PostParams { dry_run: true, ..PostParams::default() }, &object)
        .await
        .map(|_| ())
        .map_err(|e| format!("a dry-run create of a split.smi-spec.io/v1alpha1 TrafficSplit (converted by the webhook): {e}"))
}

/// The names of the ready controller pods.
async fn ready_controller_pods(client: &Client, ns: &str) -> Result<Vec<String>, String> {
    Ok(controller_pods(client, ns)
        .await?
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
        })
        .filter_map(|p| p.metadata.name)
        .collect())
}

/// The chain one controller pod's webhook serves: its admin endpoint's `/webhook-cert` (a TLS
/// handshake it makes with its own webhook listener), read through the API server's pod proxy,
/// so the check needs no route to pod IPs.
async fn webhook_cert_of(client: &Client, ns: &str, pod: &str) -> Result<Vec<Vec<u8>>, String> {
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:{ADMIN_PORT}/proxy/webhook-cert");
    let request = http::Request::get(&path).body(Vec::new()).map_err(err)?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    super::certs::parse_pem(&text).map_err(|e| format!("GET {path}: {e}"))
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
    let proxies = match ready_controller_pods(client, ns).await {
        Err(e) => Err(e),
        Ok(pods) if pods.is_empty() => Err("no ready controller pod to ask".into()),
        Ok(pods) => {
            let mut all = Vec::new();
            let mut result = Ok(());
            for pod in &pods {
                match proxies_of(client, ns, pod).await {
                    Ok(list) => all.extend(list),
                    Err(e) => result = Err(e),
                }
            }
            result.map(|()| all)
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
