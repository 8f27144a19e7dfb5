//! `specs.smi-spec.io`: HTTPRouteGroup (v1alpha1/v1alpha2 with top-level `matches`, v1alpha3/v1alpha4
//! under `spec`), TCPRoute (no fields until v1alpha4, then `spec.matches.ports`) and UDPRoute (v1alpha4).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smidge_protocol::matching::{compile_header_regex, compile_path_regex};
use smidge_protocol::HttpMatch;

use super::fields::HttpHeaders;
use super::{Finding, Findings};
use crate::model::{HttpRouteGroup, PortRoute};

/// The methods the SMI CRD allows.
pub const METHODS: [&str; 10] = [
    "*", "GET", "HEAD", "PUT", "POST", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// One match of an HTTPRouteGroup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// Name of the HTTP route.
    pub name: String,
    /// URI path regex of the HTTP route, anchored at the start of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// The HTTP methods of this HTTP route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("items" = {"type": "string", "description": "The HTTP method of this HTTP route.", "enum": METHODS}))]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HttpHeaders>,
}

/// Ports of a TCPRoute or UDPRoute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct PortMatch {
    /// Name of the match (sdk only; not in the CRD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub name: Option<String>,
    /// Port numbers to match; empty means every port of the Service.
    #[serde(default)]
    pub ports: Vec<i64>,
}

pub mod v1alpha1 {
    use super::*;

    /// HTTPRouteGroup v1alpha1: `matches` at the top level.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha1",
        kind = "HTTPRouteGroup",
        namespaced,
        no_spec
    )]
    #[kube(shortname = "htr")]
    pub struct HttpRouteGroupFields {
        pub matches: Vec<HttpRouteMatch>,
    }

    /// TCPRoute v1alpha1: no fields.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha1",
        kind = "TCPRoute",
        namespaced,
        no_spec
    )]
    #[kube(shortname = "tr")]
    pub struct TcpRouteFields {}
}

pub mod v1alpha2 {
    use super::*;

    /// HTTPRouteGroup v1alpha2: `matches` at the top level, headers added.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha2",
        kind = "HTTPRouteGroup",
        namespaced,
        no_spec
    )]
    #[kube(shortname = "htr")]
    pub struct HttpRouteGroupFields {
        pub matches: Vec<HttpRouteMatch>,
    }

    /// TCPRoute v1alpha2: no fields.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha2",
        kind = "TCPRoute",
        namespaced,
        no_spec
    )]
    #[kube(shortname = "tr")]
    pub struct TcpRouteFields {}
}

pub mod v1alpha3 {
    use super::*;

    /// HTTPRouteGroup v1alpha3: `spec.matches`.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha3",
        kind = "HTTPRouteGroup",
        namespaced
    )]
    #[kube(shortname = "htr")]
    pub struct HttpRouteGroupSpec {
        pub matches: Vec<HttpRouteMatch>,
    }

    /// TCPRoute v1alpha3: an empty spec.
    #[derive(
        CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
    )]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha3",
        kind = "TCPRoute",
        namespaced
    )]
    #[kube(shortname = "tr")]
    pub struct TcpRouteSpec {}
}

pub mod v1alpha4 {
    use super::*;

    /// HTTPRouteGroup v1alpha4 (SMI v0.6.0), the version smidge serves.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha4",
        kind = "HTTPRouteGroup",
        namespaced
    )]
    #[kube(
        shortname = "htr",
        doc = "Named HTTP routes: path regex, methods and headers"
    )]
    pub struct HttpRouteGroupSpec {
        /// Match conditions of this route group.
        pub matches: Vec<HttpRouteMatch>,
    }

    /// TCPRoute v1alpha4, the version smidge serves.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha4",
        kind = "TCPRoute",
        namespaced
    )]
    #[kube(
        shortname = "tr",
        doc = "TCP traffic to a list of ports (all ports when empty)"
    )]
    pub struct TcpRouteSpec {
        /// Match conditions of this route.
        pub matches: PortMatch,
    }

    /// UDPRoute v1alpha4, the version smidge serves.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "specs.smi-spec.io",
        version = "v1alpha4",
        kind = "UDPRoute",
        namespaced
    )]
    #[kube(
        shortname = "ur",
        doc = "UDP traffic to a list of ports (all ports when empty)"
    )]
    pub struct UdpRouteSpec {
        /// Match conditions of this route.
        pub matches: PortMatch,
    }
}

/// A regex error on one line (the regex crate draws a multi-line caret diagram).
fn one_line(e: &regex::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('^'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Validates and normalizes the matches of an HTTPRouteGroup found at `field`.
pub fn route_group(matches: &[HttpRouteMatch], field: &str) -> Result<HttpRouteGroup, Findings> {
    let mut errors = Findings::default();
    let mut out = Vec::with_capacity(matches.len());
    for (i, m) in matches.iter().enumerate() {
        let at = |sub: &str| format!("{field}[{i}]{sub}");
        if m.name.is_empty() {
            errors.push(Finding::new(
                at(".name"),
                "a match needs a name (TrafficTargets refer to it)",
            ));
        }
        if matches[..i].iter().any(|o| o.name == m.name) {
            errors.push(Finding::new(
                at(".name"),
                format!("duplicate match name {:?}", m.name),
            ));
        }
        if let Some(p) = &m.path_regex {
            if let Err(e) = compile_path_regex(p) {
                errors.push(Finding::new(
                    at(".pathRegex"),
                    format!("{p:?} does not compile: {}", one_line(&e)),
                ));
            }
        }
        let methods = m.methods.clone().unwrap_or_default();
        for (j, method) in methods.iter().enumerate() {
            if !METHODS.contains(&method.as_str()) {
                errors.push(Finding::new(
                    at(&format!(".methods[{j}]")),
                    format!("{method:?} is not one of {}", METHODS.join(", ")),
                ));
            }
        }
        let headers = m.headers.clone().unwrap_or_default().0;
        for (name, re) in &headers {
            if let Err(e) = compile_header_regex(re) {
                errors.push(Finding::new(
                    at(&format!(".headers.{name}")),
                    format!("{re:?} does not compile: {}", one_line(&e)),
                ));
            }
        }
        out.push(HttpMatch {
            name: m.name.clone(),
            path_regex: m.path_regex.clone(),
            methods,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        });
    }
    errors.into_result(HttpRouteGroup { matches: out })
}

/// Validates the ports of a TCPRoute or UDPRoute found at `field`.
pub fn port_route(m: &PortMatch, field: &str) -> Result<PortRoute, Findings> {
    let mut errors = Findings::default();
    let mut ports: Vec<u16> = Vec::new();
    for (i, p) in m.ports.iter().enumerate() {
        match u16::try_from(*p) {
            Ok(port) if port > 0 => ports.push(port),
            _ => errors.push(Finding::new(
                format!("{field}.ports[{i}]"),
                format!("{p} is not a port number (1-65535)"),
            )),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    errors.into_result(PortRoute { ports })
}
