//! Request checks before a request is matched or forwarded, so the proxy's policy and the app
//! read the same request (security review F2, F16; robustness review R11, R16).
//!
//! - [`prepare`] (both directions): refuses a duplicate `Host` and a `Connection` header that
//!   nominates `Host`; turns an HTTP/1 absolute-form target into origin-form with its authority
//!   as `Host` (RFC 9112 §3.2.2); normalizes the path ([`smidge_protocol::path`]) and refuses
//!   what it cannot normalize without guessing. The query string is kept as it was.
//! - [`only_websocket_upgrade`] (inbound): only WebSocket may switch protocols behind the
//!   proxy; any other `Upgrade` (h2c) is removed, so the app answers the request as HTTP/1.1 and
//!   nothing is spliced past authorization.
//! - [`strip_mesh_headers`]: `smidge-*` request headers belong to the proxies; one an app sends
//!   is removed before it crosses the mesh or reaches an app.

use std::borrow::Cow;

use http::header::{HeaderValue, CONNECTION, HOST, UPGRADE};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Request, Uri, Version};
use smidge_protocol::path::normalize;

/// The prefix of the headers proxies set between themselves.
pub const MESH_HEADER_PREFIX: &str = "smidge-";

/// Checks and rewrites `req` in place; `Err` names why it must be refused with 400.
pub fn prepare<B>(req: &mut Request<B>) -> Result<(), &'static str> {
    if req.headers().get_all(HOST).iter().count() > 1 {
        return Err("duplicate-host");
    }
    if connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("host")) {
        return Err("connection-nominates-host");
    }
    // A Host that is no authority (`a b`) would be judged by the policy as one thing and
    // rebuilt into a URI as another, or not at all.
    if let Some(host) = req.headers().get(HOST) {
        if !host.is_empty() && Authority::try_from(host.as_bytes()).is_err() {
            return Err("bad-host");
        }
    }
    if req.method() == Method::CONNECT {
        // Only authority-form (`CONNECT host:port`) names no path; a CONNECT with a path would be
        // matched and forwarded without normalization, so it is refused.
        return match req.uri().path_and_query() {
            None => Ok(()),
            Some(_) => Err("connect-with-path"),
        };
    }
    if req.version() < Version::HTTP_2 {
        if let Some(authority) = req.uri().authority() {
            let host = HeaderValue::from_str(authority.as_str()).map_err(|_| "bad-authority")?;
            req.headers_mut().insert(HOST, host);
            let origin = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(origin);
        }
    }
    let path = req.uri().path();
    let path = if path.is_empty() { "/" } else { path };
    let normal = match normalize(path) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(e) => return Err(e.as_str()),
    };
    let with_query = match req.uri().query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(with_query.parse().map_err(|_| "bad-path")?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| "bad-path")?;
    Ok(())
}

/// Removes an `Upgrade` to anything but WebSocket; says whether it did.
pub fn only_websocket_upgrade<B>(req: &mut Request<B>) -> bool {
    let headers = req.headers();
    if !headers.contains_key(UPGRADE) {
        return false;
    }
    let websocket = headers
        .get_all(UPGRADE)
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .all(|t| t.trim().eq_ignore_ascii_case("websocket"));
    if websocket {
        return false;
    }
    req.headers_mut().remove(UPGRADE);
    true
}

/// Removes every `smidge-*` request header.
pub fn strip_mesh_headers(headers: &mut HeaderMap) {
    let ours: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(MESH_HEADER_PREFIX))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> Request<()> {
        Request::get(target)
            .header("host", "web")
            .body(())
            .expect("request")
    }

    #[test]
    fn paths_are_normalized_and_the_query_is_kept() {
        let mut req = get("/api/./x/../y?q=/../z");
        prepare(&mut req).expect("valid");
        assert_eq!(req.uri().to_string(), "/api/y?q=/../z");
        let mut req = get("/api/../admin");
        prepare(&mut req).expect("valid");
        assert_eq!(req.uri().path(), "/admin");
    }

    #[test]
    fn paths_that_need_a_guess_are_refused_by_name() {
        for (target, why) in [
            ("/api/%2e%2e/admin", "path-encoded-dot-segment"),
            ("/api/..%2fadmin", "path-encoded-slash"),
            ("/api/;/../admin", "path-parameter"),
            ("/api/..%5Cadmin", "path-backslash"),
        ] {
            assert_eq!(prepare(&mut get(target)), Err(why), "{target}");
        }
    }

    #[test]
    fn an_h2_request_keeps_its_scheme_and_authority() {
        let mut req = Request::get("http://web.mesh/a/../b?x")
            .version(Version::HTTP_2)
            .body(())
            .expect("request");
        prepare(&mut req).expect("valid");
        assert_eq!(req.uri().to_string(), "http://web.mesh/b?x");
        assert!(req.headers().get(HOST).is_none());
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_authority_as_host() {
        let mut req = Request::get("http://evil.example/api/x")
            .header("host", "web")
            .body(())
            .expect("request");
        prepare(&mut req).expect("valid");
        assert_eq!(req.uri().to_string(), "/api/x");
        assert_eq!(
            req.headers().get(HOST).map(|h| h.as_bytes()),
            Some(&b"evil.example"[..])
        );
    }

    #[test]
    fn a_connect_with_a_path_is_refused_and_authority_form_passes() {
        let connect = |target: &str| {
            Request::builder()
                .method(Method::CONNECT)
                .uri(target)
                .body(())
                .expect("request")
        };
        assert_eq!(
            prepare(&mut connect("/api/../admin")),
            Err("connect-with-path")
        );
        assert_eq!(
            prepare(&mut connect("http://x/api/..%2fadmin")),
            Err("connect-with-path")
        );
        assert_eq!(prepare(&mut connect("web.shop:443")), Ok(()));
    }

    #[test]
    fn two_hosts_or_a_hop_by_hop_host_are_refused() {
        let mut two = get("/");
        two.headers_mut()
            .append(HOST, HeaderValue::from_static("other"));
        assert_eq!(prepare(&mut two), Err("duplicate-host"));
        let mut hop = get("/");
        hop.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close, Host"));
        assert_eq!(prepare(&mut hop), Err("connection-nominates-host"));
    }

    #[test]
    fn a_host_that_is_no_authority_is_refused() {
        for bad in ["a b", "web/x", "web?q"] {
            let mut req = get("/");
            req.headers_mut()
                .insert(HOST, HeaderValue::from_str(bad).expect("value"));
            assert_eq!(prepare(&mut req), Err("bad-host"), "{bad}");
        }
        for good in ["web", "web.mesh:8080", "10.0.0.1:80", "[::1]:80", ""] {
            let mut req = get("/");
            req.headers_mut()
                .insert(HOST, HeaderValue::from_str(good).expect("value"));
            assert_eq!(prepare(&mut req), Ok(()), "{good}");
        }
    }

    #[test]
    fn only_websocket_may_upgrade() {
        let mut ws = get("/");
        ws.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(!only_websocket_upgrade(&mut ws));
        assert!(ws.headers().contains_key(UPGRADE));
        for other in ["h2c", "websocket, h2c", "TLS/1.2"] {
            let mut req = get("/");
            req.headers_mut()
                .insert(UPGRADE, HeaderValue::from_static(other));
            assert!(only_websocket_upgrade(&mut req), "{other}");
            assert!(!req.headers().contains_key(UPGRADE), "{other}");
        }
    }

    #[test]
    fn mesh_headers_from_an_app_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("smidge-orig-proto", HeaderValue::from_static("HTTP/1.0"));
        h.insert("smidge-anything", HeaderValue::from_static("1"));
        h.insert("x-smidge-app", HeaderValue::from_static("kept"));
        strip_mesh_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-smidge-app"));
    }
}
