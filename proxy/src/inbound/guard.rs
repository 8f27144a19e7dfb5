//! Which original destinations the inbound proxy serves at all, decided before anything is
//! read: the proxy must never forward to itself (it would loop through itself until it runs out
//! of file descriptors, security review F5) nor to anything but this pod (an open relay), and a
//! peer's port header may not name the proxy's own ports (F8). Pure.

use std::net::SocketAddr;

/// The proxy's own listening ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnPorts {
    pub outbound: u16,
    pub inbound: u16,
    pub admin: u16,
    /// The loopback admin listener (`/views`, `/metrics`): never reachable through the redirect.
    pub admin_private: u16,
}

impl OwnPorts {
    pub fn contains(&self, port: u16) -> bool {
        [self.outbound, self.inbound, self.admin, self.admin_private].contains(&port)
    }
}

/// What an inbound connection is, by where it was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// For the app: authorize and forward to the original destination.
    App,
    /// Addressed to the inbound port itself: only a peer proxy's mTLS carrying a port header
    /// may use it.
    PeerProxy,
    /// Refused at once, with the reason to log.
    Refused(&'static str),
}

/// Classifies a connection redirected to the inbound port. `local` is the address it landed on
/// (the redirect's target: this pod's address on the interface it arrived at).
pub fn classify(dst: SocketAddr, local: SocketAddr, own: &OwnPorts) -> Destination {
    let ip = dst.ip().to_canonical();
    if ip.is_loopback() {
        // Never redirected: it came from inside the pod, straight to the listener.
        return Destination::Refused("loopback-destination");
    }
    if ip != local.ip().to_canonical() {
        // Routed to this pod for another address: forwarding it would relay elsewhere.
        return Destination::Refused("not-this-pod");
    }
    if dst.port() == own.inbound {
        return Destination::PeerProxy;
    }
    if own.contains(dst.port()) {
        return Destination::Refused("proxy-port");
    }
    Destination::App
}

/// The port a peer's `smidge-opaque/1` header names, unless it is one of the proxy's own.
/// (Ports the app binds only on loopback are out of reach anyway: the proxy forwards to the
/// pod's address, not to 127.0.0.1.)
pub fn header_port(port: u16, own: &OwnPorts) -> Result<u16, &'static str> {
    if port == 0 {
        Err("port-zero")
    } else if own.contains(port) {
        Err("proxy-port")
    } else {
        Ok(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: OwnPorts = OwnPorts {
        outbound: 4140,
        inbound: 4143,
        admin: 4191,
        admin_private: 4192,
    };

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn the_proxy_never_serves_itself_loopback_or_another_address() {
        let local = addr("10.88.0.11:4143");
        let to = |d: &str| classify(addr(d), local, &OWN);
        assert_eq!(to("10.88.0.11:8080"), Destination::App);
        assert_eq!(to("10.88.0.11:4143"), Destination::PeerProxy);
        assert_eq!(to("10.88.0.11:4140"), Destination::Refused("proxy-port"));
        assert_eq!(to("10.88.0.11:4191"), Destination::Refused("proxy-port"));
        assert_eq!(to("10.88.0.11:4192"), Destination::Refused("proxy-port"));
        assert_eq!(
            to("127.0.0.1:4143"),
            Destination::Refused("loopback-destination")
        );
        assert_eq!(
            classify(addr("[::1]:8080"), addr("[::1]:4143"), &OWN),
            Destination::Refused("loopback-destination")
        );
        assert_eq!(to("1.2.3.4:80"), Destination::Refused("not-this-pod"));
        assert_eq!(
            classify(addr("[::ffff:10.88.0.11]:8080"), local, &OWN),
            Destination::App
        );
    }

    #[test]
    fn a_port_header_may_not_name_the_proxy() {
        assert_eq!(header_port(9995, &OWN), Ok(9995));
        for own in [4140, 4143, 4191, 4192] {
            assert_eq!(header_port(own, &OWN), Err("proxy-port"));
        }
        assert_eq!(header_port(0, &OWN), Err("port-zero"));
    }
}
