//! The inbound side: connections to the workload, authorized per request (HTTP) or per
//! connection (TCP) and forwarded to the app at their original destination (the pod's address,
//! so ports the app binds only on loopback stay private).

pub mod guard;
mod http;
pub mod identity;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use smidge_protocol::authz::Decision;
use smidge_protocol::matching::RequestHead;
use smidge_protocol::Identity;
use tokio::net::TcpStream;

use crate::ctx::Ctx;
use crate::discovery::ViewState;
use crate::http::pool::Target;
use crate::metrics::{DenyLabels, TcpLabels};
use crate::net::detect::{detect, Protocol};
use crate::net::orig_dst::original_dst;
use crate::net::prefixed::PrefixedIo;
use crate::views::Compiled;

/// Why a request is refused when the proxy has no policy yet (the controller was never reached).
pub const NO_POLICY: &str = "policy-unavailable";

/// Handles one connection redirected to the inbound port.
pub async fn accept(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    let dst = match original_dst(&stream) {
        Ok(dst) => dst,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "inbound connection without an original destination");
            return;
        }
    };
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "inbound connection without a local address");
            return;
        }
    };
    let to_proxy = match guard::classify(dst, local, &ctx.settings.own_ports) {
        guard::Destination::App => false,
        guard::Destination::PeerProxy if ctx.mesh.is_some() => true,
        guard::Destination::PeerProxy => {
            tracing::info!(%peer, %dst, "inbound connection to the proxy's own port refused");
            return;
        }
        guard::Destination::Refused(reason) => {
            tracing::info!(%peer, %dst, reason, "inbound connection refused");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    // The original destination, not 127.0.0.1: what the app binds only on loopback stays
    // private, and the proxy's own connection (its uid or mark) is not redirected again.
    let app = Target {
        addr: dst,
        peer: None,
    };
    let mut stream = stream;
    let protocol = if !to_proxy && ctx.settings.opaque_ports.contains(&dst.port()) {
        None
    } else {
        match detect(
            &mut stream,
            ctx.settings.detect_timeout,
            ctx.settings.detect_max_bytes,
        )
        .await
        {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "inbound connection failed during detection");
                return;
            }
        }
    };
    let (protocol, prefix) = protocol.unwrap_or((Protocol::Opaque, bytes::Bytes::new()));
    if to_proxy && protocol != Protocol::Tls {
        tracing::info!(%peer, %dst, "plaintext to the proxy's own port refused");
        return;
    }
    if protocol == Protocol::Tls {
        if let Some(mesh) = ctx.mesh.clone() {
            return tls::accept(ctx, mesh, stream, prefix, peer, dst, app).await;
        }
    }
    let client = plaintext_caller(&ctx, peer).await;
    let io = PrefixedIo::new(prefix, stream);
    let caller = Caller {
        identity: client,
        tls: false,
    };
    match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            http::serve(ctx, io, protocol, dst, app, caller).await;
        }
        Protocol::Opaque | Protocol::Tls => opaque(&ctx, io, dst, &app, caller).await,
    }
}

/// Who called, and how they proved it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub identity: Option<Identity>,
    /// The identity came from a verified mesh certificate.
    pub tls: bool,
}

impl Caller {
    /// The identity as metrics spell it: the SPIFFE ID for certificate identities.
    pub fn label(&self, ctx: &Ctx) -> String {
        match (&self.identity, &ctx.mesh) {
            (Some(id), Some(mesh)) if self.tls => {
                smidge_protocol::names::spiffe_id(&mesh.trust_domain, id)
            }
            (Some(id), _) => id.to_string(),
            (None, _) => String::new(),
        }
    }
}

/// The identity of a plaintext caller: none when the mesh runs mTLS (an un-meshed client is
/// never given one); by source address in a mesh without identity.
async fn plaintext_caller(ctx: &Ctx, peer: SocketAddr) -> Option<Identity> {
    if ctx.mesh.is_some() {
        None
    } else {
        ctx.peers.identify(peer).await
    }
}

/// Authorizes an opaque TCP connection once, then forwards it to the app.
async fn opaque<
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + crate::net::activity::Resettable,
>(
    ctx: &Arc<Ctx>,
    io: I,
    dst: SocketAddr,
    app: &Target,
    caller: Caller,
) {
    if let Err(reason) = decide(ctx, caller.identity.as_ref(), dst.port(), None) {
        ctx.metrics
            .denied
            .get_or_create(&DenyLabels {
                reason,
                src_identity: caller.label(ctx),
                port: ctx.metrics.ports.label(dst.port()),
                protocol: "tcp",
            })
            .inc();
        tracing::info!(port = dst.port(), reason, caller = %caller.label(ctx), "TCP connection denied");
        return;
    }
    let labels = TcpLabels {
        direction: "inbound",
        authority: ctx.metrics.inbound_authority(dst),
        protocol: if caller.tls { "mtls" } else { "opaque" },
    };
    crate::tcp::forward(
        &ctx.metrics,
        labels,
        io,
        &ctx.pool,
        app,
        ctx.settings.tcp_idle_timeout,
    )
    .await;
}

/// The current policy's decision; `Err` carries the reason to name.
pub fn decide(
    ctx: &Ctx,
    client: Option<&Identity>,
    port: u16,
    request: Option<&dyn RequestHead>,
) -> Result<String, &'static str> {
    let state = ctx.policy.borrow();
    let ViewState::Ready(ready) = &*state else {
        return Err(NO_POLICY);
    };
    let Compiled::Inbound(policy) = &ready.compiled else {
        return Err(NO_POLICY);
    };
    match policy.decide(client, port, request) {
        Decision::Allow { by } => Ok(by),
        Decision::Deny(reason) => Err(reason.as_str()),
    }
}
