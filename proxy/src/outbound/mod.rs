//! The outbound side: connections the app makes, routed by their original destination.

mod http;
mod tcp;

use std::sync::Arc;

use smidge_protocol::ViewKey;
use tokio::net::TcpStream;

use crate::ctx::Ctx;
use crate::discovery::ViewState;
use crate::net::detect::{detect, Protocol};
use crate::net::orig_dst::original_dst;
use crate::net::prefixed::PrefixedIo;

/// Handles one intercepted connection from the app.
pub async fn accept(ctx: Arc<Ctx>, stream: TcpStream) {
    let dst = match original_dst(&stream) {
        Ok(dst) => dst,
        Err(e) => {
            tracing::warn!(error = %e, "outbound connection without an original destination");
            return;
        }
    };
    if stream.local_addr().is_ok_and(|l| l == dst) {
        tracing::warn!(%dst, "a connection addressed to the outbound port itself; closing it");
        return;
    }
    let _ = stream.set_nodelay(true);
    let rx = ctx
        .discovery
        .resolve(&ViewKey::Outbound(dst), ctx.settings.discovery_wait)
        .await;
    let known = matches!(&*rx.borrow(), ViewState::Ready(_));
    if !known {
        // Not a mesh Service (or the controller cannot say): forward as an un-meshed pod would.
        tcp::passthrough(&ctx, stream, dst).await;
        return;
    }
    if ctx.settings.opaque_ports.contains(&dst.port()) {
        tcp::balanced(&ctx, stream, dst, &rx).await;
        return;
    }
    let mut stream = stream;
    let (protocol, prefix) = match detect(
        &mut stream,
        ctx.settings.detect_timeout,
        ctx.settings.detect_max_bytes,
    )
    .await
    {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(%dst, error = %e, "outbound connection failed during detection");
            return;
        }
    };
    tracing::debug!(%dst, protocol = protocol.as_str(), "outbound connection");
    let io = PrefixedIo::new(prefix, stream);
    match protocol {
        // The app's own TLS is opaque to the proxy.
        Protocol::Opaque | Protocol::Tls => tcp::balanced(&ctx, io, dst, &rx).await,
        Protocol::Http1 | Protocol::Http2 => http::serve(ctx, io, protocol, dst, rx).await,
    }
}
