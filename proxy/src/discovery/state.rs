//! What a view looks like to the proxy, and how a received update changes it. Pure.

use std::sync::Arc;
use std::time::Instant;

use smidge_protocol::{delta, View, ViewUpdate};

use crate::views::{compile, Ready};

/// The proxy's knowledge of one subscribed view.
#[derive(Clone, Debug)]
pub enum ViewState {
    /// Subscribed; no answer yet.
    Pending,
    /// The controller says nothing in the mesh answers to the key.
    Absent {
        version: u64,
    },
    Ready(Arc<Ready>),
}

impl ViewState {
    pub fn is_pending(&self) -> bool {
        matches!(self, ViewState::Pending)
    }

    pub fn version(&self) -> Option<u64> {
        match self {
            ViewState::Pending => None,
            ViewState::Absent { version } => Some(*version),
            ViewState::Ready(r) => Some(r.version),
        }
    }
}

/// Endpoints `old` offered that `new` does not: they left discovery (not ready, or gone).
pub fn removed_endpoints(old: &ViewState, new: &ViewState) -> Vec<std::net::SocketAddr> {
    let addrs = |s: &ViewState| -> std::collections::HashSet<std::net::SocketAddr> {
        match s {
            ViewState::Ready(r) => match &r.view {
                View::Outbound(v) => v
                    .backends
                    .iter()
                    .flat_map(|b| b.endpoints.iter().map(|e| e.addr))
                    .collect(),
                _ => Default::default(),
            },
            _ => Default::default(),
        }
    };
    let now = addrs(new);
    let mut gone: Vec<_> = addrs(old)
        .into_iter()
        .filter(|a| !now.contains(a))
        .collect();
    gone.sort();
    gone
}

/// The state after `update` at `version`, or why the proxy refuses it (and keeps `current`).
pub fn next_state(
    current: &ViewState,
    version: u64,
    update: ViewUpdate,
    now: Instant,
) -> Result<ViewState, String> {
    let view = match update {
        ViewUpdate::Absent => return Ok(ViewState::Absent { version }),
        ViewUpdate::Full(view) => view,
        ViewUpdate::Delta { base, changes } => match current {
            ViewState::Ready(r) if r.version == base => match &r.view {
                View::Outbound(v) => {
                    View::Outbound(delta::apply(v, &changes).map_err(|e| e.to_string())?)
                }
                _ => return Err("a delta for a view that is not outbound".into()),
            },
            other => {
                return Err(format!(
                    "delta against version {base}, but this proxy holds {:?}",
                    other.version()
                ))
            }
        },
    };
    let compiled = compile(&view).map_err(|e| e.to_string())?;
    Ok(ViewState::Ready(Arc::new(Ready {
        version,
        received: now,
        view,
        compiled,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smidge_protocol::delta::Change;
    use smidge_protocol::{Backend, Endpoint, OutboundView, Route, ServiceRef, WeightedTarget};

    fn outbound(endpoints: &[&str]) -> View {
        View::Outbound(OutboundView {
            service: ServiceRef {
                namespace: "ns".into(),
                name: "svc".into(),
                port: 80,
            },
            routes: vec![Route {
                name: String::new(),
                matches: vec![],
                targets: vec![WeightedTarget {
                    backend: 0,
                    weight: 1,
                }],
            }],
            backends: vec![Backend {
                name: "svc".into(),
                endpoints: endpoints
                    .iter()
                    .map(|a| Endpoint {
                        addr: a.parse().expect("addr"),
                        identity: None,
                    })
                    .collect(),
            }],
        })
    }

    fn endpoints(s: &ViewState) -> usize {
        match s {
            ViewState::Ready(r) => match &r.view {
                View::Outbound(v) => v.backends[0].endpoints.len(),
                _ => 0,
            },
            _ => 0,
        }
    }

    #[test]
    fn a_full_view_replaces_and_a_delta_applies_only_to_its_base() {
        let now = Instant::now();
        let v1 = next_state(
            &ViewState::Pending,
            1,
            ViewUpdate::Full(outbound(&["10.0.0.1:80"])),
            now,
        )
        .expect("full view");
        let change = Change::Upsert {
            backend: 0,
            endpoint: Endpoint {
                addr: "10.0.0.2:80".parse().expect("addr"),
                identity: None,
            },
        };
        let v2 = next_state(
            &v1,
            2,
            ViewUpdate::Delta {
                base: 1,
                changes: vec![change.clone()],
            },
            now,
        )
        .expect("delta on its base");
        assert_eq!(endpoints(&v2), 2);
        let refused = next_state(
            &v1,
            3,
            ViewUpdate::Delta {
                base: 2,
                changes: vec![change],
            },
            now,
        );
        assert!(refused.is_err());
        let absent = next_state(&v2, 4, ViewUpdate::Absent, now).expect("absent");
        assert_eq!(absent.version(), Some(4));
    }

    #[test]
    fn endpoints_that_leave_a_view_are_named() {
        let now = Instant::now();
        let full = |eps: &[&str]| {
            next_state(&ViewState::Pending, 1, ViewUpdate::Full(outbound(eps)), now).expect("valid")
        };
        let two = full(&["10.0.0.1:80", "10.0.0.2:80"]);
        let one = full(&["10.0.0.2:80"]);
        assert_eq!(
            removed_endpoints(&two, &one),
            vec!["10.0.0.1:80".parse::<std::net::SocketAddr>().expect("addr")]
        );
        assert!(removed_endpoints(&one, &two).is_empty());
        assert_eq!(
            removed_endpoints(&one, &ViewState::Absent { version: 2 }).len(),
            1
        );
    }

    #[test]
    fn an_invalid_view_is_refused() {
        let mut bad = outbound(&[]);
        if let View::Outbound(v) = &mut bad {
            v.routes[0].targets[0].backend = 9;
        }
        let r = next_state(
            &ViewState::Pending,
            1,
            ViewUpdate::Full(bad),
            Instant::now(),
        );
        assert!(r.is_err());
    }
}
