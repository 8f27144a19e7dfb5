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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::identity::{generate, Trust};

    /// A TLS handshake over an in-memory pipe, the client trusting only the anchor.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        anchor_pem: &str,
        name: &str,
    ) -> Result<(), String> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(anchor_pem.as_bytes()).expect("pem");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(pem.contents.clone()))
            .expect("root");
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let served = tokio::spawn(async move {
            let mut s = acceptor.accept(b).await.map_err(|e| e.to_string())?;
            s.write_all(b"ok").await.map_err(|e| e.to_string())?;
            s.flush().await.map_err(|e| e.to_string())
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let mut c = connector
            .connect(name, a)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        served.await.map_err(|e| e.to_string())??;
        Ok(())
    }

    #[tokio::test]
    async fn the_serving_certificate_names_the_service_and_addresses_and_chains_to_the_anchor() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), "cluster.local").expect("generate");
        let authority = Authority::new(
            Trust::load(dir.path()).expect("load"),
            "cluster.local",
            Duration::from_secs(3600),
        )
        .expect("authority");
        let mut names = service_names("smidge-controller", "smidge-system");
        assert_eq!(
            names,
            [
                "smidge-controller.smidge-system.svc",
                "smidge-controller.smidge-system.svc.cluster.local"
            ]
        );
        names.push("127.0.0.1".into());
        let config = serving_cert(&authority, &names).expect("config");
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
        for name in &names {
            handshake(config.clone(), &authority.anchor_pem, name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = handshake(
            config,
            &authority.anchor_pem,
            "smidge-controller.default.svc",
        )
        .await;
        assert!(other.is_err(), "a name not on the certificate is refused");
    }
}
