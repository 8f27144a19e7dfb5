//! `split.smi-spec.io`: TrafficSplit v1alpha1 (quantity weights), v1alpha2 (whole weights),
//! v1alpha3/v1alpha4 (adds `matches`: HTTPRouteGroups whose requests are split).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::fields::{quantity_weight_milli, whole_weight, NumberOrString};
use super::{Finding, Findings};
use crate::model::{SplitBackend, TrafficSplit};

/// A backend with a whole-number weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct TrafficSplitBackend {
    /// Name of the Kubernetes service.
    pub service: String,
    /// Traffic weight value of this backend.
    pub weight: serde_json::Number,
}

/// A reference to an HTTPRouteGroup whose requests the split applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSplitMatch {
    /// Kind of the matching group.
    #[schemars(extend("enum" = ["HTTPRouteGroup"]))]
    pub kind: String,
    /// Name of the matching group.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub api_group: Option<String>,
}

pub mod v1alpha1 {
    use super::*;

    /// A v1alpha1 backend: weights are Kubernetes quantities.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    pub struct TrafficSplitBackend {
        pub service: String,
        pub weight: NumberOrString,
    }

    /// TrafficSplit v1alpha1.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha1",
        kind = "TrafficSplit",
        namespaced
    )]
    #[kube(shortname = "ts")]
    pub struct TrafficSplitSpec {
        #[serde(default)]
        pub service: String,
        #[serde(default)]
        pub backends: Vec<TrafficSplitBackend>,
    }
}

pub mod v1alpha2 {
    use super::*;

    /// TrafficSplit v1alpha2.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha2",
        kind = "TrafficSplit",
        namespaced
    )]
    #[kube(shortname = "ts")]
    pub struct TrafficSplitSpec {
        pub service: String,
        pub backends: Vec<TrafficSplitBackend>,
    }
}

pub mod v1alpha3 {
    use super::*;

    /// TrafficSplit v1alpha3.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha3",
        kind = "TrafficSplit",
        namespaced
    )]
    #[kube(shortname = "ts")]
    pub struct TrafficSplitSpec {
        pub service: String,
        pub backends: Vec<TrafficSplitBackend>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub matches: Option<Vec<TrafficSplitMatch>>,
    }
}

pub mod v1alpha4 {
    use super::*;

    /// TrafficSplit v1alpha4 (SMI v0.6.0), the version smidge serves.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "split.smi-spec.io",
        version = "v1alpha4",
        kind = "TrafficSplit",
        namespaced
    )]
    #[kube(
        shortname = "ts",
        doc = "Splits the traffic clients send to a root Service over backend Services by weight"
    )]
    #[kube(printcolumn(
        name = "Service",
        type_ = "string",
        description = "The apex service of this split.",
        json_path = ".spec.service"
    ))]
    pub struct TrafficSplitSpec {
        /// The apex service of this split.
        pub service: String,
        /// The backend services of this split.
        pub backends: Vec<TrafficSplitBackend>,
        /// The HTTP route groups that this traffic split should match.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub matches: Option<Vec<TrafficSplitMatch>>,
    }
}

/// Builds the model from the parts every version shares; `weight` reads one backend's weight.
fn build<B>(
    service: &str,
    backends: &[B],
    matches: &[TrafficSplitMatch],
    name_of: impl Fn(&B) -> &str,
    weight: impl Fn(&B) -> Result<u64, String>,
) -> Result<TrafficSplit, Findings> {
    let mut errors = Findings::default();
    if service.is_empty() {
        errors.push(Finding::new("spec.service", "the root service is required"));
    }
    if backends.is_empty() {
        errors.push(Finding::new(
            "spec.backends",
            "a TrafficSplit needs at least one backend",
        ));
    }
    let mut out = Vec::with_capacity(backends.len());
    for (i, b) in backends.iter().enumerate() {
        let name = name_of(b);
        if name.is_empty() {
            errors.push(Finding::new(
                format!("spec.backends[{i}].service"),
                "the backend service is required",
            ));
        }
        if backends[..i].iter().any(|o| name_of(o) == name) {
            errors.push(Finding::new(
                format!("spec.backends[{i}].service"),
                format!("{name:?} is listed twice"),
            ));
        }
        match weight(b) {
            Ok(w) => out.push(SplitBackend {
                service: name.to_string(),
                weight: w,
            }),
            Err(e) => errors.push(Finding::new(format!("spec.backends[{i}].weight"), e)),
        }
    }
    let mut groups = Vec::new();
    for (i, m) in matches.iter().enumerate() {
        if m.kind != "HTTPRouteGroup" {
            errors.push(Finding::new(
                format!("spec.matches[{i}].kind"),
                format!("{:?} cannot be matched; only HTTPRouteGroup", m.kind),
            ));
        } else {
            groups.push(m.name.clone());
        }
    }
    errors.into_result(TrafficSplit {
        service: service.to_string(),
        backends: out,
        matches: groups,
    })
}

impl v1alpha1::TrafficSplit {
    /// Quantity weights become whole weights with the same ratios, exactly as the conversion to
    /// the newer versions makes them, so both read the same.
    pub fn to_model(&self) -> Result<TrafficSplit, Findings> {
        let s = &self.spec;
        let quantities: Vec<NumberOrString> = s.backends.iter().map(|b| b.weight.clone()).collect();
        let whole = crate::convert::weights::from_quantities(&quantities);
        build(
            &s.service,
            &s.backends,
            &[],
            |b| &b.service,
            |b| {
                let at = s.backends.iter().position(|o| std::ptr::eq(o, b));
                match (&whole, at) {
                    (Ok(w), Some(i)) => w.get(i).copied().ok_or_else(|| "no weight".to_string()),
                    _ => quantity_weight_milli(&b.weight),
                }
            },
        )
    }
}

impl v1alpha2::TrafficSplit {
    pub fn to_model(&self) -> Result<TrafficSplit, Findings> {
        let s = &self.spec;
        build(
            &s.service,
            &s.backends,
            &[],
            |b| &b.service,
            |b| whole_weight(&b.weight),
        )
    }
}

impl v1alpha3::TrafficSplit {
    pub fn to_model(&self) -> Result<TrafficSplit, Findings> {
        let s = &self.spec;
        let matches = s.matches.as_deref().unwrap_or_default();
        build(
            &s.service,
            &s.backends,
            matches,
            |b| &b.service,
            |b| whole_weight(&b.weight),
        )
    }
}

impl v1alpha4::TrafficSplit {
    pub fn to_model(&self) -> Result<TrafficSplit, Findings> {
        let s = &self.spec;
        let matches = s.matches.as_deref().unwrap_or_default();
        build(
            &s.service,
            &s.backends,
            matches,
            |b| &b.service,
            |b| whole_weight(&b.weight),
        )
    }
}
