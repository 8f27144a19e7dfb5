//! `smidge-proxy init` against the real iptables, inside a fresh network namespace.

use std::net::Ipv4Addr;
use std::process::Command;

use smidge_e2e::binary;
use smidge_local_cluster::netns::Node;

/// The rules of `table` in the pod, as `save` (iptables-save or ip6tables-save) prints them.
fn saved(netns: &str, save: &str, table: &str) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, save, "-t", table])
        .output()?;
    anyhow::ensure!(out.status.success(), "{save} failed");
    // Comments carry timestamps; counters change. The rules are what must not.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Every table `init` writes, IPv4 and IPv6.
fn all_rules(netns: &str) -> anyhow::Result<String> {
    Ok([
        saved(netns, "iptables-save", "nat")?,
        saved(netns, "iptables-save", "filter")?,
        saved(netns, "ip6tables-save", "filter")?,
    ]
    .join("\n"))
}

#[test]
fn init_twice_leaves_the_same_rules_and_refuses_without_privilege() -> anyhow::Result<()> {
    let proxy = binary("smidge-proxy", "smidge-proxy")?;
    let mut node = Node::create("init", Ipv4Addr::new(10, 89, 0, 1))?;
    let pod = node.add_pod("p", Ipv4Addr::new(10, 89, 0, 2))?;
    let init = |uid: Option<u32>| {
        pod.command(&proxy, uid)
            .args([
                "init",
                "--skip-outbound-ports=25",
                "--skip-outbound-cidrs=169.254.0.0/16",
            ])
            .output()
    };
    // The local cluster gives pods no IPv6 (the rules below close it by themselves too).
    let ipv6 = Command::new("ip")
        .args(["netns", "exec", &pod.netns, "cat"])
        .arg("/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
        .output()?;
    assert_eq!(String::from_utf8_lossy(&ipv6.stdout).trim(), "1");
    let first = init(None)?;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let once = all_rules(&pod.netns)?;
    assert!(once.contains("-A OUTPUT -p tcp -j SMIDGE_OUTPUT"), "{once}");
    assert!(
        once.contains("-A PREROUTING -p tcp -j SMIDGE_PREROUTING"),
        "{once}"
    );
    assert!(once.contains("--uid-owner 2102 -j RETURN"), "{once}");
    assert!(once.contains("--to-ports 4140"), "{once}");
    assert!(once.contains("--dport 4191 -j RETURN"), "{once}");
    let v4 = saved(&pod.netns, "iptables-save", "filter")?;
    assert!(v4.contains("-A INPUT -p udp -j SMIDGE_GUARD_IN"), "{v4}");
    assert!(v4.contains("-A SMIDGE_GUARD_IN -p udp -j DROP"), "{v4}");
    let v6 = saved(&pod.netns, "ip6tables-save", "filter")?;
    assert!(v6.contains("-A INPUT -j SMIDGE_GUARD_IN"), "{v6}");
    assert!(v6.contains("-A OUTPUT -j SMIDGE_GUARD_OUT"), "{v6}");
    assert!(v6.contains("-A SMIDGE_GUARD_IN -p tcp -j DROP"), "{v6}");
    assert!(v6.contains("-A SMIDGE_GUARD_OUT -p udp -j DROP"), "{v6}");

    let second = init(None)?;
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        all_rules(&pod.netns)?,
        once,
        "a second init changed the rules"
    );

    let unprivileged = init(Some(65534))?;
    assert!(!unprivileged.status.success());
    let said = String::from_utf8_lossy(&unprivileged.stderr);
    assert!(
        said.contains("needs root or CAP_NET_ADMIN"),
        "unclear refusal: {said}"
    );
    assert_eq!(
        all_rules(&pod.netns)?,
        once,
        "the refused init changed the rules"
    );
    Ok(())
}
