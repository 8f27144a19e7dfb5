//! Views as the proxy uses them: validated, regexes compiled, ready for per-request decisions.
//! Pure: no I/O, unit-tested.

use smidge_protocol::authz::CompiledInbound;
use smidge_protocol::matching::{CompiledMatch, RequestHead};
use smidge_protocol::view::InvalidView;
use smidge_protocol::{Backend, Identity, OutboundView, View, WeightedTarget};

/// A received view and its compiled form.
#[derive(Debug)]
pub struct Ready {
    pub version: u64,
    pub received: std::time::Instant,
    pub view: View,
    pub compiled: Compiled,
}

/// The compiled form of each kind of view.
#[derive(Debug)]
pub enum Compiled {
    Outbound(OutboundRoutes),
    Inbound(CompiledInbound),
    Peer(Option<Identity>),
}

/// Validates and compiles a view.
pub fn compile(view: &View) -> Result<Compiled, InvalidView> {
    view.validate()?;
    Ok(match view {
        View::Outbound(v) => Compiled::Outbound(OutboundRoutes::compile(v)?),
        View::Inbound(v) => Compiled::Inbound(CompiledInbound::compile(v)?),
        View::Peer(p) => Compiled::Peer(p.identity.clone()),
    })
}

/// The routes of an outbound view with compiled matches.
#[derive(Debug)]
pub struct OutboundRoutes {
    pub service: String,
    routes: Vec<CompiledRoute>,
    pub backends: Vec<Backend>,
}

/// One route: which requests, and how they spread over backends.
#[derive(Debug)]
pub struct CompiledRoute {
    pub name: String,
    matches: Vec<CompiledMatch>,
    pub targets: Vec<WeightedTarget>,
}

impl OutboundRoutes {
    pub fn compile(view: &OutboundView) -> Result<Self, InvalidView> {
        let routes = view
            .routes
            .iter()
            .map(|r| {
                Ok(CompiledRoute {
                    name: r.name.clone(),
                    matches: smidge_protocol::matching::compile_all(&r.matches)?,
                    targets: r.targets.clone(),
                })
            })
            .collect::<Result<_, InvalidView>>()?;
        Ok(OutboundRoutes {
            service: view.service.to_string(),
            routes,
            backends: view.backends.clone(),
        })
    }

    /// The first route whose matches accept the request (a route without matches takes all).
    pub fn route_request(&self, req: &dyn RequestHead) -> Option<&CompiledRoute> {
        self.routes
            .iter()
            .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| m.matches(req)))
    }

    /// The route for an opaque TCP connection: the first one without HTTP matches.
    pub fn route_connection(&self) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.matches.is_empty())
    }

    pub fn backend(&self, index: u16) -> Option<&Backend> {
        self.backends.get(usize::from(index))
    }
}

/// Picks a backend by relative weight; `roll` is uniform in `0..total weight`.
/// Returns `None` for an empty target list.
pub fn pick_weighted(targets: &[WeightedTarget], roll: u64) -> Option<u16> {
    let mut left = roll;
    for t in targets {
        let w = u64::from(t.weight);
        if left < w {
            return Some(t.backend);
        }
        left -= w;
    }
    None
}

/// The sum of the weights: the range `roll` is drawn from.
pub fn total_weight(targets: &[WeightedTarget]) -> u64 {
    targets.iter().map(|t| u64::from(t.weight)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use smidge_protocol::matching::SimpleRequest;
    use smidge_protocol::{HttpMatch, Route, ServiceRef};

    fn t(backend: u16, weight: u32) -> WeightedTarget {
        WeightedTarget { backend, weight }
    }

    #[test]
    fn weights_are_relative_and_every_roll_lands_in_proportion() {
        let targets = [t(0, 3), t(1, 1)];
        let total = total_weight(&targets);
        let picks: Vec<u16> = (0..total)
            .filter_map(|r| pick_weighted(&targets, r))
            .collect();
        assert_eq!(picks, vec![0, 0, 0, 1]);
        assert_eq!(pick_weighted(&targets, total), None);
        assert_eq!(pick_weighted(&[], 0), None);
    }

    fn view(routes: Vec<Route>) -> OutboundRoutes {
        OutboundRoutes::compile(&OutboundView {
            service: ServiceRef {
                namespace: "ns".into(),
                name: "svc".into(),
                port: 80,
            },
            routes,
            backends: vec![],
        })
        .expect("valid view")
    }

    #[test]
    fn the_first_matching_route_wins_and_tcp_takes_the_catch_all() {
        let api = Route {
            name: "api".into(),
            matches: vec![HttpMatch {
                name: "m".into(),
                path_regex: Some("/api".into()),
                ..Default::default()
            }],
            targets: vec![t(0, 1)],
        };
        let rest = Route {
            name: "rest".into(),
            matches: vec![],
            targets: vec![t(1, 1)],
        };
        let routes = view(vec![api, rest]);
        let get = |p| {
            routes
                .route_request(&SimpleRequest::new("GET", p))
                .map(|r| r.name.clone())
        };
        assert_eq!(get("/api/x").as_deref(), Some("api"));
        assert_eq!(get("/other").as_deref(), Some("rest"));
        assert_eq!(
            routes.route_connection().map(|r| r.name.as_str()),
            Some("rest")
        );
    }
}
