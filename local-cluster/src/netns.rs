//! Network namespaces as nodes and pods, made with `ip` (iproute2) and removed on drop.
//!
//! Each [`Node`] is its own namespace with a bridge, so several nodes (several tests) may use
//! the same addresses side by side without seeing each other.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// The prefix length of the pod network on a node's bridge.
pub const PREFIX: u8 = 16;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A node: a network namespace holding a bridge at `gateway` that its pods attach to.
pub struct Node {
    name: String,
    pub gateway: Ipv4Addr,
    pods: Vec<String>,
    /// Numbers pod namespaces and links; never reused, so a removed pod's names stay free.
    next_pod: usize,
}

/// A pod: a network namespace with `eth0` on the node's bridge.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("`ip` is not installed: install the iproute2 package")
            } else {
                anyhow::anyhow!("running ip: {e}")
            }
        })?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Whether bridged traffic can pass iptables (the kernel's br_netfilter is loaded or built in).
pub fn bridge_netfilter() -> bool {
    std::path::Path::new(BRIDGE_NF_CALL_IPTABLES).exists()
}

/// Writes `value` into the sysctl file `path` inside network namespace `netns` (`None`: the
/// caller's own); `what` says in an error what was being set.
pub(crate) fn write_sysctl(
    netns: Option<&str>,
    path: &str,
    value: &str,
    what: &str,
) -> anyhow::Result<()> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "sh"]);
            cmd
        }
        None => Command::new("sh"),
    };
    let out = cmd
        .arg("-c")
        .arg(format!("echo {value} > {path}"))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running sh ({what})"))?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Node {
    /// Creates a node namespace with a bridge at `gateway`/16. `tag` makes names readable.
    pub fn create(tag: &str, gateway: Ipv4Addr) -> anyhow::Result<Node> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("smg-{}-{}-{n}", tag, std::process::id());
        ip(&["netns", "add", &name]).context(
            "creating a network namespace (needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN)",
        )?;
        let node = Node {
            name,
            gateway,
            pods: Vec::new(),
            next_pod: 0,
        };
        let ns = node.name.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        // A bridge otherwise takes the lowest MAC of its ports and changes it as pods join,
        // leaving pods that already resolved the gateway talking to a stale address.
        let [a, b, c, d] = gateway.octets();
        let mac = format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
        ip(&["-n", ns, "link", "set", "br0", "address", &mac])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{gateway}/{PREFIX}"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", ns, "link", "set", "br0", "up"])?;
        // Replies bridged from pod to pod must pass the node's conntrack to be un-DNATed, as
        // kube-proxy needs on a bridge, for Service traffic between pods to keep its source.
        if bridge_netfilter() {
            write_sysctl(
                Some(ns),
                BRIDGE_NF_CALL_IPTABLES,
                "1",
                &format!("turning on net.bridge.bridge-nf-call-iptables in {ns}"),
            )?;
        } else {
            tracing::warn!(
                node = ns,
                "the kernel has no br_netfilter (modprobe br_netfilter): Service traffic between \
                 pods is masqueraded, so the Kubernetes node's injected proxies cannot be bound to \
                 their pod IPs"
            );
        }
        Ok(node)
    }

    /// The node's namespace name (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.name
    }

    /// Adds a pod at `ip` with a default route through the node.
    pub fn add_pod(&mut self, name: &str, ip_addr: Ipv4Addr) -> anyhow::Result<Pod> {
        let index = self.next_pod;
        self.next_pod += 1;
        let netns = format!("{}-p{index}", self.name);
        self.pods.push(netns.clone());
        attach_pod(
            &self.name,
            self.gateway,
            &netns,
            &format!("veth{index}"),
            ip_addr,
        )?;
        Ok(Pod {
            name: name.into(),
            netns,
            ip: ip_addr,
        })
    }

    /// Removes a pod's namespace (its link goes with it) and its `/etc/netns` files. Whatever
    /// still runs inside should have been stopped first.
    pub fn remove_pod(&mut self, pod: &Pod) -> anyhow::Result<()> {
        self.pods.retain(|p| *p != pod.netns);
        let _ = std::fs::remove_dir_all(etc_dir(&pod.netns));
        ip(&["netns", "del", &pod.netns])
    }

    /// Moves the calling thread into the node's network namespace.
    pub fn enter(&self) -> anyhow::Result<()> {
        enter_netns(&self.name)
    }

    /// A command that runs inside the node's namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        in_netns(&self.name, program, None)
    }
}

/// Makes network namespace `netns` a pod of the node namespace `node` (bridge `br0` at
/// `gateway`): a veth pair (`link` on the node's side, at most 15 bytes; `eth0` in the pod) at
/// `ip_addr`, with a default route through the node. For callers that are not the [`Node`]'s
/// owner (the node agent, a process of its own).
pub fn attach_pod(
    node: &str,
    gateway: Ipv4Addr,
    netns: &str,
    link: &str,
    ip_addr: Ipv4Addr,
) -> anyhow::Result<()> {
    ip(&["netns", "add", netns])?;
    ip(&[
        "-n", node, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns,
    ])?;
    ip(&["-n", node, "link", "set", link, "master", "br0", "up"])?;
    // A pod reaching itself through its own Service: the node DNATs the packet back to the port
    // it came from, which a bridge drops unless the port is in hairpin mode (as kubelet sets it).
    ip(&[
        "-n",
        node,
        "link",
        "set",
        link,
        "type",
        "bridge_slave",
        "hairpin",
        "on",
    ])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        netns,
        "addr",
        "add",
        &format!("{ip_addr}/{PREFIX}"),
        "dev",
        "eth0",
    ])?;
    disable_ipv6(netns, "eth0");
    ip(&["-n", netns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n",
        netns,
        "route",
        "add",
        "default",
        "via",
        &gateway.to_string(),
    ])?;
    Ok(())
}

/// Removes a pod namespace by name (its link goes with it) and its `/etc/netns` files.
pub fn remove_netns(netns: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(etc_dir(netns));
    ip(&["netns", "del", netns])
}

/// Whether a network namespace of this name exists.
pub fn netns_exists(netns: &str) -> bool {
    std::path::Path::new("/run/netns").join(netns).exists()
}

/// Names of the network namespaces starting with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// SIGKILLs every process in network namespace `netns` except the caller; returns how many.
pub fn kill_in_netns(netns: &str) -> usize {
    let me = std::process::id() as i32;
    let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() else {
        return 0;
    };
    let mut n = 0;
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            if pid != me
                && nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

/// The `/etc/hosts` programs in `netns` see (see [`Pod::write_hosts`]).
pub fn write_hosts(netns: &str, text: &str) -> anyhow::Result<()> {
    let dir = etc_dir(netns);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("hosts");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Rewrites the hosts file of `netns` only while its `/etc/netns` directory exists: a pod being
/// removed meanwhile is not given the directory back. Returns whether it wrote.
pub fn update_hosts(netns: &str, text: &str) -> anyhow::Result<bool> {
    let path = etc_dir(netns).join("hosts");
    match std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
    {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

/// Removes the `/etc/netns` directories whose names start with `prefix` (what a crashed run, or
/// a race with a pod's removal, left).
pub fn remove_etc_with_prefix(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/etc/netns") else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Where [`write_hosts`] writes, for programs that bind-mount it themselves.
pub fn hosts_path(netns: &str) -> std::path::PathBuf {
    etc_dir(netns).join("hosts")
}

impl Drop for Node {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain(std::iter::once(&self.name)) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                tracing::warn!(netns = %ns, error = %e, "could not remove a network namespace");
            }
            let _ = std::fs::remove_dir_all(etc_dir(ns));
        }
    }
}

/// Files here replace their `/etc` twins for programs started with `ip netns exec`.
fn etc_dir(netns: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(netns)
}

impl Pod {
    /// The `/etc/hosts` programs started in this pod (with [`Pod::command`]) see. Written in
    /// place: `ip netns exec` bind-mounts the file itself, so programs already running keep the
    /// inode they were given and would never see a replacement.
    pub fn write_hosts(&self, text: &str) -> anyhow::Result<()> {
        write_hosts(&self.netns, text)
    }

    /// A command that runs inside the pod's namespace, as `uid` (and the same gid) if given.
    pub fn command(&self, program: &std::path::Path, uid: Option<u32>) -> Command {
        in_netns(&self.netns, program, uid)
    }

    /// Moves the calling thread into the pod's network namespace: sockets it opens afterwards
    /// live in the pod. Meant for a thread dedicated to that pod.
    pub fn enter(&self) -> anyhow::Result<()> {
        enter_netns(&self.netns)
    }
}

/// Turns IPv6 off on `link` inside `netns`: the pods have IPv4 addresses only, and an IPv6
/// link-local address would only be a way around the proxy. Best effort: `init`'s rules close
/// that way by themselves, so a kernel without IPv6 (or a refusal) is only logged.
fn disable_ipv6(netns: &str, link: &str) {
    let netns = netns.to_string();
    let path = format!("/proc/sys/net/ipv6/conf/{link}/disable_ipv6");
    // A thread of its own: entering the namespace changes the calling thread for good.
    let done = std::thread::spawn(move || -> anyhow::Result<()> {
        enter_netns(&netns)?;
        if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
            return Ok(());
        }
        std::fs::write(&path, "1").with_context(|| format!("writing {path}"))
    })
    .join();
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(link, error = %format!("{e:#}"), "could not turn IPv6 off"),
        Err(_) => tracing::warn!(link, "turning IPv6 off panicked"),
    }
}

/// Moves the calling thread into the named network namespace.
pub fn enter_netns(netns: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{netns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {netns}"))?;
    Ok(())
}

fn in_netns(netns: &str, program: &std::path::Path, uid: Option<u32>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]);
    if let Some(uid) = uid {
        cmd.arg("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            // No setuid or file-capability program gives back what the uid change dropped.
            .arg("--no-new-privs");
    }
    cmd.arg(program);
    cmd
}

/// Whether `pid` runs (a zombie, killed but not yet reaped, does not).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// SIGKILLs every process in session `sid` (a daemon started with `setsid` and everything it
/// started), except the caller. Returns how many it signalled.
pub fn kill_session(sid: u32) -> usize {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After "(comm)": state, ppid, pgrp, session.
        let session = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(3))
            .and_then(|s| s.parse::<u32>().ok());
        if session == Some(sid) && pid != me && process_alive(pid) {
            let target = nix::unistd::Pid::from_raw(pid as i32);
            if nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// Removes the namespaces of earlier runs with this `tag` whose program is gone (killed, say),
/// killing whatever still runs inside them. Returns how many were removed.
pub fn remove_stale(tag: &str) -> anyhow::Result<usize> {
    let prefix = format!("smg-{tag}-");
    let entries = match std::fs::read_dir("/run/netns") {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).context("listing /run/netns"),
    };
    let mut stale: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if owner.is_some_and(|pid| !process_alive(pid)) {
            stale.push(name);
        }
    }
    // Pods before their node, so links go away with their namespaces in order.
    stale.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for ns in &stale {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        ip(&["netns", "del", ns])?;
        let _ = std::fs::remove_dir_all(etc_dir(ns));
    }
    Ok(stale.len())
}
