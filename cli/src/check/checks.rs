//! The checks of each category, judged from what [`super::gather`] read. Pure: every fact,
//! including the time, comes in as a parameter, and a failed read arrives as `Err(text)`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::version::Info;
use smidge_controller::labels;
use smidge_controller::push::connected::ProxyStatus;

use super::certs::{self, Summary};
use super::{check, Outcome};

/// The oldest Kubernetes smidge supports (as Linkerd's minimum).
pub const MIN_KUBERNETES: (u32, u32) = (1, 31);

/// Names of the install, fixed by the chart.
pub const CONTROLLER: &str = "smidge-controller";
pub const IDENTITY_SECRET: &str = "smidge-identity";
pub const INJECTOR_MWC: &str = "smidge-injector";
pub const LEASE: &str = "smidge-controller-status";
/// The proxy container the injector adds.
pub const PROXY_CONTAINER: &str = "smidge-proxy";

/// `kubernetes-api`: the client could be built and the API server answers.
pub fn kubernetes_api(client: Result<(), String>, query: &Result<Info, String>) -> Vec<Outcome> {
    let mut out = vec![check("can initialize the client", "k8s-api")
        .fatal()
        .result(client.clone())];
    if client.is_ok() {
        out.push(
            check("can query the Kubernetes API", "k8s-api")
                .fatal()
                .result(query.as_ref().map(|_| ()).map_err(Clone::clone)),
        );
    }
    out
}

/// `1`, `31+` (as some distributions write the minor) → numbers.
fn version_number(s: &str) -> Option<u32> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `kubernetes-version`: at least [`MIN_KUBERNETES`].
pub fn kubernetes_version(info: &Info) -> Vec<Outcome> {
    let c = check(
        "is running the minimum Kubernetes API version",
        "k8s-version",
    );
    let parsed = version_number(&info.major).zip(version_number(&info.minor));
    let result = match parsed {
        None => Err(format!(
            "cannot read the API server's version (major {:?}, minor {:?}, {})",
            info.major, info.minor, info.git_version
        )),
        Some(v) if v < MIN_KUBERNETES => Err(format!(
            "the API server runs {} but smidge needs {}.{} or later",
            info.git_version, MIN_KUBERNETES.0, MIN_KUBERNETES.1
        )),
        Some(_) => Ok(()),
    };
    vec![c.result(result)]
}

/// What a SelfSubjectAccessReview answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub allowed: bool,
    pub reason: String,
}

/// `pre-kubernetes-setup`: the namespace is new, and the user may create what the install
/// creates (`access`: a label such as `CustomResourceDefinitions` and the review's answer).
pub fn pre(
    namespace: &str,
    exists: &Result<bool, String>,
    access: &[(&str, Result<Access, String>)],
) -> Vec<Outcome> {
    let mut out = vec![
        check("control plane namespace does not already exist", "pre-ns")
            .warning()
            .result(match exists {
                Ok(false) => Ok(()),
                Ok(true) => Err(format!(
            "the namespace {namespace} already exists (fine when you install into it on purpose)"
        )),
                Err(e) => Err(e.clone()),
            }),
    ];
    for (kind, answer) in access {
        out.push(
            check(format!("can create {kind}"), "pre-k8s-access").result(match answer {
                Ok(a) if a.allowed => Ok(()),
                Ok(a) if a.reason.is_empty() => Err(format!("not allowed to create {kind}")),
                Ok(a) => Err(format!("not allowed to create {kind}: {}", a.reason)),
                Err(e) => Err(e.clone()),
            }),
        );
    }
    out
}

fn served_versions(crd: &CustomResourceDefinition) -> BTreeSet<&str> {
    crd.spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.as_str())
        .collect()
}

/// `smidge-crds`: every SMI CRD smidge ships is installed, serves every version smidge serves,
/// and has its conversion webhook wired to the controller with a CA bundle.
pub fn crds(
    namespace: &str,
    installed: &Result<Vec<CustomResourceDefinition>, String>,
    expected: &[CustomResourceDefinition],
) -> Vec<Outcome> {
    let installed = match installed {
        Ok(list) => list,
        Err(e) => {
            return vec![check("SMI CustomResourceDefinitions exist", "smidge-crds")
                .fatal()
                .result(Err(e.clone()))]
        }
    };
    let by_name: BTreeMap<&str, &CustomResourceDefinition> = installed
        .iter()
        .filter_map(|c| Some((c.metadata.name.as_deref()?, c)))
        .collect();
    let missing: Vec<&str> = expected
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .filter(|n| !by_name.contains_key(n))
        .collect();
    let exist = check("SMI CustomResourceDefinitions exist", "smidge-crds")
        .fatal()
        .retry()
        .result(if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing: {}", missing.join(", ")))
        });
    if !exist.passed() {
        return vec![exist];
    }
    let pairs: Vec<(&str, &CustomResourceDefinition, &CustomResourceDefinition)> = expected
        .iter()
        .filter_map(|e| {
            let name = e.metadata.name.as_deref()?;
            Some((name, e, *by_name.get(name)?))
        })
        .collect();
    let mut unserved = Vec::new();
    for (name, want, have) in &pairs {
        let have = served_versions(have);
        for v in served_versions(want) {
            if !have.contains(v) {
                unserved.push(format!("{name} {v}"));
            }
        }
    }
    let serving = check(
        "SMI CustomResourceDefinitions serve every version",
        "smidge-crds-versions",
    )
    .result(if unserved.is_empty() {
        Ok(())
    } else {
        Err(format!("not served: {}", unserved.join(", ")))
    });
    let mut conversion_problems = Vec::new();
    for (name, want, have) in &pairs {
        let wants_webhook = want
            .spec
            .conversion
            .as_ref()
            .is_some_and(|c| c.strategy == "Webhook");
        if !wants_webhook {
            continue;
        }
        let Some(conversion) = have
            .spec
            .conversion
            .as_ref()
            .filter(|c| c.strategy == "Webhook")
        else {
            conversion_problems.push(format!("{name}: no conversion webhook"));
            continue;
        };
        let config = conversion
            .webhook
            .as_ref()
            .and_then(|w| w.client_config.as_ref());
        let service = config.and_then(|c| c.service.as_ref());
        match service {
            Some(s) if s.name == CONTROLLER && s.namespace == namespace => {}
            Some(s) => conversion_problems.push(format!(
                "{name}: the webhook is Service {}/{}, not {namespace}/{CONTROLLER}",
                s.namespace, s.name
            )),
            None if config.and_then(|c| c.url.as_ref()).is_some() => {}
            None => conversion_problems.push(format!("{name}: the webhook names no Service")),
        }
        if config
            .and_then(|c| c.ca_bundle.as_ref())
            .is_none_or(|b| b.0.is_empty())
        {
            conversion_problems.push(format!("{name}: no caBundle (yet)"));
        }
    }
    let conversion = check(
        "SMI CustomResourceDefinitions have their conversion webhook configured",
        "smidge-crds-conversion",
    )
    .retry()
    .result(if conversion_problems.is_empty() {
        Ok(())
    } else {
        Err(conversion_problems.join("; "))
    });
    vec![exist, serving, conversion]
}

fn pod_name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("?")
}

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// What a pod lacks to be ready, for messages.
fn not_ready_reason(p: &Pod) -> String {
    if p.metadata.deletion_timestamp.is_some() {
        return "terminating".into();
    }
    let Some(s) = p.status.as_ref() else {
        return "no status yet".into();
    };
    let phase = s.phase.as_deref().unwrap_or("Unknown");
    if phase != "Running" {
        return phase.to_string();
    }
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.message.clone().or(c.reason.clone()))
        .unwrap_or_else(|| "not ready".into())
}

/// What `smidge-existence` reads.
pub struct Existence {
    pub namespace: Result<Option<Namespace>, String>,
    pub deployment: Result<Option<Deployment>, String>,
    /// The controller's pods (by its component label).
    pub pods: Result<Vec<Pod>, String>,
    pub lease: Result<Option<Lease>, String>,
    /// Unix seconds.
    pub now: i64,
}

/// `smidge-existence`: the namespace, the controller Deployment and its pods ready, and a live
/// controller pod holding the status writer's Lease.
pub fn existence(ns: &str, f: &Existence) -> Vec<Outcome> {
    let namespace = check("control plane namespace exists", "smidge-ns")
        .fatal()
        .result(match &f.namespace {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!("the namespace {ns} does not exist: is smidge installed (helm install smidge charts/smidge -n {ns} --create-namespace)?")),
            Err(e) => Err(e.clone()),
        });
    if !namespace.passed() {
        return vec![namespace];
    }
    let deployment = check(
        "controller Deployment has its replicas ready",
        "smidge-controller",
    )
    .fatal()
    .retry()
    .result(match &f.deployment {
        Err(e) => Err(e.clone()),
        Ok(None) => Err(format!("the Deployment {ns}/{CONTROLLER} does not exist")),
        Ok(Some(d)) => {
            let want = d.spec.replicas.unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            if want == 0 {
                Err(format!("the Deployment {ns}/{CONTROLLER} is scaled to 0"))
            } else if ready < want {
                Err(format!(
                    "{ready}/{want} replicas of {ns}/{CONTROLLER} are ready"
                ))
            } else {
                Ok(())
            }
        }
    });
    if !deployment.passed() {
        return vec![namespace, deployment];
    }
    let pods = check("controller pods are ready", "smidge-controller")
        .fatal()
        .retry()
        .result(match &f.pods {
            Err(e) => Err(e.clone()),
            Ok(pods) if pods.is_empty() => Err(format!("no controller pods in {ns}")),
            Ok(pods) => {
                let not_ready: Vec<String> = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && !pod_ready(p))
                    .map(|p| format!("{} ({})", pod_name(p), not_ready_reason(p)))
                    .collect();
                if not_ready.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not ready: {}", not_ready.join(", ")))
                }
            }
        });
    if !pods.passed() {
        return vec![namespace, deployment, pods];
    }
    let live: BTreeSet<&str> = f
        .pods
        .iter()
        .flatten()
        .filter(|p| pod_ready(p))
        .map(pod_name)
        .collect();
    let leader = check("the controller's leader is known", "smidge-leader")
        .retry()
        .result(match &f.lease {
            Err(e) => Err(e.clone()),
            Ok(None) => Err(format!(
                "no Lease {ns}/{LEASE}: no replica has claimed leadership yet"
            )),
            Ok(Some(lease)) => leader(ns, lease, &live, f.now),
        });
    vec![namespace, deployment, pods, leader]
}

fn leader(ns: &str, lease: &Lease, live: &BTreeSet<&str>, now: i64) -> Result<(), String> {
    let spec = lease.spec.as_ref();
    let Some(holder) = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
    else {
        return Err(format!("the Lease {ns}/{LEASE} has no holder"));
    };
    if !live.contains(holder) {
        return Err(format!(
            "the Lease {ns}/{LEASE} is held by {holder:?}, which is not a ready controller pod (ready: {})",
            live.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    let renewed = spec
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .map(|t| t.0.as_second());
    let duration = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
    match renewed {
        Some(at) if at + i64::from(duration) >= now => Ok(()),
        Some(at) => Err(format!(
            "{holder} last renewed the Lease {ns}/{LEASE} at {}, and its {duration} s term has run out",
            certs::iso(at)
        )),
        None => Err(format!("the Lease {ns}/{LEASE} was never renewed")),
    }
}

fn parse_one(data: &Secret, key: &str, what: &str) -> Result<(Vec<u8>, Summary), String> {
    let bytes = data
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("the Secret has no key {key} ({what})"))?;
    let text = std::str::from_utf8(&bytes.0).map_err(|_| format!("{key} is not text"))?;
    let der = certs::parse_pem(text)
        .map_err(|e| format!("{key}: {e}"))?
        .remove(0);
    let summary = certs::summary(&der).map_err(|e| format!("{key}: {e}"))?;
    if !summary.is_ca {
        return Err(format!(
            "{key}: {} is not a CA certificate",
            summary.subject
        ));
    }
    Ok((der, summary))
}

/// `smidge-identity`: the trust anchor and issuer in Secret `smidge-identity` parse, the
/// issuer is signed by the anchor, both are valid and not within 60 days of expiry.
pub fn identity(ns: &str, secret: &Result<Option<Secret>, String>, now: i64) -> Vec<Outcome> {
    let exists = check("identity Secret exists", "smidge-identity")
        .fatal()
        .retry()
        .result(match secret {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(format!(
                "no Secret {ns}/{IDENTITY_SECRET} (the controller creates it with --identity-generate)"
            )),
            Err(e) => Err(e.clone()),
        });
    let Ok(Some(secret)) = secret else {
        return vec![exists];
    };
    let mut out = vec![exists];
    let anchor = parse_one(secret, "ca.crt", "the trust anchor");
    let issuer = parse_one(secret, "issuer.crt", "the issuer");
    let cert_checks = |out: &mut Vec<Outcome>,
                       parsed: &Result<(Vec<u8>, Summary), String>,
                       name: &str,
                       anchor: &'static str| {
        out.push(
            check(format!("{name} is a valid CA certificate"), anchor)
                .fatal()
                .result(parsed.as_ref().map(|_| ()).map_err(Clone::clone)),
        );
        if let Ok((_, s)) = parsed {
            out.push(
                check(format!("{name} is within its validity period"), anchor)
                    .result(certs::within_validity(s, now)),
            );
            out.push(
                check(format!("{name} is valid for at least 60 days"), anchor)
                    .warning()
                    .result(certs::not_expiring_soon(s, now)),
            );
        }
    };
    cert_checks(&mut out, &anchor, "trust anchor", "smidge-identity-anchor");
    if !out
        .iter()
        .all(|o| o.passed() || o.check.severity != super::Severity::Fatal)
    {
        return out;
    }
    cert_checks(
        &mut out,
        &issuer,
        "issuer certificate",
        "smidge-identity-issuer",
    );
    if let (Ok((anchor_der, _)), Ok((issuer_der, _))) = (&anchor, &issuer) {
        out.push(
            check(
                "issuer certificate is issued by the trust anchor",
                "smidge-identity-issuer",
            )
            .result(certs::signed_by(issuer_der, anchor_der)),
        );
    }
    out
}

/// The chain one controller pod's webhook serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// Which pod, for messages.
    pub from: String,
    /// Leaf first.
    pub chain: Vec<Vec<u8>>,
}

/// What `smidge-webhook` reads.
pub struct Webhook {
    /// The ready endpoints of the Service (for messages).
    pub endpoints: Result<Vec<String>, String>,
    /// A dry-run create of an old-version TrafficSplit: the API server converts it through the
    /// webhook, trusting the CRD's caBundle for the Service's name.
    pub conversion: Result<(), String>,
    /// The MutatingWebhookConfiguration's caBundle: `Ok(None)` when it does not exist.
    pub injector_bundle: Result<Option<String>, String>,
    /// Each SMI CRD's conversion caBundle (`None`: it has none).
    pub crd_bundles: Vec<(String, Option<String>)>,
    /// What each ready controller pod's webhook serves.
    pub served: Result<Vec<Served>, String>,
    pub now: i64,
}

/// `smidge-webhook`: the Service has endpoints; the API server converts through it; every
/// replica's certificate is valid for the Service's name under every caBundle that points at it
/// (the injector's and the CRDs'), and has 60 days left.
pub fn webhook(ns: &str, f: &Webhook) -> Vec<Outcome> {
    let name = format!("{CONTROLLER}.{ns}.svc");
    let endpoints = check("webhook Service has a ready endpoint", "smidge-webhook")
        .fatal()
        .retry()
        .result(match &f.endpoints {
            Ok(e) if e.is_empty() => Err(format!(
                "the Service {ns}/{CONTROLLER} has no ready endpoint"
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone()),
        });
    if !endpoints.passed() {
        return vec![endpoints];
    }
    let conversion = check(
        "the API server reaches the conversion webhook",
        "smidge-webhook-conversion",
    )
    .retry()
    .result(f.conversion.clone());
    let injector = check(
        format!("injector MutatingWebhookConfiguration {INJECTOR_MWC} exists"),
        "smidge-webhook-injector",
    )
    .warning()
    .result(match &f.injector_bundle {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "no MutatingWebhookConfiguration {INJECTOR_MWC}: pods are not injected (is the injector off?)"
        )),
        Err(e) => Err(e.clone()),
    });
    let mut bundles: Vec<(String, Option<&String>)> = Vec::new();
    if let Ok(Some(b)) = &f.injector_bundle {
        bundles.push((
            format!("MutatingWebhookConfiguration {INJECTOR_MWC}"),
            Some(b),
        ));
    }
    bundles.extend(
        f.crd_bundles
            .iter()
            .map(|(crd, b)| (format!("CRD {crd}"), b.as_ref())),
    );
    let cert = check(
        format!("webhook has a valid certificate for {name}"),
        "smidge-webhook-cert",
    )
    .fatal()
    .retry()
    .result(match &f.served {
        Err(e) => Err(e.clone()),
        Ok(served) if served.is_empty() => Err("no controller pod to read it from".into()),
        Ok(_) if bundles.is_empty() => {
            Err("no caBundle names this webhook (no injector, no SMI CRDs)".into())
        }
        Ok(served) => {
            let name = name.as_str();
            let problems: Vec<String> = served
                .iter()
                .flat_map(|s| {
                    bundles
                        .iter()
                        .filter_map(move |(source, bundle)| match bundle {
                            None => Some(format!("{source} has no caBundle")),
                            Some(pem) => certs::verify_served(&s.chain, pem, name, f.now)
                                .err()
                                .map(|e| {
                                    format!("{}, under the caBundle of {source}: {e}", s.from)
                                }),
                        })
                })
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        }
    });
    if !cert.passed() {
        return vec![endpoints, conversion, injector, cert];
    }
    let soon = check(
        "webhook certificate is valid for at least 60 days",
        "smidge-webhook-cert-not-expiring-soon",
    )
    .warning()
    .result(match &f.served {
        Ok(served) => served
            .iter()
            .map(|s| {
                s.chain
                    .first()
                    .ok_or_else(|| format!("{}: no certificate", s.from))
                    .and_then(|d| certs::summary(d))
                    .and_then(|c| certs::not_expiring_soon(&c, f.now))
                    .map_err(|e| format!("{}: {e}", s.from))
            })
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ()),
        Err(e) => Err(e.clone()),
    });
    vec![endpoints, conversion, injector, cert, soon]
}

/// What `smidge-data-plane` reads.
pub struct DataPlane {
    /// Pods labelled as meshed by this control plane.
    pub meshed: Result<Vec<Pod>, String>,
    /// `/proxies` of every ready controller pod, merged.
    pub proxies: Result<Vec<ProxyStatus>, String>,
    /// Pods in namespaces with injection enabled.
    pub in_injected_namespaces: Result<Vec<Pod>, String>,
}

fn is_opted_out(p: &Pod) -> bool {
    let disabled = |m: &Option<BTreeMap<String, String>>| {
        m.as_ref()
            .and_then(|m| m.get(labels::INJECT))
            .is_some_and(|v| v == labels::INJECT_DISABLED)
    };
    disabled(&p.metadata.annotations) || disabled(&p.metadata.labels)
}

fn has_label(p: &Pod, key: &str) -> bool {
    p.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(key))
}

fn ns_pod(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}

fn pod_key(p: &Pod) -> String {
    ns_pod(p.metadata.namespace.as_deref().unwrap_or("?"), pod_name(p))
}

/// Lists at most a few names, then how many more.
fn names(list: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = list
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(" and {} more", list.len() - SHOWN));
    }
    s
}

/// `smidge-data-plane`: meshed pods ready, their proxies connected to the controller and on its
/// current view versions; pods in injected namespaces without a proxy named (a warning).
pub fn data_plane(f: &DataPlane) -> Vec<Outcome> {
    let mut out = Vec::new();
    let ready_meshed: Vec<&Pod> = match &f.meshed {
        Ok(pods) => {
            let not_ready: Vec<String> = pods
                .iter()
                .filter(|p| !pod_ready(p) && p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
                .map(|p| format!("{} ({})", pod_key(p), not_ready_reason(p)))
                .collect();
            out.push(
                check("data plane pods are ready", "smidge-data-plane-ready")
                    .retry()
                    .result(if not_ready.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("not ready: {}", names(&not_ready)))
                    }),
            );
            pods.iter().filter(|p| pod_ready(p)).collect()
        }
        Err(e) => {
            out.push(
                check("data plane pods are ready", "smidge-data-plane-ready")
                    .result(Err(e.clone())),
            );
            Vec::new()
        }
    };
    match &f.proxies {
        // No ready meshed pod: nothing has to be connected, whatever the controller's state.
        Err(_) if ready_meshed.is_empty() && f.meshed.is_ok() => out.push(
            check(
                "data plane proxies are connected to the controller",
                "smidge-data-plane-connected",
            )
            .result(Ok(())),
        ),
        Err(e) => out.push(
            check(
                "data plane proxies are connected to the controller",
                "smidge-data-plane-connected",
            )
            .retry()
            .result(Err(format!("cannot read the controller's /proxies: {e}"))),
        ),
        Ok(proxies) => {
            let connected: BTreeSet<String> = proxies
                .iter()
                .map(|p| ns_pod(&p.namespace, &p.pod))
                .collect();
            let missing: Vec<String> = ready_meshed
                .iter()
                .map(|p| pod_key(p))
                .filter(|k| !connected.contains(k))
                .collect();
            out.push(
                check(
                    "data plane proxies are connected to the controller",
                    "smidge-data-plane-connected",
                )
                .retry()
                .result(if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not connected: {}", names(&missing)))
                }),
            );
            let behind: Vec<String> = proxies
                .iter()
                .filter(|p| !p.current)
                .map(|p| {
                    let view = p
                        .views
                        .iter()
                        .find(|v| v.acked.is_none() || v.acked != v.current);
                    match view {
                        Some(v) => format!(
                            "{} ({}: acked {}, current {})",
                            ns_pod(&p.namespace, &p.pod),
                            v.view,
                            v.acked.map_or("nothing".into(), |a| a.to_string()),
                            v.current.map_or("none".into(), |c| c.to_string())
                        ),
                        None => ns_pod(&p.namespace, &p.pod),
                    }
                })
                .collect();
            out.push(
                check(
                    "data plane proxies are on the current view version",
                    "smidge-data-plane-version",
                )
                .retry()
                .result(if behind.is_empty() {
                    Ok(())
                } else {
                    Err(format!("behind: {}", names(&behind)))
                }),
            );
        }
    }
    let unmeshed = check(
        "every pod in a namespace with injection enabled is meshed",
        "smidge-data-plane-unmeshed",
    )
    .warning()
    .result(match &f.in_injected_namespaces {
        Err(e) => Err(e.clone()),
        Ok(pods) => {
            let list: Vec<String> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
                .filter(|p| !has_label(p, labels::MESHED) && !has_label(p, labels::COMPONENT))
                .filter(|p| !is_opted_out(p))
                .filter(|p| {
                    !p.spec
                        .as_ref()
                        .and_then(|s| s.host_network)
                        .unwrap_or(false)
                })
                .map(pod_key)
                .collect();
            if list.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "un-meshed (no {PROXY_CONTAINER}; created while the injector was unreachable?): {}; restart them to inject",
                    names(&list)
                ))
            }
        }
    });
    out.push(unmeshed);
    out
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
