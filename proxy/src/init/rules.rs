//! The pod's interception rules, as text for `iptables-restore`. Pure.

use std::net::IpAddr;

/// The chain that sends the app's outbound TCP to the outbound port.
pub const OUTPUT_CHAIN: &str = "SMIDGE_OUTPUT";
/// The chain that sends inbound TCP to the inbound port.
pub const PREROUTING_CHAIN: &str = "SMIDGE_PREROUTING";

/// What `init` intercepts and what it leaves alone.
#[derive(Clone, Debug)]
pub struct Rules {
    /// The proxy's own uid: its connections are never redirected (or they would loop). `None`
    /// when the proxy shares the app's uid and is told apart by [`Rules::proxy_mark`].
    pub proxy_uid: Option<u32>,
    /// Also exempt: connections carrying this firewall mark (a proxy that shares the app's uid,
    /// as in a user namespace with one mapped uid, marks its sockets instead).
    pub proxy_mark: Option<u32>,
    pub outbound_port: u16,
    pub inbound_port: u16,
    /// The admin port stays reachable directly (probes, scrapes).
    pub admin_port: u16,
    pub skip_outbound_ports: Vec<u16>,
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_cidrs: Vec<Cidr>,
}

/// An address range, `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} is not a CIDR: the prefix must be 0..={max}"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Rules {
    /// The nat table's smidge chains for `iptables-restore --noflush`. Declaring a chain there
    /// creates it or empties it, so applying this twice leaves the same rules.
    pub fn restore_input(&self) -> String {
        let mut out = String::from("*nat\n");
        out.push_str(&format!(
            ":{OUTPUT_CHAIN} - [0:0]\n:{PREROUTING_CHAIN} - [0:0]\n"
        ));
        let o = OUTPUT_CHAIN;
        if let Some(uid) = self.proxy_uid {
            out.push_str(&format!("-A {o} -m owner --uid-owner {uid} -j RETURN\n"));
        }
        if let Some(mark) = self.proxy_mark {
            out.push_str(&format!("-A {o} -m mark --mark {mark:#x} -j RETURN\n"));
        }
        out.push_str(&format!("-A {o} -d 127.0.0.1/32 -j RETURN\n"));
        for port in &self.skip_outbound_ports {
            out.push_str(&format!("-A {o} -p tcp --dport {port} -j RETURN\n"));
        }
        for cidr in self.skip_outbound_cidrs.iter().filter(|c| c.addr.is_ipv4()) {
            out.push_str(&format!("-A {o} -d {cidr} -j RETURN\n"));
        }
        out.push_str(&format!(
            "-A {o} -p tcp -j REDIRECT --to-ports {}\n",
            self.outbound_port
        ));
        let p = PREROUTING_CHAIN;
        for port in std::iter::once(&self.admin_port).chain(&self.skip_inbound_ports) {
            out.push_str(&format!("-A {p} -p tcp --dport {port} -j RETURN\n"));
        }
        out.push_str(&format!(
            "-A {p} -p tcp -j REDIRECT --to-ports {}\n",
            self.inbound_port
        ));
        out.push_str("COMMIT\n");
        out
    }

    /// The jumps from the built-in chains into ours: (built-in chain, our chain).
    pub fn jumps() -> [(&'static str, &'static str); 2] {
        [("OUTPUT", OUTPUT_CHAIN), ("PREROUTING", PREROUTING_CHAIN)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            proxy_uid: Some(2102),
            proxy_mark: None,
            outbound_port: 4140,
            inbound_port: 4143,
            admin_port: 4191,
            skip_outbound_ports: vec![25],
            skip_inbound_ports: vec![22],
            skip_outbound_cidrs: vec!["169.254.0.0/16".parse().expect("cidr")],
        }
    }

    #[test]
    fn a_proxy_mark_is_exempt_too() {
        let text = Rules {
            proxy_uid: None,
            proxy_mark: Some(0x2102),
            ..rules()
        }
        .restore_input();
        let out: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A SMIDGE_OUTPUT"))
            .collect();
        assert_eq!(out[0], "-A SMIDGE_OUTPUT -m mark --mark 0x2102 -j RETURN");
        assert!(!text.contains("--uid-owner"));
    }

    #[test]
    fn the_proxy_uid_and_skips_return_before_the_redirect() {
        let text = rules().restore_input();
        let out: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A SMIDGE_OUTPUT"))
            .collect();
        assert!(out[0].contains("--uid-owner 2102 -j RETURN"));
        assert!(out.iter().any(|l| l.contains("--dport 25 -j RETURN")));
        assert!(out
            .iter()
            .any(|l| l.contains("-d 169.254.0.0/16 -j RETURN")));
        assert!(out
            .last()
            .is_some_and(|l| l.ends_with("REDIRECT --to-ports 4140")));
        let inb: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("-A SMIDGE_PREROUTING"))
            .collect();
        assert!(inb[0].contains("--dport 4191 -j RETURN"));
        assert!(inb[1].contains("--dport 22 -j RETURN"));
        assert!(inb
            .last()
            .is_some_and(|l| l.ends_with("REDIRECT --to-ports 4143")));
        assert!(text.ends_with("COMMIT\n"));
    }

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!("10.0.0.1".parse::<Cidr>().map(|c| c.prefix), Ok(32));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
    }
}
