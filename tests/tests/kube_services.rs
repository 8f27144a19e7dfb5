//! kube-proxy's rules (`smidge_local_cluster::mesh::apply_frontends`, the one rule writer of both
//! control planes) against the real iptables in a node namespace: a ClusterIP reaches its
//! endpoint from a pod and from the node itself, a port without endpoints is refused at once,
//! applying again replaces the rules instead of adding to them, and removing leaves none.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use smidge_local_cluster::mesh::{apply_frontends, remove_frontends, route_service_cidr};
use smidge_local_cluster::netns::{enter_netns, Node};
use smidge_local_cluster::services::Frontend;

/// What the endpoint answers: the address it sees the caller at.
fn greeting(peer: std::net::IpAddr) -> String {
    format!("hello from the endpoint to {peer}\n")
}

/// Runs `f` on a fresh thread inside `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let netns = netns.to_string();
    std::thread::spawn(move || {
        enter_netns(&netns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in the namespace panicked"))?
}

/// Connects to `addr` from inside `netns` and reads what the server says.
fn fetch(netns: &str, addr: SocketAddr) -> anyhow::Result<String> {
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    })
}

fn node_ip() -> std::net::IpAddr {
    Ipv4Addr::new(10, 88, 0, 1).into()
}

fn nat_rules(netns: &str, table: &str) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-save", "-t", table])
        .output()?;
    anyhow::ensure!(out.status.success(), "iptables-save failed");
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn a_cluster_ip_reaches_its_endpoint_from_a_pod_and_from_the_node() -> anyhow::Result<()> {
    // The pod network of both control planes (only sources outside it are masqueraded).
    let mut node = Node::create("ksvc", Ipv4Addr::new(10, 88, 0, 1))?;
    let server = node.add_pod("server", Ipv4Addr::new(10, 88, 0, 2))?;
    let client = node.add_pod("client", Ipv4Addr::new(10, 88, 0, 3))?;
    // A socket stays in the namespace it was made in, whichever thread uses it later.
    let listener = in_netns(&server.netns, || Ok(TcpListener::bind("0.0.0.0:8080")?))?;
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            if let Ok(peer) = conn.peer_addr() {
                let _ = conn.write_all(greeting(peer.ip()).as_bytes());
            }
        }
    });

    let cluster_ip = Ipv4Addr::new(10, 96, 0, 10);
    let frontends = |port: u16| {
        vec![
            Frontend {
                cluster_ip: cluster_ip.into(),
                port,
                endpoints: vec![(server.ip.into(), 8080)],
            },
            Frontend {
                cluster_ip: Ipv4Addr::new(10, 96, 0, 11).into(),
                port: 81,
                endpoints: Vec::new(),
            },
        ]
    };
    // First an older set (port 79), then the current one: the second must replace the first.
    apply_frontends(Some(node.netns()), &frontends(79))?;
    apply_frontends(Some(node.netns()), &frontends(80))?;
    route_service_cidr(Some(node.netns()), "10.96.0.0/16", "br0")?;
    route_service_cidr(Some(node.netns()), "10.96.0.0/16", "br0")?;

    let service = SocketAddr::from((cluster_ip, 80));
    // A pod keeps its own address through a Service (a meshed proxy is known by it); a pod
    // reaching itself through its Service and the node are answered through the node's address.
    assert_eq!(
        fetch(&client.netns, service).context("from a pod")?,
        greeting(client.ip.into()),
        "from a pod"
    );
    assert_eq!(
        fetch(&server.netns, service).context("from the endpoint itself")?,
        greeting(node_ip()),
        "from the endpoint itself"
    );
    assert_eq!(
        fetch(node.netns(), service)?,
        greeting(node_ip()),
        "from the node"
    );

    // No endpoints: refused at once, from a pod and from the node.
    let empty = SocketAddr::from((Ipv4Addr::new(10, 96, 0, 11), 81));
    for ns in [client.netns.as_str(), node.netns()] {
        let err = fetch(ns, empty).expect_err("a port without endpoints answered");
        let io = err.downcast_ref::<std::io::Error>().map(|e| e.kind());
        assert_eq!(
            io,
            Some(std::io::ErrorKind::ConnectionRefused),
            "from {ns}: {err:#}"
        );
    }

    let nat = nat_rules(node.netns(), "nat")?;
    assert_eq!(nat.matches("--to-destination").count(), 1, "{nat}");
    assert!(!nat.contains("--dport 79"), "the old rule stayed: {nat}");
    for hook in [
        "-A PREROUTING -j SMIDGE-SERVICES",
        "-A OUTPUT -j SMIDGE-SERVICES",
        "-A POSTROUTING -j SMIDGE-POSTROUTING",
    ] {
        assert_eq!(nat.matches(hook).count(), 1, "{hook} in {nat}");
    }
    let filter = nat_rules(node.netns(), "filter")?;
    assert_eq!(filter.matches("-j REJECT").count(), 1, "{filter}");
    for hook in [
        "-A FORWARD -m conntrack --ctstate NEW -j SMIDGE-SVC-REJECT",
        "-A OUTPUT -m conntrack --ctstate NEW -j SMIDGE-SVC-REJECT",
    ] {
        assert_eq!(filter.matches(hook).count(), 1, "{hook} in {filter}");
    }

    // Removed (twice: the second finds nothing to do), no rule or chain of ours is left.
    remove_frontends(Some(node.netns()))?;
    remove_frontends(Some(node.netns()))?;
    for table in ["nat", "filter"] {
        let left = nat_rules(node.netns(), table)?;
        assert!(!left.contains("SMIDGE"), "{left}");
    }
    Ok(())
}
