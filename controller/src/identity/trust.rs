//! Trust material: the trust anchor (root), the issuer that signs proxy certificates, and the
//! token key. Read from a directory (a mounted Secret in a cluster); `generate` makes a fresh set.

use std::path::Path;

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
    /// `location` is a file path or `Secret ns/name key K`.
    #[error("{location}: {reason}")]
    File { location: String, reason: String },
    #[error("{issuer}: not signed by the trust anchor in {anchor}")]
    NotSignedByAnchor { issuer: String, anchor: String },
    #[error("{key}: this key does not belong to the certificate in {cert}")]
    KeyMismatch { key: String, cert: String },
}

/// Where trust material comes from: files in a directory, or the data of a Secret.
pub trait Source {
    /// The text stored under `name` (`ca.crt`, ...).
    fn read(&self, name: &str) -> Result<String, TrustError>;
    /// How errors name `name`.
    fn location(&self, name: &str) -> String;
}

/// A directory of files.
pub struct Dir<'a>(pub &'a Path);

impl Source for Dir<'_> {
    fn read(&self, name: &str) -> Result<String, TrustError> {
        let path = self.0.join(name);
        std::fs::read_to_string(&path).map_err(|e| TrustError::File {
            location: path.display().to_string(),
            reason: e.to_string(),
        })
    }
    fn location(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

/// The `data` of a Kubernetes Secret.
pub struct SecretData<'a> {
    pub name: String,
    pub data: &'a std::collections::BTreeMap<String, k8s_openapi::ByteString>,
}

impl Source for SecretData<'_> {
    fn read(&self, name: &str) -> Result<String, TrustError> {
        let bytes = self.data.get(name).ok_or_else(|| TrustError::File {
            location: self.location(name),
            reason: "no such key in the Secret".into(),
        })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| TrustError::File {
            location: self.location(name),
            reason: "not UTF-8 text".into(),
        })
    }
    fn location(&self, name: &str) -> String {
        format!("Secret {} key {name}", self.name)
    }
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

fn file_err(location: &str, reason: impl std::fmt::Display) -> TrustError {
    TrustError::File {
        location: location.to_string(),
        reason: reason.to_string(),
    }
}

/// A PEM certificate that must be a CA and valid now: its DER.
fn ca_cert(source: &dyn Source, name: &str, now: i64) -> Result<(String, Vec<u8>), TrustError> {
    let path = source.location(name);
    let path = path.as_str();
    let pem_text = source.read(name)?;
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
        Self::from_source(&Dir(dir))
    }

    /// Like [`load`](Self::load), from any [`Source`] (a Secret's data, say).
    pub fn from_source(source: &dyn Source) -> Result<Trust, TrustError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let anchor_path = source.location(ANCHOR_FILE);
        let issuer_path = source.location(ISSUER_CERT_FILE);
        let key_path = source.location(ISSUER_KEY_FILE);
        let token_path = source.location(TOKEN_KEY_FILE);
        let (anchor_pem, anchor_der) = ca_cert(source, ANCHOR_FILE, now)?;
        let (issuer_pem, issuer_der) = ca_cert(source, ISSUER_CERT_FILE, now)?;
        let issuer_key = KeyPair::from_pem(&source.read(ISSUER_KEY_FILE)?)
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
            .decode(source.read(TOKEN_KEY_FILE)?.trim())
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

/// A fresh set of trust material, as the text of each file (or Secret key).
pub struct Generated {
    /// `(file name, text, private)` for ca.crt, issuer.crt, issuer.key and token.key.
    pub files: Vec<(&'static str, String, bool)>,
}

impl Generated {
    /// The text stored under `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, text, _)| text.as_str())
    }
}

/// Makes a fresh set (ECDSA P-256): a 10-year anchor, a 1-year issuer and a token key.
pub fn generate_set(trust_domain: &str) -> anyhow::Result<Generated> {
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
    Ok(Generated {
        files: vec![
            (ANCHOR_FILE, anchor.pem(), false),
            (ISSUER_CERT_FILE, issuer.pem(), false),
            (ISSUER_KEY_FILE, issuer_key.serialize_pem(), true),
            (TOKEN_KEY_FILE, format!("{}\n", B64.encode(secret)), true),
        ],
    })
}

/// Writes a fresh set ([`generate_set`]) into `dir`. Refuses to overwrite an existing set.
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
    for (name, text, private) in generate_set(trust_domain)?.files {
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
            .with_context(|| format!("writing {}", path.display()))?;
    }
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
    fn a_secret_holds_the_same_set_and_a_missing_key_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), "cluster.local").expect("generate");
        let mut data = std::collections::BTreeMap::new();
        for name in [
            ANCHOR_FILE,
            ISSUER_CERT_FILE,
            ISSUER_KEY_FILE,
            TOKEN_KEY_FILE,
        ] {
            let bytes = std::fs::read(dir.path().join(name)).expect("read");
            data.insert(name.to_string(), k8s_openapi::ByteString(bytes));
        }
        let name = || "smidge-system/smidge-identity".to_string();
        Trust::from_source(&SecretData {
            name: name(),
            data: &data,
        })
        .expect("from the Secret");
        data.remove(ISSUER_KEY_FILE);
        let e = Trust::from_source(&SecretData {
            name: name(),
            data: &data,
        })
        .err()
        .expect("refused")
        .to_string();
        assert!(
            e.contains("Secret smidge-system/smidge-identity key issuer.key"),
            "{e}"
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
