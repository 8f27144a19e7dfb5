//! Opaque TCP forwarding with connection and byte metrics.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::pool::{Pool, Target};
use crate::identity::Alpn;
use crate::metrics::{Metrics, TcpLabels};

/// Connects to `target` (mTLS for a meshed peer) and copies both ways until either side closes.
/// Returns whether the upstream was reached.
pub async fn forward<I: AsyncRead + AsyncWrite + Unpin>(
    metrics: &Arc<Metrics>,
    labels: TcpLabels,
    client: I,
    pool: &Pool,
    target: &Target,
) -> bool {
    forward_with(metrics, labels, client, pool, target, None).await
}

/// Like [`forward`]; with `port`, the connection goes to the peer proxy's inbound port and
/// names the target port in a header first.
pub async fn forward_with<I: AsyncRead + AsyncWrite + Unpin>(
    metrics: &Arc<Metrics>,
    labels: TcpLabels,
    mut client: I,
    pool: &Pool,
    target: &Target,
    port: Option<u16>,
) -> bool {
    use tokio::io::AsyncWriteExt;
    metrics.tcp_opened.get_or_create(&labels).inc();
    metrics.tcp_open.get_or_create(&labels).inc();
    let upstream = target.addr;
    let alpn = if port.is_some() {
        Alpn::OpaqueHeader
    } else {
        Alpn::Opaque
    };
    let connected = match pool.connect(target, alpn).await {
        Ok(mut server) => match port {
            Some(p) => match server.write_all(&p.to_be_bytes()).await {
                Ok(()) => Ok(server),
                Err(e) => Err(e.to_string()),
            },
            None => Ok(server),
        },
        Err(e) => Err(e.to_string()),
    };
    let reached = connected.is_ok();
    match connected {
        Ok(mut server) => match tokio::io::copy_bidirectional(&mut client, &mut server).await {
            Ok((from_client, to_client)) => {
                metrics
                    .tcp_read_bytes
                    .get_or_create(&labels)
                    .inc_by(from_client);
                metrics
                    .tcp_write_bytes
                    .get_or_create(&labels)
                    .inc_by(to_client);
            }
            Err(e) => tracing::debug!(%upstream, error = %e, "TCP connection ended"),
        },
        Err(error) => tracing::info!(%upstream, %error, "TCP connect failed"),
    }
    metrics.tcp_open.get_or_create(&labels).dec();
    metrics.tcp_closed.get_or_create(&labels).inc();
    reached
}
