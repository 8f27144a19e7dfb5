//! The daemon behind `smidge local up --kubernetes`: owns the [`KubeCluster`], restarts the
//! node agent when it dies, and answers the CLI on the same socket and protocol as the embedded
//! cluster's daemon. Objects are managed with kubectl; what only the embedded cluster does
//! (apply, get, …) is answered with where the kubeconfig is.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::cluster::{KubeCluster, AGENT_NAMESPACE, AGENT_POD};
use crate::cluster::Programs;
use crate::daemon::{pid_path, socket_path, Request, Response};

type Shared = Arc<Mutex<Option<KubeCluster>>>;

/// Runs until `down` or SIGTERM/SIGINT.
pub fn run(programs: Programs, state: &Path, bin: &Path) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking signals")?;
    let cluster = KubeCluster::start(programs, state, bin)?;
    let shared: Shared = Arc::new(Mutex::new(Some(cluster)));
    let socket = socket_path(state);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::write(pid_path(state), format!("{}\n", std::process::id()))?;
    tracing::info!(socket = %socket.display(), "kubernetes local cluster up");

    let for_signals = shared.clone();
    let state_dir = state.to_path_buf();
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            tracing::info!(signal = %sig, "stopping");
        }
        shutdown(&for_signals, &state_dir);
    });
    let for_supervise = shared.clone();
    std::thread::spawn(move || loop {
        if let Ok(mut guard) = for_supervise.lock() {
            match guard.as_mut() {
                Some(c) => c.supervise(),
                None => return,
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = shared.clone();
        let state_dir = state.to_path_buf();
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, &shared, &state_dir) {
                tracing::warn!(error = format!("{e:#}"), "a CLI request failed");
            }
        });
    }
    Ok(())
}

fn shutdown(shared: &Shared, state: &Path) -> ! {
    let taken = match shared.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(mut c) = taken {
        c.shutdown();
        drop(c);
    }
    let _ = std::fs::remove_file(socket_path(state));
    let _ = std::fs::remove_file(pid_path(state));
    std::process::exit(0)
}

fn serve(conn: UnixStream, shared: &Shared, state: &Path) -> anyhow::Result<()> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let text = |ok, out: String| Response {
        ok,
        out,
        location: None,
    };
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Down) => {
            answer(&conn, &text(true, "local cluster stopped\n".into()))?;
            shutdown(shared, state);
        }
        Ok(Request::Status) => text(true, "running kubernetes\n".into()),
        Ok(Request::Pod {
            namespace,
            name,
            action,
        }) if namespace == AGENT_NAMESPACE && name == AGENT_POD => {
            let mut guard = shared
                .lock()
                .map_err(|_| anyhow::anyhow!("the cluster's state is poisoned"))?;
            match guard.as_mut().map(|c| c.agent_action(action)) {
                Some(Ok(out)) => text(true, out + "\n"),
                Some(Err(e)) => text(false, format!("error: {e:#}\n")),
                None => text(false, "error: the local cluster is shutting down\n".into()),
            }
        }
        Ok(_) => text(
            false,
            format!(
                "error: this local cluster runs Kubernetes: use kubectl --kubeconfig {} (the node agent is {AGENT_NAMESPACE}/{AGENT_POD} for kill/stop/start)\n",
                kubeconfig_path(state).display()
            ),
        ),
        Err(e) => text(
            false,
            format!("error: a request the daemon does not understand: {e}\n"),
        ),
    };
    answer(&conn, &response)
}

fn answer(mut conn: &UnixStream, response: &Response) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec(response)?;
    text.push(b'\n');
    conn.write_all(&text)?;
    Ok(())
}

/// The admin kubeconfig of the cluster in `state` (`smidge local kubeconfig` prints it).
pub fn kubeconfig_path(state: &Path) -> PathBuf {
    state.join("kubeconfig")
}
