//! How a workload identity is spelled in certificates: a SPIFFE ID (URI SAN) for humans and
//! authorization, and a DNS name (DNS SAN) that TLS server-name checks can verify.

use crate::view::Identity;

/// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`
pub fn spiffe_id(trust_domain: &str, id: &Identity) -> String {
    format!(
        "spiffe://{trust_domain}/ns/{}/sa/{}",
        id.namespace, id.service_account
    )
}

/// `<sa>.<ns>.serviceaccount.identity.smidge.<trust-domain>`: what a client puts in SNI and
/// checks the server certificate against.
pub fn dns_name(trust_domain: &str, id: &Identity) -> String {
    format!(
        "{}.{}.serviceaccount.identity.smidge.{trust_domain}",
        id.service_account, id.namespace
    )
}

/// The identity in a SPIFFE ID of `trust_domain`, or `None` for anything else.
pub fn parse_spiffe_id(trust_domain: &str, uri: &str) -> Option<Identity> {
    let rest = uri.strip_prefix("spiffe://")?.strip_prefix(trust_domain)?;
    let mut parts = rest.strip_prefix('/')?.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None) if !ns.is_empty() && !sa.is_empty() => {
            Some(Identity::new(ns, sa))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip_and_other_domains_are_refused() {
        let id = Identity::new("shop", "checkout");
        let uri = spiffe_id("cluster.local", &id);
        assert_eq!(uri, "spiffe://cluster.local/ns/shop/sa/checkout");
        assert_eq!(parse_spiffe_id("cluster.local", &uri), Some(id.clone()));
        assert_eq!(parse_spiffe_id("other.local", &uri), None);
        assert_eq!(
            parse_spiffe_id("cluster.local", "spiffe://cluster.local/ns/a/sa/b/c"),
            None
        );
        assert_eq!(
            dns_name("cluster.local", &id),
            "checkout.shop.serviceaccount.identity.smidge.cluster.local"
        );
    }
}
