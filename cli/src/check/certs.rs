//! Certificate facts the identity and webhook checks judge: parsing PEM, validity periods,
//! who signed what, and whether a served chain is valid for a name under a CA bundle. Pure:
//! the time is a parameter.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// How close to expiry a certificate may come before a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 60;

/// The DER of every certificate in `pem` (at least one).
pub fn parse_pem(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        X509Certificate::from_der(&block.contents)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(out)
}

fn parsed(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("not an X.509 certificate: {e}"))
}

/// The subject and validity of a certificate, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
}

pub fn summary(der: &[u8]) -> Result<Summary, String> {
    let c = parsed(der)?;
    Ok(Summary {
        subject: c.subject().to_string(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        is_ca: c.is_ca(),
    })
}

/// Valid at `now` (Unix seconds).
pub fn within_validity(s: &Summary, now: i64) -> Result<(), String> {
    if now < s.not_before {
        return Err(format!(
            "{} is not valid before {}",
            s.subject,
            iso(s.not_before)
        ));
    }
    if now >= s.not_after {
        return Err(format!("{} expired on {}", s.subject, iso(s.not_after)));
    }
    Ok(())
}

/// Valid for at least [`EXPIRY_WARNING_DAYS`] more days.
pub fn not_expiring_soon(s: &Summary, now: i64) -> Result<(), String> {
    let left = s.not_after - now;
    if left < EXPIRY_WARNING_DAYS * DAY {
        return Err(format!(
            "{} expires on {} ({} days from now, less than {EXPIRY_WARNING_DAYS})",
            s.subject,
            iso(s.not_after),
            left.div_euclid(DAY)
        ));
    }
    Ok(())
}

/// `child`'s signature verifies with `parent`'s public key.
pub fn signed_by(child: &[u8], parent: &[u8]) -> Result<(), String> {
    let (c, p) = (parsed(child)?, parsed(parent)?);
    c.verify_signature(Some(p.public_key())).map_err(|_| {
        format!(
            "{} is not signed by {} (issuer says {})",
            c.subject(),
            p.subject(),
            c.issuer()
        )
    })
}

/// Whether `chain` (leaf first, as a TLS server sends it) is valid at `now` for `name`, ending at
/// a root in `bundle_pem`.
pub fn verify_served(
    chain: &[Vec<u8>],
    bundle_pem: &str,
    name: &str,
    now: i64,
) -> Result<(), String> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("the server sent no certificate".into());
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in parse_pem(bundle_pem)? {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| format!("the CA bundle holds an unusable root: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("building a verifier: {e}"))?;
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| format!("{name:?}: {e}"))?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.as_slice()),
            &intermediates,
            &server_name,
            &[],
            at,
        )
        .map(|_| ())
        .map_err(|e| format!("the certificate is not valid for {name}: {e}"))
}

/// `2026-12-01T08:00:00Z`.
pub fn iso(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix} (Unix time)"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    pub const NOW: i64 = 1_800_000_000;

    /// A CA or leaf valid from `from` to `to` (Unix seconds), signed by `by` (self-signed when
    /// `None`): (PEM, DER, key).
    pub fn cert(
        name: &str,
        ca: bool,
        from: i64,
        to: i64,
        by: Option<(&str, &KeyPair)>,
    ) -> (String, Vec<u8>, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut p = if ca {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        } else {
            CertificateParams::new(vec![name.to_string()]).expect("params")
        };
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).expect("from");
        p.not_after = time::OffsetDateTime::from_unix_timestamp(to).expect("to");
        let c = match by {
            None => p.self_signed(&key).expect("self-signed"),
            Some((issuer_pem, issuer_key)) => {
                let issuer = Issuer::from_ca_cert_pem(issuer_pem, issuer_key).expect("issuer");
                p.signed_by(&key, &issuer).expect("signed")
            }
        };
        (c.pem(), c.der().to_vec(), key)
    }

    #[test]
    fn validity_and_the_sixty_day_warning() {
        let (_, der, _) = cert("anchor", true, NOW - DAY, NOW + 61 * DAY, None);
        let s = summary(&der).expect("summary");
        assert!(s.is_ca);
        assert_eq!(within_validity(&s, NOW), Ok(()));
        assert_eq!(not_expiring_soon(&s, NOW), Ok(()));
        let e = not_expiring_soon(&s, NOW + 2 * DAY).expect_err("59 days left");
        assert!(e.contains("59 days from now"), "{e}");
        let e = within_validity(&s, NOW + 61 * DAY).expect_err("expired");
        assert!(e.contains("expired on"), "{e}");
        let e = within_validity(&s, NOW - 2 * DAY).expect_err("not yet");
        assert!(e.contains("not valid before"), "{e}");
    }

    #[test]
    fn pem_errors_say_what_is_wrong() {
        assert!(parse_pem("")
            .expect_err("empty")
            .contains("no PEM certificate"));
        let e = parse_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .expect_err("garbage");
        assert!(e.contains("not an X.509 certificate"), "{e}");
    }

    #[test]
    fn a_chain_is_checked_for_its_name_its_signer_and_its_dates() {
        let (anchor_pem, anchor_der, anchor_key) =
            cert("anchor", true, NOW - DAY, NOW + 3650 * DAY, None);
        let (issuer_pem, issuer_der, issuer_key) = cert(
            "issuer",
            true,
            NOW - DAY,
            NOW + 365 * DAY,
            Some((&anchor_pem, &anchor_key)),
        );
        let (_, leaf, _) = cert(
            "smidge-controller.smidge-system.svc",
            false,
            NOW - DAY,
            NOW + 30 * DAY,
            Some((&issuer_pem, &issuer_key)),
        );
        assert_eq!(signed_by(&issuer_der, &anchor_der), Ok(()));
        let chain = vec![leaf.clone(), issuer_der.clone()];
        let name = "smidge-controller.smidge-system.svc";
        assert_eq!(verify_served(&chain, &anchor_pem, name, NOW), Ok(()));
        let e = verify_served(&chain, &anchor_pem, "smidge-controller.other.svc", NOW)
            .expect_err("wrong name");
        assert!(
            e.contains("not valid for smidge-controller.other.svc"),
            "{e}"
        );
        assert!(verify_served(&chain, &anchor_pem, name, NOW + 31 * DAY).is_err());
        // Another anchor: neither the issuer nor the served chain verify.
        let (other_pem, other_der, _) = cert("other", true, NOW - DAY, NOW + DAY, None);
        assert!(signed_by(&issuer_der, &other_der)
            .expect_err("foreign")
            .contains("not signed by"));
        assert!(verify_served(&chain, &other_pem, name, NOW).is_err());
        // Without the intermediate the leaf cannot be tied to the anchor.
        assert!(verify_served(&[leaf], &anchor_pem, name, NOW).is_err());
        assert!(verify_served(&[], &anchor_pem, name, NOW)
            .expect_err("none")
            .contains("no certificate"));
    }
}
