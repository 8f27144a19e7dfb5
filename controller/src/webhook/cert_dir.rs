//! The webhook's serving certificate from a directory (`tls.crt`, `tls.key`: a
//! `kubernetes.io/tls` Secret mounted, as cert-manager writes it), reloaded when the files
//! change, so a renewed certificate is served without a restart. Handshakes in flight keep the
//! certificate they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// The certificate of a directory, as last read successfully.
#[derive(Debug)]
pub struct CertDir {
    dir: PathBuf,
    current: RwLock<(Vec<u8>, Arc<CertifiedKey>)>,
}

/// Reads and parses the pair; the bytes read are returned to spot a change.
fn read(dir: &Path) -> anyhow::Result<(Vec<u8>, Arc<CertifiedKey>)> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let cert_pem =
        std::fs::read(&cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let key_pem =
        std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("{}: not a PEM private key", key_path.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).with_context(|| {
        format!(
            "{} and {} do not make a pair",
            cert_path.display(),
            key_path.display()
        )
    })?;
    let mut seen = cert_pem;
    seen.extend_from_slice(&key_pem);
    Ok((seen, Arc::new(certified)))
}

impl CertDir {
    /// Reads `dir` now; an unreadable or mismatched pair is an error naming the file.
    pub fn load(dir: &Path) -> anyhow::Result<Arc<CertDir>> {
        let current = read(dir)?;
        Ok(Arc::new(CertDir {
            dir: dir.to_path_buf(),
            current: RwLock::new(current),
        }))
    }

    /// Reads the directory again; true when the certificate changed. A bad pair (a half-written
    /// update) is an error and the current certificate stays.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let (seen, key) = read(&self.dir)?;
        let mut current = self
            .current
            .write()
            .map_err(|_| anyhow::anyhow!("certificate lock poisoned"))?;
        if current.0 == seen {
            return Ok(false);
        }
        *current = (seen, key);
        Ok(true)
    }

    /// Reloads every `every` for as long as it runs.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(dir = %self.dir.display(), "webhook certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot reload the webhook certificate; serving the previous one")
                }
            }
        }
    }

    /// A server configuration that serves whatever this directory holds now (HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertDir {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, pair: &(String, String)) {
        std::fs::write(dir.join(CERT_FILE), &pair.0).expect("cert");
        std::fs::write(dir.join(KEY_FILE), &pair.1).expect("key");
    }

    fn served(c: &CertDir) -> Vec<u8> {
        c.current.read().expect("lock").1.cert[0].to_vec()
    }

    #[test]
    fn a_changed_pair_is_served_after_a_reload_and_a_bad_one_is_not() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("dir");
        let first = self_signed("a.svc");
        write(dir.path(), &first);
        let c = CertDir::load(dir.path()).expect("load");
        let before = served(&c);
        assert!(!c.reload().expect("reload"), "unchanged");
        let second = self_signed("a.svc");
        write(dir.path(), &second);
        assert!(c.reload().expect("reload"), "changed");
        assert_ne!(served(&c), before);
        // A key that is not the certificate's: refused, the second pair stays.
        let now = served(&c);
        std::fs::write(dir.path().join(KEY_FILE), self_signed("x").1).expect("key");
        let e = format!("{:#}", c.reload().expect_err("mismatch"));
        assert!(e.contains("do not make a pair"), "{e}");
        assert_eq!(served(&c), now);
        let _ = c.server_config();
    }

    #[test]
    fn missing_or_garbled_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let e = format!("{:#}", CertDir::load(dir.path()).expect_err("missing"));
        assert!(e.contains(CERT_FILE), "{e}");
        std::fs::write(dir.path().join(CERT_FILE), "junk").expect("cert");
        std::fs::write(dir.path().join(KEY_FILE), "junk").expect("key");
        let e = format!("{:#}", CertDir::load(dir.path()).expect_err("garbled"));
        assert!(e.contains(CERT_FILE), "{e}");
    }
}
