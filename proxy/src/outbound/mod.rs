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

/// Why a connection fails when the controller has not said what its destination is.
pub const DISCOVERY_UNAVAILABLE: &str = "discovery-unavailable";

/// What a connection does, by what the controller said of its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// A mesh destination: routed, balanced, mTLS to meshed endpoints.
    Mesh,
    /// Known not to be in the mesh: forwarded as an un-meshed pod would.
    Direct,
    /// No answer (the controller is unreachable): refused, because a mesh destination sent
    /// as plain passthrough would silently lose mTLS and its identity.
    Unavailable,
}

impl Plan {
    fn of(state: &ViewState) -> Plan {
        match state {
            ViewState::Ready(_) => Plan::Mesh,
            ViewState::Absent { .. } => Plan::Direct,
            ViewState::Pending => Plan::Unavailable,
        }
    }
}

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
    let plan = Plan::of(&rx.borrow());
    if plan == Plan::Direct {
        tcp::passthrough(&ctx, stream, dst).await;
        return;
    }
    if ctx.settings.opaque_ports.contains(&dst.port()) {
        if plan == Plan::Unavailable {
            unavailable(dst);
        } else {
            tcp::balanced(&ctx, stream, dst, &rx).await;
        }
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
    if plan == Plan::Unavailable && !matches!(protocol, Protocol::Http1 | Protocol::Http2) {
        // HTTP is answered 503 per request (the view may still arrive); opaque TCP has no way
        // to say why, so it is closed.
        unavailable(dst);
        return;
    }
    match protocol {
        // The app's own TLS is opaque to the proxy.
        Protocol::Opaque | Protocol::Tls => tcp::balanced(&ctx, io, dst, &rx).await,
        Protocol::Http1 | Protocol::Http2 => http::serve(ctx, io, protocol, dst, rx).await,
    }
}

/// Logs why a connection is closed unserved.
fn unavailable(dst: std::net::SocketAddr) {
    tracing::warn!(%dst, reason = DISCOVERY_UNAVAILABLE, "the controller has not answered for this destination; closing the connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_destination_the_controller_disowns_goes_out_directly() {
        assert_eq!(Plan::of(&ViewState::Pending), Plan::Unavailable);
        assert_eq!(Plan::of(&ViewState::Absent { version: 1 }), Plan::Direct);
    }
}
