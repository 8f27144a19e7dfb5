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
    startup: Startup,
}

/// How long starting took, from launching etcd.
#[derive(Clone, Copy, Debug, Default)]
pub struct Startup {
    /// Until kube-apiserver's `/readyz` said `ok`.
    pub apiserver_ready: Duration,
    /// Until kube-controller-manager and kube-scheduler also held their leases.
    pub all_ready: Duration,
}

impl ControlPlane {
    /// Makes the PKI and kubeconfigs (keeping any from an earlier start), starts etcd and
    /// kube-apiserver, then, once `/readyz` answers `ok`, kube-controller-manager and
    /// kube-scheduler, and returns when both hold their leader leases. Fails, killing what it
    /// started, if a component exits or [`Options::ready_timeout`] passes. Blocks; call it from a
    /// thread without a Tokio runtime.
    pub fn start(options: &Options) -> anyhow::Result<ControlPlane> {
        let missing = super::missing_binaries(&options.bin, &super::COMPONENTS);
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
            startup: Startup::default(),
        };
        let started = Instant::now();
        let deadline = started + options.ready_timeout;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for the readiness checks")?;
        let client = runtime.block_on(client(&plane.layout.kubeconfig()))?;
        // kube-controller-manager and kube-scheduler exit if the API server is up but its RBAC
        // roles are not yet, so they start once /readyz (which waits for those) says ok.
        for (name, args) in [
            ("etcd", args::etcd(&plane.layout)),
            ("kube-apiserver", args::apiserver(&plane.layout)),
        ] {
            plane.launch(name, &options.bin, &args, &logs)?;
        }
        plane.wait_until(&runtime, deadline, || apiserver_ready(client.clone()))?;
        let apiserver_ready_after = started.elapsed();
        for (name, args) in [
            (
                "kube-controller-manager",
                args::controller_manager(&plane.layout),
            ),
            ("kube-scheduler", args::scheduler(&plane.layout)),
        ] {
            plane.launch(name, &options.bin, &args, &logs)?;
        }
        plane.wait_until(&runtime, deadline, || leaders_ready(client.clone()))?;
        plane.startup = Startup {
            apiserver_ready: apiserver_ready_after,
            all_ready: started.elapsed(),
        };
        tracing::info!(
            server = %plane.layout.apiserver_url(),
            apiserver_ready_ms = plane.startup.apiserver_ready.as_millis() as u64,
            all_ready_ms = plane.startup.all_ready.as_millis() as u64,
            "control plane ready"
        );
        Ok(plane)
    }

    /// How long starting took.
    pub fn startup(&self) -> Startup {
        self.startup
    }

    /// The admin's kubeconfig (`<state>/kubeconfig`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.layout.kubeconfig()
    }

    /// Where its files and ports are.
    pub fn layout(&self) -> &Layout {
        &self.layout
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

    fn launch(
        &mut self,
        name: &'static str,
        bin: &Path,
        args: &[String],
        logs: &Path,
    ) -> anyhow::Result<()> {
        private_dir(&self.layout.component_dir(name))?;
        let log = logs.join(format!("{name}.log"));
        let component = Component::start(name, &bin.join(name), args, log)?;
        self.components.push(component);
        Ok(())
    }

    /// Polls `check` until it passes, failing at `deadline` or as soon as a component exits.
    fn wait_until<F, Fut>(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        deadline: Instant,
        check: F,
    ) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        loop {
            for c in &mut self.components {
                c.check_running()?;
            }
            let last = match runtime.block_on(check()) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(last.context(format!(
                    "the control plane was not ready in time (logs in {})",
                    self.layout.state.join("logs").display()
                )));
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

/// A client with the credentials of `kubeconfig` (the admin's, the node's, …).
pub async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("making a client")
}

/// `/readyz` says `ok` (etcd reachable, bootstrap roles and priority classes in place).
async fn apiserver_ready(client: kube::Client) -> anyhow::Result<()> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .context("making the /readyz request")?;
    let body = client.request_text(request).await.context("GET /readyz")?;
    if body.trim() != "ok" {
        anyhow::bail!("/readyz answered {body:?}");
    }
    Ok(())
}

/// kube-controller-manager and kube-scheduler each hold their leader lease: they are connected
/// and running their loops.
async fn leaders_ready(client: kube::Client) -> anyhow::Result<()> {
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
        Leaf::client(
            certs::APISERVER_KUBELET_CLIENT,
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        ),
        Leaf::client(
            certs::NODE,
            &format!("system:node:{}", args::NODE_NAME),
            &["system:nodes"],
        ),
        Leaf::server(
            certs::NODE_SERVING,
            &[args::NODE_NAME, "localhost"],
            &[l.address.into(), loopback],
        ),
        Leaf::client(certs::KUBE_PROXY, "system:kube-proxy", &[]),
    ])
}

fn write_kubeconfigs(l: &Layout) -> anyhow::Result<()> {
    let pki = l.pki();
    for (path, user) in [
        (l.kubeconfig(), certs::ADMIN),
        (l.controller_manager_kubeconfig(), certs::CONTROLLER_MANAGER),
        (l.scheduler_kubeconfig(), certs::SCHEDULER),
        (l.node_kubeconfig(), certs::NODE),
        (l.kube_proxy_kubeconfig(), certs::KUBE_PROXY),
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
