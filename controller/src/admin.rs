//! The controller's admin endpoint: `/live`, `/ready`, `/problems` (every current report, JSON)
//! `/proxies` (every connected proxy with the view versions it acknowledged, JSON) and
//! `/webhook-cert` (the certificate chain the webhook listener serves right now, PEM, read by a
//! TLS handshake with it: what `smidge check` verifies against the caBundles).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::provider::Report;
use crate::push::registry::Registry;

/// What the admin endpoint shows.
#[derive(Debug, Default)]
pub struct Status {
    /// Set once the provider's first full read is in the index.
    pub ready: bool,
    pub problems: Vec<Report>,
    pub objects: usize,
    pub views: usize,
    /// The webhook listener's address and a name on its certificate, once it listens.
    pub webhook: Option<(std::net::SocketAddr, String)>,
}

/// At most this many admin connections at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves forever. Accept errors (out of file descriptors) are logged and waited out.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Mutex<Status>>,
    registry: Arc<Mutex<Registry>>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("too many admin connections; closed a new one");
            continue;
        };
        let (status, registry) = (status.clone(), registry.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                respond(req, status.clone(), registry.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    status: Arc<Mutex<Status>>,
    registry: Arc<Mutex<Registry>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    if req.uri().path() == "/proxies" {
        return match proxies(&registry) {
            Some(body) => reply(StatusCode::OK, "application/json", body),
            None => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "registry lock poisoned\n".into(),
            ),
        };
    }
    if req.uri().path() == "/webhook-cert" {
        let webhook = status.lock().ok().and_then(|s| s.webhook.clone());
        let Some((addr, name)) = webhook else {
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "this controller serves no webhook (no --webhook-listen)\n".into(),
            );
        };
        return match tokio::time::timeout(HEADER_READ_TIMEOUT, webhook_cert(addr, &name)).await {
            Ok(Ok(pem)) => reply(StatusCode::OK, "application/x-pem-file", pem),
            Ok(Err(e)) => reply(
                StatusCode::BAD_GATEWAY,
                "text/plain",
                format!("the webhook at {addr} did not complete a TLS handshake: {e}\n"),
            ),
            Err(_) => reply(
                StatusCode::GATEWAY_TIMEOUT,
                "text/plain",
                format!(
                    "no TLS handshake with the webhook at {addr} within {HEADER_READ_TIMEOUT:?}\n"
                ),
            ),
        };
    }
    let Ok(status) = status.lock() else {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "status lock poisoned\n".into(),
        );
    };
    match req.uri().path() {
        "/live" => reply(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" if status.ready => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/ready" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: the provider has not finished its first read\n".into(),
        ),
        "/problems" => {
            let body = serde_json::json!({ "objects": status.objects, "views": status.views, "problems": status.problems });
            reply(StatusCode::OK, "application/json", format!("{body:#}\n"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /live, /ready, /problems, /proxies or /webhook-cert\n".into(),
        ),
    }
}

/// The `/proxies` body: a JSON list of [`crate::push::connected::ProxyStatus`]. The table is read
/// first and the registry locked after, never both at once.
fn proxies(registry: &Mutex<Registry>) -> Option<String> {
    let table = registry.lock().ok()?.connected();
    let keys_current =
        |key: &smidge_protocol::ViewKey| registry.lock().ok().and_then(|r| r.current_version(key));
    let list = table.snapshot(keys_current);
    Some(format!("{:#}\n", serde_json::json!(list)))
}

/// The chain the webhook listener at `addr` serves, as PEM (leaf first), dialled on loopback
/// when it listens on every address.
async fn webhook_cert(addr: std::net::SocketAddr, name: &str) -> anyhow::Result<String> {
    let dial = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let tcp = tokio::net::TcpStream::connect(dial).await?;
    let chain = served_chain(tcp, name).await?;
    Ok(chain
        .iter()
        .map(|der| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .filter_map(|c| std::str::from_utf8(c).ok())
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
        .collect())
}

/// Accepts any server certificate and keeps the chain: the caller judges it. The handshake's
/// signatures are still checked, so the chain belongs to the server that answered.
#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut chain) = self.chain.lock() {
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.to_vec())
                .collect();
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate chain a TLS server on `io` presents for `name` (leaf first), unverified.
pub async fn served_chain<IO>(io: IO, name: &str) -> anyhow::Result<Vec<Vec<u8>>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())?;
    connector.connect(server_name, io).await?;
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    /// `/webhook-cert` reads what the webhook listener really serves: the leaf for the Service's
    /// names and the issuer, which verify under the trust anchor (the caBundle).
    #[tokio::test]
    async fn the_webhook_cert_is_the_served_chain_and_verifies_under_the_anchor() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::identity::generate(dir.path(), "cluster.local").expect("generate");
        let trust = crate::identity::Trust::load(dir.path()).expect("load");
        let anchor = trust.anchor_der.clone();
        let authority =
            crate::identity::Authority::new(trust, "cluster.local", Duration::from_secs(3600))
                .expect("authority");
        let names = crate::webhook::service_names("smidge-controller", "mesh");
        let tls = crate::webhook::serving_cert(&authority, &names).expect("cert");
        let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(crate::webhook::serve(listener, tls));

        let pem = webhook_cert(addr, &names[0]).await.expect("served");
        let chain: Vec<CertificateDer<'static>> =
            x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
                .map(|p| CertificateDer::from(p.expect("pem").contents))
                .collect();
        assert_eq!(chain.len(), 2, "leaf and issuer:\n{pem}");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(anchor)).expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let verify = |name: &str| {
            verifier.verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_string()).expect("name"),
                &[],
                UnixTime::now(),
            )
        };
        assert!(verify("smidge-controller.mesh.svc").is_ok());
        assert!(verify("smidge-controller.other.svc").is_err());
    }
}
