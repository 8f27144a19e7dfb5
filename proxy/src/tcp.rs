//! Opaque TCP forwarding with connection and byte metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::metrics::{Metrics, TcpLabels};

/// Connects to `upstream` and copies both ways until either side closes.
pub async fn forward<I: AsyncRead + AsyncWrite + Unpin>(
    metrics: &Arc<Metrics>,
    labels: TcpLabels,
    mut client: I,
    upstream: SocketAddr,
    connect_timeout: Duration,
) {
    metrics.tcp_opened.get_or_create(&labels).inc();
    metrics.tcp_open.get_or_create(&labels).inc();
    match tokio::time::timeout(connect_timeout, TcpStream::connect(upstream)).await {
        Ok(Ok(mut server)) => {
            let _ = server.set_nodelay(true);
            match tokio::io::copy_bidirectional(&mut client, &mut server).await {
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
            }
        }
        Ok(Err(e)) => tracing::info!(%upstream, error = %e, "TCP connect failed"),
        Err(_) => tracing::info!(%upstream, "TCP connect timed out"),
    }
    metrics.tcp_open.get_or_create(&labels).dec();
    metrics.tcp_closed.get_or_create(&labels).inc();
}
