//! The data plane's HTTP limits and timeouts, one set for every hop, and the pure rules around
//! them: how large a head is in HTTP/2 terms, and the window sizes that keep one slow stream
//! from stalling the others on a shared connection.

use std::time::Duration;

use http::{HeaderMap, Request, Response};

/// Limits and timeouts of the HTTP data path (flags of `smidge-proxy run`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// The largest request or response head, counted as HTTP/2 does (name + value + 32 per
    /// field, pseudo-headers included). The same on every hop, so a head that passes one hop
    /// passes the next; over it a request gets 431 and a response 502, for that request alone.
    pub max_header_bytes: u32,
    /// Concurrent streams on one HTTP/2 connection: what the server advertises, and where the
    /// pool opens another connection to the same peer.
    pub max_concurrent_streams: u32,
    /// The flow-control window of one HTTP/2 stream: how much one slow reader may hold.
    pub stream_window: u32,
    /// How long a request may wait for the response head (0: forever).
    pub response_timeout: Duration,
    /// HTTP/2 PING between proxies: sent after this much silence...
    pub keepalive_interval: Duration,
    /// ...and the connection is dropped if the answer takes longer than this.
    pub keepalive_timeout: Duration,
    /// How long an HTTP/1 client may take to send a request head.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 256,
            stream_window: 1024 * 1024,
            response_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// HTTP/2's accounting overhead per header field (RFC 9113 §6.5.2).
const FIELD_OVERHEAD: usize = 32;

impl HttpLimits {
    /// The connection window: every stream of a full connection can fill its own window
    /// before the connection's binds, so backpressure stays on the slow stream alone. Memory
    /// is held only for bytes actually queued, at most one stream window per stream either way.
    pub fn connection_window(&self) -> u32 {
        self.stream_window
            .saturating_mul(self.max_concurrent_streams.max(1))
            .min(i32::MAX as u32)
    }

    /// The response timeout, `None` when disabled.
    pub fn response_timeout(&self) -> Option<Duration> {
        (!self.response_timeout.is_zero()).then_some(self.response_timeout)
    }

    /// Whether a request head fits the limit.
    pub fn request_fits<B>(&self, req: &Request<B>) -> Result<(), usize> {
        let size = request_head_size(req);
        fits(size, self.max_header_bytes)
    }

    /// Whether a response head fits the limit.
    pub fn response_fits<B>(&self, resp: &Response<B>) -> Result<(), usize> {
        fits(response_head_size(resp), self.max_header_bytes)
    }
}

fn fits(size: usize, limit: u32) -> Result<(), usize> {
    if size <= limit as usize {
        Ok(())
    } else {
        Err(size)
    }
}

fn fields_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + FIELD_OVERHEAD)
        .sum()
}

/// A request head's size as an HTTP/2 peer counts it, pseudo-headers included.
pub fn request_head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let pseudo = [
        (":method", req.method().as_str().len()),
        (":scheme", uri.scheme_str().map_or(4, str::len)),
        (
            ":authority",
            uri.authority().map_or(0, |a| a.as_str().len()),
        ),
        (
            ":path",
            uri.path_and_query().map_or(1, |p| p.as_str().len()),
        ),
    ];
    pseudo
        .iter()
        .map(|(n, v)| n.len() + v + FIELD_OVERHEAD)
        .sum::<usize>()
        + fields_size(req.headers())
}

/// A response head's size as an HTTP/2 peer counts it.
pub fn response_head_size<B>(resp: &Response<B>) -> usize {
    ":status".len() + 3 + FIELD_OVERHEAD + fields_size(resp.headers())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(len: usize) -> Request<()> {
        Request::builder()
            .uri("http://web:80/p?q")
            .header("x-big", "a".repeat(len))
            .body(())
            .unwrap()
    }

    #[test]
    fn a_head_is_counted_as_http2_counts_it() {
        let req = with_header(10);
        // :method GET, :scheme http, :authority web:80, :path /p?q, x-big.
        let expected = (7 + 3 + 32) + (7 + 4 + 32) + (10 + 6 + 32) + (5 + 4 + 32) + (5 + 10 + 32);
        assert_eq!(request_head_size(&req), expected);
        let resp = Response::builder().header("a", "b").body(()).unwrap();
        assert_eq!(response_head_size(&resp), 7 + 3 + 32 + 1 + 1 + 32);
    }

    #[test]
    fn a_64_kib_header_is_over_the_default_limit_and_a_60_kib_one_is_not() {
        let limits = HttpLimits::default();
        assert!(limits.request_fits(&with_header(60 * 1024)).is_ok());
        let over = limits.request_fits(&with_header(64 * 1024));
        assert!(matches!(over, Err(n) if n > 64 * 1024), "{over:?}");
        let resp = Response::builder()
            .header("x-big", "a".repeat(64 * 1024))
            .body(())
            .unwrap();
        assert!(limits.response_fits(&resp).is_err());
    }

    #[test]
    fn the_connection_window_never_binds_before_the_stream_windows() {
        let limits = HttpLimits::default();
        assert_eq!(
            limits.connection_window(),
            limits.stream_window * limits.max_concurrent_streams
        );
        let huge = HttpLimits {
            stream_window: u32::MAX / 2,
            max_concurrent_streams: 1000,
            ..HttpLimits::default()
        };
        assert_eq!(huge.connection_window(), i32::MAX as u32);
    }

    #[test]
    fn a_zero_response_timeout_means_none() {
        let off = HttpLimits {
            response_timeout: Duration::ZERO,
            ..HttpLimits::default()
        };
        assert_eq!(off.response_timeout(), None);
        assert_eq!(
            HttpLimits::default().response_timeout(),
            Some(Duration::from_secs(60))
        );
    }
}
