//! The inbound side: connections to the workload, authorized per request (HTTP) or per
//! connection (TCP) and forwarded to the app on localhost.

mod http;
pub mod identity;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use smidge_protocol::authz::Decision;
use smidge_protocol::matching::RequestHead;
use smidge_protocol::Identity;
use tokio::net::TcpStream;

use crate::ctx::Ctx;
use crate::discovery::ViewState;
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
    let _ = stream.set_nodelay(true);
    let app = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), dst.port());
    let client = ctx.peers.identify(peer).await;
    let mut stream = stream;
    let protocol = if ctx.settings.opaque_ports.contains(&dst.port()) {
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
    let io = PrefixedIo::new(prefix, stream);
    match protocol {
        Protocol::Http1 | Protocol::Http2 => {
            http::serve(ctx, io, protocol, dst, app, client).await;
        }
        Protocol::Opaque => {
            if let Err(reason) = decide(&ctx, client.as_ref(), dst.port(), None) {
                ctx.metrics
                    .denied
                    .get_or_create(&DenyLabels {
                        reason,
                        src_identity: client.map(|c| c.to_string()).unwrap_or_default(),
                        port: dst.port(),
                        protocol: "tcp",
                    })
                    .inc();
                tracing::info!(%peer, port = dst.port(), reason, "TCP connection denied");
                return;
            }
            let labels = TcpLabels {
                direction: "inbound",
                authority: dst.to_string(),
                protocol: "opaque",
            };
            crate::tcp::forward(&ctx.metrics, labels, io, app, ctx.settings.connect_timeout).await;
        }
    }
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
