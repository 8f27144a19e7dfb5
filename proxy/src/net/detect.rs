//! Protocol detection: one bounded, time-limited look at what the client sends first.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// A TLS ClientHello: mesh mTLS when it names this proxy, else the app's own TLS.
    Tls,
    /// Anything else, including a client that waits for the server to speak first.
    Opaque,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1",
            Protocol::Http2 => "h2",
            Protocol::Tls => "tls",
            Protocol::Opaque => "opaque",
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MAX_METHOD: usize = 20;

/// Classifies what has been read so far; `None` while more bytes could change the answer and
/// fewer than `max` have been read.
pub fn classify(buf: &[u8], max: usize) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    if buf.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    // A TLS handshake record: content type 22, version 3.x.
    if buf[0] == 0x16 {
        return match buf.get(1) {
            None => None,
            Some(3) => Some(Protocol::Tls),
            Some(_) => Some(Protocol::Opaque),
        };
    }
    let could_be_h2 = H2_PREFACE.starts_with(buf);
    match request_line(buf) {
        Line::Complete => Some(Protocol::Http1),
        Line::Invalid if !could_be_h2 => Some(Protocol::Opaque),
        _ if buf.len() >= max => Some(Protocol::Opaque),
        _ => None,
    }
}

enum Line {
    Complete,
    Partial,
    Invalid,
}

/// Checks `METHOD SP target SP HTTP/1.x CRLF`, or a prefix of it.
fn request_line(buf: &[u8]) -> Line {
    let mut parts = buf.splitn(3, |b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.len() > MAX_METHOD || !method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-') {
        return Line::Invalid;
    }
    let Some(target) = parts.next() else {
        return Line::Partial;
    };
    if method.is_empty() || target.iter().any(|b| !b.is_ascii_graphic()) {
        return Line::Invalid;
    }
    let Some(rest) = parts.next() else {
        return Line::Partial;
    };
    if target.is_empty() {
        return Line::Invalid;
    }
    const VERSION: &[u8] = b"HTTP/1.";
    let n = rest.len().min(VERSION.len());
    if rest[..n] != VERSION[..n] {
        return Line::Invalid;
    }
    match rest.get(VERSION.len()) {
        None => Line::Partial,
        Some(b'0' | b'1') => match rest.get(VERSION.len() + 1..) {
            None | Some([]) | Some([b'\r']) => Line::Partial,
            Some([b'\r', b'\n', ..]) => Line::Complete,
            Some(_) => Line::Invalid,
        },
        Some(_) => Line::Invalid,
    }
}

/// Reads until [`classify`] decides, `max` bytes were read, the client stops sending for
/// `timeout` (a server-speaks-first protocol) or closes. Returns the protocol and the bytes read.
pub async fn detect<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
    max: usize,
) -> io::Result<(Protocol, Bytes)> {
    let mut buf = BytesMut::with_capacity(128);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(max));
        }
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        match read {
            Err(_) | Ok(Ok(0)) => return Ok((Protocol::Opaque, buf.freeze())),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {
                if let Some(p) = classify(&buf, max) {
                    return Ok((p, buf.freeze()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    #[test]
    fn the_h2_preface_is_http2_and_its_prefix_waits() {
        assert_eq!(classify(H2_PREFACE, MAX), Some(Protocol::Http2));
        assert_eq!(classify(&H2_PREFACE[..10], MAX), None);
    }

    #[test]
    fn a_request_line_is_http1() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n", MAX), Some(Protocol::Http1));
        assert_eq!(
            classify(b"POST /a?b=c HTTP/1.0\r\nHost: x\r\n", MAX),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(b"GET /ab", MAX), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r", MAX), None);
    }

    #[test]
    fn other_bytes_are_opaque_as_soon_as_they_cannot_be_http() {
        assert_eq!(classify(b"\x16\x03\x01", MAX), Some(Protocol::Tls));
        assert_eq!(classify(b"\x16\x07", MAX), Some(Protocol::Opaque));
        assert_eq!(classify(b"hello world\n", MAX), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET / SMTP/1.1\r\n", MAX), Some(Protocol::Opaque));
        assert_eq!(classify(b"GET / HTTP/2.0\r\n", MAX), Some(Protocol::Opaque));
    }

    #[test]
    fn a_long_undecided_prefix_is_opaque_at_the_limit() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(classify(&line, 64), Some(Protocol::Opaque));
        assert_eq!(classify(&line, 4096), None);
    }

    #[tokio::test]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let (mut client, _server) = tokio::io::duplex(64);
        let (p, prefix) = detect(&mut client, Duration::from_millis(20), MAX)
            .await
            .expect("detect");
        assert_eq!(p, Protocol::Opaque);
        assert!(prefix.is_empty());
    }
}
