//! Issuing: a CSR plus a verified token in, a short-lived certificate for exactly the token's
//! ServiceAccount out.

use std::sync::Arc;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use smidge_protocol::names::{dns_name, spiffe_id};
use smidge_protocol::Identity;
use time::{Duration, OffsetDateTime};

use super::token::Claims;
use super::trust::Trust;

/// A certificate chain (leaf first, DER) and its expiry in Unix seconds.
#[derive(Clone, Debug)]
pub struct Issued {
    pub chain: Vec<Vec<u8>>,
    pub not_after: u64,
}

/// Why a CSR is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IssueError {
    #[error("the CSR cannot be read or its signature does not verify: {0}")]
    BadCsr(String),
    #[error("the CSR asks for {asked:?}, but the token proves {allowed}")]
    NamesDisagree { asked: Vec<String>, allowed: String },
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The identity CA of one trust domain.
pub struct Authority {
    trust_domain: String,
    lifetime: Duration,
    issuer: Issuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
    issuer_not_after: i64,
    pub anchor_pem: String,
    pub token_key: super::TokenKey,
}

fn san_text(san: &SanType) -> String {
    match san {
        SanType::URI(u) => u.as_str().to_string(),
        SanType::DnsName(d) => d.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

impl Authority {
    pub fn new(
        trust: Trust,
        trust_domain: &str,
        lifetime: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let issuer = Issuer::from_ca_cert_pem(&trust.issuer_pem, trust.issuer_key)?;
        Ok(Authority {
            trust_domain: trust_domain.to_string(),
            lifetime: Duration::try_from(lifetime)?,
            issuer,
            issuer_der: trust.issuer_der,
            issuer_not_after: trust.issuer_not_after,
            anchor_pem: trust.anchor_pem,
            token_key: trust.token_key,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    fn names(&self, id: &Identity) -> Vec<SanType> {
        let mut names = Vec::new();
        if let Ok(uri) = spiffe_id(&self.trust_domain, id).try_into() {
            names.push(SanType::URI(uri));
        }
        if let Ok(dns) = dns_name(&self.trust_domain, id).try_into() {
            names.push(SanType::DnsName(dns));
        }
        names
    }

    fn params(&self, names: Vec<SanType>, now: OffsetDateTime) -> (CertificateParams, u64) {
        let mut params = CertificateParams::default();
        // An empty subject: the names are in the SANs (rcgen's default is a placeholder CN).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - Duration::minutes(1);
        let cap = OffsetDateTime::from_unix_timestamp(self.issuer_not_after).unwrap_or(now);
        params.not_after = (now + self.lifetime).min(cap);
        let mut serial = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let not_after = u64::try_from(params.not_after.unix_timestamp()).unwrap_or(0);
        (params, not_after)
    }

    /// A certificate for the token's ServiceAccount, if the CSR asks for exactly its names. It
    /// ends no later than the token (`claims.exp`), so it never outlives the proof that earned it.
    pub fn issue(
        &self,
        claims: &Claims,
        csr_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| IssueError::BadCsr(e.to_string()))?;
        let id = Identity::new(claims.ns.clone(), claims.sa.clone());
        let allowed = self.names(&id);
        let mut asked: Vec<String> = csr.params.subject_alt_names.iter().map(san_text).collect();
        let mut want: Vec<String> = allowed.iter().map(san_text).collect();
        asked.sort();
        want.sort();
        if asked != want {
            return Err(IssueError::NamesDisagree {
                asked,
                allowed: spiffe_id(&self.trust_domain, &id),
            });
        }
        let (mut params, mut not_after) = self.params(allowed, now);
        if let Some(exp) = i64::try_from(claims.exp)
            .ok()
            .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok())
            .filter(|e| *e < params.not_after)
        {
            params.not_after = exp;
            not_after = claims.exp;
        }
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        Ok(Issued {
            chain: vec![cert.der().to_vec(), self.issuer_der.clone()],
            not_after,
        })
    }

    /// The controller's own TLS identity for the control channel, under the DNS name `name`.
    pub fn server_config(&self, name: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.server_config_for(&[name])
    }

    /// Like [`server_config`](Self::server_config), for several names: DNS names or IP
    /// addresses (the conversion webhook's Service names, or `127.0.0.1` in tests).
    pub fn server_config_for(&self, names: &[&str]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        let sans = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (mut params, _) = self.params(sans, now);
        params.not_after = OffsetDateTime::from_unix_timestamp(self.issuer_not_after)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![
            CertificateDer::from(cert.der().to_vec()),
            CertificateDer::from(self.issuer_der.clone()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config =
            rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::token::AUDIENCE;
    use crate::identity::trust::generate;

    fn authority() -> (tempfile::TempDir, Authority) {
        let dir = tempfile::tempdir().expect("tempdir");
        generate(dir.path(), "cluster.local").expect("generate");
        let trust = Trust::load(dir.path()).expect("load");
        let a = Authority::new(trust, "cluster.local", std::time::Duration::from_secs(3600))
            .expect("authority");
        (dir, a)
    }

    fn claims(sa: &str) -> Claims {
        Claims {
            ns: "shop".into(),
            sa: sa.into(),
            pod: "p".into(),
            aud: AUDIENCE.into(),
            exp: u64::MAX,
        }
    }

    fn csr_for(names: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| {
                if n.starts_with("spiffe://") {
                    SanType::URI((*n).try_into().expect("uri"))
                } else {
                    SanType::DnsName((*n).try_into().expect("dns"))
                }
            })
            .collect();
        params.serialize_request(&key).expect("csr").der().to_vec()
    }

    const CHECKOUT: [&str; 2] = [
        "spiffe://cluster.local/ns/shop/sa/checkout",
        "checkout.shop.serviceaccount.identity.smidge.cluster.local",
    ];

    #[test]
    fn a_csr_with_the_tokens_names_gets_a_short_lived_certificate() {
        let (_d, a) = authority();
        let now = OffsetDateTime::now_utc();
        let issued = a
            .issue(&claims("checkout"), &csr_for(&CHECKOUT), now)
            .expect("issued");
        assert_eq!(issued.chain.len(), 2);
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.chain[0]).expect("x509");
        let uris: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            uris.iter()
                .any(|u| u.contains("spiffe://cluster.local/ns/shop/sa/checkout")),
            "{uris:?}"
        );
        let life = cert.validity().not_after.timestamp() - now.unix_timestamp();
        assert!((3500..=3600).contains(&life), "lifetime {life}");
    }

    #[test]
    fn a_certificate_ends_no_later_than_its_token_and_has_no_placeholder_subject() {
        let (_d, a) = authority();
        let now = OffsetDateTime::now_utc();
        let mut c = claims("checkout");
        c.exp = u64::try_from(now.unix_timestamp()).expect("now") + 600;
        let issued = a.issue(&c, &csr_for(&CHECKOUT), now).expect("issued");
        let (_, cert) = x509_parser::parse_x509_certificate(&issued.chain[0]).expect("x509");
        let not_after = cert.validity().not_after.timestamp();
        assert!(
            u64::try_from(not_after).expect("after 1970") <= c.exp,
            "{not_after} > {}",
            c.exp
        );
        assert_eq!(issued.not_after, c.exp);
        let subject = cert.subject().to_string();
        assert!(!subject.contains("rcgen"), "subject {subject:?}");
        assert_eq!(cert.subject().iter_attributes().count(), 0, "{subject:?}");
    }

    #[test]
    fn a_csr_for_another_service_account_is_refused() {
        let (_d, a) = authority();
        let other = [
            "spiffe://cluster.local/ns/shop/sa/admin",
            "admin.shop.serviceaccount.identity.smidge.cluster.local",
        ];
        let e = a
            .issue(
                &claims("checkout"),
                &csr_for(&other),
                OffsetDateTime::now_utc(),
            )
            .expect_err("refused");
        assert!(matches!(e, IssueError::NamesDisagree { .. }), "{e}");
        // Extra names are as bad as wrong ones.
        let mut extra = CHECKOUT.to_vec();
        extra.push("example.com");
        assert!(a
            .issue(
                &claims("checkout"),
                &csr_for(&extra),
                OffsetDateTime::now_utc()
            )
            .is_err());
    }

    #[test]
    fn a_garbage_or_tampered_csr_is_refused() {
        let (_d, a) = authority();
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            a.issue(&claims("checkout"), b"garbage", now),
            Err(IssueError::BadCsr(_))
        ));
        let mut csr = csr_for(&CHECKOUT);
        let last = csr.len() - 1;
        csr[last] ^= 0xff;
        assert!(matches!(
            a.issue(&claims("checkout"), &csr, now),
            Err(IssueError::BadCsr(_))
        ));
    }
}
