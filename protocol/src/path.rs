//! Request path normalization, applied before any route match (security review F2).
//!
//! A `pathRegex` is anchored at the start of the path, so `/api/.*` would accept
//! `/api/../admin` if the raw path were matched; an app that resolves dot segments then serves
//! `/admin`. [`normalize`] turns a path into the one form both the proxy and the app see:
//!
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded and the other
//!   escapes are kept with upper-case hex digits (RFC 3986 §6.2.2.1, §6.2.2.2);
//! - dot segments are removed (RFC 3986 §5.2.4): `/a/./b/../c` → `/a/c`, and `..` never climbs
//!   above the root;
//! - duplicate slashes are kept: they are significant to some apps, and once dot segments are
//!   gone, an app that merges them cannot leave the prefix the proxy matched.
//!
//! What would make the proxy guess how the app reads a path is refused instead ([`PathError`]):
//! an encoded `/` or `\`, a raw `\`, an encoded `.` that forms a dot segment, a `;` (path
//! parameters, which some servers strip before resolving `..`) and malformed escapes. Escapes of
//! other characters (`%25`, `%3B`, …) are kept encoded: decoding them twice is the app's choice.

use std::borrow::Cow;

/// Why a path is refused; `as_str` is what the refusal names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    #[error("the path contains a backslash (raw or %5C)")]
    Backslash,
    #[error("an encoded dot (%2E) forms a `.` or `..` segment")]
    EncodedDotSegment,
    #[error("the path contains `;` (path parameters)")]
    Parameter,
    #[error("the path contains a `%` that is not followed by two hex digits")]
    BadEscape,
}

impl PathError {
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path-not-absolute",
            PathError::EncodedSlash => "path-encoded-slash",
            PathError::Backslash => "path-backslash",
            PathError::EncodedDotSegment => "path-encoded-dot-segment",
            PathError::Parameter => "path-parameter",
            PathError::BadEscape => "path-bad-escape",
        }
    }
}

/// The normalized form of `path` (no query string), or why it is refused. `*` (the target of
/// `OPTIONS *`) is kept as it is.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let raw: Vec<&str> = rest.split('/').collect();
    let last = raw.len() - 1;
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, seg) in raw.iter().enumerate() {
        let (seg, encoded_dot) = decode_segment(seg)?;
        match seg.as_str() {
            "." | ".." if encoded_dot => return Err(PathError::EncodedDotSegment),
            "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                out.push(seg);
                continue;
            }
        }
        // A trailing `.` or `..` leaves the path ending in `/`.
        if i == last {
            out.push(String::new());
        }
    }
    let normal = format!("/{}", out.join("/"));
    Ok(if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    })
}

/// Decodes the escapes of unreserved characters in one segment; also says whether a `.` came
/// from an escape.
fn decode_segment(seg: &str) -> Result<(String, bool), PathError> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut encoded_dot = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::Parameter),
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err(PathError::BadEscape);
                };
                let byte = (hi * 16 + lo) as u8;
                match byte {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    b'.' => {
                        encoded_dot = true;
                        out.push('.');
                    }
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') => {
                        out.push(b as char)
                    }
                    b => out.push_str(&format!("%{b:02X}")),
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        // Copy up to the next byte that needs a look (keeps multi-byte characters whole).
        let next = bytes[i..]
            .iter()
            .position(|b| matches!(b, b'\\' | b';' | b'%'))
            .map_or(bytes.len(), |p| i + p);
        out.push_str(&seg[i..next]);
        i = next;
    }
    Ok((out, encoded_dot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> String {
        normalize(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_owned()
    }

    #[test]
    fn the_review_table_never_yields_a_path_under_api_that_hides_admin() {
        // Security review F2: each passed `/api/.*` and reached the app unchanged.
        assert_eq!(ok("/api/../admin"), "/admin");
        assert_eq!(ok("/api/x/../../admin"), "/admin");
        assert_eq!(
            normalize("/api/%2e%2e/admin"),
            Err(PathError::EncodedDotSegment)
        );
        assert_eq!(normalize("/api/..%2fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/api/;/../admin"), Err(PathError::Parameter));
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        assert_eq!(ok("/api/./x"), "/api/x");
        assert_eq!(ok("/a/b/c/./../../g"), "/a/g");
        assert_eq!(ok("/mid/content=5/../6"), "/mid/6");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/../../x"), "/x");
        assert_eq!(ok("/.."), "/");
        assert_eq!(ok("/a..b/.x/x."), "/a..b/.x/x.");
    }

    #[test]
    fn unchanged_paths_are_borrowed_and_slashes_are_not_merged() {
        assert!(matches!(normalize("/api/x"), Ok(Cow::Borrowed("/api/x"))));
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a//b/"), "/a//b/");
        assert_eq!(ok("/a//../b"), "/a/b");
        assert_eq!(ok("*"), "*");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_in_upper_case() {
        assert_eq!(ok("/%61pi/%7Ex"), "/api/~x");
        assert_eq!(ok("/a%2db%5F"), "/a-b_");
        assert_eq!(ok("/a%20b%3f"), "/a%20b%3F");
        // Double encoding stays encoded once: no dot segment here.
        assert_eq!(ok("/%252e%252e/x"), "/%252e%252e/x");
        assert_eq!(ok("/caf%C3%A9/é"), "/caf%C3%A9/é");
        // An encoded dot inside a longer segment is only a dot.
        assert_eq!(ok("/%2eprofile/a%2e"), "/.profile/a.");
    }

    #[test]
    fn what_the_app_could_read_otherwise_is_refused() {
        assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(normalize("/a\\..\\b"), Err(PathError::Backslash));
        assert_eq!(normalize("/%2e/x"), Err(PathError::EncodedDotSegment));
        assert_eq!(normalize("/x/.%2E"), Err(PathError::EncodedDotSegment));
        assert_eq!(normalize("/a;jsessionid=1"), Err(PathError::Parameter));
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("api"), Err(PathError::NotAbsolute));
        assert_eq!(
            PathError::EncodedSlash.as_str(),
            "path-encoded-slash",
            "the name a refusal carries"
        );
    }
}
