//! Socket-level pieces shared by both directions: original destination, detection, replay.

pub mod activity;
pub mod address;
pub mod connect;
pub mod detect;
pub mod orig_dst;
pub mod prefixed;

/// A byte stream the proxy can forward over: plain TCP or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;
