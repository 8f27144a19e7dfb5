//! Who is calling: the interface the inbound side asks for a caller's identity.
//!
//! Until mutual TLS lands (the identity issue), the implementation asks the controller which
//! meshed pod holds the caller's address. It never looks at anything the client sends, so a
//! client cannot claim another identity in a header; a pod cannot choose its source address
//! without network privileges. The TLS implementation will read the peer certificate instead.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use smidge_protocol::{Identity, ViewKey};

use crate::discovery::{Discovery, ViewState};
use crate::views::Compiled;

/// The caller's identity for an accepted connection.
pub trait PeerIdentity: Send + Sync {
    /// `None`: the caller is not meshed (or cannot be identified), and is treated as such.
    fn identify(
        &self,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Option<Identity>> + Send + '_>>;
}

/// Identity by source address, from the controller's peer views.
pub struct ByPeerAddress {
    pub discovery: Discovery,
    pub wait: Duration,
}

impl PeerIdentity for ByPeerAddress {
    fn identify(
        &self,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Option<Identity>> + Send + '_>> {
        Box::pin(async move {
            let rx = self
                .discovery
                .resolve(&ViewKey::Peer(peer.ip()), self.wait)
                .await;
            let state = rx.borrow();
            match &*state {
                ViewState::Ready(r) => match &r.compiled {
                    Compiled::Peer(id) => id.clone(),
                    _ => None,
                },
                _ => None,
            }
        })
    }
}
