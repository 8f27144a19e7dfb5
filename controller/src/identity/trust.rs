//! Trust material: the trust anchor (root), the issuer that signs proxy certificates, and the
//! token key. Read from a directory (a mounted Secret in a cluster); `generate` makes a fresh set.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::token::TokenKey;

pub const ANCHOR_FILE: &str = "ca.crt";
pub const ISSUER_CERT_FILE: &str = "issuer.crt";
pub const ISSUER_KEY_FILE: &str = "issuer.key";
pub const TOKEN_KEY_FILE: &str = "token.key";

/// Why trust material cannot be used; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{}: not signed by the trust anchor in {}", issuer.display(), anchor.display())]
    NotSignedByAnchor { issuer: PathBuf, anchor: PathBuf },
    #[error("{}: this key does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
}

/// Loaded, checked trust material.
pub struct Trust {
    pub anchor_pem: String,
    pub anchor_der: Vec<u8>,
    pub issuer_pem: String,
    pub issuer_der: Vec<u8>,
    pub issuer_key: KeyPair,
    /// Unix seconds.
    pub issuer_not_after: i64,
    pub token_key: TokenKey,
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TrustError {
    TrustError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read(path: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(path).map_err(|e| file_err(path, e))
}

/// A PEM certificate that must be a CA and valid now: its DER.
fn ca_cert(path: &Path, now: i64) -> Result<(String, Vec<u8>), TrustError> {
    let pem_text = read(path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| file_err(path, format!("not a PEM certificate: {e}")))?;
    let (_, cert) = X509Certificate::from_der(&pem.contents)
        .map_err(|e| file_err(path, format!("not an X.509 certificate: {e}")))?;
    let validity = cert.validity();
    if validity.not_after.timestamp() <= now {
        return Err(file_err(path, format!("expired on {}", validity.not_after)));
    }
    if validity.not_before.timestamp() > now {
        return Err(file_err(
            path,
            format!("not valid before {}", validity.not_before),
        ));
    }
    if !cert.is_ca() {
        return Err(file_err(path, "not a CA certificate"));
    }
    Ok((pem_text, pem.contents.clone()))
}

impl Trust {
    /// Reads and checks `dir`: every file present, certificates current, the issuer signed by
    /// the anchor, the key matching the issuer.
    pub fn load(dir: &Path) -> Result<Trust, TrustError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let anchor_path = dir.join(ANCHOR_FILE);
        let issuer_path = dir.join(ISSUER_CERT_FILE);
        let key_path = dir.join(ISSUER_KEY_FILE);
        let token_path = dir.join(TOKEN_KEY_FILE);
        let (anchor_pem, anchor_der) = ca_cert(&anchor_path, now)?;
        let (issuer_pem, issuer_der) = ca_cert(&issuer_path, now)?;
        let issuer_key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|e| file_err(&key_path, format!("not a PEM private key: {e}")))?;
        let issuer_not_after = {
            let (_, anchor) =
                X509Certificate::from_der(&anchor_der).map_err(|e| file_err(&anchor_path, e))?;
            let (_, issuer) =
                X509Certificate::from_der(&issuer_der).map_err(|e| file_err(&issuer_path, e))?;
            if issuer.verify_signature(Some(anchor.public_key())).is_err() {
                return Err(TrustError::NotSignedByAnchor {
                    issuer: issuer_path,
                    anchor: anchor_path,
                });
            }
            if issuer_key.public_key_raw() != issuer.public_key().subject_public_key.data.as_ref() {
                return Err(TrustError::KeyMismatch {
                    key: key_path,
                    cert: issuer_path,
                });
            }
            issuer.validity().not_after.timestamp()
        };
        let token_secret = B64
            .decode(read(&token_path)?.trim())
            .map_err(|e| file_err(&token_path, format!("not base64: {e}")))?;
        let token_key = TokenKey::new(&token_secret).map_err(|e| file_err(&token_path, e))?;
        Ok(Trust {
            anchor_pem,
            anchor_der,
            issuer_pem,
            issuer_der,
            issuer_key,
            issuer_not_after,
            token_key,
        })
    }
}

fn ca_params(name: &str, path_len: Option<u8>, lifetime: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = match path_len {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + lifetime;
    params
}

/// Writes a fresh set into `dir` (ECDSA P-256): a 10-year anchor, a 1-year issuer and a token
/// key. Refuses to overwrite an existing set.
pub fn generate(dir: &Path, trust_domain: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let anchor_path = dir.join(ANCHOR_FILE);
    if anchor_path.exists() {
        anyhow::bail!(
            "{} exists: refusing to overwrite trust material",
            anchor_path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let anchor_key = KeyPair::generate()?;
    let anchor_params = ca_params(
        &format!("smidge trust anchor {trust_domain}"),
        None,
        Duration::days(3650),
    );
    let anchor = anchor_params.self_signed(&anchor_key)?;
    let issuer_key = KeyPair::generate()?;
    let issuer_params = ca_params(
        &format!("smidge issuer {trust_domain}"),
        Some(0),
        Duration::days(365),
    );
    let issuer =
        issuer_params.signed_by(&issuer_key, &rcgen::Issuer::new(anchor_params, anchor_key))?;
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    let write = |name: &str, text: String, private: bool| -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o644 })
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    };
    write(ANCHOR_FILE, anchor.pem(), false)?;
    write(ISSUER_CERT_FILE, issuer.pem(), false)?;
    write(ISSUER_KEY_FILE, issuer_key.serialize_pem(), true)?;
    write(TOKEN_KEY_FILE, format!("{}\n", B64.encode(secret)), true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_set_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), "cluster.local").expect("generate");
        Trust::load(dir.path()).expect("load");
        assert!(
            generate(dir.path(), "cluster.local").is_err(),
            "overwrote a set"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), "cluster.local").expect("generate");
        std::fs::remove_file(dir.path().join(ISSUER_KEY_FILE)).expect("rm");
        let e = Trust::load(dir.path()).err().expect("refused").to_string();
        assert!(
            e.contains("issuer.key") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn an_issuer_from_another_anchor_is_a_mismatch() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        generate(a.path(), "cluster.local").expect("generate");
        generate(b.path(), "cluster.local").expect("generate");
        std::fs::copy(b.path().join(ANCHOR_FILE), a.path().join(ANCHOR_FILE)).expect("cp");
        let e = Trust::load(a.path()).err().expect("refused").to_string();
        assert!(e.contains("not signed by the trust anchor"), "{e}");
        // And a key from another set does not belong to the issuer.
        let c = tempfile::tempdir().expect("tempdir");
        generate(c.path(), "cluster.local").expect("generate");
        std::fs::copy(
            c.path().join(ISSUER_KEY_FILE),
            b.path().join(ISSUER_KEY_FILE),
        )
        .expect("cp");
        let e = Trust::load(b.path()).err().expect("refused").to_string();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn an_expired_anchor_is_refused_with_its_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate().expect("key");
        let mut params = ca_params("old", None, Duration::days(1));
        params.not_before = OffsetDateTime::now_utc() - Duration::days(10);
        params.not_after = OffsetDateTime::now_utc() - Duration::days(5);
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.path().join(ANCHOR_FILE), cert.pem()).expect("write");
        let e = Trust::load(dir.path()).err().expect("refused").to_string();
        assert!(e.contains("ca.crt") && e.contains("expired on"), "{e}");
    }
}
