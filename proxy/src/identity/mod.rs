//! The proxy's mesh identity: a key made in memory, a certificate the controller issues for it,
//! renewal, and the TLS configurations that use them (client side to peers, server side for
//! inbound mTLS).

mod peer;
pub mod token;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use smidge_protocol::names::{dns_name, spiffe_id};
use smidge_protocol::Identity;

pub use peer::peer_identity;

/// ALPN of the mesh: the HTTP version spoken inside the TLS connection; none means opaque TCP.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Opaque TCP sent to the peer proxy's own inbound port, the target port in a 2-byte header
/// after the handshake (so server-speaks-first ports need no detection on the server side).
pub const ALPN_OPAQUE: &[u8] = b"smidge-opaque/1";

/// The proxy's TLS crypto: ring, TLS 1.3 suites with AES-128-GCM first. Both ends are smidge
/// proxies, so the server's first choice is what the mesh speaks: the cheapest suite on CPUs
/// with AES instructions, and the one every FIPS profile allows.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

/// Everything the proxy needs to take part in mTLS.
pub struct MeshIdentity {
    pub identity: Identity,
    pub trust_domain: String,
    roots: Arc<RootCertStore>,
    current: RwLock<Option<Arc<Current>>>,
    pending: RwLock<Option<KeyPair>>,
    resolver: Arc<Resolver>,
    pub server: Arc<rustls::ServerConfig>,
    clients: [Arc<rustls::ClientConfig>; 4],
    /// Certificates received, and requests that failed.
    pub renewals: std::sync::atomic::AtomicU64,
    pub failures: std::sync::atomic::AtomicU64,
}

/// The certificate in use.
#[derive(Debug)]
pub struct Current {
    pub key: Arc<CertifiedKey>,
    /// Unix seconds.
    pub not_after: u64,
    pub renew_at: Instant,
}

/// Hands rustls whatever certificate is current.
#[derive(Debug, Default)]
struct Resolver {
    key: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Resolver {
    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.key.read().ok().and_then(|k| k.clone())
    }
}

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}

/// Which inner protocol a client TLS connection negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    H2,
    Http1,
    Opaque,
    /// [`ALPN_OPAQUE`]: to the peer's inbound port with a port header.
    OpaqueHeader,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl MeshIdentity {
    /// `anchor_pem` is the trust anchor every mesh certificate chains to.
    pub fn new(identity: Identity, trust_domain: &str, anchor_pem: &str) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(anchor_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        if roots.is_empty() {
            anyhow::bail!("the trust anchor file holds no certificate");
        }
        let roots = Arc::new(roots);
        let resolver = Arc::new(Resolver::default());
        let verifier = WebPkiClientVerifier::builder(roots.clone()).build()?;
        let mut server =
            rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_OPAQUE.to_vec()];
        let client = |alpn: &[&[u8]]| {
            let mut c =
                rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                    .with_root_certificates(roots.clone())
                    .with_client_cert_resolver(resolver.clone());
            c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
            Arc::new(c)
        };
        let clients = [
            client(&[ALPN_H2]),
            client(&[ALPN_HTTP1]),
            client(&[]),
            client(&[ALPN_OPAQUE]),
        ];
        Ok(MeshIdentity {
            identity,
            trust_domain: trust_domain.to_string(),
            roots,
            current: RwLock::new(None),
            pending: RwLock::new(None),
            resolver,
            server: Arc::new(server),
            clients,
            renewals: Default::default(),
            failures: Default::default(),
        })
    }

    /// The roots, for the control channel.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// A fresh key (kept in memory only) and a CSR for this proxy's names.
    pub fn csr(&self) -> anyhow::Result<Vec<u8>> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![
            SanType::URI(spiffe_id(&self.trust_domain, &self.identity).try_into()?),
            SanType::DnsName(dns_name(&self.trust_domain, &self.identity).try_into()?),
        ];
        let csr = params.serialize_request(&key)?.der().to_vec();
        if let Ok(mut p) = self.pending.write() {
            *p = Some(key);
        }
        Ok(csr)
    }

    /// Puts an issued chain into use with the key of the last CSR.
    pub fn install(&self, chain: Vec<Vec<u8>>, not_after: u64) -> anyhow::Result<()> {
        let key = self
            .pending
            .write()
            .ok()
            .and_then(|mut p| p.take())
            .ok_or_else(|| anyhow::anyhow!("a certificate arrived without a pending request"))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&der)?;
        let chain: Vec<CertificateDer<'static>> =
            chain.into_iter().map(CertificateDer::from).collect();
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        let now = unix_now();
        let left = Duration::from_secs(not_after.saturating_sub(now));
        let current = Arc::new(Current {
            key: certified.clone(),
            not_after,
            renew_at: Instant::now() + left.mul_f64(0.7),
        });
        if let Ok(mut r) = self.resolver.key.write() {
            *r = Some(certified);
        }
        if let Ok(mut c) = self.current.write() {
            *c = Some(current);
        }
        Ok(())
    }

    pub fn current(&self) -> Option<Arc<Current>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Whether a certificate that has not expired is in use.
    pub fn has_valid_certificate(&self) -> bool {
        self.current().is_some_and(|c| c.not_after > unix_now())
    }

    /// When to ask for the next certificate (now, without one).
    pub fn renew_at(&self) -> Instant {
        self.current().map_or_else(Instant::now, |c| c.renew_at)
    }

    /// The TLS client configuration for one inner protocol.
    pub fn client(&self, alpn: Alpn) -> Arc<rustls::ClientConfig> {
        self.clients[match alpn {
            Alpn::H2 => 0,
            Alpn::Http1 => 1,
            Alpn::Opaque => 2,
            Alpn::OpaqueHeader => 3,
        }]
        .clone()
    }

    /// The name a peer with identity `id` must present.
    pub fn server_name(&self, id: &Identity) -> anyhow::Result<ServerName<'static>> {
        Ok(ServerName::try_from(dns_name(&self.trust_domain, id))?)
    }

    /// This proxy's own TLS name (what meshed clients put in SNI).
    pub fn own_name(&self) -> String {
        dns_name(&self.trust_domain, &self.identity)
    }
}
