//! HTTPRouteGroup matching, as SMI defines it and smidge applies it everywhere.
//!
//! - `pathRegex` is anchored at the start of the path (the query string is not part of it):
//!   `/api` matches `/api/x` and `/apix`.
//! - `methods` empty or containing `*` matches every method; names compare exactly (HTTP
//!   methods are case-sensitive).
//! - each header regex must match a whole value of that header (names are case-insensitive);
//!   all header conditions of a match must hold (AND); any match of a list may hold (OR).

use regex::Regex;

use crate::view::{HttpMatch, InvalidView};

/// The parts of a request that routes and authorizations look at.
pub trait RequestHead {
    fn method(&self) -> &str;
    /// The path without the query string.
    fn path(&self) -> &str;
    /// Whether any value of header `name` (lower case) satisfies `pred`.
    fn any_header_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool;
}

/// An [`HttpMatch`] with its regexes compiled.
#[derive(Clone, Debug)]
pub struct CompiledMatch {
    pub name: String,
    path: Option<Regex>,
    methods: Option<Vec<String>>,
    headers: Vec<(String, Regex)>,
}

/// Compiles `pattern` as SMI's `pathRegex`: anchored at the start only.
pub fn compile_path_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})"))
}

/// Compiles `pattern` as a header value regex: it must match the whole value.
pub fn compile_header_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

impl CompiledMatch {
    pub fn compile(m: &HttpMatch) -> Result<Self, InvalidView> {
        let bad = |what: &str, e: regex::Error| InvalidView::BadMatch {
            name: m.name.clone(),
            reason: format!("{what} does not compile: {e}"),
        };
        let path = match &m.path_regex {
            Some(p) => Some(compile_path_regex(p).map_err(|e| bad("pathRegex", e))?),
            None => None,
        };
        let methods = if m.methods.is_empty() || m.methods.iter().any(|x| x == "*") {
            None
        } else {
            Some(m.methods.clone())
        };
        let headers = m
            .headers
            .iter()
            .map(|(name, re)| {
                compile_header_regex(re)
                    .map(|r| (name.to_ascii_lowercase(), r))
                    .map_err(|e| bad(&format!("header {name:?}"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledMatch {
            name: m.name.clone(),
            path,
            methods,
            headers,
        })
    }

    pub fn matches(&self, req: &dyn RequestHead) -> bool {
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m == req.method()) {
                return false;
            }
        }
        if let Some(path) = &self.path {
            if !path.is_match(req.path()) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, re)| req.any_header_value(name, &mut |v| re.is_match(v)))
    }
}

/// Compiles a list of matches (OR-ed).
pub fn compile_all(matches: &[HttpMatch]) -> Result<Vec<CompiledMatch>, InvalidView> {
    matches.iter().map(CompiledMatch::compile).collect()
}

/// The first match in `matches` that accepts the request.
pub fn first_match<'a>(
    matches: &'a [CompiledMatch],
    req: &dyn RequestHead,
) -> Option<&'a CompiledMatch> {
    matches.iter().find(|m| m.matches(req))
}

/// A simple owned request head, for tests and tools.
#[derive(Clone, Debug, Default)]
pub struct SimpleRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl SimpleRequest {
    pub fn new(method: &str, path: &str) -> Self {
        SimpleRequest {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }
}

impl RequestHead for SimpleRequest {
    fn method(&self) -> &str {
        &self.method
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn any_header_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.headers.iter().any(|(n, v)| n == name && pred(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: Option<&str>, methods: &[&str], headers: &[(&str, &str)]) -> CompiledMatch {
        CompiledMatch::compile(&HttpMatch {
            name: "t".into(),
            path_regex: path.map(Into::into),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn path_regex_is_anchored_at_the_start_only() {
        let api = m(Some("/api"), &[], &[]);
        assert!(api.matches(&SimpleRequest::new("GET", "/api")));
        assert!(api.matches(&SimpleRequest::new("GET", "/api/x")));
        assert!(api.matches(&SimpleRequest::new("GET", "/apix")));
        assert!(!api.matches(&SimpleRequest::new("GET", "/v1/api")));
    }

    #[test]
    fn alternation_in_path_regex_stays_anchored() {
        let alt = m(Some("/a|/b"), &[], &[]);
        assert!(alt.matches(&SimpleRequest::new("GET", "/b/x")));
        assert!(!alt.matches(&SimpleRequest::new("GET", "/x/b")));
    }

    #[test]
    fn methods_star_or_empty_match_every_method() {
        for methods in [&["*"][..], &[][..], &["GET", "*"][..]] {
            let any = m(None, methods, &[]);
            assert!(any.matches(&SimpleRequest::new("PATCH", "/")));
        }
        let get = m(None, &["GET"], &[]);
        assert!(get.matches(&SimpleRequest::new("GET", "/")));
        assert!(!get.matches(&SimpleRequest::new("POST", "/")));
        assert!(!get.matches(&SimpleRequest::new("get", "/")));
    }

    #[test]
    fn headers_are_anded_names_case_insensitive_values_whole() {
        let h = m(
            None,
            &[],
            &[("User-Agent", ".*Android.*"), ("x-canary", "yes")],
        );
        let both = SimpleRequest::new("GET", "/")
            .header("user-agent", "Mozilla Android 12")
            .header("X-Canary", "yes");
        assert!(h.matches(&both));
        let one = SimpleRequest::new("GET", "/").header("user-agent", "Android");
        assert!(!h.matches(&one));
        let partial = SimpleRequest::new("GET", "/")
            .header("user-agent", "Android")
            .header("x-canary", "yes!");
        assert!(!h.matches(&partial), "header regexes match the whole value");
    }

    #[test]
    fn headers_alone_apply_to_any_path_and_method() {
        let h = m(None, &[], &[("x-canary", "yes")]);
        assert!(h.matches(&SimpleRequest::new("DELETE", "/anything").header("x-canary", "yes")));
    }

    #[test]
    fn a_bad_regex_is_reported_with_the_match_name() {
        let err = CompiledMatch::compile(&HttpMatch {
            name: "ns/rg/bad".into(),
            path_regex: Some("(".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("ns/rg/bad"), "{err}");
        assert!(err.to_string().contains("pathRegex"), "{err}");
    }
}
