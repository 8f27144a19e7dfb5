//! Opaque TCP forwarding with connection and byte metrics, an idle timeout, and resets passed
//! on as resets.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::pool::{Pool, Target};
use crate::identity::Alpn;
use crate::metrics::{Metrics, TcpLabels};
use crate::net::activity::{Activity, Resettable, Tracked};

/// Connects to `target` (mTLS for a meshed peer) and copies both ways until either side closes,
/// or nothing moved either way for `idle`. Returns whether the upstream was reached.
pub async fn forward<I: AsyncRead + AsyncWrite + Unpin + Resettable>(
    metrics: &Arc<Metrics>,
    labels: TcpLabels,
    client: I,
    pool: &Pool,
    target: &Target,
    idle: Option<Duration>,
) -> bool {
    forward_with(metrics, labels, client, pool, target, None, idle).await
}

/// Like [`forward`]; with `port`, the connection goes to the peer proxy's inbound port and
/// names the target port in a header first.
pub async fn forward_with<I: AsyncRead + AsyncWrite + Unpin + Resettable>(
    metrics: &Arc<Metrics>,
    labels: TcpLabels,
    client: I,
    pool: &Pool,
    target: &Target,
    port: Option<u16>,
    idle: Option<Duration>,
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
        Ok(server) => match copy(client, server, idle).await {
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
            Err(e) => tracing::debug!(%upstream, error = %e, "TCP connection aborted"),
        },
        Err(error) => tracing::info!(%upstream, %error, "TCP connect failed"),
    }
    metrics.tcp_open.get_or_create(&labels).dec();
    metrics.tcp_closed.get_or_create(&labels).inc();
    reached
}

/// Copies both ways. When a side was reset, the client's connection is reset too rather than
/// closed, so a truncated stream never looks complete; any other ending (the idle timeout, an
/// unclean close) closes it.
async fn copy<I, S>(client: I, server: S, idle: Option<Duration>) -> std::io::Result<(u64, u64)>
where
    I: AsyncRead + AsyncWrite + Unpin + Resettable,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut client = Tracked::new(client, activity.clone());
    let mut server = Tracked::new(server, activity.clone());
    let copied = tokio::io::copy_bidirectional(&mut client, &mut server);
    let result = match idle {
        None => copied.await,
        Some(idle) => tokio::select! {
            r = copied => r,
            () = activity.idle_for(idle) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("idle for {idle:?}"),
            )),
        },
    };
    if let Err(e) = &result {
        if is_reset(e.kind()) {
            client.get_ref().reset_on_close();
        }
    }
    result
}

fn is_reset(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
    )
}
