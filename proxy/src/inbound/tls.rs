//! Inbound mesh mTLS: a ClientHello that names this proxy is terminated here and the caller's
//! identity read from its certificate; any other TLS is the app's own and passes as opaque TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{http, opaque, Caller};
use crate::ctx::Ctx;
use crate::http::pool::Target;
use crate::identity::{peer_identity, MeshIdentity, ALPN_H2, ALPN_HTTP1, ALPN_OPAQUE};
use crate::metrics::DenyLabels;
use crate::net::detect::Protocol;
use crate::net::prefixed::PrefixedIo;

/// The largest ClientHello the proxy waits for.
const MAX_HELLO: usize = 16 * 1024;

/// What the bytes read so far say about a ClientHello.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Complete, with its SNI.
    Complete(Option<String>),
    Partial,
    NotTls,
}

/// Reads the SNI of a ClientHello from the bytes received so far. Pure.
pub fn client_hello(buf: &[u8]) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rd: &[u8] = buf;
    while !rd.is_empty() {
        match acceptor.read_tls(&mut rd) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Hello::NotTls,
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            Hello::Complete(accepted.client_hello().server_name().map(String::from))
        }
        Ok(None) => Hello::Partial,
        Err(_) => Hello::NotTls,
    }
}

pub(super) async fn accept(
    ctx: Arc<Ctx>,
    mesh: Arc<MeshIdentity>,
    mut stream: TcpStream,
    prefix: Bytes,
    peer: SocketAddr,
    dst: SocketAddr,
    app: Target,
) {
    let mut buf = BytesMut::from(&prefix[..]);
    let deadline = tokio::time::Instant::now() + ctx.settings.detect_timeout;
    let sni = loop {
        match client_hello(&buf) {
            Hello::Complete(sni) => break sni,
            Hello::NotTls => break None,
            Hello::Partial if buf.len() < MAX_HELLO => {
                match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => continue,
                    _ => break None,
                }
            }
            Hello::Partial => break None,
        }
    };
    let io = PrefixedIo::new(buf.freeze(), stream);
    // Only a peer proxy's mTLS with a port header may use the inbound port itself.
    let to_proxy = dst.port() == ctx.settings.own_ports.inbound;
    if to_proxy && sni.as_deref() != Some(mesh.own_name().as_str()) {
        tracing::info!(%peer, "TLS to the proxy's own port without the mesh's name refused");
        return;
    }
    if sni.as_deref() != Some(mesh.own_name().as_str()) {
        // The app's own TLS, from a client outside the mesh.
        let caller = Caller {
            identity: None,
            tls: false,
        };
        return opaque(&ctx, io, dst, &app, caller).await;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(mesh.server.clone());
    let tls = match tokio::time::timeout(ctx.settings.connect_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "mTLS handshake refused");
            ctx.metrics
                .denied
                .get_or_create(&DenyLabels {
                    reason: "tls-handshake",
                    src_identity: String::new(),
                    port: ctx.metrics.ports.label(dst.port()),
                    protocol: "tls",
                })
                .inc();
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "mTLS handshake timed out");
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let identity = peer_identity(&mesh.trust_domain, conn.peer_certificates());
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let caller = Caller {
        identity,
        tls: true,
    };
    if to_proxy && alpn.as_deref() != Some(ALPN_OPAQUE) {
        tracing::info!(%peer, "mTLS to the proxy's own port without a port header refused");
        return;
    }
    match alpn.as_deref() {
        Some(ALPN_H2) => http::serve(ctx, tls, Protocol::Http2, dst, app, caller).await,
        Some(ALPN_HTTP1) => http::serve(ctx, tls, Protocol::Http1, dst, app, caller).await,
        Some(ALPN_OPAQUE) => {
            // Sent to our inbound port; the port it is for comes first.
            let mut tls = tls;
            let mut port = [0u8; 2];
            if tls.read_exact(&mut port).await.is_err() {
                return;
            }
            let named = u16::from_be_bytes(port);
            let port = match super::guard::header_port(named, &ctx.settings.own_ports) {
                Ok(port) => port,
                Err(reason) => {
                    tracing::info!(%peer, port = named, reason, caller = %caller.label(&ctx), "port header refused");
                    return;
                }
            };
            let dst = SocketAddr::new(dst.ip(), port);
            let app = Target {
                addr: SocketAddr::new(app.addr.ip(), port),
                peer: None,
            };
            opaque(&ctx, tls, dst, &app, caller).await
        }
        _ => opaque(&ctx, tls, dst, &app, caller).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sni_of_a_client_hello_is_read_and_partial_hellos_wait() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("web.shop.example").expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("hello");
        assert_eq!(
            client_hello(&hello),
            Hello::Complete(Some("web.shop.example".into()))
        );
        assert_eq!(client_hello(&hello[..hello.len() / 2]), Hello::Partial);
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
    }
}
