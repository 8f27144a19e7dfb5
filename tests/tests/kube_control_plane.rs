//! A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler built by `kube/build.sh`) started and stopped by
//! `smidge_local_cluster::kube`: it serves kubectl, runs Deployments' controllers, enforces RBAC,
//! leaves no process behind, and restarts on its state.
//!
//! Builds the control plane first when it is missing (`kube/build.sh`); `SMIDGE_SKIP_KUBE` set
//! skips instead, with a message.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;
use smidge_local_cluster::kube::{ControlPlane, Options, COMPONENTS};

/// How long the controllers get to turn a Deployment into Pods.
const CONTROLLERS_TIMEOUT: Duration = Duration::from_secs(90);

use smidge_e2e::kube::{binaries, processes_naming, Kubectl};

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn owner_kind_and_name(object: &Value) -> (String, String) {
    let owner = &object["metadata"]["ownerReferences"][0];
    (
        owner["kind"].as_str().unwrap_or_default().into(),
        owner["name"].as_str().unwrap_or_default().into(),
    )
}

#[test]
fn the_control_plane_serves_kubectl_runs_controllers_and_enforces_rbac() -> anyhow::Result<()> {
    let Some(bin) = binaries()? else {
        return Ok(());
    };
    let state = tempfile::tempdir()?;
    let started = Instant::now();
    let plane = ControlPlane::start(&Options::new(state.path(), &bin))?;
    let startup = plane.startup();
    eprintln!(
        "kube-apiserver /readyz ok after {:?}; controller manager and scheduler leading after {:?}; \
         start returned after {:?}",
        startup.apiserver_ready,
        startup.all_ready,
        started.elapsed()
    );
    let pids = plane.pids();
    assert_eq!(pids.iter().map(|(n, _)| *n).collect::<Vec<_>>(), COMPONENTS);
    assert_eq!(plane.kubeconfig(), state.path().join("kubeconfig"));
    let kubectl = Kubectl {
        program: bin.join("kubectl"),
        kubeconfig: plane.kubeconfig(),
    };

    assert_eq!(kubectl.ok(&["get", "--raw", "/readyz"])?.trim(), "ok");

    // kube-controller-manager: Deployment → ReplicaSet → Pods (Pending: there is no node).
    kubectl.ok(&["create", "namespace", "shop"])?;
    kubectl.ok(&[
        "-n",
        "shop",
        "create",
        "deployment",
        "web",
        "--image=registry.invalid/web:1",
        "--replicas=2",
    ])?;
    let deadline = Instant::now() + CONTROLLERS_TIMEOUT;
    let pods = loop {
        let pods = kubectl.items(&["-n", "shop", "get", "pods", "-l", "app=web"])?;
        if pods.len() == 2 {
            break pods;
        }
        if Instant::now() > deadline {
            bail!(
                "{} pods of 2 after {CONTROLLERS_TIMEOUT:?}; events: {}",
                pods.len(),
                kubectl.ok(&["-n", "shop", "get", "events"])?
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let sets = kubectl.items(&["-n", "shop", "get", "replicasets", "-l", "app=web"])?;
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(
        owner_kind_and_name(&sets[0]),
        ("Deployment".into(), "web".into())
    );
    let set_name = sets[0]["metadata"]["name"].as_str().unwrap_or_default();
    for pod in &pods {
        assert_eq!(
            owner_kind_and_name(pod),
            ("ReplicaSet".into(), set_name.into())
        );
        assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
        assert!(pod["spec"]["nodeName"].is_null(), "{pod}");
    }

    // RBAC is on: a ServiceAccount may not create Pods; the admin (system:masters) may.
    let denied = kubectl.run(&[
        "auth",
        "can-i",
        "create",
        "pods",
        "-n",
        "shop",
        "--as=system:serviceaccount:shop:default",
    ])?;
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no");
    assert!(!denied.status.success());
    assert_eq!(
        kubectl
            .ok(&["auth", "can-i", "create", "pods", "-n", "shop"])?
            .trim(),
        "yes"
    );

    for (name, pid) in &pids {
        eprintln!("{name}: pid {pid}, RSS {} KiB", rss_kib(*pid).unwrap_or(0));
    }
    assert!(!processes_naming(state.path()).is_empty());
    plane.stop()?;
    assert_eq!(processes_naming(state.path()), []);

    // A restart on the same state keeps the CA (the admin's certificate still works) and
    // etcd's data (the Deployment is still there).
    let ca = std::fs::read(state.path().join("pki/ca.crt"))?;
    let plane = ControlPlane::start(&Options::new(state.path(), &bin))?;
    assert_eq!(std::fs::read(state.path().join("pki/ca.crt"))?, ca);
    assert_eq!(
        kubectl
            .ok(&["-n", "shop", "get", "deployment", "web", "-o", "name"])?
            .trim(),
        "deployment.apps/web"
    );
    plane.stop()?;
    assert_eq!(processes_naming(state.path()), []);
    Ok(())
}
