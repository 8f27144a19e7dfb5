//! The messages on a proxy's connection to the controller.

use serde::{Deserialize, Serialize};

use crate::delta::Change;
use crate::view::{View, ViewKey};

/// Bumped on any incompatible change of the messages; both sides refuse a mismatch at Hello.
pub const PROTOCOL_VERSION: u16 = 3;

/// Who a proxy is: its pod and the ServiceAccount it runs as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyId {
    pub namespace: String,
    pub pod: String,
    pub service_account: String,
}

/// Proxy → controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The first message on a connection.
    Hello {
        protocol_version: u16,
        proxy: ProxyId,
        /// Proof of the proxy's ServiceAccount, when the controller runs an identity CA.
        token: Option<String>,
    },
    /// Asks for a certificate: a DER CSR whose names must be the proxy's identity.
    Certify { csr: Vec<u8> },
    /// Start receiving a view: the current version first, then its changes.
    Subscribe(ViewKey),
    /// Stop receiving a view.
    Unsubscribe(ViewKey),
    /// The proxy applied this version.
    Ack { key: ViewKey, version: u64 },
    /// The proxy could not apply this version and keeps the one it had.
    Nack {
        key: ViewKey,
        version: u64,
        reason: String,
    },
}

/// Controller → proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Answer to a Hello the controller accepts.
    Welcome { protocol_version: u16 },
    /// Answer to a Hello the controller refuses; the connection closes after it.
    Refused { reason: String },
    /// The answer to `Certify`: the DER chain (leaf first) and its expiry (Unix seconds).
    Certified { chain: Vec<Vec<u8>>, not_after: u64 },
    /// `Certify` was refused; the reason never contains the token.
    CertifyRefused { reason: String },
    /// A new version of a subscribed view.
    View {
        key: ViewKey,
        version: u64,
        update: ViewUpdate,
    },
    /// A `Subscribe` the controller refuses (not this proxy's to read, or over its limits). The
    /// proxy treats the key as [`ViewUpdate::Absent`] and does not ask again until it drops it.
    SubscribeRefused { key: ViewKey, reason: String },
}

/// The body of a view message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewUpdate {
    /// The whole view; replaces whatever the proxy had.
    Full(View),
    /// Endpoint changes against version `base`; the proxy nacks it when it holds another version.
    Delta { base: u64, changes: Vec<Change> },
    /// Nothing in the mesh answers to this key (for example an address that is not a Service):
    /// the proxy forwards such traffic as it is.
    Absent,
}
