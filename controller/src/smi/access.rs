//! `access.smi-spec.io`: TrafficTarget v1alpha1 (top-level fields, `specs`), v1alpha2 (`spec`,
//! `rules`, optional `destination.port`) and v1alpha3 (no port; rules and sources required).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::fields::NumberOrString;
use super::{Finding, Findings};
use crate::model::{RouteKind, Subject, TargetRule, TrafficTarget};

/// A subject: the destination or a source of a TrafficTarget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct IdentityBindingSubject {
    /// Kind of the subject (ServiceAccount).
    pub kind: String,
    /// Name of the subject.
    pub name: String,
    /// Namespace of the subject; defaults to the TrafficTarget's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The v1alpha1/v1alpha2 destination, which may name a port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PortedDestination {
    #[serde(flatten)]
    pub subject: IdentityBindingSubject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<NumberOrString>,
}

/// A rule: a route (HTTPRouteGroup, TCPRoute or UDPRoute) and, for HTTP, some of its matches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TrafficTargetRule {
    /// Kind of this spec.
    #[schemars(extend("enum" = ["HTTPRouteGroup", "TCPRoute", "UDPRoute"]))]
    pub kind: String,
    /// Name of this spec.
    pub name: String,
    /// Match conditions of this spec; all matches of the route when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<String>>,
}

pub mod v1alpha1 {
    use super::*;

    /// TrafficTarget v1alpha1: fields at the top level, rules under `specs`.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "access.smi-spec.io",
        version = "v1alpha1",
        kind = "TrafficTarget",
        namespaced,
        no_spec
    )]
    #[kube(shortname = "tt")]
    pub struct TrafficTargetFields {
        pub destination: PortedDestination,
        #[serde(default)]
        pub specs: Vec<TrafficTargetRule>,
        #[serde(default)]
        pub sources: Vec<IdentityBindingSubject>,
    }
}

pub mod v1alpha2 {
    use super::*;

    /// TrafficTarget v1alpha2.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "access.smi-spec.io",
        version = "v1alpha2",
        kind = "TrafficTarget",
        namespaced
    )]
    #[kube(shortname = "tt")]
    pub struct TrafficTargetSpec {
        pub destination: PortedDestination,
        #[serde(default)]
        pub rules: Vec<TrafficTargetRule>,
        #[serde(default)]
        pub sources: Vec<IdentityBindingSubject>,
    }
}

pub mod v1alpha3 {
    use super::*;

    /// TrafficTarget v1alpha3 (SMI v0.6.0), the version smidge serves.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "access.smi-spec.io",
        version = "v1alpha3",
        kind = "TrafficTarget",
        namespaced
    )]
    #[kube(
        shortname = "tt",
        doc = "Allows traffic from source ServiceAccounts to a destination ServiceAccount"
    )]
    pub struct TrafficTargetSpec {
        /// The destination of this traffic target.
        pub destination: IdentityBindingSubject,
        /// Specifications of this traffic target.
        pub rules: Vec<TrafficTargetRule>,
        /// Sources of this traffic target.
        pub sources: Vec<IdentityBindingSubject>,
    }
}

fn subject(s: &IdentityBindingSubject, own_ns: &str) -> Subject {
    Subject {
        kind: s.kind.clone(),
        name: s.name.clone(),
        namespace: s
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| own_ns.to_string()),
    }
}

fn rules(rules: &[TrafficTargetRule], field: &str, errors: &mut Findings) -> Vec<TargetRule> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match RouteKind::parse(&r.kind) {
            Some(kind) => Some(TargetRule {
                kind,
                name: r.name.clone(),
                matches: r.matches.clone().unwrap_or_default(),
            }),
            None => {
                errors.push(Finding::new(
                    format!("{field}[{i}].kind"),
                    format!(
                        "{:?} is not a route kind; expected HTTPRouteGroup, TCPRoute or UDPRoute",
                        r.kind
                    ),
                ));
                None
            }
        })
        .collect()
}

fn build(
    own_ns: &str,
    dest: Subject,
    port: Option<&NumberOrString>,
    port_field: &str,
    srcs: &[IdentityBindingSubject],
    rule_list: &[TrafficTargetRule],
    rules_field: &str,
) -> Result<TrafficTarget, Findings> {
    let mut errors = Findings::default();
    let destination_port = port.and_then(|p| match p.to_port() {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(Finding::new(port_field, e));
            None
        }
    });
    let rules = rules(rule_list, rules_field, &mut errors);
    errors.into_result(TrafficTarget {
        destination: dest,
        sources: srcs.iter().map(|s| subject(s, own_ns)).collect(),
        rules,
        destination_port,
    })
}

impl v1alpha1::TrafficTarget {
    pub fn to_model(&self, own_ns: &str) -> Result<TrafficTarget, Findings> {
        let f = &self.spec;
        let d = &f.destination;
        build(
            own_ns,
            subject(&d.subject, own_ns),
            d.port.as_ref(),
            "destination.port",
            &f.sources,
            &f.specs,
            "specs",
        )
    }
}

impl v1alpha2::TrafficTarget {
    pub fn to_model(&self, own_ns: &str) -> Result<TrafficTarget, Findings> {
        let s = &self.spec;
        let d = &s.destination;
        build(
            own_ns,
            subject(&d.subject, own_ns),
            d.port.as_ref(),
            "spec.destination.port",
            &s.sources,
            &s.rules,
            "spec.rules",
        )
    }
}

impl v1alpha3::TrafficTarget {
    pub fn to_model(&self, own_ns: &str) -> Result<TrafficTarget, Findings> {
        let s = &self.spec;
        let mut errors = Findings::default();
        if s.rules.is_empty() {
            errors.push(Finding::new(
                "spec.rules",
                "a v1alpha3 TrafficTarget must have at least one rule",
            ));
        }
        if s.sources.is_empty() {
            errors.push(Finding::new(
                "spec.sources",
                "a v1alpha3 TrafficTarget must have at least one source",
            ));
        }
        let built = build(
            own_ns,
            subject(&s.destination, own_ns),
            None,
            "",
            &s.sources,
            &s.rules,
            "spec.rules",
        );
        match built {
            Ok(tt) => errors.into_result(tt),
            Err(more) => Err(errors.merge(more)),
        }
    }
}
