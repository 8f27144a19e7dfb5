//! The kubelet's log endpoint, which `kubectl logs` reaches through the API server:
//! `GET /containerLogs/<namespace>/<pod>/<container>?follow=&tailLines=&limitBytes=&previous=`
//! over TLS, the API server presenting its kubelet client certificate. The node agent writes
//! each container's output to a file ([`LogSource`] says which); this serves those files.
//!
//! Honoured: `tailLines`, `limitBytes`, `follow` (appended output streamed until the client goes
//! away or the container stops), `previous`. Ignored: `timestamps` (the files hold no times),
//! `sinceSeconds`/`sinceTime` (likewise) and `stream` (stdout and stderr share one file).

use std::convert::Infallible;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt};
use tokio_stream::StreamExt as _;

use crate::kube::pki::{Files, Leaf};

/// Where the node agent keeps each container's output.
pub trait LogSource: Send + Sync {
    /// The log file of `container` in pod `namespace/pod` (of its previous run with `previous`),
    /// or `None` when there is no such container (or no previous run).
    fn path(&self, namespace: &str, pod: &str, container: &str, previous: bool) -> Option<PathBuf>;

    /// Whether the container still runs, so may write more: `follow` stops at the end of the
    /// file once it does not. By default it always may.
    fn running(&self, _namespace: &str, _pod: &str, _container: &str) -> bool {
        true
    }
}

/// The user name the API server's kubelet client certificate carries.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// The group whose members may read every log (the admin's certificate).
pub const MASTERS_GROUP: &str = "system:masters";
/// The PKI file stem of the API server's kubelet client certificate.
pub const KUBELET_CLIENT_CERT: &str = "apiserver-kubelet-client";
/// The PKI file stem of the node's serving certificate.
pub const KUBELET_SERVING_CERT: &str = "kubelet";

/// How often `follow` looks for appended output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// The most read from a log file at once.
const CHUNK: usize = 64 * 1024;
/// How long a client gets for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificates the PKI must issue for this endpoint: the API server's client certificate
/// (user [`KUBELET_CLIENT_USER`], no groups: it needs no rights in the API) and the node's
/// serving certificate for its name and InternalIP (the API server connects to the IP and
/// verifies it against the cluster CA).
pub fn leaves(node_name: &str, node_ip: std::net::IpAddr) -> Vec<Leaf> {
    vec![
        Leaf::client(KUBELET_CLIENT_CERT, KUBELET_CLIENT_USER, &[]),
        Leaf::server(KUBELET_SERVING_CERT, &[node_name], &[node_ip]),
    ]
}

/// kube-apiserver's flags for reaching this endpoint: its client certificate, the CA that
/// signed the node's serving certificate, and the node's InternalIP as the address to use.
pub fn kubelet_client_args(pki: &Files) -> Vec<String> {
    vec![
        format!(
            "--kubelet-client-certificate={}",
            pki.cert(KUBELET_CLIENT_CERT).display()
        ),
        format!(
            "--kubelet-client-key={}",
            pki.key(KUBELET_CLIENT_CERT).display()
        ),
        format!(
            "--kubelet-certificate-authority={}",
            pki.cert(Files::CA).display()
        ),
        "--kubelet-preferred-address-types=InternalIP".to_string(),
    ]
}

/// The endpoint's TLS: `cert_pem` (the node's serving certificate, chain allowed) and its key;
/// every client must present a certificate signed by `client_ca_pem` (the cluster CA). Ring,
/// as everywhere in smidge.
pub fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the kubelet serving certificate")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "the kubelet serving certificate file holds no certificate"
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .context("reading the kubelet serving key")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots
            .add(ca.context("reading the client CA")?)
            .context("adding the client CA")?;
    }
    anyhow::ensure!(!roots.is_empty(), "the client CA file holds no certificate");
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .context("the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the kubelet serving certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the log endpoint on `listener` until the task is dropped. A failed handshake or
/// connection is logged and ends only that connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    logs: Arc<dyn LogSource>,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: let some connections end before the next accept.
                tracing::warn!(error = %e, "accepting a log connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let logs = logs.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "log client refused in the TLS handshake");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "log client did not finish its TLS handshake");
                    return;
                }
            };
            let who = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| authorize(c.as_ref()))
                .unwrap_or_else(|| Err("no client certificate".to_string()));
            let service = hyper::service::service_fn(move |req| {
                let logs = logs.clone();
                let who = who.clone();
                async move { Ok::<_, Infallible>(respond(req, who, logs).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(io, service).await {
                tracing::debug!(%peer, error = %e, "log connection ended");
            }
        });
    }
}

/// Whether the holder of the (CA-verified) client certificate `der` may read logs: the API
/// server's kubelet client ([`KUBELET_CLIENT_USER`]) or a member of [`MASTERS_GROUP`]. Other
/// users of the cluster CA (the controller manager, the scheduler) may not. Returns the user.
fn authorize(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let master = subject
        .iter_organization()
        .any(|o| o.as_str() == Ok(MASTERS_GROUP));
    if user == KUBELET_CLIENT_USER || master {
        Ok(user)
    } else {
        Err(format!("user {user:?} may not read container logs"))
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(message)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn respond(
    req: Request<hyper::body::Incoming>,
    who: Result<String, String>,
    logs: Arc<dyn LogSource>,
) -> Response<Body> {
    let user = match who {
        Ok(user) => user,
        Err(why) => return text(StatusCode::FORBIDDEN, format!("forbidden: {why}")),
    };
    let Some(target) = parse_path(req.uri().path()) else {
        return text(
            StatusCode::NOT_FOUND,
            "not found: this node serves /containerLogs/<namespace>/<pod>/<container> only",
        );
    };
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET reads logs");
    }
    let query = match Query::parse(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    tracing::debug!(
        user = ?user,
        namespace = ?target.namespace,
        pod = ?target.pod,
        container = ?target.container,
        ?query,
        "log request"
    );
    let Some(path) = logs.path(
        &target.namespace,
        &target.pod,
        &target.container,
        query.previous,
    ) else {
        let which = if query.previous {
            "previous terminated container"
        } else {
            "container"
        };
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "{which} {:?} in pod {:?} of namespace {:?} not found",
                target.container, target.pod, target.namespace
            ),
        );
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "container {:?} in pod {:?} of namespace {:?} has written no log yet",
                    target.container, target.pod, target.namespace
                ),
            )
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "opening a log file failed");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the log file cannot be read",
            );
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        if let Err(e) = stream(file, &query, &tx, || {
            logs.running(&target.namespace, &target.pod, &target.container)
        })
        .await
        {
            tracing::warn!(path = %path.display(), error = %e, "reading a log file failed");
        }
    });
    let body = StreamBody::new(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok(Frame::data(b))),
    );
    let mut response = Response::new(BodyExt::boxed(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Sends `file`'s log as `query` asks to `tx`: from the start of its last `tailLines` lines, at
/// most `limitBytes`, and with `follow` what is appended afterwards, until the receiver is
/// dropped (the client went away) or `running` says no more will come. A file that shrinks
/// (rotated or truncated) is read again from its start.
async fn stream(
    mut file: tokio::fs::File,
    query: &Query,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
    running: impl Fn() -> bool,
) -> std::io::Result<()> {
    let len = file.metadata().await?.len();
    let mut position = match query.tail_lines {
        Some(n) => tail_offset(&mut file, len, n).await?,
        None => 0,
    };
    file.seek(SeekFrom::Start(position)).await?;
    let mut left = query.limit_bytes.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let may_grow = query.follow && running();
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).await?;
        if n > 0 {
            position += n as u64;
            left -= n as u64;
            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return Ok(());
            }
            continue;
        }
        if !may_grow {
            return Ok(());
        }
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        if file.metadata().await?.len() < position {
            position = 0;
            file.seek(SeekFrom::Start(0)).await?;
        }
    }
    Ok(())
}

/// Where the last `lines` lines of a `len`-byte log start. A final newline ends the last line
/// rather than starting another; with fewer lines than asked for, the whole log.
async fn tail_offset<F: AsyncRead + AsyncSeek + Unpin>(
    file: &mut F,
    len: u64,
    lines: u64,
) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(len);
    }
    let mut end = len;
    let mut seen = 0;
    let mut buf = vec![0u8; CHUNK];
    while end > 0 {
        let n = buf.len().min(usize::try_from(end).unwrap_or(usize::MAX));
        let start = end - n as u64;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut buf[..n]).await?;
        for i in (0..n).rev() {
            let at = start + i as u64;
            if buf[i] == b'\n' && at + 1 != len {
                seen += 1;
                if seen == lines {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// `/containerLogs/<namespace>/<pod>/<container>` taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    namespace: String,
    pod: String,
    container: String,
}

fn parse_path(path: &str) -> Option<Target> {
    let rest = path.strip_prefix("/containerLogs/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, pod, container] = parts.as_slice() else {
        return None;
    };
    if [namespace, pod, container].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(Target {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
    })
}

/// The query parameters the API server passes on from `PodLogOptions` that this endpoint uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Query {
    follow: bool,
    previous: bool,
    tail_lines: Option<u64>,
    limit_bytes: Option<u64>,
}

impl Query {
    /// Parses a query string; a malformed value of a parameter used here is an error naming it.
    /// Unknown parameters (and the ignored ones) are skipped.
    fn parse(query: &str) -> Result<Query, String> {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let boolean = || match value {
                "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                _ => Err(format!("{key}={value:?} is not a boolean")),
            };
            let count = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}={value:?} is not a non-negative integer"))
            };
            match key {
                "follow" => q.follow = boolean()?,
                "previous" => q.previous = boolean()?,
                "tailLines" => q.tail_lines = Some(count()?),
                "limitBytes" => q.limit_bytes = Some(count()?),
                _ => {}
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::pki::{issue, new_ca};
    use std::io::Write;

    #[test]
    fn the_path_names_namespace_pod_and_container() {
        assert_eq!(
            parse_path("/containerLogs/shop/web-1/app"),
            Some(Target {
                namespace: "shop".into(),
                pod: "web-1".into(),
                container: "app".into()
            })
        );
        for bad in [
            "/containerLogs/shop/web-1",
            "/containerLogs/shop/web-1/app/x",
            "/containerLogs//web-1/app",
            "/logs/shop/web-1/app",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_query_takes_the_api_servers_parameters() {
        let q = Query::parse(
            "follow=true&limitBytes=10&previous=false&sinceSeconds=5&tailLines=3&timestamps=true",
        )
        .unwrap();
        assert_eq!(
            q,
            Query {
                follow: true,
                previous: false,
                tail_lines: Some(3),
                limit_bytes: Some(10)
            }
        );
        assert_eq!(Query::parse("").unwrap(), Query::default());
        let err = Query::parse("tailLines=-1").unwrap_err();
        assert!(err.contains("tailLines"), "{err}");
        let err = Query::parse("follow=maybe").unwrap_err();
        assert!(err.contains("follow"), "{err}");
    }

    async fn tail(text: &str, lines: u64) -> String {
        let mut cursor = std::io::Cursor::new(text.as_bytes().to_vec());
        let at = tail_offset(&mut cursor, text.len() as u64, lines)
            .await
            .unwrap();
        text[at as usize..].to_string()
    }

    #[tokio::test]
    async fn tail_lines_count_from_the_end() {
        assert_eq!(tail("a\nb\nc\n", 2).await, "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2).await, "b\nc");
        assert_eq!(tail("a\nb\nc\n", 5).await, "a\nb\nc\n");
        assert_eq!(tail("a\nb\nc\n", 0).await, "");
        assert_eq!(tail("", 3).await, "");
        // Longer than one read.
        let long = format!("{}\nlast\n", "x".repeat(3 * CHUNK));
        assert_eq!(tail(&long, 1).await, "last\n");
        assert_eq!(tail(&long, 2).await, long);
    }

    /// Logs in a directory: `<ns>_<pod>_<container>.log`.
    struct Dir(std::path::PathBuf);

    impl LogSource for Dir {
        fn path(&self, ns: &str, pod: &str, container: &str, previous: bool) -> Option<PathBuf> {
            let suffix = if previous { ".previous" } else { "" };
            let path = self.0.join(format!("{ns}_{pod}_{container}.log{suffix}"));
            path.exists().then_some(path)
        }
    }

    struct Pki {
        ca: String,
        server: crate::kube::pki::Pair,
        apiserver: crate::kube::pki::Pair,
        scheduler: crate::kube::pki::Pair,
    }

    fn pki() -> Pki {
        let (ca, issuer) = new_ca("test-ca").unwrap();
        let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let [client, server] = leaves("node-1", ip).try_into().unwrap();
        Pki {
            ca: ca.cert,
            server: issue(&server, &issuer).unwrap(),
            apiserver: issue(&client, &issuer).unwrap(),
            scheduler: issue(
                &Leaf::client("scheduler", "system:kube-scheduler", &[]),
                &issuer,
            )
            .unwrap(),
        }
    }

    async fn start(pki: &Pki, dir: &std::path::Path) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = server_config(&pki.server.cert, &pki.server.key, &pki.ca).unwrap();
        let logs: Arc<dyn LogSource> = Arc::new(Dir(dir.to_path_buf()));
        tokio::spawn(serve(listener, Arc::new(tls), logs));
        addr
    }

    type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>;

    /// An HTTP/1 connection to the endpoint, with `client`'s certificate if given.
    async fn connect(
        pki: &Pki,
        addr: std::net::SocketAddr,
        client: Option<&crate::kube::pki::Pair>,
    ) -> anyhow::Result<Sender> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(pki.ca.as_bytes())?)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client {
            Some(pair) => builder.with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(pair.cert.as_bytes())?],
                PrivateKeyDer::from_pem_slice(pair.key.as_bytes())?,
            )?,
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("127.0.0.1".try_into()?, tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    async fn get(
        sender: &mut Sender,
        path: &str,
    ) -> anyhow::Result<Response<hyper::body::Incoming>> {
        let req = Request::get(path)
            .header("host", "node-1")
            .body(http_body_util::Empty::new())?;
        Ok(sender.send_request(req).await?)
    }

    async fn body(response: Response<hyper::body::Incoming>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn write_log(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn the_api_servers_client_reads_a_log_with_tail_and_limit() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), "shop_web-1_app.log", "one\ntwo\nthree\n");
        write_log(
            dir.path(),
            "shop_web-1_app.log.previous",
            "before the restart\n",
        );
        let addr = start(&pki, dir.path()).await;
        let mut c = connect(&pki, addr, Some(&pki.apiserver)).await.unwrap();

        let all = get(&mut c, "/containerLogs/shop/web-1/app").await.unwrap();
        assert_eq!(all.status(), StatusCode::OK);
        assert_eq!(body(all).await, "one\ntwo\nthree\n");
        let tail = get(&mut c, "/containerLogs/shop/web-1/app?tailLines=2")
            .await
            .unwrap();
        assert_eq!(body(tail).await, "two\nthree\n");
        let limited = get(
            &mut c,
            "/containerLogs/shop/web-1/app?tailLines=2&limitBytes=5",
        )
        .await
        .unwrap();
        assert_eq!(body(limited).await, "two\nt");
        let previous = get(&mut c, "/containerLogs/shop/web-1/app?previous=true")
            .await
            .unwrap();
        assert_eq!(body(previous).await, "before the restart\n");

        let unknown = get(&mut c, "/containerLogs/shop/web-1/sidecar")
            .await
            .unwrap();
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        let said = body(unknown).await;
        assert!(
            said.contains("\"sidecar\"")
                && said.contains("\"web-1\"")
                && said.contains("not found"),
            "{said}"
        );
        let bad = get(&mut c, "/containerLogs/shop/web-1/app?tailLines=x")
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn follow_streams_what_is_appended() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), "shop_web-1_app.log", "first\n");
        let addr = start(&pki, dir.path()).await;
        let mut c = connect(&pki, addr, Some(&pki.apiserver)).await.unwrap();
        let response = get(&mut c, "/containerLogs/shop/web-1/app?follow=true")
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut seen = String::new();
        let mut appended = false;
        while !seen.contains("second\n") {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("the followed log stalled")
                .expect("the followed log ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(std::str::from_utf8(&data).unwrap());
            }
            if seen == "first\n" && !appended {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(b"second\n").unwrap();
                appended = true;
            }
        }
        assert_eq!(seen, "first\nsecond\n");
    }

    #[tokio::test]
    async fn follow_ends_when_the_container_stops() {
        struct Stopped(std::path::PathBuf);
        impl LogSource for Stopped {
            fn path(&self, _: &str, _: &str, _: &str, _: bool) -> Option<PathBuf> {
                Some(self.0.clone())
            }
            fn running(&self, _: &str, _: &str, _: &str) -> bool {
                false
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), "log", "done\n");
        let file = tokio::fs::File::open(&path).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let query = Query {
            follow: true,
            ..Query::default()
        };
        let source = Stopped(path);
        tokio::time::timeout(
            Duration::from_secs(10),
            stream(file, &query, &tx, || source.running("", "", "")),
        )
        .await
        .expect("follow went on after the container stopped")
        .unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"done\n"));
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), "shop_web-1_app.log", "secret\n");
        let addr = start(&pki, dir.path()).await;
        // TLS 1.3: the client may finish its handshake before the server refuses it; then the
        // request fails instead.
        let outcome = match connect(&pki, addr, None).await {
            Err(e) => Err(e),
            Ok(mut c) => get(&mut c, "/containerLogs/shop/web-1/app").await,
        };
        let err = outcome.expect_err("a client without a certificate was served");
        assert!(!format!("{err:#}").contains("secret"));
    }

    #[tokio::test]
    async fn another_user_of_the_cluster_ca_is_forbidden() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), "shop_web-1_app.log", "secret\n");
        let addr = start(&pki, dir.path()).await;
        let mut c = connect(&pki, addr, Some(&pki.scheduler)).await.unwrap();
        let response = get(&mut c, "/containerLogs/shop/web-1/app").await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let said = body(response).await;
        assert!(said.contains("system:kube-scheduler"), "{said}");
    }

    #[test]
    fn the_api_server_flags_name_the_pki_files() {
        let files = Files {
            dir: "/state/pki".into(),
        };
        assert_eq!(
            kubelet_client_args(&files),
            [
                "--kubelet-client-certificate=/state/pki/apiserver-kubelet-client.crt",
                "--kubelet-client-key=/state/pki/apiserver-kubelet-client.key",
                "--kubelet-certificate-authority=/state/pki/ca.crt",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        );
    }
}
