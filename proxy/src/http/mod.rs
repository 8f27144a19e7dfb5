//! HTTP plumbing shared by both directions: the body type, serving a detected connection,
//! the upstream connection pool, hop-by-hop headers, upgrades and locally made responses.

pub mod guard;
pub mod limits;
pub mod observe;
pub mod pool;
pub mod serve;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use smidge_protocol::matching::RequestHead;

/// What the proxy answers with: a streamed upstream body or a small local one.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Streams an upstream response body back without buffering.
pub fn stream(body: Incoming) -> Body {
    body.boxed()
}

/// A response the proxy makes itself, with a header that says why.
pub fn local_response(status: StatusCode, header: &'static str, reason: &str) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{reason}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(reason) {
        resp.headers_mut()
            .insert(HeaderName::from_static(header), v);
    }
    resp
}

/// The header naming why the proxy refused a request.
pub const DENIED_HEADER: &str = "smidge-denied";
/// The header naming why the proxy could not forward a request.
pub const ERROR_HEADER: &str = "smidge-error";

/// Carries the HTTP/1 version of a request that crosses the mesh as HTTP/2.
pub const ORIG_PROTO_HEADER: &str = "smidge-orig-proto";

/// Turns an HTTP/1 request into HTTP/2 for the hop between proxies, keeping what the app sent:
/// the authority (from Host), the path, and the original version in a header.
pub fn to_mesh_h2<B>(req: &mut Request<B>, fallback: std::net::SocketAddr) {
    let orig = match req.version() {
        http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_else(|| fallback.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if let Ok(uri) = http::Uri::builder()
        .scheme("http")
        .authority(authority.as_str())
        .path_and_query(path.as_str())
        .build()
    {
        *req.uri_mut() = uri;
    }
    req.headers_mut().remove(http::header::HOST);
    req.headers_mut().remove(http::header::TE);
    req.headers_mut()
        .insert(ORIG_PROTO_HEADER, HeaderValue::from_static(orig));
    *req.version_mut() = http::Version::HTTP_2;
}

/// Carries an HTTP/1 response's own reason phrase (`501 Unsupported method`) across the
/// HTTP/2 hop, which has none.
pub const REASON_HEADER: &str = "smidge-reason";

/// Inbound, for a request that crossed as HTTP/2: the app's reason phrase into a header.
pub fn reason_to_header<B>(resp: &mut Response<B>) {
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .and_then(|r| HeaderValue::from_bytes(r.as_bytes()).ok());
    if let Some(reason) = reason {
        resp.headers_mut().insert(REASON_HEADER, reason);
    }
}

/// Outbound, for a response that crossed as HTTP/2: the header back into the reason phrase the
/// HTTP/1 client gets.
pub fn reason_from_header<B>(resp: &mut Response<B>) {
    let reason = resp
        .headers_mut()
        .remove(REASON_HEADER)
        .and_then(|v| hyper::ext::ReasonPhrase::try_from(v.as_bytes().to_vec()).ok());
    if let Some(reason) = reason {
        resp.extensions_mut().insert(reason);
    }
}

/// Undoes [`to_mesh_h2`] before the request reaches the app; says whether it did.
pub fn from_mesh_h2<B>(req: &mut Request<B>) -> bool {
    let Some(orig) = req.headers_mut().remove(ORIG_PROTO_HEADER) else {
        return false;
    };
    *req.version_mut() = if orig.as_bytes() == b"HTTP/1.0" {
        http::Version::HTTP_10
    } else {
        http::Version::HTTP_11
    };
    if let Some(authority) = req.uri().authority().map(|a| a.to_string()) {
        if !req.headers().contains_key(http::header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&authority) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if let Ok(uri) = path.parse() {
        *req.uri_mut() = uri;
    }
    true
}

/// Whether the request asks to switch protocols (WebSocket and friends).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(UPGRADE)
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, keeping `Connection: upgrade` + `Upgrade` when `upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|h| !(upgrade && *h == UPGRADE))
        // Host is never hop-by-hop (requests nominating it are refused in `guard::prepare`).
        .filter(|h| *h != http::header::HOST)
        .collect();
    for h in named {
        headers.remove(h);
    }
    for h in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    ] {
        headers.remove(h);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
}

/// A request head as the shared matching rules see it.
pub struct Head<'a, B>(pub &'a Request<B>);

impl<B> RequestHead for Head<'_, B> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    fn path(&self) -> &str {
        self.0.uri().path()
    }

    fn any_header_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(pred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_request_crosses_as_h2_and_comes_back_as_it_was() {
        let mut req = Request::get("/a?b=c")
            .header("host", "web.shop:80")
            .body(())
            .expect("request");
        let fallback = "10.0.0.1:80".parse().expect("addr");
        to_mesh_h2(&mut req, fallback);
        assert_eq!(req.version(), http::Version::HTTP_2);
        assert_eq!(req.uri().to_string(), "http://web.shop:80/a?b=c");
        assert!(req.headers().get("host").is_none());
        from_mesh_h2(&mut req);
        assert_eq!(req.version(), http::Version::HTTP_11);
        assert_eq!(req.uri().to_string(), "/a?b=c");
        assert_eq!(
            req.headers().get("host").map(|h| h.as_bytes()),
            Some(&b"web.shop:80"[..])
        );
        assert!(req.headers().get(ORIG_PROTO_HEADER).is_none());
    }

    #[test]
    fn a_reason_phrase_crosses_the_h2_hop_and_none_is_made_up() {
        let mut resp = Response::new(());
        resp.extensions_mut().insert(
            hyper::ext::ReasonPhrase::try_from(&b"Unsupported method"[..]).expect("reason"),
        );
        reason_to_header(&mut resp);
        let mut crossed = Response::new(());
        *crossed.headers_mut() = resp.headers().clone();
        reason_from_header(&mut crossed);
        assert!(crossed.headers().get(REASON_HEADER).is_none());
        assert_eq!(
            crossed
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .map(|r| r.as_bytes()),
            Some(&b"Unsupported method"[..])
        );
        let mut plain = Response::new(());
        reason_to_header(&mut plain);
        assert!(plain.headers().is_empty());
    }

    #[test]
    fn hop_by_hop_headers_go_and_upgrades_keep_theirs() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-end", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-hop").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(CONNECTION).is_none());
        assert!(h.get("x-end").is_some());

        let mut u = HeaderMap::new();
        u.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        u.insert(UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut u, true);
        assert_eq!(
            u.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            u.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }
}
