//! The controller's address as given: `host:port`, where host is a DNS name or an IP. A name is
//! resolved again at every connect (`tokio::net::lookup_host`), so a Service whose address
//! changes, or a pod that learns it from `/etc/hosts` later, is followed without a restart.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::Context;
use tokio::net::TcpStream;

/// `host:port` (`[v6]:port` for IPv6 literals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<HostPort, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not host:port"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{text:?}: {port:?} is not a port"))?;
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
        if !valid {
            return Err(format!(
                "{text:?}: {host:?} is not a host name or IP address"
            ));
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> HostPort {
        HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl HostPort {
    /// Resolves the address now: every address it names (an IP gives itself).
    pub async fn resolve(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("resolving {self}"))?
            .collect();
        if addrs.is_empty() {
            anyhow::bail!("resolving {self}: no addresses");
        }
        Ok(addrs)
    }

    /// Resolves, then connects to the first address that accepts (with `mark`, see
    /// [`super::connect::connect`]). The error names this address and each one tried.
    pub async fn connect(&self, mark: Option<u32>) -> anyhow::Result<TcpStream> {
        let mut failures = Vec::new();
        for addr in self.resolve().await? {
            match super::connect::connect(addr, mark).await {
                Ok(stream) => return Ok(stream),
                Err(e) => failures.push(format!("{addr}: {e}")),
            }
        }
        anyhow::bail!("connecting to {self}: {}", failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ips_parse() {
        let hp = |s: &str| s.parse::<HostPort>().expect(s).to_string();
        assert_eq!(hp("127.0.0.1:8086"), "127.0.0.1:8086");
        assert_eq!(hp("[::1]:8086"), "[::1]:8086");
        assert_eq!(
            hp("smidge-controller.smidge-system.svc.cluster.local:8086"),
            "smidge-controller.smidge-system.svc.cluster.local:8086"
        );
        assert_eq!(hp("localhost:1"), "localhost:1");
    }

    #[test]
    fn bad_addresses_are_refused_naming_them() {
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:99999",
            ":8086",
            "a b:1",
            "::1:8086x",
        ] {
            let e = bad.parse::<HostPort>().expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_name_is_resolved_and_connected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hp: HostPort = format!("localhost:{port}").parse().expect("parse");
        let (accepted, connected) = tokio::join!(listener.accept(), hp.connect(None));
        accepted.expect("accepted");
        assert_eq!(
            connected
                .expect("connected")
                .peer_addr()
                .expect("peer")
                .port(),
            port
        );
        let ip: HostPort = format!("127.0.0.1:{port}").parse().expect("parse");
        let (accepted, connected) = tokio::join!(listener.accept(), ip.connect(None));
        accepted.expect("accepted");
        connected.expect("an IP still works");
    }

    #[tokio::test]
    async fn errors_name_the_address() {
        let hp: HostPort = "no-such-host.invalid:8086".parse().expect("parse");
        let e = format!("{:#}", hp.connect(None).await.expect_err("unresolvable"));
        assert!(e.contains("no-such-host.invalid:8086"), "{e}");
        // A closed port: the error names the name and the address tried.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let hp: HostPort = format!("127.0.0.1:{port}").parse().expect("parse");
        let e = format!("{:#}", hp.connect(None).await.expect_err("refused"));
        assert!(
            e.contains(&format!("connecting to 127.0.0.1:{port}")),
            "{e}"
        );
    }
}
