//! Protocol detection: one bounded, time-limited look at what the client sends first.
//!
//! The HTTP/1 check accepts what real HTTP/1 parsers (httparse, so hyper) accept, so a client
//! cannot make a request look "not HTTP" to the proxy and still be served by the app (security
//! review F1, robustness review R1): leading empty lines, bare-LF line ends, any token as the
//! method (lower case and extension methods), and a request line longer than the read limit
//! (hyper then answers 414 or 400 itself).

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
/// The longest method detection waits for; real ones are far shorter.
const MAX_METHOD: usize = 32;

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
        // A valid request line that does not end within the limit is still HTTP/1: the
        // HTTP parser answers it (414/400), the bytes never pass unparsed.
        Line::Partial { started: true } if buf.len() >= max => Some(Protocol::Http1),
        _ if buf.len() >= max => Some(Protocol::Opaque),
        _ => None,
    }
}

enum Line {
    Complete,
    /// A prefix of a request line; `started` once a method and its space were seen.
    Partial {
        started: bool,
    },
    Invalid,
}

/// A `tchar` of RFC 9110 §5.6.2: what a method may be made of.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks `METHOD SP target SP HTTP/1.x (CR)LF` after any empty lines, or a prefix of it.
fn request_line(buf: &[u8]) -> Line {
    let mut start = 0;
    loop {
        match &buf[start..] {
            [b'\r', b'\n', ..] => start += 2,
            [b'\n', ..] => start += 1,
            [b'\r'] | [] => return Line::Partial { started: false },
            _ => break,
        }
    }
    let buf = &buf[start..];
    let mut parts = buf.splitn(3, |b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.len() > MAX_METHOD || !method.iter().all(|b| is_token(*b)) {
        return Line::Invalid;
    }
    // An upper-case method (every registered one) may arrive in pieces. Any other token must
    // come with its whole request line: otherwise a text protocol that starts with a word and
    // a space would wait for the detection timeout. (Refusing it as opaque loses nothing: a
    // port that route rules restrict admits no opaque traffic.)
    let conventional = method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-');
    let partial = |started| {
        if conventional {
            Line::Partial { started }
        } else {
            Line::Invalid
        }
    };
    let Some(target) = parts.next() else {
        return partial(false);
    };
    if method.is_empty() || target.iter().any(|b| *b <= b' ' || *b == 0x7f) {
        return Line::Invalid;
    }
    let Some(rest) = parts.next() else {
        return partial(true);
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
        None => partial(true),
        Some(b'0' | b'1') => match rest.get(VERSION.len() + 1..) {
            None | Some([]) | Some([b'\r']) => partial(true),
            Some([b'\r', b'\n', ..]) | Some([b'\n', ..]) => Line::Complete,
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
    fn an_undecided_prefix_waits_and_is_opaque_at_the_limit_before_a_method() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(classify(&line, 4096), None);
        let blank = b"\r\n".repeat(40);
        assert_eq!(classify(&blank, 64), Some(Protocol::Opaque));
        assert_eq!(classify(&blank, 4096), None);
    }

    #[test]
    fn what_http_parsers_accept_is_http1() {
        // Security review F1 / robustness review R1: each was classified opaque.
        for line in [
            &b"GET /admin HTTP/1.1\nHost: web\n\n"[..],
            b"\r\nGET /admin HTTP/1.1\r\n",
            b"\n\r\nGET /admin HTTP/1.1\r\n",
            b"get /admin HTTP/1.1\r\n",
            b"DELETE /admin HTTP/1.0\n",
            b"M-SEARCH * HTTP/1.1\r\n",
            b"PROPFIND /dav HTTP/1.1\r\n",
        ] {
            assert_eq!(
                classify(line, MAX),
                Some(Protocol::Http1),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(classify(b"\r\n", MAX), None);
        assert_eq!(classify(b"\r\nGE", MAX), None);
    }

    #[test]
    fn only_an_upper_case_method_waits_for_the_rest_of_its_line() {
        assert_eq!(classify(b"DELETE /ad", MAX), None);
        assert_eq!(classify(b"get /ad", MAX), Some(Protocol::Opaque));
        // A text protocol that starts with a word and a space is not held for the timeout.
        assert_eq!(classify(b"opaque bytes", MAX), Some(Protocol::Opaque));
    }

    #[test]
    fn a_request_line_longer_than_the_limit_is_http1() {
        // Robustness review R1: a 4,200-byte query string made the connection opaque.
        let mut line = b"GET /admin?pad=".to_vec();
        line.extend(std::iter::repeat_n(b'a', 4200));
        assert_eq!(classify(&line[..4096], 4096), Some(Protocol::Http1));
        let mut line = b"GET /a HTTP/1.1\r".to_vec();
        line.truncate(10);
        assert_eq!(classify(&line, 10), Some(Protocol::Http1));
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
