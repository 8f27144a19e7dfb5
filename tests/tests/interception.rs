//! What `init` and the proxy let through to and from a meshed pod: IPv6, UDP, the app's
//! loopback-only ports, the proxy's own ports, pod-IP calls between meshed pods, and a controller
//! that cannot answer (security review F3, F5, F8, F9; robustness review R6, R7).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use smidge_e2e::apps::H1;
use smidge_e2e::mesh::{in_pod, spawn_in_pod, Mesh};
use smidge_e2e::metric_sum;
use smidge_e2e::scenario::{manifests, start, start_with, web, V1_IP};
use smidge_e2e::wire::capture;
use smidge_local_cluster::netns::Pod;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OUTSIDER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 15);
const PLAIN_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 16);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 14);
const SECRET: &[u8] = b"secret-page";

/// The scenario's manifests with the `mesh` namespace's default policy set to `allow-all`.
fn allow_all() -> String {
    let text = manifests(1, 0, false);
    let replaced = text.replacen(
        "labels: {smidge.io/inject: enabled}}",
        "labels: {smidge.io/inject: enabled}, annotations: {smidge.io/default-policy: allow-all}}",
        1,
    );
    assert_ne!(replaced, text, "the scenario's namespace changed shape");
    replaced
}

/// Runs a shell command inside `netns`; fails with its stderr.
fn in_netns(netns: &str, script: &str) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c", script])
        .output()?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Turns IPv6 on for the pod's `eth0` (the local cluster turns it off) and returns its usable
/// link-local address.
fn enable_ipv6(pod: &Pod) -> anyhow::Result<Ipv6Addr> {
    in_netns(
        &pod.netns,
        "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad && \
         echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6",
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = in_netns(&pod.netns, "ip -6 -o addr show dev eth0 scope link")?;
        let addr = text
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<Ipv6Addr>().ok());
        match addr {
            Some(a) if !text.contains("tentative") => return Ok(a),
            _ if Instant::now() > deadline => bail!("no link-local address in {}", pod.name),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A TCP server on `addr` that writes `SECRET` to every caller.
async fn secret_server(addr: SocketAddr) {
    let Ok(listener) = tokio::net::TcpListener::bind(addr).await else {
        return;
    };
    while let Ok((mut s, _)) = listener.accept().await {
        let _ = s.write_all(SECRET).await;
    }
}

/// A TCP server on `addr` that writes the caller's address as it sees it.
async fn who_server(addr: SocketAddr) {
    let Ok(listener) = tokio::net::TcpListener::bind(addr).await else {
        return;
    };
    while let Ok((mut s, peer)) = listener.accept().await {
        let _ = s.write_all(peer.ip().to_string().as_bytes()).await;
    }
}

/// Connects to `addr` from inside `pod` and reads what the server says, or the error.
fn read_from(pod: &Pod, addr: SocketAddr) -> anyhow::Result<Result<Vec<u8>, String>> {
    in_pod(pod, move || async move {
        let said = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            anyhow::Ok(buf)
        };
        match tokio::time::timeout(Duration::from_secs(3), said).await {
            Ok(Ok(buf)) => Ok(buf),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 3 s".to_string()),
        }
    })
}

/// `eth0`'s link-local `addr` on `port`, scoped as the calling pod sees it.
fn link_local(addr: Ipv6Addr, port: u16) -> anyhow::Result<SocketAddr> {
    let scope = nix::net::if_::if_nametoindex("eth0")?;
    Ok(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope)))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn ipv6_to_a_meshed_pod_is_refused_while_ipv4_policy_holds() -> anyhow::Result<()> {
    let mut mesh = start_with(
        "ip6",
        &manifests(1, 0, true),
        &[("other", OTHER_IP, "other")],
        &[],
        &[],
    )?;
    let outsider = mesh.node.add_pod("outsider", OUTSIDER_IP)?;
    let plain = mesh.node.add_pod("plain", PLAIN_IP)?;
    let web_pod = mesh.pod("web-v1").pod.clone();
    let other = mesh.pod("other").pod.clone();
    let web6 = enable_ipv6(&web_pod)?;
    let plain6 = enable_ipv6(&plain)?;
    enable_ipv6(&outsider)?;
    enable_ipv6(&other)?;
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 9998);
    spawn_in_pod(&web_pod, move || secret_server(any6))?;
    spawn_in_pod(&plain, move || secret_server(any6))?;

    // Control: IPv6 works on the bridge, between pods without a proxy.
    let seen = in_pod(&outsider, move || async move {
        let addr = link_local(plain6, 9998)?;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    })??;
    assert_eq!(seen, SECRET, "the control over IPv6 failed");

    for (who, pod) in [("un-meshed", &outsider), ("meshed, not allowed", &other)] {
        let said = in_pod(pod, move || async move {
            let addr = link_local(web6, 9998)?;
            let said = async {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await?;
                anyhow::Ok(buf)
            };
            anyhow::Ok(tokio::time::timeout(Duration::from_secs(3), said).await)
        })??;
        assert!(
            !matches!(&said, Ok(Ok(buf)) if contains(buf, SECRET)),
            "the {who} pod read the meshed app over IPv6"
        );
    }

    // IPv4 still goes through the proxy and its policy (the app also answers on IPv4).
    let plain4 = read_from(&outsider, SocketAddr::new(V1_IP.into(), 9998))?;
    assert!(
        !matches!(&plain4, Ok(buf) if contains(buf, SECRET)),
        "the un-meshed pod read the app over IPv4"
    );
    let status = |pod: &Pod| -> anyhow::Result<u16> {
        in_pod(pod, || async {
            anyhow::Ok(
                H1::connect(web(80))
                    .await?
                    .get("web", "/")
                    .await?
                    .status
                    .as_u16(),
            )
        })?
    };
    assert_eq!(status(&mesh.pod("client").pod)?, 200);
    assert_eq!(status(&other)?, 403);
    Ok(())
}

#[test]
fn udp_to_a_meshed_pod_is_dropped_but_its_own_udp_gets_replies() -> anyhow::Result<()> {
    let mut mesh = start("udp", &manifests(1, 0, true), &[])?;
    let outsider = mesh.node.add_pod("outsider", OUTSIDER_IP)?;
    let web_pod = mesh.pod("web-v1").pod.clone();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    let echo = |count: Arc<AtomicUsize>| async move {
        let Ok(sock) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 9997)).await else {
            return;
        };
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::Relaxed);
            let _ = sock.send_to(&buf[..n], from).await;
        }
    };
    spawn_in_pod(&web_pod, move || echo(count))?;
    spawn_in_pod(&outsider, move || echo(Arc::new(AtomicUsize::new(0))))?;
    let ask = |pod: &Pod, to: Ipv4Addr| -> anyhow::Result<Option<Vec<u8>>> {
        in_pod(pod, move || async move {
            let sock = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
            let mut buf = [0u8; 64];
            for _ in 0..3 {
                sock.send_to(b"ping", (to, 9997)).await?;
                if let Ok(got) =
                    tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
                {
                    let (n, _) = got?;
                    return anyhow::Ok(Some(buf[..n].to_vec()));
                }
            }
            anyhow::Ok(None)
        })?
    };
    // The meshed pod's own outbound UDP gets its replies (as its DNS queries must).
    assert_eq!(
        ask(&web_pod, OUTSIDER_IP)?,
        Some(b"ping".to_vec()),
        "the meshed pod's own UDP got no reply"
    );
    // An un-meshed pod's datagrams never reach the meshed pod's UDP server.
    assert_eq!(
        ask(&outsider, V1_IP)?,
        None,
        "the meshed UDP server answered"
    );
    assert_eq!(received.load(Ordering::Relaxed), 0);
    Ok(())
}

/// A mesh client certificate for mesh/client, signed by the mesh's issuer.
fn client_identity(mesh: &Mesh) -> anyhow::Result<rustls::ClientConfig> {
    let dir = mesh.identity_dir();
    let issuer_pem = std::fs::read_to_string(dir.join("issuer.crt"))?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &issuer_pem,
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("issuer.key"))?)?,
    )?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::URI("spiffe://cluster.local/ns/mesh/sa/client".try_into()?),
        SanType::DnsName("client.mesh.serviceaccount.identity.smidge.cluster.local".try_into()?),
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::hours(1);
    let cert = params.signed_by(&key, &issuer)?;
    let chain = vec![
        CertificateDer::from(cert.der().to_vec()),
        CertificateDer::from_pem_slice(issuer_pem.as_bytes())?,
    ];
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&std::fs::read(dir.join("ca.crt"))?) {
        roots.add(c?)?;
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"smidge-opaque/1".to_vec()];
    Ok(config)
}

/// From the node, as a peer proxy would: mTLS to web-v1's inbound port naming `port` in the
/// header, then `send`; what comes back, or the error.
fn through_port_header(
    mesh: &Mesh,
    config: &rustls::ClientConfig,
    port: u16,
    send: &[u8],
) -> anyhow::Result<Result<Vec<u8>, String>> {
    let config = Arc::new(config.clone());
    let netns = mesh.node.netns().to_string();
    let send = send.to_vec();
    std::thread::spawn(move || -> anyhow::Result<Result<Vec<u8>, String>> {
        smidge_local_cluster::netns::enter_netns(&netns)?;
        let mut tcp = std::net::TcpStream::connect_timeout(
            &SocketAddr::new(V1_IP.into(), 4143),
            Duration::from_secs(5),
        )?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let name = ServerName::try_from("web.mesh.serviceaccount.identity.smidge.cluster.local")?;
        let mut conn = rustls::ClientConnection::new(config, name)?;
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let mut answer = Vec::new();
        let result = tls
            .write_all(&port.to_be_bytes())
            .and_then(|()| tls.write_all(&send))
            .and_then(|()| tls.read_to_end(&mut answer));
        Ok(match result {
            Ok(_) => Ok(answer),
            Err(_) if !answer.is_empty() => Ok(answer),
            Err(e) => Err(e.to_string()),
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

#[test]
fn loopback_only_ports_of_a_meshed_pod_stay_private() -> anyhow::Result<()> {
    let mut mesh = start("loop", &allow_all(), &[])?;
    let outsider = mesh.node.add_pod("outsider", OUTSIDER_IP)?;
    let web_pod = mesh.pod("web-v1").pod.clone();
    spawn_in_pod(&web_pod, || {
        secret_server(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9996))
    })?;
    spawn_in_pod(&web_pod, || {
        who_server(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 9995))
    })?;

    // Control: the app on 0.0.0.0 is reachable through the proxy, and sees the pod's own
    // address (the proxy's connection), not 127.0.0.1.
    let seen = read_from(&outsider, SocketAddr::new(V1_IP.into(), 9995))?;
    assert_eq!(
        seen.as_deref().map(String::from_utf8_lossy),
        Ok(V1_IP.to_string().into()),
        "{}",
        mesh.logs()
    );
    let plain = read_from(&outsider, SocketAddr::new(V1_IP.into(), 9996))?;
    assert!(
        !matches!(&plain, Ok(buf) if contains(buf, SECRET)),
        "the loopback-only app answered another pod"
    );

    let config = client_identity(&mesh)?;
    let seen = through_port_header(&mesh, &config, 9995, b"")?;
    assert_eq!(
        seen.as_deref().map(String::from_utf8_lossy),
        Ok(V1_IP.to_string().into()),
        "the control through the port header failed"
    );
    let header = through_port_header(&mesh, &config, 9996, b"")?;
    assert!(
        !matches!(&header, Ok(buf) if contains(buf, SECRET)),
        "the port header reached the loopback-only app"
    );
    // Nor may the header name the proxy's own ports.
    let admin = through_port_header(&mesh, &config, 4191, b"GET /ready HTTP/1.0\r\n\r\n")?;
    assert!(
        !matches!(&admin, Ok(buf) if contains(buf, b"HTTP/1")),
        "the port header reached the proxy's admin port: {admin:?}"
    );
    Ok(())
}

fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[test]
fn a_connection_to_the_inbound_port_is_closed_without_looping() -> anyhow::Result<()> {
    let mut mesh = start("self", &allow_all(), &[])?;
    let outsider = mesh.node.add_pod("outsider", OUTSIDER_IP)?;
    let pid = mesh.pod("web-v1").proxy.pid().context("the proxy's pid")?;
    let before = open_fds(pid)?;
    let (closed, during) = in_pod(&outsider, move || async move {
        let mut s = tokio::net::TcpStream::connect((V1_IP, 4143)).await?;
        s.write_all(b"x").await?;
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        // Counted while this connection is still open.
        let during = open_fds(pid)?;
        anyhow::Ok((matches!(closed, Ok(Ok(0)) | Ok(Err(_))), during))
    })??;
    assert!(closed, "the connection to the inbound port stayed open");
    assert!(
        during <= before + 2,
        "the proxy went from {before} to {during} fds for one connection"
    );
    Ok(())
}

#[test]
fn a_meshed_pod_called_by_its_ip_gets_mtls_and_its_policy() -> anyhow::Result<()> {
    let mesh = start_with(
        "podip",
        &manifests(1, 0, true),
        &[("other", OTHER_IP, "other")],
        &[],
        &[],
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let sniffer = capture(mesh.node.netns().to_string(), stop.clone());
    let by_ip = SocketAddr::new(V1_IP.into(), 8080);
    let client = mesh.pod("client").pod.clone();
    let answer = in_pod(&client, move || async move {
        H1::connect(by_ip).await?.get("web", "/a-secret-path").await
    });
    stop.store(true, Ordering::Relaxed);
    let wire = sniffer
        .join()
        .map_err(|_| anyhow::anyhow!("capture panicked"))??;
    let answer = answer??;
    assert_eq!(answer.status.as_u16(), 200, "{answer:?}\n{}", mesh.logs());
    assert!(
        contains(
            &wire,
            b"web.mesh.serviceaccount.identity.smidge.cluster.local"
        ),
        "no mesh handshake on the wire"
    );
    assert!(
        !contains(&wire, b"a-secret-path"),
        "the request crossed in clear"
    );
    let metrics = mesh.metrics("web-v1")?;
    let over_mtls = metric_sum(
        &metrics,
        "smidge_requests_total",
        &[
            ("direction", "inbound"),
            ("src_identity", "spiffe://cluster.local/ns/mesh/sa/client"),
            ("tls", "true"),
        ],
    )?;
    assert_eq!(over_mtls, 1.0, "{metrics}");
    // The policy still applies by pod IP: a caller the TrafficTarget does not name is refused.
    let other = mesh.pod("other").pod.clone();
    let refused = in_pod(&other, move || async move {
        H1::connect(by_ip).await?.get("web", "/").await
    })??;
    assert_eq!(refused.status.as_u16(), 403, "{refused:?}");
    assert_eq!(
        refused.headers.get("smidge-denied").map(|v| v.as_bytes()),
        Some(&b"not-authorized"[..])
    );
    Ok(())
}

#[test]
fn with_the_controller_down_an_unresolved_service_fails_instead_of_going_in_clear(
) -> anyhow::Result<()> {
    let mut mesh = start("nodisc", &manifests(1, 0, true), &[])?;
    mesh.stop_controller();
    let client = mesh.pod("client").pod.clone();
    let answer = in_pod(&client, || async {
        H1::connect(web(80)).await?.get("web", "/").await
    })??;
    assert_eq!(answer.status.as_u16(), 503, "{answer:?}");
    assert_eq!(
        answer.headers.get("smidge-error").map(|v| v.as_bytes()),
        Some(&b"discovery-unavailable"[..]),
        "{answer:?}"
    );
    let echo = in_pod(&client, || async {
        smidge_e2e::apps::tcp_echo(web(smidge_e2e::apps::ECHO_PORT), "hello").await
    })?;
    assert!(echo.is_err(), "opaque TCP went out without discovery");
    let metrics = mesh.metrics("web-v1")?;
    let clear = metric_sum(
        &metrics,
        "smidge_tcp_opened_total",
        &[("direction", "inbound")],
    )? + metric_sum(
        &metrics,
        "smidge_requests_total",
        &[("direction", "inbound"), ("tls", "false")],
    )?;
    assert_eq!(clear, 0.0, "something reached web-v1 in clear: {metrics}");
    Ok(())
}
