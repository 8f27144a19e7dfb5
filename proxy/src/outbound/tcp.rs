//! Outbound opaque TCP: a backend by weight and an endpoint by load, per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::ctx::Ctx;
use crate::discovery::ViewState;
use crate::metrics::TcpLabels;
use crate::views::{pick_weighted, total_weight, Compiled};

/// Forwards to the original destination untouched.
pub async fn passthrough<I: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Arc<Ctx>,
    io: I,
    dst: SocketAddr,
) {
    let labels = TcpLabels {
        direction: "outbound",
        authority: dst.to_string(),
        protocol: "passthrough",
    };
    crate::tcp::forward(&ctx.metrics, labels, io, dst, ctx.settings.connect_timeout).await;
}

/// Forwards to an endpoint of the Service's TCP route.
pub async fn balanced<I: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Arc<Ctx>,
    io: I,
    dst: SocketAddr,
    rx: &watch::Receiver<ViewState>,
) {
    let state = rx.borrow().clone();
    let ViewState::Ready(ready) = state else {
        return passthrough(ctx, io, dst).await;
    };
    let Compiled::Outbound(routes) = &ready.compiled else {
        return passthrough(ctx, io, dst).await;
    };
    let chosen = routes.route_connection().and_then(|route| {
        let total = total_weight(&route.targets);
        let backend = pick_weighted(&route.targets, fastrand::u64(..total.max(1)))?;
        let addrs: Vec<SocketAddr> = routes
            .backend(backend)?
            .endpoints
            .iter()
            .map(|e| e.addr)
            .collect();
        ctx.loads.pick(&addrs)
    });
    let Some((addr, load)) = chosen else {
        tracing::info!(%dst, service = %routes.service, "no endpoint for a TCP connection; closing it");
        return;
    };
    let _open = load.start_connection();
    let labels = TcpLabels {
        direction: "outbound",
        authority: routes.service.clone(),
        protocol: "opaque",
    };
    crate::tcp::forward(&ctx.metrics, labels, io, addr, ctx.settings.connect_timeout).await;
}
