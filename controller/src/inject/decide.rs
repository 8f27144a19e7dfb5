//! Whether a pod gets a proxy, or why not. The opt-in truth table is Linkerd's
//! (`report.go` `disabledByAnnotation`):
//!
//! | namespace `smidge.io/inject` | pod `smidge.io/inject` | result |
//! |---|---|---|
//! | invalid | any | skip (invalid value on the namespace) |
//! | any | invalid | skip (invalid value on the pod) |
//! | `enabled` | unset or `enabled` | inject |
//! | `enabled` | `disabled` | skip (opted out) |
//! | unset or `disabled` | `enabled` | inject |
//! | unset or `disabled` | unset or `disabled` | skip (not opted in) |
//!
//! The namespace's value is its annotation, else its label; the pod's its annotation. Before the
//! table: hostNetwork pods, smidge's own pods and pods that already have a proxy (by container
//! name or image, as Linkerd checks) are left alone; after it, a malformed `config.smidge.io/*`
//! annotation skips too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::Settings;
use super::overrides::{BadAnnotation, Overrides};
use crate::labels::{COMPONENT, INJECT, INJECT_DISABLED, INJECT_ENABLED};

/// The names of the containers the injector adds.
pub const PROXY_CONTAINER: &str = "smidge-proxy";
pub const INIT_CONTAINER: &str = "smidge-init";
/// Other meshes' sidecars: a pod with one is not given a second proxy.
const FOREIGN_SIDECARS: &[&str] = &["linkerd-proxy", "linkerd-init", "istio-proxy", "istio-init"];

/// Why a pod was left alone.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Skip {
    #[error("the pod has no spec")]
    NoSpec,
    #[error("hostNetwork is enabled")]
    HostNetwork,
    #[error("pod has a sidecar injected already (container {0:?})")]
    AlreadyInjected(String),
    #[error("pod is part of smidge's control plane (label {COMPONENT})")]
    ControlPlane,
    #[error(
        "neither the namespace nor the pod have the annotation \"{INJECT}: {INJECT_ENABLED}\""
    )]
    NotOptedIn,
    #[error("pod has the annotation \"{INJECT}: {INJECT_DISABLED}\"")]
    OptedOut,
    #[error(
        "the {on}'s \"{INJECT}\" is {value:?}, neither {INJECT_ENABLED} nor {INJECT_DISABLED}"
    )]
    InvalidInject { on: &'static str, value: String },
    #[error("{0}")]
    BadAnnotation(#[from] BadAnnotation),
}

/// Decides for a pod (`meta`, `spec`) in a namespace (`namespace`: its metadata): the overrides to
/// inject with, or why not.
pub fn decide(
    meta: &ObjectMeta,
    spec: &PodSpec,
    namespace: &ObjectMeta,
    settings: &Settings,
) -> Result<Overrides, Skip> {
    if spec.host_network == Some(true) {
        return Err(Skip::HostNetwork);
    }
    if meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(COMPONENT))
    {
        return Err(Skip::ControlPlane);
    }
    if let Some(name) = existing_sidecar(spec, &settings.proxy.image.repository) {
        return Err(Skip::AlreadyInjected(name));
    }
    let ns = namespace_value(namespace);
    let pod = meta.annotations.as_ref().and_then(|a| a.get(INJECT));
    let valid = |v: Option<&String>| v.is_none_or(|v| v == INJECT_ENABLED || v == INJECT_DISABLED);
    if !valid(ns) {
        return Err(Skip::InvalidInject {
            on: "namespace",
            value: ns.cloned().unwrap_or_default(),
        });
    }
    if !valid(pod) {
        return Err(Skip::InvalidInject {
            on: "pod",
            value: pod.cloned().unwrap_or_default(),
        });
    }
    let is = |v: Option<&String>, want: &str| v.is_some_and(|v| v == want);
    if is(ns, INJECT_ENABLED) {
        if is(pod, INJECT_DISABLED) {
            return Err(Skip::OptedOut);
        }
    } else if !is(pod, INJECT_ENABLED) {
        return Err(Skip::NotOptedIn);
    }
    let empty = BTreeMap::new();
    Ok(Overrides::read(
        meta.annotations.as_ref().unwrap_or(&empty),
    )?)
}

/// The namespace's `smidge.io/inject`: its annotation, else its label.
fn namespace_value(namespace: &ObjectMeta) -> Option<&String> {
    fn from(m: &Option<BTreeMap<String, String>>) -> Option<&String> {
        m.as_ref().and_then(|m| m.get(INJECT))
    }
    from(&namespace.annotations).or(from(&namespace.labels))
}

/// The name of a container that is a mesh proxy already: smidge's (by name, or by the proxy
/// image's repository) or another mesh's.
fn existing_sidecar(spec: &PodSpec, proxy_repository: &str) -> Option<String> {
    let repository = |image: &str| {
        let image = image.split('@').next().unwrap_or(image);
        // A ':' after the last '/' starts the tag (a registry's port comes before a '/').
        match image.rfind(':') {
            Some(i) if !image[i..].contains('/') => image[..i].to_string(),
            _ => image.to_string(),
        }
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| {
            c.name == PROXY_CONTAINER
                || c.name == INIT_CONTAINER
                || FOREIGN_SIDECARS.contains(&c.name.as_str())
                || c.image
                    .as_deref()
                    .is_some_and(|i| repository(i) == proxy_repository)
        })
        .map(|c| c.name.clone())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Container;

    use super::*;
    use crate::inject::overrides::SKIP_INBOUND_PORTS;

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> ObjectMeta {
        let map = |p: &[(&str, &str)]| {
            (!p.is_empty()).then(|| {
                p.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        };
        ObjectMeta {
            labels: map(labels),
            annotations: map(annotations),
            ..ObjectMeta::default()
        }
    }

    fn spec() -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("smidge/echo:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }
    }

    fn run(ns: Option<&str>, pod: Option<&str>) -> Result<Overrides, Skip> {
        let ns = meta(&[], ns.map(|v| (INJECT, v)).as_slice());
        let pod = meta(&[], pod.map(|v| (INJECT, v)).as_slice());
        decide(&pod, &spec(), &ns, &Settings::default())
    }

    #[test]
    fn the_opt_in_truth_table() {
        use Skip::*;
        let e = Some(INJECT_ENABLED);
        let d = Some(INJECT_DISABLED);
        let cases: &[(Option<&str>, Option<&str>, Option<Skip>)] = &[
            (e, None, None),
            (e, e, None),
            (e, d, Some(OptedOut)),
            (None, e, None),
            (d, e, None),
            (None, None, Some(NotOptedIn)),
            (None, d, Some(NotOptedIn)),
            (d, None, Some(NotOptedIn)),
            (d, d, Some(NotOptedIn)),
            (
                Some("yes"),
                e,
                Some(InvalidInject {
                    on: "namespace",
                    value: "yes".into(),
                }),
            ),
            (
                e,
                Some("Enabled"),
                Some(InvalidInject {
                    on: "pod",
                    value: "Enabled".into(),
                }),
            ),
        ];
        for (ns, pod, want) in cases {
            assert_eq!(run(*ns, *pod).err(), *want, "namespace {ns:?}, pod {pod:?}");
        }
    }

    #[test]
    fn the_namespace_label_opts_in_and_its_annotation_wins() {
        let pod = meta(&[], &[]);
        let labelled = meta(&[(INJECT, INJECT_ENABLED)], &[]);
        assert!(decide(&pod, &spec(), &labelled, &Settings::default()).is_ok());
        let both = meta(&[(INJECT, INJECT_ENABLED)], &[(INJECT, INJECT_DISABLED)]);
        assert_eq!(
            decide(&pod, &spec(), &both, &Settings::default()).err(),
            Some(Skip::NotOptedIn)
        );
    }

    #[test]
    fn a_pod_label_does_not_opt_in() {
        let pod = meta(&[(INJECT, INJECT_ENABLED)], &[]);
        assert_eq!(
            decide(&pod, &spec(), &meta(&[], &[]), &Settings::default()).err(),
            Some(Skip::NotOptedIn)
        );
    }

    fn enabled_ns() -> ObjectMeta {
        meta(&[(INJECT, INJECT_ENABLED)], &[])
    }

    #[test]
    fn host_network_pods_are_left_alone() {
        let mut s = spec();
        s.host_network = Some(true);
        let pod = meta(&[], &[(INJECT, INJECT_ENABLED)]);
        assert_eq!(
            decide(&pod, &s, &enabled_ns(), &Settings::default()).err(),
            Some(Skip::HostNetwork)
        );
        s.host_network = Some(false);
        assert!(decide(&pod, &s, &enabled_ns(), &Settings::default()).is_ok());
    }

    #[test]
    fn smidges_own_pods_are_left_alone() {
        let pod = meta(&[(COMPONENT, "controller")], &[(INJECT, INJECT_ENABLED)]);
        assert_eq!(
            decide(&pod, &spec(), &enabled_ns(), &Settings::default()).err(),
            Some(Skip::ControlPlane)
        );
    }

    #[test]
    fn a_pod_with_a_proxy_already_is_left_alone() {
        let with = |name: &str, image: &str, init: bool| {
            let mut s = spec();
            let c = Container {
                name: name.into(),
                image: Some(image.into()),
                ..Container::default()
            };
            if init {
                s.init_containers = Some(vec![c]);
            } else {
                s.containers.push(c);
            }
            decide(&meta(&[], &[]), &s, &enabled_ns(), &Settings::default()).err()
        };
        let already = |n: &str| Some(Skip::AlreadyInjected(n.into()));
        assert_eq!(with("smidge-proxy", "x", true), already("smidge-proxy"));
        assert_eq!(with("smidge-proxy", "x", false), already("smidge-proxy"));
        assert_eq!(with("smidge-init", "x", true), already("smidge-init"));
        assert_eq!(with("linkerd-proxy", "x", false), already("linkerd-proxy"));
        assert_eq!(with("istio-proxy", "x", false), already("istio-proxy"));
        assert_eq!(
            with("renamed", "ghcr.io/smidge-mesh/smidge-proxy:0.1.0", false),
            already("renamed")
        );
        assert_eq!(
            with(
                "renamed",
                "ghcr.io/smidge-mesh/smidge-proxy@sha256:abc",
                true
            ),
            already("renamed")
        );
        assert_eq!(
            with("side", "ghcr.io/smidge-mesh/smidge-proxy-extra:1", false),
            None
        );
        assert_eq!(with("side", "registry:5000/other", false), None);
    }

    #[test]
    fn a_malformed_config_annotation_skips_naming_it() {
        let pod = meta(&[], &[(SKIP_INBOUND_PORTS, "ssh")]);
        match decide(&pod, &spec(), &enabled_ns(), &Settings::default()) {
            Err(Skip::BadAnnotation(b)) => assert_eq!(b.annotation, SKIP_INBOUND_PORTS),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skip_reasons_read_as_linkerds() {
        assert_eq!(Skip::HostNetwork.to_string(), "hostNetwork is enabled");
        assert_eq!(
            Skip::NotOptedIn.to_string(),
            "neither the namespace nor the pod have the annotation \"smidge.io/inject: enabled\""
        );
    }
}
