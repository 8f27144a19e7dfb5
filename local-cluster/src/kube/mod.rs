//! A real Kubernetes control plane for the local cluster (issue 12): etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler built from source by `kube/build.sh` and run as
//! processes. Pure parts: [`pki`] (the cluster CA and certificates), [`args`] (the command
//! lines), [`kubeconfig`]; I/O: [`process`] (one component), [`control_plane`] (all of them).

pub mod args;
pub mod cluster;
pub mod control_plane;
pub mod daemon;
pub mod kubeconfig;
pub mod pki;
pub mod process;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub use control_plane::{ControlPlane, Options};

/// The local cluster's Service CIDR: [`crate::objects::SERVICE_CIDR_START`] is in it, and the
/// API server allocates ClusterIPs (its own `kubernetes` Service's first) from it.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The control plane's processes, in start order.
pub const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The programs `kube/build.sh` builds into the bin directory: the components and kubectl.
pub const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// The go.mod files that pin the versions `kube/build.sh` builds (and keys its cache by).
const CONTROL_PLANE_GO_MOD: &str = include_str!("../../../kube/control-plane/go.mod");
const ETCD_GO_MOD: &str = include_str!("../../../kube/etcd/go.mod");

/// The version `go_mod` requires of `module`, e.g. `v1.37.2`. Pure.
pub fn pinned(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("require ").unwrap_or(line);
        let mut words = line.split_whitespace();
        (words.next() == Some(module))
            .then(|| words.next())
            .flatten()
            .filter(|v| v.starts_with('v'))
            .map(str::to_string)
    })
}

/// Where `kube/build.sh` puts the binaries of the pinned versions:
/// `${SMIDGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smidge}/control-plane/<k8s>-<etcd>/bin`.
pub fn cached_bin_dir() -> anyhow::Result<PathBuf> {
    let k8s = pinned(CONTROL_PLANE_GO_MOD, "k8s.io/kubernetes")
        .context("kube/control-plane/go.mod pins no k8s.io/kubernetes")?;
    let etcd = pinned(ETCD_GO_MOD, "go.etcd.io/etcd/server/v3")
        .context("kube/etcd/go.mod pins no go.etcd.io/etcd/server/v3")?;
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let cache = match var("SMIDGE_CACHE_DIR") {
        Some(dir) => dir,
        None => var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .context("neither SMIDGE_CACHE_DIR, XDG_CACHE_HOME nor HOME is set")?
            .join("smidge"),
    };
    Ok(cache
        .join("control-plane")
        .join(format!("{k8s}-{etcd}"))
        .join("bin"))
}

/// Those of `names` (e.g. [`BINARIES`]) not in `bin`.
pub fn missing_binaries(bin: &Path, names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .copied()
        .filter(|b| !bin.join(b).is_file())
        .collect()
}

/// The first address of an IPv4 CIDR: the `kubernetes` Service's ClusterIP. Pure.
pub fn first_service_ip(cidr: &str) -> anyhow::Result<Ipv4Addr> {
    let bad = || format!("the Service CIDR {cidr:?} is not an IPv4 a.b.c.d/n with n in 1..=30");
    let (ip, len) = cidr.split_once('/').with_context(bad)?;
    let ip: Ipv4Addr = ip.parse().with_context(bad)?;
    let len: u32 = len.parse().with_context(bad)?;
    if !(1..=30).contains(&len) {
        anyhow::bail!(bad());
    }
    let network = u32::from(ip) & (u32::MAX << (32 - len));
    Ok(Ipv4Addr::from(network + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_versions_are_read_from_the_go_mod_files() {
        assert_eq!(
            pinned(CONTROL_PLANE_GO_MOD, "k8s.io/kubernetes").as_deref(),
            Some("v1.37.2")
        );
        assert!(pinned(ETCD_GO_MOD, "go.etcd.io/etcd/server/v3")
            .is_some_and(|v| v.starts_with("v3.6.")));
        // A replace line names the module too, but a require line is what pins it.
        assert_eq!(
            pinned(
                "replace (\n\tk8s.io/api => k8s.io/api v0.37.2\n)\n",
                "k8s.io/api"
            ),
            None
        );
    }

    #[test]
    fn the_service_cidr_holds_the_local_clusters_cluster_ips() {
        assert_eq!(
            first_service_ip(SERVICE_CIDR).unwrap(),
            Ipv4Addr::new(10, 96, 0, 1)
        );
        let start = u32::from(crate::objects::SERVICE_CIDR_START);
        assert_eq!(start & 0xffff_0000, u32::from(Ipv4Addr::new(10, 96, 0, 0)));
        assert_eq!(
            first_service_ip("10.96.7.9/24").unwrap(),
            Ipv4Addr::new(10, 96, 7, 1)
        );
        for bad in [
            "10.96.0.0",
            "10.96.0.0/0",
            "10.96.0.0/31",
            "fd00::/64",
            "x/16",
        ] {
            let err = first_service_ip(bad).unwrap_err().to_string();
            assert!(err.contains("Service CIDR"), "{err}");
        }
    }
}
