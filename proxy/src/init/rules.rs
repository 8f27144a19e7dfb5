//! The pod's interception rules, as text for `iptables-restore`. Pure.

use std::net::IpAddr;

/// The chain that sends the app's outbound TCP to the outbound port.
pub const OUTPUT_CHAIN: &str = "SMIDGE_OUTPUT";
/// The chain that sends inbound TCP to the inbound port.
pub const PREROUTING_CHAIN: &str = "SMIDGE_PREROUTING";
/// The filter chain that drops what the proxy cannot see arriving (UDP; all IPv6 TCP and UDP).
pub const GUARD_IN_CHAIN: &str = "SMIDGE_GUARD_IN";
/// The filter chain that drops IPv6 TCP and UDP the app sends (the proxy cannot intercept it).
pub const GUARD_OUT_CHAIN: &str = "SMIDGE_GUARD_OUT";
/// UDP that still reaches a meshed pod: DNS.
pub const DNS_PORT: u16 = 53;

/// Which `iptables` a set of rules is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The program that checks and adds single rules.
    pub fn program(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }

    /// The program that loads a whole table.
    pub fn restore(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables-restore",
            Family::Ipv6 => "ip6tables-restore",
        }
    }
}

/// A jump from a built-in chain into one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub builtin: &'static str,
    /// Only packets of this protocol take the jump (`None`: all).
    pub protocol: Option<&'static str>,
    pub chain: &'static str,
}

impl Jump {
    /// The rule's arguments after `-C`/`-A` and the built-in chain's name.
    pub fn args(&self) -> Vec<&'static str> {
        let mut args = Vec::new();
        if let Some(p) = self.protocol {
            args.extend(["-p", p]);
        }
        args.extend(["-j", self.chain]);
        args
    }
}

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
        out.push_str(&self.udp_guard());
        out
    }

    /// IPv4 filter table: UDP arriving at the pod is dropped (the proxy has no UDP path, so
    /// nothing could authorize it), except from the pod itself, replies to the pod's own UDP
    /// (its DNS queries), DNS and the skipped inbound ports.
    fn udp_guard(&self) -> String {
        let g = GUARD_IN_CHAIN;
        let mut out = format!("*filter\n:{g} - [0:0]\n");
        out.push_str(&format!("-A {g} -i lo -j RETURN\n"));
        out.push_str(&format!(
            "-A {g} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n"
        ));
        for port in std::iter::once(&DNS_PORT).chain(&self.skip_inbound_ports) {
            out.push_str(&format!("-A {g} -p udp --dport {port} -j RETURN\n"));
        }
        out.push_str(&format!("-A {g} -p udp -j DROP\nCOMMIT\n"));
        out
    }

    /// IPv6 filter table for `ip6tables-restore --noflush`. The proxy listens and forwards on
    /// IPv4 only, so IPv6 TCP and UDP to and from the pod are dropped rather than let past it:
    /// only loopback, the proxy's own connections and their replies pass. (ICMPv6, which
    /// neighbour discovery needs, is left alone.)
    pub fn restore_input_v6(&self) -> String {
        let (i, o) = (GUARD_IN_CHAIN, GUARD_OUT_CHAIN);
        let mut out = format!("*filter\n:{i} - [0:0]\n:{o} - [0:0]\n");
        out.push_str(&format!("-A {i} -i lo -j RETURN\n"));
        out.push_str(&format!(
            "-A {i} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n"
        ));
        for port in &self.skip_inbound_ports {
            for proto in ["tcp", "udp"] {
                out.push_str(&format!("-A {i} -p {proto} --dport {port} -j RETURN\n"));
            }
        }
        out.push_str(&format!("-A {i} -p tcp -j DROP\n-A {i} -p udp -j DROP\n"));
        out.push_str(&format!("-A {o} -o lo -j RETURN\n"));
        if let Some(uid) = self.proxy_uid {
            out.push_str(&format!("-A {o} -m owner --uid-owner {uid} -j RETURN\n"));
        }
        if let Some(mark) = self.proxy_mark {
            out.push_str(&format!("-A {o} -m mark --mark {mark:#x} -j RETURN\n"));
        }
        out.push_str(&format!(
            "-A {o} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n"
        ));
        // What the operator sends past the proxy on IPv4 goes past it on IPv6 too.
        for port in &self.skip_outbound_ports {
            out.push_str(&format!("-A {o} -p tcp --dport {port} -j RETURN\n"));
        }
        for cidr in self.skip_outbound_cidrs.iter().filter(|c| c.addr.is_ipv6()) {
            out.push_str(&format!("-A {o} -d {cidr} -j RETURN\n"));
        }
        out.push_str(&format!("-A {o} -p tcp -j DROP\n-A {o} -p udp -j DROP\n"));
        out.push_str("COMMIT\n");
        out
    }

    /// The jumps from the built-in chains into ours, for IPv4.
    pub fn jumps() -> [Jump; 3] {
        [
            Jump {
                table: "nat",
                builtin: "OUTPUT",
                protocol: Some("tcp"),
                chain: OUTPUT_CHAIN,
            },
            Jump {
                table: "nat",
                builtin: "PREROUTING",
                protocol: Some("tcp"),
                chain: PREROUTING_CHAIN,
            },
            Jump {
                table: "filter",
                builtin: "INPUT",
                protocol: Some("udp"),
                chain: GUARD_IN_CHAIN,
            },
        ]
    }

    /// The jumps from the built-in chains into ours, for IPv6.
    pub fn jumps_v6() -> [Jump; 2] {
        [
            Jump {
                table: "filter",
                builtin: "INPUT",
                protocol: None,
                chain: GUARD_IN_CHAIN,
            },
            Jump {
                table: "filter",
                builtin: "OUTPUT",
                protocol: None,
                chain: GUARD_OUT_CHAIN,
            },
        ]
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
    fn udp_arriving_is_dropped_except_replies_dns_and_skipped_ports() {
        let text = rules().restore_input();
        let filter = text.split("*filter\n").nth(1).expect("a filter table");
        let guard: Vec<&str> = filter
            .lines()
            .filter(|l| l.starts_with("-A SMIDGE_GUARD_IN"))
            .collect();
        assert_eq!(
            guard,
            [
                "-A SMIDGE_GUARD_IN -i lo -j RETURN",
                "-A SMIDGE_GUARD_IN -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
                "-A SMIDGE_GUARD_IN -p udp --dport 53 -j RETURN",
                "-A SMIDGE_GUARD_IN -p udp --dport 22 -j RETURN",
                "-A SMIDGE_GUARD_IN -p udp -j DROP",
            ]
        );
        assert!(filter.ends_with("COMMIT\n"));
        assert!(Rules::jumps().iter().any(|j| j.table == "filter"
            && j.builtin == "INPUT"
            && j.args() == ["-p", "udp", "-j", "SMIDGE_GUARD_IN"]));
    }

    #[test]
    fn ipv6_tcp_and_udp_pass_only_on_loopback_and_for_the_proxy() {
        let text = rules().restore_input_v6();
        assert!(text.starts_with("*filter\n"), "{text}");
        assert!(!text.contains("*nat"), "{text}");
        let chain = |name: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with(&format!("-A {name} ")))
                .map(String::from)
                .collect()
        };
        let inbound = chain(GUARD_IN_CHAIN);
        assert_eq!(inbound[0], "-A SMIDGE_GUARD_IN -i lo -j RETURN");
        assert!(inbound.ends_with(&[
            "-A SMIDGE_GUARD_IN -p tcp -j DROP".to_string(),
            "-A SMIDGE_GUARD_IN -p udp -j DROP".to_string()
        ]));
        let outbound = chain(GUARD_OUT_CHAIN);
        assert_eq!(outbound[0], "-A SMIDGE_GUARD_OUT -o lo -j RETURN");
        assert!(outbound[1].contains("--uid-owner 2102 -j RETURN"));
        assert!(outbound.ends_with(&[
            "-A SMIDGE_GUARD_OUT -p tcp -j DROP".to_string(),
            "-A SMIDGE_GUARD_OUT -p udp -j DROP".to_string()
        ]));
        // Every jump takes all protocols: nothing but ICMPv6 gets past unexamined.
        assert!(Rules::jumps_v6().iter().all(|j| j.protocol.is_none()));
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
