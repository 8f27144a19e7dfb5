//! The identity in a peer's certificate.

use rustls::pki_types::CertificateDer;
use smidge_protocol::names::parse_spiffe_id;
use smidge_protocol::Identity;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The SPIFFE identity (of `trust_domain`) in the first URI SAN of the leaf certificate.
pub fn peer_identity(trust_domain: &str, chain: Option<&[CertificateDer<'_>]>) -> Option<Identity> {
    let leaf = chain?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => parse_spiffe_id(trust_domain, uri),
        _ => None,
    })
}
