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
pub async fn passthrough<I: AsyncRead + AsyncWrite + Unpin + crate::net::activity::Resettable>(
    ctx: &Arc<Ctx>,
    io: I,
    dst: SocketAddr,
) {
    let labels = TcpLabels {
        direction: "outbound",
        authority: crate::metrics::PASSTHROUGH_AUTHORITY.to_string(),
        protocol: "passthrough",
    };
    let target = ctx.pool.target(dst, None);
    // A meshed peer on a port that skips detection is reached through its proxy's inbound
    // port, so its side needs no detection either.
    if target.peer.is_some() && ctx.settings.opaque_ports.contains(&dst.port()) {
        let port = target.addr.port();
        let via = crate::http::pool::Target {
            addr: std::net::SocketAddr::new(target.addr.ip(), ctx.settings.peer_inbound_port),
            peer: target.peer.clone(),
        };
        crate::tcp::forward_with(
            &ctx.metrics,
            labels,
            io,
            &ctx.pool,
            &via,
            Some(port),
            ctx.settings.tcp_idle_timeout,
        )
        .await;
        return;
    }
    crate::tcp::forward(
        &ctx.metrics,
        labels,
        io,
        &ctx.pool,
        &target,
        ctx.settings.tcp_idle_timeout,
    )
    .await;
}

/// Forwards to an endpoint of the Service's TCP route.
pub async fn balanced<I: AsyncRead + AsyncWrite + Unpin + crate::net::activity::Resettable>(
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
        let endpoints = &routes.backend(backend)?.endpoints;
        let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
        let (addr, load) = ctx.loads.pick(&addrs)?;
        let peer = endpoints
            .iter()
            .find(|e| e.addr == addr)
            .and_then(|e| e.identity.as_ref());
        Some((ctx.pool.target(addr, peer), load))
    });
    let Some((target, load)) = chosen else {
        tracing::info!(%dst, service = %routes.service, "no endpoint for a TCP connection; closing it");
        return;
    };
    let open = load.start_connection();
    let labels = TcpLabels {
        direction: "outbound",
        authority: routes.service.clone(),
        protocol: "opaque",
    };
    // A meshed peer on a port that skips detection is reached through its proxy's inbound
    // port, so its side needs no detection either.
    let reached = if target.peer.is_some() && ctx.settings.opaque_ports.contains(&dst.port()) {
        let port = target.addr.port();
        let via = crate::http::pool::Target {
            addr: std::net::SocketAddr::new(target.addr.ip(), ctx.settings.peer_inbound_port),
            peer: target.peer.clone(),
        };
        crate::tcp::forward_with(
            &ctx.metrics,
            labels,
            io,
            &ctx.pool,
            &via,
            Some(port),
            ctx.settings.tcp_idle_timeout,
        )
        .await
    } else {
        crate::tcp::forward(
            &ctx.metrics,
            labels,
            io,
            &ctx.pool,
            &target,
            ctx.settings.tcp_idle_timeout,
        )
        .await
    };
    if !reached {
        open.failed();
    }
}
