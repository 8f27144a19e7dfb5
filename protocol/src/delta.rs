//! Endpoint deltas: the small messages that carry the most frequent change (pods coming and going).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::view::{Endpoint, OutboundView};

/// One endpoint change inside a backend of an outbound view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Adds the endpoint, or replaces the one with the same address.
    Upsert {
        backend: u16,
        endpoint: Endpoint,
    },
    Remove {
        backend: u16,
        addr: SocketAddr,
    },
}

/// Why a delta does not apply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error("backend {0} is not in the view")]
    NoSuchBackend(u16),
    #[error("endpoint {addr} is not in backend {backend}")]
    NoSuchEndpoint { backend: u16, addr: SocketAddr },
}

/// The endpoint changes that turn `old` into `new`, or `None` when anything but endpoints differs.
pub fn diff(old: &OutboundView, new: &OutboundView) -> Option<Vec<Change>> {
    if old.service != new.service
        || old.routes != new.routes
        || old.backends.len() != new.backends.len()
    {
        return None;
    }
    let mut changes = Vec::new();
    for (i, (a, b)) in old.backends.iter().zip(&new.backends).enumerate() {
        if a.name != b.name {
            return None;
        }
        let backend = u16::try_from(i).ok()?;
        for ep in &a.endpoints {
            if !b.endpoints.iter().any(|e| e.addr == ep.addr) {
                changes.push(Change::Remove {
                    backend,
                    addr: ep.addr,
                });
            }
        }
        for ep in &b.endpoints {
            if !a.endpoints.contains(ep) {
                changes.push(Change::Upsert {
                    backend,
                    endpoint: ep.clone(),
                });
            }
        }
    }
    Some(changes)
}

/// Applies `changes` to `view` in order, keeping endpoints sorted by address.
/// On error the view is left as it was.
pub fn apply(view: &OutboundView, changes: &[Change]) -> Result<OutboundView, DeltaError> {
    let mut next = view.clone();
    for change in changes {
        match change {
            Change::Upsert { backend, endpoint } => {
                let eps = &mut next
                    .backends
                    .get_mut(usize::from(*backend))
                    .ok_or(DeltaError::NoSuchBackend(*backend))?
                    .endpoints;
                match eps.binary_search_by(|e| e.addr.cmp(&endpoint.addr)) {
                    Ok(i) => eps[i] = endpoint.clone(),
                    Err(i) => eps.insert(i, endpoint.clone()),
                }
            }
            Change::Remove { backend, addr } => {
                let eps = &mut next
                    .backends
                    .get_mut(usize::from(*backend))
                    .ok_or(DeltaError::NoSuchBackend(*backend))?
                    .endpoints;
                let i = eps.binary_search_by(|e| e.addr.cmp(addr)).map_err(|_| {
                    DeltaError::NoSuchEndpoint {
                        backend: *backend,
                        addr: *addr,
                    }
                })?;
                eps.remove(i);
            }
        }
    }
    Ok(next)
}
