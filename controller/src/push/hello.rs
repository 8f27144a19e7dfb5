//! Checks on the untrusted text a proxy sends: the names in Hello are validated as Kubernetes
//! names before anything logs them, and free text (Nack reasons) is bounded before it is logged.

use smidge_protocol::ProxyId;

/// The longest free-text reason from a proxy that is logged; the rest is cut.
pub const MAX_REASON_LEN: usize = 256;

/// Refuses a Hello whose names are not Kubernetes names: the namespace as a DNS-1123 label, the
/// ServiceAccount and the pod as DNS-1123 subdomains (as Kubernetes names them; a dotted
/// ServiceAccount stays unambiguous in `<sa>.<ns>.serviceaccount…`, where the namespace is the
/// label before `serviceaccount`). The error names the field and the rule, never the value.
pub fn validate(proxy: &ProxyId) -> Result<(), String> {
    let check = |field: &str, value: &str, ok: fn(&str) -> bool, rule: &str| {
        if ok(value) {
            Ok(())
        } else {
            Err(format!(
                "the {field} in Hello is not a valid Kubernetes name ({rule}; {} bytes given)",
                value.len()
            ))
        }
    };
    check(
        "namespace",
        &proxy.namespace,
        is_label,
        "a DNS-1123 label: at most 63 of a-z, 0-9 and '-', starting and ending alphanumeric",
    )?;
    check(
        "ServiceAccount",
        &proxy.service_account,
        is_subdomain,
        "a DNS-1123 subdomain: at most 253 bytes of labels joined by '.'",
    )?;
    check(
        "pod name",
        &proxy.pod,
        is_subdomain,
        "a DNS-1123 subdomain: at most 253 bytes of labels joined by '.'",
    )
}

/// A DNS-1123 label: 1 to 63 bytes of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
}

/// A DNS-1123 subdomain: at most 253 bytes of labels joined by dots.
pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// `text` cut to at most [`MAX_REASON_LEN`] bytes (on a character boundary), marked when cut.
/// Log it with `?` so control characters are escaped.
pub fn bounded(text: &str) -> &str {
    if text.len() <= MAX_REASON_LEN {
        return text;
    }
    let mut end = MAX_REASON_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(namespace: &str, pod: &str, sa: &str) -> ProxyId {
        ProxyId {
            namespace: namespace.into(),
            pod: pod.into(),
            service_account: sa.into(),
        }
    }

    #[test]
    fn kubernetes_names_pass() {
        assert_eq!(validate(&proxy("shop", "web-7d9f.x", "web-v1")), Ok(()));
        // ServiceAccount names are subdomains in Kubernetes: dots are allowed.
        assert_eq!(validate(&proxy("shop", "build-1", "build.bot")), Ok(()));
        assert!(is_label(&"a".repeat(63)));
        assert!(is_subdomain(&vec!["a".repeat(63); 3].join(".")));
    }

    #[test]
    fn forged_lines_and_huge_names_are_refused_without_echoing_them() {
        let forged = "p\n2026-12-01T00:00:00Z INFO issued a certificate";
        let e = validate(&proxy("shop", forged, "web")).expect_err("newline");
        assert!(e.contains("pod name") && !e.contains("issued"), "{e}");
        let huge = "a".repeat(200_000);
        let e = validate(&proxy("shop", "p", &huge)).expect_err("huge");
        assert!(e.contains("ServiceAccount") && e.len() < 300, "{e}");
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", "é"] {
            assert!(validate(&proxy(bad, "p", "sa")).is_err(), "{bad:?}");
        }
        assert!(!is_subdomain(&"a.".repeat(127)));
        assert!(!is_subdomain(&vec!["a".repeat(63); 4].join(".")));
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(200);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_REASON_LEN && cut.len() >= MAX_REASON_LEN - 1);
    }
}
