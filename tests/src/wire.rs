//! Watching the wire between pods: what an eavesdropper on the node's bridge would see.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Every frame seen in the node's namespace (the bridge between the pods) until `stop`.
pub fn capture(
    netns: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<Vec<u8>>> {
    capture_where(netns, stop, |_| true)
}

/// The IPv4 frames from or to one of `addresses` seen in the node's namespace until `stop`:
/// the traffic of those pods alone, not the test's own calls to other pods.
pub fn capture_of(
    netns: String,
    stop: Arc<AtomicBool>,
    addresses: Vec<std::net::Ipv4Addr>,
) -> std::thread::JoinHandle<anyhow::Result<Vec<u8>>> {
    capture_where(netns, stop, move |frame| {
        // Ethernet header (14 bytes), then IPv4: source at 12..16, destination at 16..20.
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
            return false;
        }
        let ip = |at: usize| {
            std::net::Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
        };
        addresses.contains(&ip(26)) || addresses.contains(&ip(30))
    })
}

fn capture_where(
    netns: String,
    stop: Arc<AtomicBool>,
    keep: impl Fn(&[u8]) -> bool + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<Vec<u8>>> {
    use nix::sys::socket::{
        recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
        SockType,
    };
    use std::os::fd::AsRawFd;
    // Returns only once the socket captures: traffic the caller starts next is all seen.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let ready = ready_tx;
        smidge_local_cluster::netns::enter_netns(&netns)?;
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::EthAll,
        )?;
        let _ = ready.send(());
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 100_000),
        )?;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) if keep(&buf[..n]) => seen.extend_from_slice(&buf[..n]),
                Ok(_) => {}
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(seen)
    });
    // An error before the socket existed drops the sender: the caller then finds it on join.
    let _ = ready_rx.recv();
    handle
}
