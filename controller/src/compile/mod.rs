//! Pure functions from the [index](crate::index) to the views proxies receive.

mod inbound;
mod outbound;
mod peer;

use std::collections::BTreeSet;

use smidge_protocol::{DefaultPolicy, View, ViewKey};

use crate::index::{DepKey, Index, Lookup};

pub use inbound::inbound;
pub use outbound::outbound;
pub use peer::peer;

/// Mesh-wide settings the compiler needs.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The default policy of namespaces without the default-policy annotation.
    pub default_policy: DefaultPolicy,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            default_policy: DefaultPolicy::Deny,
        }
    }
}

/// A compiled view (or `None` when nothing in the mesh answers to the key) and what it read.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub view: Option<View>,
    pub deps: BTreeSet<DepKey>,
}

/// Compiles the view for `key`.
pub fn compile(index: &Index, key: &ViewKey, config: &MeshConfig) -> Compiled {
    let lookup = Lookup::new(index);
    let view = match key {
        ViewKey::Outbound(addr) => outbound(&lookup, *addr).map(View::Outbound),
        ViewKey::Inbound(id) => Some(View::Inbound(inbound(&lookup, id, config))),
        ViewKey::Peer(ip) => Some(View::Peer(peer(&lookup, *ip))),
    };
    Compiled {
        view,
        deps: lookup.into_deps(),
    }
}

#[cfg(test)]
mod tests;
