//! The authorization decision of an inbound proxy (SMI traffic access).
//!
//! A caller is admitted when some authorization (one TrafficTarget) lists its identity as a
//! source, covers the destination port, and — for an HTTP request, when the TrafficTarget has
//! HTTPRouteGroup rules — one of its matches accepts the request. A connection that is not HTTP
//! is admitted only where the authorization says so ([`Authorization::opaque`]): a port that
//! HTTPRouteGroup rules restrict admits HTTP only. A workload that no TrafficTarget names falls
//! back to its default policy.

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
    opaque: bool,
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
    /// A TrafficTarget admits this caller on this port for HTTP only (its HTTPRouteGroup rules
    /// restrict the port), and the connection is not HTTP.
    HttpOnly,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::DefaultDeny => "default-deny",
            DenyReason::Unauthenticated => "unauthenticated",
            DenyReason::NotAuthorized => "not-authorized",
            DenyReason::NoMatchingRoute => "no-matching-route",
            DenyReason::HttpOnly => "http-only",
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
                    opaque: a.opaque,
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
        let mut http_only = false;
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
                (None, Some(_)) => return Decision::Allow { by: a.name.clone() },
                (_, None) if a.opaque => return Decision::Allow { by: a.name.clone() },
                (_, None) => http_only = true,
            }
        }
        Decision::Deny(if route_refused {
            DenyReason::NoMatchingRoute
        } else if http_only {
            DenyReason::HttpOnly
        } else {
            DenyReason::NotAuthorized
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::SimpleRequest;
    use crate::view::HttpMatch;

    fn client() -> Identity {
        Identity::new("shop", "client")
    }

    /// One TrafficTarget: `client` may `GET /api/.*` on every port; `opaque` as given.
    fn api_only(opaque: bool) -> CompiledInbound {
        CompiledInbound::compile(&InboundView {
            default_policy: DefaultPolicy::Deny,
            authorizations: vec![Authorization {
                name: "shop/client-to-web".into(),
                sources: vec![client()],
                ports: PortRule::Any,
                http: Some(vec![HttpMatch {
                    name: "shop/api-only/api".into(),
                    path_regex: Some("/api/.*".into()),
                    methods: vec!["GET".into()],
                    headers: vec![],
                }]),
                opaque,
            }],
        })
        .unwrap()
    }

    #[test]
    fn http_rules_alone_refuse_a_connection_that_is_not_http() {
        // Security review F1: `request: None` was admitted by an HTTP-only authorization.
        let web = api_only(false);
        assert_eq!(
            web.decide(Some(&client()), 8080, None),
            Decision::Deny(DenyReason::HttpOnly)
        );
        assert_eq!(DenyReason::HttpOnly.as_str(), "http-only");
        assert!(matches!(
            web.decide(
                Some(&client()),
                8080,
                Some(&SimpleRequest::new("GET", "/api/x"))
            ),
            Decision::Allow { .. }
        ));
        assert_eq!(
            web.decide(
                Some(&client()),
                8080,
                Some(&SimpleRequest::new("GET", "/admin"))
            ),
            Decision::Deny(DenyReason::NoMatchingRoute)
        );
    }

    #[test]
    fn http_rules_with_a_tcp_route_admit_opaque_traffic_but_still_match_http() {
        let web = api_only(true);
        assert!(matches!(
            web.decide(Some(&client()), 8080, None),
            Decision::Allow { .. }
        ));
        assert_eq!(
            web.decide(
                Some(&client()),
                8080,
                Some(&SimpleRequest::new("DELETE", "/admin"))
            ),
            Decision::Deny(DenyReason::NoMatchingRoute)
        );
    }

    #[test]
    fn another_authorization_with_opaque_traffic_on_the_port_still_admits() {
        let mut view = InboundView {
            default_policy: DefaultPolicy::Deny,
            authorizations: vec![],
        };
        view.authorizations.push(Authorization {
            name: "shop/http".into(),
            sources: vec![client()],
            ports: PortRule::Any,
            http: Some(vec![]),
            opaque: false,
        });
        view.authorizations.push(Authorization {
            name: "shop/tcp".into(),
            sources: vec![client()],
            ports: PortRule::Only(vec![7000]),
            http: None,
            opaque: true,
        });
        let web = CompiledInbound::compile(&view).unwrap();
        assert_eq!(
            web.decide(Some(&client()), 7000, None),
            Decision::Allow {
                by: "shop/tcp".into()
            }
        );
        assert_eq!(
            web.decide(Some(&client()), 8080, None),
            Decision::Deny(DenyReason::HttpOnly)
        );
        assert_eq!(
            web.decide(Some(&Identity::new("shop", "intruder")), 8080, None),
            Decision::Deny(DenyReason::NotAuthorized)
        );
    }
}
