//! The peer view: which meshed workload stands behind a pod address.

use std::net::IpAddr;

use smidge_protocol::{Identity, PeerView};

use crate::index::{DepKey, Lookup};
use crate::model::Body;

/// The identity of the meshed pod at `ip`. Two pods claiming one address with different
/// identities (a stale object, a reused address) give no identity rather than a guess.
pub fn peer(lookup: &Lookup<'_>, ip: IpAddr) -> PeerView {
    let mut found: Option<Identity> = None;
    for obj in lookup.under(DepKey::PodIp(ip)) {
        let Body::Pod(pod) = &obj.body else { continue };
        let namespace = &obj.id.key.namespace;
        let ns_meshed = lookup.namespace(namespace).is_some_and(|n| n.meshed);
        if !pod.inject.unwrap_or(ns_meshed) {
            continue;
        }
        let id = Identity::new(namespace.clone(), pod.service_account.clone());
        match &found {
            Some(other) if *other != id => return PeerView { identity: None },
            _ => found = Some(id),
        }
    }
    PeerView { identity: found }
}
