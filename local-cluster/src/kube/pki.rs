//! The control plane's certificates: one cluster CA that signs every serving and client
//! certificate (and, through kube-controller-manager, the certificates CSRs ask for), and the
//! service-account signing key. Made once per state directory and reused, so that tokens,
//! kubeconfigs and etcd's data stay valid across restarts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// How long every certificate is valid: a local cluster is recreated long before.
const LIFETIME: Duration = Duration::days(3650);

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

/// What a leaf certificate is for.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// File stem under the PKI directory (`<name>.crt`, `<name>.key`).
    pub name: &'static str,
    /// Subject CN: the user name for a client certificate.
    pub common_name: String,
    /// Subject O entries: the groups for a client certificate.
    pub organizations: Vec<String>,
    /// DNS names and IP addresses; non-empty makes it a serving certificate.
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub client: bool,
}

impl Leaf {
    /// A client certificate for `user` in `groups`.
    pub fn client(name: &'static str, user: &str, groups: &[&str]) -> Leaf {
        Leaf {
            name,
            common_name: user.into(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            dns: Vec::new(),
            ips: Vec::new(),
            client: true,
        }
    }

    /// A serving certificate for `dns` and `ips`.
    pub fn server(name: &'static str, dns: &[&str], ips: &[IpAddr]) -> Leaf {
        Leaf {
            name,
            common_name: name.into(),
            organizations: Vec::new(),
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: ips.to_vec(),
            client: false,
        }
    }
}

/// Where the files of a PKI directory are.
#[derive(Clone, Debug)]
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
    /// The cluster CA's certificate and key.
    pub const CA: &'static str = "ca";
    /// The service-account token signing key (`sa.key`) and its public key (`sa.pub`).
    pub const SERVICE_ACCOUNTS: &'static str = "sa";
    pub fn public_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pub"))
    }
}

/// A new self-signed cluster CA.
pub fn new_ca(common_name: &str) -> anyhow::Result<(Pair, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, &[]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = params
        .self_signed(&key)
        .context("self-signing the CA certificate")?;
    let pair = Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    Ok((pair, Issuer::new(params, key)))
}

/// A leaf certificate signed by `ca`.
pub fn issue(leaf: &Leaf, ca: &Issuer<'_, KeyPair>) -> anyhow::Result<Pair> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&leaf.common_name, &leaf.organizations);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let serving = !leaf.dns.is_empty() || !leaf.ips.is_empty();
    if serving {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if leaf.client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    for dns in &leaf.dns {
        let dns = dns
            .as_str()
            .try_into()
            .with_context(|| format!("{dns:?} is not a DNS name"))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params
        .subject_alt_names
        .extend(leaf.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    validity(&mut params);
    let key = KeyPair::generate().with_context(|| format!("generating the {} key", leaf.name))?;
    let cert = params
        .signed_by(&key, ca)
        .with_context(|| format!("signing the {} certificate", leaf.name))?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A new ECDSA P-256 key for signing service-account tokens (ES256): the private key (PKCS#8
/// PEM) and its public key (SubjectPublicKeyInfo PEM). The API server verifies with the public
/// one: it reads EC private keys only in SEC1 form, so it could not take the PKCS#8 file.
pub fn new_signing_key() -> anyhow::Result<Pair> {
    let key = KeyPair::generate().context("generating the service-account key")?;
    Ok(Pair {
        cert: key.public_key_pem(),
        key: key.serialize_pem(),
    })
}

fn name(common_name: &str, organizations: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in organizations {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + LIFETIME;
}

/// Makes the PKI in `files.dir` unless it is there: the CA, `leaves` signed by it, and the
/// service-account key. An existing PKI is kept as it is (the CA must not change under etcd's
/// data and issued kubeconfigs); a partial one is an error, naming what is missing.
pub fn ensure(files: &Files, leaves: &[Leaf]) -> anyhow::Result<()> {
    let mut wanted: Vec<PathBuf> = vec![
        files.cert(Files::CA),
        files.key(Files::CA),
        files.key(Files::SERVICE_ACCOUNTS),
        files.public_key(Files::SERVICE_ACCOUNTS),
    ];
    for leaf in leaves {
        wanted.push(files.cert(leaf.name));
        wanted.push(files.key(leaf.name));
    }
    let missing: Vec<&PathBuf> = wanted.iter().filter(|p| !p.exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if missing.len() != wanted.len() {
        anyhow::bail!(
            "the control plane's PKI in {} is incomplete (missing {}); remove the state directory to start afresh",
            files.dir.display(),
            missing
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    std::fs::create_dir_all(&files.dir)
        .with_context(|| format!("creating {}", files.dir.display()))?;
    let (ca, issuer) = new_ca("smidge-local-ca")?;
    write(files, Files::CA, &ca)?;
    for leaf in leaves {
        write(files, leaf.name, &issue(leaf, &issuer)?)?;
    }
    let sa = new_signing_key()?;
    let public = files.public_key(Files::SERVICE_ACCOUNTS);
    std::fs::write(&public, &sa.cert).with_context(|| format!("writing {}", public.display()))?;
    write_private(&files.key(Files::SERVICE_ACCOUNTS), &sa.key)
}

fn write(files: &Files, name: &str, pair: &Pair) -> anyhow::Result<()> {
    let cert = files.cert(name);
    std::fs::write(&cert, &pair.cert).with_context(|| format!("writing {}", cert.display()))?;
    write_private(&files.key(name), &pair.key)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_signed_by_the_ca_with_their_names_and_groups() {
        let (ca, issuer) = new_ca("test-ca").unwrap();
        let admin = Leaf::client("admin", "admin", &["system:masters"]);
        let pair = issue(&admin, &issuer).unwrap();
        let der = pem_der(&pair.cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.subject().to_string(), "O=system:masters, CN=admin");
        let ca_der = pem_der(&ca.cert);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert!(ca_cert.is_ca());
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);

        let ip: IpAddr = "10.96.0.1".parse().unwrap();
        let server = issue(&Leaf::server("apiserver", &["kubernetes"], &[ip]), &issuer).unwrap();
        let server_der = pem_der(&server.cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&server_der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
        assert_eq!(names, ["DNSName(kubernetes)", "IPAddress(0a:60:00:01)"]);
    }

    #[test]
    fn an_existing_pki_is_kept_and_a_partial_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files {
            dir: dir.path().join("pki"),
        };
        let leaves = [Leaf::client("admin", "admin", &["system:masters"])];
        ensure(&files, &leaves).unwrap();
        let ca = std::fs::read_to_string(files.cert(Files::CA)).unwrap();
        ensure(&files, &leaves).unwrap();
        assert_eq!(std::fs::read_to_string(files.cert(Files::CA)).unwrap(), ca);
        std::fs::remove_file(files.key("admin")).unwrap();
        let err = ensure(&files, &leaves).unwrap_err().to_string();
        assert!(
            err.contains("incomplete") && err.contains("admin.key"),
            "{err}"
        );
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    }
}
