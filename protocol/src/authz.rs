//! The authorization decision of an inbound proxy (SMI traffic access).
//!
//! A caller is admitted when some authorization (one TrafficTarget) lists its identity as a
//! source, covers the destination port, and — for an HTTP request, when the TrafficTarget has
//! HTTPRouteGroup rules — one of its matches accepts the request. A workload that no
//! TrafficTarget names falls back to its default policy.

use crate::matching::{compile_all, CompiledMatch, RequestHead};
use crate::view::{Authorization, DefaultPolicy, Identity, InboundView, InvalidView, PortRule};

/// An [`InboundView`] with its regexes compiled, ready for per-request decisions.
#[derive(Clone, Debug)]
pub struct CompiledInbound {
    pub default_policy: DefaultPolicy,
    authorizations: Vec<CompiledAuthorization>,
}

#[derive(Clone, Debug)]
struct CompiledAuthorization {
    name: String,
    sources: Vec<Identity>,
    ports: PortRule,
    http: Option<Vec<CompiledMatch>>,
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted by the named TrafficTarget, or by the default policy.
    Allow {
        by: String,
    },
    Deny(DenyReason),
}

/// Why a caller was refused; `as_str` is what a denied HTTP response names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No TrafficTarget names this workload and the default policy is `deny`.
    DefaultDeny,
    /// The default policy admits meshed clients only and the caller has no identity.
    Unauthenticated,
    /// TrafficTargets name this workload, but none admits this caller on this port.
    NotAuthorized,
    /// A TrafficTarget admits this caller on this port, but no route of it matches the request.
    NoMatchingRoute,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::DefaultDeny => "default-deny",
            DenyReason::Unauthenticated => "unauthenticated",
            DenyReason::NotAuthorized => "not-authorized",
            DenyReason::NoMatchingRoute => "no-matching-route",
        }
    }
}

impl CompiledInbound {
    pub fn compile(view: &InboundView) -> Result<Self, InvalidView> {
        let authorizations = view
            .authorizations
            .iter()
            .map(|a: &Authorization| {
                Ok(CompiledAuthorization {
                    name: a.name.clone(),
                    sources: a.sources.clone(),
                    ports: a.ports.clone(),
                    http: a.http.as_deref().map(compile_all).transpose()?,
                })
            })
            .collect::<Result<Vec<_>, InvalidView>>()?;
        Ok(CompiledInbound {
            default_policy: view.default_policy,
            authorizations,
        })
    }

    /// Decides one TCP connection (`request: None`) or one HTTP request.
    pub fn decide(
        &self,
        client: Option<&Identity>,
        port: u16,
        request: Option<&dyn RequestHead>,
    ) -> Decision {
        if self.authorizations.is_empty() {
            return match (self.default_policy, client) {
                (DefaultPolicy::AllowAll, _) => Decision::Allow {
                    by: "default:allow-all".into(),
                },
                (DefaultPolicy::AllowMeshed, Some(_)) => Decision::Allow {
                    by: "default:allow-meshed".into(),
                },
                (DefaultPolicy::AllowMeshed, None) => Decision::Deny(DenyReason::Unauthenticated),
                (DefaultPolicy::Deny, _) => Decision::Deny(DenyReason::DefaultDeny),
            };
        }
        let Some(client) = client else {
            return Decision::Deny(DenyReason::Unauthenticated);
        };
        let mut route_refused = false;
        for a in &self.authorizations {
            if !a.sources.contains(client) || !a.ports.contains(port) {
                continue;
            }
            match (&a.http, request) {
                (Some(matches), Some(req)) => {
                    if let Some(m) = matches.iter().find(|m| m.matches(req)) {
                        return Decision::Allow {
                            by: format!("{}#{}", a.name, m.name),
                        };
                    }
                    route_refused = true;
                }
                _ => return Decision::Allow { by: a.name.clone() },
            }
        }
        Decision::Deny(if route_refused {
            DenyReason::NoMatchingRoute
        } else {
            DenyReason::NotAuthorized
        })
    }
}
