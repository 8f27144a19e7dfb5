//! The SMI CRDs smidge installs, generated from the Rust types of every version it serves
//! (access v1alpha1–v1alpha3, specs v1alpha1–v1alpha4, split v1alpha1–v1alpha4). The newest
//! version is stored; the others are converted by the controller's conversion webhook
//! ([`crate::convert`], [`crate::webhook`]). Every version has a status subresource (conditions)
//! and printer columns.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceConversion, CustomResourceDefinition,
    CustomResourceSubresourceStatus, CustomResourceSubresources, JSONSchemaProps, ServiceReference,
    WebhookClientConfig, WebhookConversion,
};
use kube::core::crd::merge_crds;
use kube::CustomResourceExt;

use crate::convert;
use crate::smi::{access, specs, split};

/// Where the API server reaches the conversion webhook in a cluster (the chart's Service).
pub const WEBHOOK_NAMESPACE: &str = "smidge-system";
pub const WEBHOOK_SERVICE: &str = "smidge-controller";
pub const WEBHOOK_PATH: &str = "/convert";
pub const WEBHOOK_PORT: i32 = 443;

/// Each CRD with the file name it is committed under in `crds/smi/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    let crds = [
        (
            "access.yaml",
            vec![
                access::v1alpha1::TrafficTarget::crd(),
                access::v1alpha2::TrafficTarget::crd(),
                access::v1alpha3::TrafficTarget::crd(),
            ],
        ),
        (
            "httproutegroup.yaml",
            vec![
                specs::v1alpha1::HTTPRouteGroup::crd(),
                specs::v1alpha2::HTTPRouteGroup::crd(),
                specs::v1alpha3::HTTPRouteGroup::crd(),
                specs::v1alpha4::HTTPRouteGroup::crd(),
            ],
        ),
        (
            "tcproute.yaml",
            vec![
                specs::v1alpha1::TCPRoute::crd(),
                specs::v1alpha2::TCPRoute::crd(),
                specs::v1alpha3::TCPRoute::crd(),
                specs::v1alpha4::TCPRoute::crd(),
            ],
        ),
        ("udproute.yaml", vec![specs::v1alpha4::UDPRoute::crd()]),
        (
            "split.yaml",
            vec![
                split::v1alpha1::TrafficSplit::crd(),
                split::v1alpha2::TrafficSplit::crd(),
                split::v1alpha3::TrafficSplit::crd(),
                split::v1alpha4::TrafficSplit::crd(),
            ],
        ),
    ];
    crds.into_iter()
        .filter_map(|(file, versions)| Some((file, multi_version(versions)?)))
        .collect()
}

/// One CRD serving every version in `versions` (one single-version CRD each), storing the hub.
fn multi_version(versions: Vec<CustomResourceDefinition>) -> Option<CustomResourceDefinition> {
    let first = versions.first()?;
    let kv = convert::kind_versions(&first.spec.group, &first.spec.names.kind)?;
    let mut crd = merge_crds(versions, kv.hub()).ok()?;
    crd.spec
        .versions
        .sort_by_key(|v| kv.versions.iter().position(|n| *n == v.name));
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            // Upstream does not require `spec` at the top level: an object without it is
            // accepted (with its misplaced fields pruned), not refused. Keep that behaviour.
            schema.required = None;
            schema
                .properties
                .get_or_insert_with(Default::default)
                .insert("status".into(), status_schema());
        }
        version.subresources = Some(CustomResourceSubresources {
            status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
            scale: None,
        });
        version.additional_printer_columns = Some(printer_columns(kv.kind, &version.name));
    }
    crd.spec.conversion = Some(if kv.versions.len() > 1 {
        CustomResourceConversion {
            strategy: "Webhook".into(),
            webhook: Some(WebhookConversion {
                client_config: Some(WebhookClientConfig {
                    service: Some(ServiceReference {
                        namespace: WEBHOOK_NAMESPACE.into(),
                        name: WEBHOOK_SERVICE.into(),
                        path: Some(WEBHOOK_PATH.into()),
                        port: Some(WEBHOOK_PORT),
                    }),
                    ca_bundle: None,
                    url: None,
                }),
                conversion_review_versions: vec!["v1".into()],
            }),
        }
    } else {
        CustomResourceConversion {
            strategy: "None".into(),
            webhook: None,
        }
    });
    Some(crd)
}

/// The status every SMI object gets: conditions (`Accepted`, `ResolvedRefs`), keyed by type so
/// server-side apply merges them.
fn status_schema() -> JSONSchemaProps {
    let schema = serde_json::json!({
        "description": "What smidge found about this object.",
        "type": "object",
        "properties": {
            "conditions": {
                "description": "Accepted, and ResolvedRefs where the object names Services, routes or ServiceAccounts.",
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status"],
                    "properties": {
                        "type": {"description": "Accepted or ResolvedRefs.", "type": "string"},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "reason": {"description": "A CamelCase reason.", "type": "string"},
                        "message": {"description": "What is wrong, for people.", "type": "string"},
                        "lastTransitionTime": {"type": "string", "format": "date-time"},
                        "observedGeneration": {"description": "The generation this condition is about.", "type": "integer", "format": "int64"}
                    }
                }
            }
        }
    });
    serde_json::from_value(schema).unwrap_or_default()
}

fn column(
    name: &str,
    type_: &str,
    json_path: &str,
    description: &str,
) -> CustomResourceColumnDefinition {
    CustomResourceColumnDefinition {
        name: name.into(),
        type_: type_.into(),
        json_path: json_path.into(),
        description: Some(description.into()),
        format: None,
        priority: None,
    }
}

/// `kubectl get` columns of `kind` in `version` (v1alpha1 TrafficTargets keep fields at the top).
fn printer_columns(kind: &str, version: &str) -> Vec<CustomResourceColumnDefinition> {
    let mut columns = match kind {
        "TrafficSplit" => vec![
            column(
                "Service",
                "string",
                ".spec.service",
                "The root service of this split.",
            ),
            column(
                "Backends",
                "string",
                ".spec.backends",
                "The backend services of this split and their weights.",
            ),
        ],
        "TrafficTarget" => {
            let path = if version == "v1alpha1" {
                ".destination.name"
            } else {
                ".spec.destination.name"
            };
            vec![column(
                "Destination",
                "string",
                path,
                "The destination ServiceAccount.",
            )]
        }
        _ => Vec::new(),
    };
    columns.push(column(
        "Accepted",
        "string",
        ".status.conditions[?(@.type==\"Accepted\")].status",
        "Whether smidge accepted this object.",
    ));
    columns.push(column(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "Time since the object was created.",
    ));
    columns
}

/// One CRD as the YAML document that is committed.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    Ok(format!(
        "# Generated by `smidge crds`; do not edit.\n---\n{}",
        serde_yaml_ng::to_string(crd)?
    ))
}
