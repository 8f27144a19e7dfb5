//! The webhook's serving certificate, issued by the controller's identity CA for the names the
//! API server dials: the Service's DNS names in a cluster, or an address in tests. The CRDs'
//! `caBundle` is then the CA's trust anchor.

use std::sync::Arc;

use crate::identity::Authority;

/// The DNS names of the webhook's Service, as the API server dials it.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A TLS configuration for the webhook with a certificate for `names` (DNS names or IP
/// addresses) from `authority`, speaking HTTP/1.1.
pub fn serving_cert(
    authority: &Authority,
    names: &[String],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let config = authority.server_config_for(&names)?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
