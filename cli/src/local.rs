//! `smidge local`: a kubectl-like front to the local cluster's daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use smidge_local_cluster::cluster::{PodAction, Programs};
use smidge_local_cluster::daemon::{self, Request, Response};

#[derive(Subcommand)]
pub enum LocalCommand {
    /// Start the cluster (node, controller) and return once the control plane is ready.
    Up {
        /// Run a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
        /// kube-scheduler; built from source by kube/build.sh the first time) with this machine
        /// as its one Node; manage it with kubectl (`smidge local kubeconfig`).
        #[arg(long)]
        kubernetes: bool,
    },
    /// Print the path of the admin kubeconfig of a `--kubernetes` cluster.
    Kubeconfig,
    /// Create or update objects from files (or directories of .yaml/.yml/.json; `-` is stdin).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Then wait until every Deployment is rolled out.
        #[arg(long)]
        wait: bool,
    },
    /// Delete the objects files name, or pods by name (their Deployment replaces them).
    Delete {
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// `pod NAME...`
        args: Vec<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// List objects, or print them as YAML.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// `yaml` prints the objects (with status).
        #[arg(short, long)]
        output: Option<String>,
    },
    /// Run a command inside a pod's network namespace, as its app would (its names, its proxy).
    Exec {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a pod's log: `app` (default), `proxy`, `init`, or another container's name.
    Logs {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        pod: String,
        container: Option<String>,
    },
    /// SIGKILL a pod's processes; they come back after the crash back-off.
    Kill {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        pod: String,
    },
    /// Stop a pod's processes and keep them stopped.
    Stop {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        pod: String,
    },
    /// Start a stopped pod.
    Start {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        pod: String,
    },
    /// Restart a pod's processes now.
    Restart {
        #[arg(short, long, default_value = "default")]
        namespace: String,
        pod: String,
    },
    /// Wait until every Deployment is rolled out (all replicas of the current template ready).
    Wait {
        #[arg(long, default_value = "120")]
        timeout_secs: u64,
    },
    /// Stop everything and remove every namespace, link and rule the cluster made.
    Down,
    /// The daemon itself (started by `up`).
    #[command(hide = true)]
    Daemon {
        /// Inside a user namespace (started by an ordinary user).
        #[arg(long)]
        userns: bool,
        /// Run Kubernetes, from the control-plane binaries in this directory.
        #[arg(long)]
        kubernetes_bin: Option<PathBuf>,
    },
}

/// Where the cluster keeps its state: `--state-dir`, `SMIDGE_LOCAL_DIR`, else /run/smidge-local
/// for root and `$XDG_STATE_HOME/smidge-local` (`~/.local/state/smidge-local`) for others.
pub fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    let dir = flag
        .or_else(|| std::env::var_os("SMIDGE_LOCAL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| {
            if is_root() {
                PathBuf::from(daemon::DEFAULT_STATE_DIR)
            } else {
                std::env::var_os("XDG_STATE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state"))
                    })
                    .unwrap_or_else(std::env::temp_dir)
                    .join("smidge-local")
            }
        });
    std::path::absolute(&dir).unwrap_or(dir)
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

pub fn run(state: &Path, command: LocalCommand) -> anyhow::Result<ExitCode> {
    match command {
        LocalCommand::Up { kubernetes } => up(state, kubernetes),
        LocalCommand::Kubeconfig => {
            let path = smidge_local_cluster::kube::daemon::kubeconfig_path(state);
            if !path.is_file() {
                bail!(
                    "no kubeconfig at {}: start a cluster with `smidge local up --kubernetes`",
                    path.display()
                );
            }
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Daemon {
            userns,
            kubernetes_bin,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_ansi(false)
                .init();
            match kubernetes_bin {
                Some(bin) => smidge_local_cluster::kube::daemon::run(
                    Programs::beside_current_exe()?,
                    state,
                    &bin,
                )?,
                None => daemon::run(Programs::beside_current_exe()?, state, userns)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Apply { files, wait } => {
            let files = read_files(&files)?;
            let r = daemon::request(state, &Request::Apply { files })?;
            if !r.ok || !wait {
                return Ok(print(r));
            }
            print!("{}", r.out);
            Ok(print(daemon::request(
                state,
                &Request::Wait { timeout_secs: 120 },
            )?))
        }
        LocalCommand::Delete {
            files,
            args,
            namespace,
        } => {
            if !files.is_empty() {
                if !args.is_empty() {
                    bail!("give either -f FILE or `pod NAME...`, not both");
                }
                let files = read_files(&files)?;
                return Ok(print(daemon::request(state, &Request::Delete { files })?));
            }
            match args.split_first() {
                Some((kind, names))
                    if matches!(kind.as_str(), "pod" | "pods" | "po") && !names.is_empty() =>
                {
                    Ok(print(daemon::request(
                        state,
                        &Request::DeletePods {
                            namespace,
                            names: names.to_vec(),
                        },
                    )?))
                }
                _ => bail!("delete takes -f FILE|DIR, or `pod NAME...` (other objects: delete them with -f)"),
            }
        }
        LocalCommand::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
        } => {
            let yaml = match output.as_deref() {
                None | Some("wide") => false,
                Some("yaml") => true,
                Some(other) => bail!("-o {other}: only yaml is supported"),
            };
            Ok(print(daemon::request(
                state,
                &Request::Get {
                    kind,
                    name,
                    namespace: (!all_namespaces).then_some(namespace),
                    yaml,
                },
            )?))
        }
        LocalCommand::Exec {
            namespace,
            pod,
            command,
        } => {
            let location = locate(state, &namespace, &pod)?;
            let (program, args) = command.split_first().context("no command given")?;
            let mut cmd = if is_root() {
                Command::new("ip")
            } else {
                // The pod's namespace is known only inside the daemon's namespaces.
                let pid = daemon_pid(state)?;
                let mut c = Command::new("nsenter");
                c.arg(format!("--target={pid}")).args([
                    "--user",
                    "--mount",
                    "--preserve-credentials",
                    "--",
                    "ip",
                ]);
                c
            };
            let status = cmd
                .args(["netns", "exec", &location.netns])
                .arg(program)
                .args(args)
                .env("HOSTNAME", &pod)
                .status()
                .context("running ip netns exec")?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        LocalCommand::Logs {
            namespace,
            pod,
            container,
        } => {
            let location = locate(state, &namespace, &pod)?;
            let file = if pod == smidge_local_cluster::cluster::CONTROLLER_POD {
                "controller.log".to_string()
            } else {
                format!("{}.log", container.as_deref().unwrap_or("app"))
            };
            let path = location.log_dir.join(&file);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "pod {namespace}/{pod} has no log {file} ({})",
                    path.display()
                )
            })?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        LocalCommand::Kill { namespace, pod } => pod_action(state, namespace, pod, PodAction::Kill),
        LocalCommand::Stop { namespace, pod } => pod_action(state, namespace, pod, PodAction::Stop),
        LocalCommand::Start { namespace, pod } => {
            pod_action(state, namespace, pod, PodAction::Start)
        }
        LocalCommand::Restart { namespace, pod } => {
            pod_action(state, namespace, pod, PodAction::Restart)
        }
        LocalCommand::Wait { timeout_secs } => Ok(print(daemon::request(
            state,
            &Request::Wait { timeout_secs },
        )?)),
        LocalCommand::Down => {
            let Some(pid) = daemon::running(state) else {
                let cleaned = clean_stale(state)?;
                // A crashed daemon left its keys; nothing needs them once it is gone.
                smidge_local_cluster::cluster::remove_identity(state);
                println!("no local cluster is running{cleaned}");
                return Ok(ExitCode::SUCCESS);
            };
            let r = daemon::request(state, &Request::Down)?;
            // Return once the daemon has removed everything and exited.
            let deadline = Instant::now() + Duration::from_secs(30);
            while smidge_local_cluster::netns::process_alive(pid) {
                if Instant::now() > deadline {
                    bail!("the daemon did not exit within 30 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(print(r))
        }
    }
}

fn print(r: Response) -> ExitCode {
    if r.ok {
        print!("{}", r.out);
        ExitCode::SUCCESS
    } else {
        eprint!("{}", r.out);
        ExitCode::from(1)
    }
}

fn pod_action(
    state: &Path,
    namespace: String,
    name: String,
    action: PodAction,
) -> anyhow::Result<ExitCode> {
    Ok(print(daemon::request(
        state,
        &Request::Pod {
            namespace,
            name,
            action,
        },
    )?))
}

fn locate(
    state: &Path,
    namespace: &str,
    pod: &str,
) -> anyhow::Result<smidge_local_cluster::cluster::Location> {
    let r = daemon::request(
        state,
        &Request::Locate {
            namespace: namespace.into(),
            name: pod.into(),
        },
    )?;
    match r.location {
        Some(l) if r.ok => Ok(l),
        _ => bail!("{}", r.out.trim_start_matches("error: ").trim_end()),
    }
}

/// The running daemon's pid, from its pid file.
fn daemon_pid(state: &Path) -> anyhow::Result<u32> {
    daemon::running(state).context("no local cluster is running: start one with `smidge local up`")
}

/// Removes what an earlier daemon for `state` left after a crash or SIGKILL: the processes it
/// started (its session) and, as root, the namespaces. Says what it removed.
fn clean_stale(state: &Path) -> anyhow::Result<String> {
    let mut said = String::new();
    if let Some(pid) = std::fs::read_to_string(daemon::pid_path(state))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    {
        let killed = smidge_local_cluster::netns::kill_session(pid);
        if killed > 0 {
            said.push_str(&format!(
                " (stopped {killed} process(es) a previous run left behind)"
            ));
        }
    }
    if is_root() {
        let stale = smidge_local_cluster::cluster::remove_stale()?
            + smidge_local_cluster::netns::remove_stale(smidge_local_cluster::kube::cluster::TAG)?;
        if stale > 0 {
            said.push_str(&format!(
                " (removed {stale} network namespace(s) a previous run left behind)"
            ));
        }
    }
    Ok(said)
}

fn up(state: &Path, kubernetes: bool) -> anyhow::Result<ExitCode> {
    let userns = !is_root();
    if kubernetes && userns {
        bail!("`smidge local up --kubernetes` needs root (its node agent makes network and mount namespaces)");
    }
    if userns {
        if let Err(problem) = smidge_local_cluster::userns::check() {
            bail!(
                "the local cluster needs root, or unprivileged user namespaces for an ordinary user: {problem}"
            );
        }
    }
    for tool in [
        "ip",
        "iptables-restore",
        "setpriv",
        "setsid",
        "unshare",
        "nsenter",
    ] {
        if which(tool).is_none() {
            bail!(
                "{tool} is not installed (install the iproute2, iptables and util-linux packages)"
            );
        }
    }
    if let Some(pid) = daemon::running(state) {
        eprintln!(
            "a local cluster is already running (daemon pid {pid}, state in {}); `smidge local down` stops it",
            state.display()
        );
        return Ok(ExitCode::from(1));
    }
    // A previous run that crashed or was killed: its processes, namespaces and files go first.
    let cleaned = clean_stale(state)?;
    if !cleaned.is_empty() {
        eprintln!("cleaned up:{cleaned}");
    }
    let _ = std::fs::remove_file(daemon::socket_path(state));
    let _ = std::fs::remove_file(daemon::pid_path(state));
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let kubernetes_bin = if kubernetes {
        Some(control_plane_binaries()?)
    } else {
        None
    };
    let log_path = state.join("daemon.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe()?;
    // `setsid`: its own session, so the daemon outlives this command and its terminal.
    let mut cmd = Command::new("setsid");
    if userns {
        cmd.args([
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "--net",
            "--",
        ]);
    }
    cmd.arg(exe)
        .arg("local")
        .arg("--state-dir")
        .arg(state)
        .arg("daemon");
    if userns {
        cmd.arg("--userns");
    }
    if let Some(bin) = &kubernetes_bin {
        cmd.arg("--kubernetes-bin").arg(bin);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = cmd.spawn().context("starting the daemon")?;
    // A control plane takes a few seconds more than the embedded cluster to come up.
    let wait = if kubernetes { 180 } else { 60 };
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        if daemon::request(state, &Request::Status).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the daemon exited ({status}); its log ({}):\n{}",
                log_path.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the local cluster did not come up within {wait} s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if kubernetes {
        let kubeconfig = smidge_local_cluster::kube::daemon::kubeconfig_path(state);
        println!(
            "kubernetes local cluster up (daemon pid {}, node {} Ready, state and logs in {})",
            child.id(),
            smidge_local_cluster::kube::args::NODE_NAME,
            state.display()
        );
        println!(
            "next: export KUBECONFIG={}   kubectl get nodes   smidge local down",
            kubeconfig.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "local cluster up (daemon pid {}, controller at {}:{}, state and logs in {})",
        child.id(),
        smidge_local_cluster::mesh::GATEWAY,
        smidge_local_cluster::mesh::CONTROLLER_PORT,
        state.display()
    );
    println!("next: smidge local apply -f <file>   smidge local get pods -A   smidge local down");
    Ok(ExitCode::SUCCESS)
}

/// The control plane's binaries, built by `kube/build.sh` first if they are missing (minutes
/// the first time; its progress shows).
fn control_plane_binaries() -> anyhow::Result<PathBuf> {
    use smidge_local_cluster::kube;
    let bin = match std::env::var_os("SMIDGE_KUBE_BIN").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => kube::cached_bin_dir()?,
    };
    if kube::missing_binaries(&bin, &kube::COMPONENTS).is_empty() {
        return Ok(bin);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/build.sh");
    if !script.is_file() {
        bail!(
            "the control plane's binaries are not in {} and {} (which builds them) is not here: \
             run kube/build.sh from smidge's repository, or set SMIDGE_KUBE_BIN",
            bin.display(),
            script.display()
        );
    }
    eprintln!(
        "building the Kubernetes control plane from source (the first time takes minutes): {}",
        script.display()
    );
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    let missing = kube::missing_binaries(&bin, &kube::COMPONENTS);
    if !missing.is_empty() {
        bail!(
            "{} ran but {} are not in {}",
            script.display(),
            missing.join(", "),
            bin.display()
        );
    }
    Ok(bin)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(tool))
            .find(|p| p.exists())
    })
}

/// Reads files and directories (their .yaml/.yml/.json files, sorted, recursively); `-` is stdin.
fn read_files(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            out.push(("<stdin>".to_string(), text));
            continue;
        }
        let files = smidge_controller::lint::expand(std::slice::from_ref(p))
            .with_context(|| format!("reading {}", p.display()))?;
        for f in files {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            out.push((f.display().to_string(), text));
        }
    }
    Ok(out)
}
