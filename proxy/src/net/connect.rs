//! Outbound TCP connections the proxy makes itself (to peers and to the controller), marked when
//! the pod's rules exempt the proxy by mark instead of by uid.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr`; with `mark`, the socket carries that firewall mark (`SO_MARK`, needs
/// CAP_NET_ADMIN) so `init --proxy-mark` leaves it alone.
pub async fn connect(addr: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let Some(mark) = mark else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &mark)
        .map_err(|e| io::Error::other(format!("setting the socket mark {mark:#x}: {e}")))?;
    socket.connect(addr).await
}
