//! Per-pod `config.smidge.io/*` annotations: they replace the settings' value for that pod. A
//! malformed value is an error naming the annotation, and the pod is then left alone (a proxy
//! with a silently dropped skip-port could break the app).

use std::collections::BTreeMap;
use std::net::IpAddr;

pub const SKIP_INBOUND_PORTS: &str = "config.smidge.io/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "config.smidge.io/skip-outbound-ports";
pub const SKIP_OUTBOUND_CIDRS: &str = "config.smidge.io/skip-outbound-cidrs";
pub const OPAQUE_PORTS: &str = "config.smidge.io/opaque-ports";
pub const PROXY_LOG_LEVEL: &str = "config.smidge.io/proxy-log-level";
pub const PROXY_CPU_REQUEST: &str = "config.smidge.io/proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "config.smidge.io/proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "config.smidge.io/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "config.smidge.io/proxy-memory-limit";

/// The values a pod's annotations set; `None`: the settings' value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub skip_inbound_ports: Option<Vec<u16>>,
    pub skip_outbound_ports: Option<Vec<u16>>,
    pub skip_outbound_cidrs: Option<Vec<String>>,
    pub opaque_ports: Option<Vec<u16>>,
    pub log_level: Option<String>,
    /// (`requests` or `limits`, resource name, quantity).
    pub resources: Vec<(&'static str, &'static str, String)>,
}

/// An annotation whose value cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("annotation {annotation}: {message}")]
pub struct BadAnnotation {
    pub annotation: &'static str,
    pub message: String,
}

impl Overrides {
    /// Reads the pod's annotations.
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Overrides, BadAnnotation> {
        let get = |key: &'static str| annotations.get(key).map(|v| (key, v.trim()));
        let bad = |annotation, message: String| BadAnnotation {
            annotation,
            message,
        };
        let ports = |key| {
            get(key)
                .map(|(k, v)| port_list(v).map_err(|m| bad(k, m)))
                .transpose()
        };
        let mut o = Overrides {
            skip_inbound_ports: ports(SKIP_INBOUND_PORTS)?,
            skip_outbound_ports: ports(SKIP_OUTBOUND_PORTS)?,
            opaque_ports: ports(OPAQUE_PORTS)?,
            ..Overrides::default()
        };
        if let Some((k, v)) = get(SKIP_OUTBOUND_CIDRS) {
            let cidrs: Vec<String> = split(v).map(str::to_string).collect();
            for c in &cidrs {
                check_cidr(c).map_err(|m| bad(k, m))?;
            }
            o.skip_outbound_cidrs = Some(cidrs);
        }
        if let Some((k, v)) = get(PROXY_LOG_LEVEL) {
            check_log_level(v).map_err(|m| bad(k, m))?;
            o.log_level = Some(v.to_string());
        }
        for (key, kind, name) in [
            (PROXY_CPU_REQUEST, "requests", "cpu"),
            (PROXY_CPU_LIMIT, "limits", "cpu"),
            (PROXY_MEMORY_REQUEST, "requests", "memory"),
            (PROXY_MEMORY_LIMIT, "limits", "memory"),
        ] {
            if let Some((k, v)) = get(key) {
                check_quantity(v).map_err(|m| bad(k, m))?;
                o.resources.push((kind, name, v.to_string()));
            }
        }
        Ok(o)
    }
}

fn split(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `25,3306`: comma-separated ports 1..65535 (empty: none).
pub fn port_list(v: &str) -> Result<Vec<u16>, String> {
    split(v)
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{p:?} is not a port (1-65535)")),
        })
        .collect()
}

/// `10.0.0.0/8` or `fd00::/8`: an address and a prefix length that fits it.
pub fn check_cidr(v: &str) -> Result<(), String> {
    let (addr, len) = v
        .split_once('/')
        .ok_or_else(|| format!("{v:?} is not a CIDR (address/length)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{v:?}: {addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match len.parse::<u8>() {
        Ok(n) if n <= max => Ok(()),
        _ => Err(format!("{v:?}: {len:?} is not a prefix length (0-{max})")),
    }
}

/// A Kubernetes quantity: `100m`, `0.5`, `64Mi`, `1e3`.
pub fn check_quantity(v: &str) -> Result<(), String> {
    let number_end = v
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map_or(v.len(), |(i, _)| i);
    let (number, suffix) = v.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    let number_ok = !digits.is_empty()
        && digits != "."
        && digits.matches('.').count() <= 1
        && !number.starts_with('-');
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    if number_ok && suffix_ok {
        Ok(())
    } else {
        Err(format!("{v:?} is not a quantity (like 100m, 64Mi)"))
    }
}

/// A `RUST_LOG` filter: levels and `target=level` directives, no spaces or quotes.
pub fn check_log_level(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_=,:.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a log filter (like info or smidge_proxy=debug)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Overrides, BadAnnotation> {
        Overrides::read(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn no_annotations_override_nothing() {
        assert_eq!(read(&[]).expect("read"), Overrides::default());
    }

    #[test]
    fn every_annotation_is_read() {
        let o = read(&[
            (SKIP_INBOUND_PORTS, "22, 8443"),
            (SKIP_OUTBOUND_PORTS, "443"),
            (SKIP_OUTBOUND_CIDRS, "169.254.169.254/32,fd00::/8"),
            (OPAQUE_PORTS, ""),
            (PROXY_LOG_LEVEL, "smidge_proxy=debug,info"),
            (PROXY_CPU_REQUEST, "100m"),
            (PROXY_CPU_LIMIT, "1"),
            (PROXY_MEMORY_REQUEST, "20Mi"),
            (PROXY_MEMORY_LIMIT, "1e9"),
        ])
        .expect("read");
        assert_eq!(o.skip_inbound_ports, Some(vec![22, 8443]));
        assert_eq!(o.skip_outbound_ports, Some(vec![443]));
        assert_eq!(
            o.skip_outbound_cidrs,
            Some(vec!["169.254.169.254/32".into(), "fd00::/8".into()])
        );
        assert_eq!(o.opaque_ports, Some(vec![]), "empty: the proxy's own list");
        assert_eq!(o.log_level.as_deref(), Some("smidge_proxy=debug,info"));
        assert_eq!(
            o.resources,
            [
                ("requests", "cpu", "100m".to_string()),
                ("limits", "cpu", "1".into()),
                ("requests", "memory", "20Mi".into()),
                ("limits", "memory", "1e9".into())
            ]
        );
    }

    #[test]
    fn a_bad_value_names_its_annotation() {
        let which = |k: &str, v: &str| read(&[(k, v)]).expect_err(v).annotation;
        assert_eq!(which(SKIP_INBOUND_PORTS, "22,http"), SKIP_INBOUND_PORTS);
        assert_eq!(which(SKIP_OUTBOUND_PORTS, "0"), SKIP_OUTBOUND_PORTS);
        assert_eq!(which(OPAQUE_PORTS, "70000"), OPAQUE_PORTS);
        assert_eq!(
            which(SKIP_OUTBOUND_CIDRS, "10.0.0.0/33"),
            SKIP_OUTBOUND_CIDRS
        );
        assert_eq!(which(SKIP_OUTBOUND_CIDRS, "10.0.0.0"), SKIP_OUTBOUND_CIDRS);
        assert_eq!(which(PROXY_LOG_LEVEL, "info; rm -rf"), PROXY_LOG_LEVEL);
        assert_eq!(which(PROXY_CPU_LIMIT, "lots"), PROXY_CPU_LIMIT);
        assert_eq!(which(PROXY_MEMORY_REQUEST, "-1Mi"), PROXY_MEMORY_REQUEST);
    }

    #[test]
    fn quantities() {
        for ok in [
            "1", "100m", "0.5", ".5", "64Mi", "1Gi", "1e3", "1E-2", "+1k", "5n",
        ] {
            check_quantity(ok).expect(ok);
        }
        for bad in ["", "m", "1.2.3", "1MB", "1e", "ten", "-1", "1 Mi", "."] {
            assert!(check_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        for ok in ["0.0.0.0/0", "10.1.0.0/16", "::/0", "fd00::/128"] {
            check_cidr(ok).expect(ok);
        }
        for bad in ["10.0.0.0/", "10.0.0/8", "fd00::/129", "x/1", "/8"] {
            assert!(check_cidr(bad).is_err(), "{bad}");
        }
    }
}
