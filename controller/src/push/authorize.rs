//! Which views an admitted proxy may subscribe to. Pure: the index is read through [`Addresses`].
//!
//! With identity, a proxy proved its (namespace, ServiceAccount). It may read its own inbound
//! policy, the outbound view of any address its app can reach in the mesh (a Service's
//! ClusterIP:port, or a meshed Pod's IP), and no peer views (mTLS carries caller identities).
//! Without identity (development) every key is allowed, as before; limits still apply.

use std::net::{IpAddr, SocketAddr};

use smidge_protocol::{Identity, ViewKey};

use crate::index::{DepKey, Index};
use crate::model::{Body, Kind, ObjectId};

/// What the index knows about addresses.
pub trait Addresses {
    /// A Service has this ClusterIP and port.
    fn is_service_port(&self, addr: SocketAddr) -> bool;
    /// A meshed Pod has this IP.
    fn is_meshed_pod_ip(&self, ip: IpAddr) -> bool;
}

/// `Ok` when the proxy admitted as `who` (`None`: a controller without identity) may read `key`;
/// else why not.
pub fn authorize(
    key: &ViewKey,
    who: Option<&Identity>,
    addresses: &impl Addresses,
) -> Result<(), String> {
    let Some(who) = who else { return Ok(()) };
    match key {
        ViewKey::Inbound(id) if id == who => Ok(()),
        ViewKey::Inbound(_) => Err(format!(
            "a proxy of {who} may read only its own inbound policy"
        )),
        ViewKey::Peer(_) => Err(
            "peer views are for a mesh without identity; with mTLS the certificate names the caller"
                .into(),
        ),
        ViewKey::Outbound(addr)
            if addresses.is_service_port(*addr) || addresses.is_meshed_pod_ip(addr.ip()) =>
        {
            Ok(())
        }
        ViewKey::Outbound(_) => {
            Err("no Service port or meshed Pod has this address; traffic to it passes as it is".into())
        }
    }
}

/// Before the provider's first read the index knows nothing, so no address can be ruled out:
/// proxies reconnecting to a restarted controller keep their outbound views.
pub struct NotSynced;

impl Addresses for NotSynced {
    fn is_service_port(&self, _: SocketAddr) -> bool {
        true
    }

    fn is_meshed_pod_ip(&self, _: IpAddr) -> bool {
        true
    }
}

impl Addresses for Index {
    fn is_service_port(&self, addr: SocketAddr) -> bool {
        self.filed_under(&DepKey::ServiceIp(addr.ip()))
            .any(|o| match &o.body {
                Body::Service(svc) => svc.ports.iter().any(|p| p.port == addr.port()),
                _ => false,
            })
    }

    fn is_meshed_pod_ip(&self, ip: IpAddr) -> bool {
        self.filed_under(&DepKey::PodIp(ip)).any(|o| match &o.body {
            Body::Pod(pod) => pod.inject.unwrap_or_else(|| {
                let ns = ObjectId::new(Kind::Namespace, "", o.id.key.namespace.as_str());
                matches!(self.get(&ns).map(|n| &n.body), Some(Body::Namespace(n)) if n.meshed)
            }),
            _ => false,
        })
    }
}

/// The IPs the index holds for a pod (empty when it knows none).
pub fn pod_ips(index: &Index, namespace: &str, pod: &str) -> Vec<IpAddr> {
    let id = ObjectId::new(Kind::Pod, namespace, pod);
    match index.get(&id).map(|o| &o.body) {
        Some(Body::Pod(p)) => p.ips.clone(),
        _ => Vec::new(),
    }
}

/// Whether a token for a pod may be used from `source`: only from one of the pod's IPs, when the
/// index knows any (`Ok(false)`: it knows none, so nothing was checked).
pub fn source_matches(pod_ips: &[IpAddr], source: IpAddr) -> Result<bool, String> {
    if pod_ips.is_empty() {
        return Ok(false);
    }
    let source = source.to_canonical();
    if pod_ips.iter().any(|ip| ip.to_canonical() == source) {
        Ok(true)
    } else {
        Err(format!(
            "the token's pod has the address {}, but this connection comes from {source}",
            pod_ips
                .iter()
                .map(|ip| ip.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Book;
    impl Addresses for Book {
        fn is_service_port(&self, addr: SocketAddr) -> bool {
            addr == "10.96.0.10:80".parse().expect("addr")
        }
        fn is_meshed_pod_ip(&self, ip: IpAddr) -> bool {
            ip == "10.0.0.5".parse::<IpAddr>().expect("ip")
        }
    }

    fn out(a: &str) -> ViewKey {
        ViewKey::Outbound(a.parse().expect("addr"))
    }

    #[test]
    fn an_admitted_proxy_reads_its_own_policy_and_mesh_destinations_only() {
        let intruder = Identity::new("shop", "intruder");
        let who = Some(&intruder);
        assert_eq!(
            authorize(&ViewKey::Inbound(intruder.clone()), who, &Book),
            Ok(())
        );
        let e = authorize(
            &ViewKey::Inbound(Identity::new("bank", "vault")),
            who,
            &Book,
        )
        .expect_err("another workload's policy");
        assert!(e.contains("own inbound"), "{e}");
        assert!(authorize(&ViewKey::Peer("10.0.0.5".parse().expect("ip")), who, &Book).is_err());
        assert_eq!(authorize(&out("10.96.0.10:80"), who, &Book), Ok(()));
        assert_eq!(authorize(&out("10.0.0.5:8080"), who, &Book), Ok(()));
        assert!(authorize(&out("10.96.0.10:81"), who, &Book).is_err());
        assert!(authorize(&out("192.0.2.1:443"), who, &Book).is_err());
    }

    #[test]
    fn before_the_first_sync_no_destination_is_ruled_out_but_policies_stay_private() {
        let web = Identity::new("shop", "web");
        let who = Some(&web);
        assert_eq!(authorize(&out("192.0.2.1:443"), who, &NotSynced), Ok(()));
        assert!(authorize(
            &ViewKey::Inbound(Identity::new("bank", "vault")),
            who,
            &NotSynced
        )
        .is_err());
        assert!(authorize(
            &ViewKey::Peer("10.0.0.5".parse().expect("ip")),
            who,
            &NotSynced
        )
        .is_err());
    }

    #[test]
    fn without_identity_everything_is_allowed() {
        for key in [
            ViewKey::Inbound(Identity::new("bank", "vault")),
            ViewKey::Peer("10.0.0.9".parse().expect("ip")),
            out("192.0.2.1:443"),
        ] {
            assert_eq!(authorize(&key, None, &Book), Ok(()));
        }
    }

    #[test]
    fn a_token_is_used_only_from_its_pods_address() {
        let ips: Vec<IpAddr> = vec!["10.0.0.5".parse().expect("ip")];
        assert_eq!(
            source_matches(&ips, "10.0.0.5".parse().expect("ip")),
            Ok(true)
        );
        assert_eq!(
            source_matches(&ips, "::ffff:10.0.0.5".parse().expect("ip")),
            Ok(true)
        );
        let e = source_matches(&ips, "10.0.0.6".parse().expect("ip")).expect_err("other pod");
        assert!(e.contains("10.0.0.6"), "{e}");
        assert_eq!(
            source_matches(&[], "10.0.0.6".parse().expect("ip")),
            Ok(false)
        );
    }
}
