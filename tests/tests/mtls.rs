//! Identity and mTLS end to end: certificates from the controller's CA, TLS on the wire between
//! proxies, identities from certificates, refusals, renewal.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use smidge_e2e::apps::H1;
use smidge_e2e::mesh::{in_pod, Mesh};
use smidge_e2e::metric_sum;
use smidge_e2e::scenario::{manifests, start, start_with, web, V1_IP};
use smidge_e2e::wire::capture;

/// Requests web-v1's proxy admitted from the client's SPIFFE identity over mTLS.
fn client_requests_over_mtls(mesh: &Mesh) -> anyhow::Result<f64> {
    let metrics = mesh.metrics("web-v1")?;
    metric_sum(
        &metrics,
        "smidge_requests_total",
        &[
            ("direction", "inbound"),
            ("src_identity", "spiffe://cluster.local/ns/mesh/sa/client"),
            ("tls", "true"),
        ],
    )
}

/// Every frame on the node's bridge while the client sends `n` GETs of `/a-secret-path` to web
/// on one connection, each answered 200 (by `backend`, when given).
fn wire_while_client_calls(
    mesh: &Mesh,
    n: usize,
    backend: Option<&'static str>,
) -> anyhow::Result<Vec<u8>> {
    let stop = Arc::new(AtomicBool::new(false));
    let sniffer = capture(mesh.node.netns().to_string(), stop.clone());
    let client = mesh.pod("client").pod.clone();
    let calls = in_pod(&client, move || async move {
        let mut h1 = H1::connect(web(80)).await?;
        for _ in 0..n {
            let a = h1.get("web", "/a-secret-path").await?;
            anyhow::ensure!(a.status == 200, "{a:?}");
            if let Some(b) = backend {
                anyhow::ensure!(a.backend() == b, "{a:?}");
            }
        }
        anyhow::Ok(())
    });
    stop.store(true, Ordering::Relaxed);
    let wire = sniffer
        .join()
        .map_err(|_| anyhow::anyhow!("capture panicked"))?;
    calls??;
    wire
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn meshed_traffic_is_tls_on_the_wire_and_the_server_records_the_spiffe_id() -> anyhow::Result<()> {
    let mesh = start("wire", &manifests(1, 0, true), &[])?;
    let wire = wire_while_client_calls(&mesh, 20, None)?;
    // The capture works: the ClientHello's server name is visible in clear.
    assert!(
        contains(
            &wire,
            b"web.mesh.serviceaccount.identity.smidge.cluster.local"
        ),
        "captured {} bytes without the mesh handshake",
        wire.len()
    );
    assert!(
        !contains(&wire, b"a-secret-path"),
        "the request path crossed in clear"
    );
    assert!(
        !contains(&wire, b"x-backend"),
        "the response crossed in clear"
    );
    assert_eq!(client_requests_over_mtls(&mesh)?, 20.0, "{}", mesh.logs());
    Ok(())
}

#[test]
fn with_mesh_protocol_http1_requests_cross_as_http1_over_mtls_and_keep_their_version(
) -> anyhow::Result<()> {
    let mesh = start(
        "h1mesh",
        &manifests(1, 0, true),
        &["--mesh-protocol", "http1"],
    )?;
    let wire = wire_while_client_calls(&mesh, 10, Some("v1"))?;
    assert!(
        contains(&wire, b"http/1.1"),
        "the handshake did not offer ALPN http/1.1"
    );
    assert!(
        !contains(&wire, b"a-secret-path"),
        "the request path crossed in clear"
    );
    assert_eq!(client_requests_over_mtls(&mesh)?, 10.0, "{}", mesh.logs());
    Ok(())
}

#[test]
fn a_traffic_target_admits_one_service_account_and_refuses_another() -> anyhow::Result<()> {
    // Both callers run the same code; only their ServiceAccounts differ.
    let other_ip = Ipv4Addr::new(10, 88, 0, 14);
    let mesh = start_with(
        "ab",
        &manifests(1, 0, true),
        &[("other", other_ip, "other")],
        &[],
        &[],
    )?;
    let call = |pod: &str| -> anyhow::Result<(u16, String)> {
        let pod = mesh.pod(pod).pod.clone();
        in_pod(&pod, || async {
            let a = H1::connect(web(80)).await?.get("web", "/").await?;
            let reason = a
                .headers
                .get("smidge-denied")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            anyhow::Ok((a.status.as_u16(), reason))
        })?
    };
    assert_eq!(call("client")?, (200, String::new()));
    assert_eq!(call("other")?, (403, "not-authorized".to_string()));
    Ok(())
}

/// A TLS client to web-v1's proxy from the node (outside every pod), with `cert` and `key`.
fn present(
    mesh: &Mesh,
    chain: Vec<CertificateDer<'static>>,
    key: &KeyPair,
) -> anyhow::Result<String> {
    let anchor = std::fs::read(mesh.identity_dir().join("ca.crt"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&anchor) {
        roots.add(c?)?;
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("web.mesh.serviceaccount.identity.smidge.cluster.local")?;
    let netns = mesh.node.netns().to_string();
    std::thread::spawn(move || -> anyhow::Result<String> {
        smidge_local_cluster::netns::enter_netns(&netns)?;
        let mut tcp = TcpStream::connect_timeout(
            &SocketAddr::new(V1_IP.into(), 8080),
            Duration::from_secs(5),
        )?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let mut answer = Vec::new();
        let result = tls
            .write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
            .and_then(|()| tls.read_to_end(&mut answer));
        Ok(match result {
            Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
            Err(e) => format!("refused: {e}"),
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// A client certificate for mesh/client, valid over `[from, to]`, signed by `issuer`.
fn client_cert(
    issuer: &rcgen::Issuer<'_, KeyPair>,
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
) -> anyhow::Result<(CertificateDer<'static>, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::URI("spiffe://cluster.local/ns/mesh/sa/client".try_into()?),
        SanType::DnsName("client.mesh.serviceaccount.identity.smidge.cluster.local".try_into()?),
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = from;
    params.not_after = to;
    let cert = params.signed_by(&key, issuer)?;
    Ok((CertificateDer::from(cert.der().to_vec()), key))
}

#[test]
fn a_client_certificate_from_another_ca_or_expired_is_refused() -> anyhow::Result<()> {
    let mesh = start("rogue", &manifests(1, 0, true), &[])?;
    let dir = mesh.identity_dir();
    let issuer_pem = std::fs::read_to_string(dir.join("issuer.crt"))?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &issuer_pem,
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("issuer.key"))?)?,
    )?;
    let issuer_der = CertificateDer::from_pem_slice(issuer_pem.as_bytes())?;
    let now = time::OffsetDateTime::now_utc();
    let hour = time::Duration::hours(1);
    let client_ready = mesh.pod("client").pod.clone();
    in_pod(&client_ready, || async {
        H1::connect(web(80)).await?.get("web", "/").await
    })??;

    // Control: a current certificate from the mesh's issuer is admitted.
    let (good, good_key) = client_cert(&issuer, now - hour, now + hour)?;
    let answer = present(&mesh, vec![good, issuer_der.clone()], &good_key)?;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the control failed: {answer}"
    );

    // Expired, same issuer.
    let (old, old_key) = client_cert(&issuer, now - hour * 3, now - hour)?;
    let answer = present(&mesh, vec![old, issuer_der], &old_key)?;
    assert!(
        !answer.contains("200 OK") && !answer.starts_with("HTTP/1.1 200"),
        "expired certificate admitted: {answer}"
    );

    // Another CA altogether.
    let rogue_key = KeyPair::generate()?;
    let mut rogue_params = CertificateParams::default();
    rogue_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let rogue = rcgen::Issuer::new(rogue_params, rogue_key);
    let (stranger, stranger_key) = client_cert(&rogue, now - hour, now + hour)?;
    let answer = present(&mesh, vec![stranger], &stranger_key)?;
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a certificate from another CA was admitted: {answer}"
    );
    let metrics = mesh.metrics("web-v1")?;
    assert!(
        metric_sum(
            &metrics,
            "smidge_authz_denied_total",
            &[("reason", "tls-handshake")]
        )? >= 2.0,
        "{metrics}"
    );
    Ok(())
}

#[test]
fn a_server_with_another_identity_is_refused_by_the_client() -> anyhow::Result<()> {
    // web-v2's proxy proves ServiceAccount impostor; the mesh says web-v2 runs as web.
    let mesh = start_with(
        "impostor",
        &manifests(0, 1, true),
        &[("web-v2", smidge_e2e::scenario::V2_IP, "impostor")],
        &[],
        &[],
    )?;
    let client = mesh.pod("client").pod.clone();
    let a = in_pod(&client, || async {
        H1::connect(web(80)).await?.get("web", "/").await
    })??;
    assert_eq!(a.status.as_u16(), 502, "{a:?}");
    assert_eq!(a.backend(), "", "the impostor answered");
    let log = mesh.pod("client").proxy.log();
    assert!(
        log.contains("expected spiffe://cluster.local/ns/mesh/sa/web"),
        "{log}"
    );
    Ok(())
}

#[test]
fn certificates_renew_while_requests_flow() -> anyhow::Result<()> {
    let mesh = start_with(
        "renew",
        &manifests(1, 0, true),
        &[],
        &[],
        &["--cert-lifetime-secs", "10"],
    )?;
    let client = mesh.pod("client").pod.clone();
    let sent = in_pod(&client, || async {
        let until = Instant::now() + Duration::from_secs(22);
        let mut kept = H1::connect(web(80)).await?;
        let mut sent = 0;
        while Instant::now() < until {
            let a = kept.get("web", "/").await?;
            anyhow::ensure!(a.status == 200, "request {sent}: {a:?}");
            let b = H1::connect(web(80)).await?.get("web", "/").await?;
            anyhow::ensure!(b.status == 200, "request {sent}: {b:?}");
            sent += 2;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(sent)
    })?
    .with_context(|| mesh.logs())?;
    assert!(sent > 100, "only {sent} requests");
    for pod in ["client", "web-v1"] {
        let metrics = mesh.metrics(pod)?;
        let certs = metric_sum(&metrics, "smidge_identity_certificates_total", &[])?;
        assert!(
            certs >= 3.0,
            "{pod} received {certs} certificates in 22 s with a 10 s lifetime"
        );
    }
    Ok(())
}

#[test]
fn an_unmeshed_client_reaches_a_service_but_never_has_an_identity() -> anyhow::Result<()> {
    let mut mesh = start("plain", &manifests(1, 0, true), &[])?;
    // A pod with neither proxy nor rules: the node's Service rules carry it, like kube-proxy.
    let outsider = mesh
        .node
        .add_pod("outsider", Ipv4Addr::new(10, 88, 0, 15))?;
    let a = in_pod(&outsider, || async {
        H1::connect(web(80)).await?.get("web", "/").await
    })??;
    // It reached web's proxy in plaintext, so it has no identity for the TrafficTarget.
    assert_eq!(a.status.as_u16(), 403, "{a:?}");
    assert_eq!(
        a.headers.get("smidge-denied").map(|v| v.as_bytes()),
        Some(&b"unauthenticated"[..])
    );
    Ok(())
}
