//! Starts and stops a real Kubernetes control plane on this machine: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler as processes, from binaries built by
//! `kube/build.sh`, with their PKI, kubeconfigs and data in one state directory.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::args::{self, certs, Layout, Ports};
use super::pki::{self, Files, Leaf};
use super::process::Component;
use super::{first_service_ip, kubeconfig};

/// How long a component has to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often readiness is checked while starting.
const READY_POLL: Duration = Duration::from_millis(200);

/// What to start, and where.
#[derive(Clone, Debug)]
pub struct Options {
    /// Holds the PKI, etcd's data, kubeconfigs and logs; reused by a later start.
    pub state: PathBuf,
    /// Holds `etcd`, `kube-apiserver`, `kube-controller-manager` and `kube-scheduler`.
    pub bin: PathBuf,
    /// Where the API server listens and what it advertises (default 127.0.0.1).
    pub address: Ipv4Addr,
    /// The Service CIDR (default [`super::SERVICE_CIDR`], the local cluster's).
    pub service_cidr: String,
    /// How long to wait for `/readyz` and the components' leader leases.
    pub ready_timeout: Duration,
}

impl Options {
    pub fn new(state: impl Into<PathBuf>, bin: impl Into<PathBuf>) -> Options {
        Options {
            state: state.into(),
            bin: bin.into(),
            address: Ipv4Addr::LOCALHOST,
            service_cidr: super::SERVICE_CIDR.into(),
            ready_timeout: Duration::from_secs(120),
        }
    }
}

/// A running control plane; stopped by [`ControlPlane::stop`], or killed when dropped.
pub struct ControlPlane {
    layout: Layout,
    /// In start order; stopped in reverse.
    components: Vec<Component>,
}

impl ControlPlane {
    /// Makes the PKI and kubeconfigs (keeping any from an earlier start), starts the four
    /// components and returns once the API server's `/readyz` answers `ok` and the controller
    /// manager and scheduler hold their leader leases. Blocks; call it from a thread without a
    /// Tokio runtime.
    pub fn start(options: &Options) -> anyhow::Result<ControlPlane> {
        let missing = super::missing_binaries(&options.bin);
        if !missing.is_empty() {
            anyhow::bail!(
                "the control plane's binaries are not built: {} (run kube/build.sh)",
                missing.join(", ")
            );
        }
        let layout = Layout {
            state: options.state.clone(),
            address: options.address,
            service_cidr: options.service_cidr.clone(),
            ports: free_ports(options.address)?,
        };
        let logs = layout.state.join("logs");
        private_dir(&layout.state)?;
        private_dir(&logs)?;
        pki::ensure(&layout.pki(), &leaves(&layout)?)?;
        write_kubeconfigs(&layout)?;

        let mut plane = ControlPlane {
            layout,
            components: Vec::new(),
        };
        let started = Instant::now();
        for (name, args) in [
            ("etcd", args::etcd(&plane.layout)),
            ("kube-apiserver", args::apiserver(&plane.layout)),
            (
                "kube-controller-manager",
                args::controller_manager(&plane.layout),
            ),
            ("kube-scheduler", args::scheduler(&plane.layout)),
        ] {
            private_dir(&plane.layout.component_dir(name))?;
            let log = logs.join(format!("{name}.log"));
            let component = Component::start(name, &options.bin.join(name), &args, log)?;
            plane.components.push(component);
        }
        plane.wait_ready(options.ready_timeout)?;
        tracing::info!(
            server = %plane.layout.apiserver_url(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "control plane ready"
        );
        Ok(plane)
    }

    /// The admin's kubeconfig (`<state>/kubeconfig`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.layout.kubeconfig()
    }

    /// The API server's URL.
    pub fn server(&self) -> String {
        self.layout.apiserver_url()
    }

    /// Each component's name and pid, in start order.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.components.iter().map(|c| (c.name, c.pid())).collect()
    }

    /// Stops every component (SIGTERM, then SIGKILL after a grace period), in reverse start
    /// order, and waits for each; stops all even if one fails, and reports the first failure.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let mut first = Ok(());
        while let Some(mut c) = self.components.pop() {
            let stopped = c.stop(STOP_GRACE);
            if first.is_ok() {
                first = stopped;
            }
        }
        first
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for the readiness checks")?;
        let kubeconfig = self.layout.kubeconfig();
        let deadline = Instant::now() + timeout;
        let mut last = anyhow::anyhow!("not checked yet");
        while Instant::now() < deadline {
            for c in &mut self.components {
                c.check_running()?;
            }
            match runtime.block_on(ready(&kubeconfig)) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(READY_POLL);
        }
        Err(last.context(format!(
            "the control plane was not ready after {timeout:?} (logs in {})",
            self.layout.state.join("logs").display()
        )))
    }
}

/// Ready: `/readyz` says `ok`, and kube-controller-manager and kube-scheduler each hold their
/// leader lease (so they are connected and running their loops).
async fn ready(kubeconfig: &Path) -> anyhow::Result<()> {
    let config = Kubeconfig::read_from(kubeconfig).context("reading the admin kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .context("loading the admin kubeconfig")?;
    let client = kube::Client::try_from(config).context("making a client")?;
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .context("making the /readyz request")?;
    let body = client.request_text(request).await.context("GET /readyz")?;
    if body.trim() != "ok" {
        anyhow::bail!("/readyz answered {body:?}");
    }
    let leases: kube::Api<Lease> = kube::Api::namespaced(client, "kube-system");
    for name in ["kube-controller-manager", "kube-scheduler"] {
        let held = leases
            .get_opt(name)
            .await
            .with_context(|| format!("reading the {name} lease"))?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .is_some();
        if !held {
            anyhow::bail!("{name} holds no leader lease yet");
        }
    }
    Ok(())
}

/// Creates `dir` (and its parents) if missing, readable by its owner only: it holds keys,
/// etcd's data or logs.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The certificates the components present and trust.
fn leaves(l: &Layout) -> anyhow::Result<Vec<Leaf>> {
    let loopback = Ipv4Addr::LOCALHOST.into();
    let mut etcd = Leaf::server(certs::ETCD, &["localhost"], &[loopback]);
    etcd.client = true; // also the peer's client certificate
    let mut apiserver_ips = vec![loopback, first_service_ip(&l.service_cidr)?.into()];
    if l.address != Ipv4Addr::LOCALHOST {
        apiserver_ips.push(l.address.into());
    }
    Ok(vec![
        etcd,
        Leaf::server(
            certs::APISERVER,
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            &apiserver_ips,
        ),
        Leaf::client(
            certs::APISERVER_ETCD_CLIENT,
            "kube-apiserver-etcd-client",
            &[],
        ),
        Leaf::client(certs::ADMIN, "admin", &["system:masters"]),
        Leaf::client(
            certs::CONTROLLER_MANAGER,
            "system:kube-controller-manager",
            &[],
        ),
        Leaf::client(certs::SCHEDULER, "system:kube-scheduler", &[]),
    ])
}

fn write_kubeconfigs(l: &Layout) -> anyhow::Result<()> {
    let pki = l.pki();
    for (path, user) in [
        (l.kubeconfig(), certs::ADMIN),
        (l.controller_manager_kubeconfig(), certs::CONTROLLER_MANAGER),
        (l.scheduler_kubeconfig(), certs::SCHEDULER),
    ] {
        let text = kubeconfig::render(
            &l.apiserver_url(),
            &pki.cert(Files::CA),
            &pki.cert(user),
            &pki.key(user),
        )?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Five distinct free ports: the API server's on `address`, the others on loopback. Another
/// process may take one before the component binds it; the component then exits and
/// [`ControlPlane::start`] reports it.
fn free_ports(address: Ipv4Addr) -> anyhow::Result<Ports> {
    let bind = |ip: Ipv4Addr| {
        TcpListener::bind((ip, 0)).with_context(|| format!("finding a free port on {ip}"))
    };
    // Held together so that the five differ.
    let held = [
        bind(Ipv4Addr::LOCALHOST)?,
        bind(Ipv4Addr::LOCALHOST)?,
        bind(address)?,
        bind(Ipv4Addr::LOCALHOST)?,
        bind(Ipv4Addr::LOCALHOST)?,
    ];
    let port = |i: usize| -> anyhow::Result<u16> {
        Ok(held[i].local_addr().context("reading a bound port")?.port())
    };
    Ok(Ports {
        etcd_client: port(0)?,
        etcd_peer: port(1)?,
        apiserver: port(2)?,
        controller_manager: port(3)?,
        scheduler: port(4)?,
    })
}
