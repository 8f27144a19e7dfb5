//! The process behind `smidge local`: it owns the [`Cluster`], reconciles it a few times a
//! second, and answers the CLI over a Unix socket in its state directory (one JSON request and
//! one JSON response per connection).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, Location, PodAction, Programs};
use crate::mesh::Exemption;
use crate::objects::Kind;
use crate::render;

/// The default state directory (root's; `--state-dir` or `SMIDGE_LOCAL_DIR` pick another).
pub const DEFAULT_STATE_DIR: &str = "/run/smidge-local";
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

/// The daemon's socket in a state directory.
pub fn socket_path(state: &Path) -> PathBuf {
    state.join("daemon.sock")
}

/// The daemon's pid file in a state directory.
pub fn pid_path(state: &Path) -> PathBuf {
    state.join("daemon.pid")
}

/// One request from the CLI.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// Files as (name, text).
    Apply {
        files: Vec<(String, String)>,
    },
    Delete {
        files: Vec<(String, String)>,
    },
    DeletePods {
        namespace: String,
        names: Vec<String>,
    },
    Get {
        kind: String,
        name: Option<String>,
        /// `None`: all namespaces.
        namespace: Option<String>,
        yaml: bool,
    },
    Pod {
        namespace: String,
        name: String,
        action: PodAction,
    },
    Locate {
        namespace: String,
        name: String,
    },
    /// Until every Deployment's rollout is complete.
    Wait {
        timeout_secs: u64,
    },
    Down,
}

/// The answer: text for stdout, whether it worked, and a location for `exec`/`logs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub out: String,
    pub location: Option<Location>,
}

impl Response {
    fn text(ok: bool, out: String) -> Response {
        Response {
            ok,
            out,
            location: None,
        }
    }
}

/// Sends one request to the daemon of `state`.
pub fn request(state: &Path, req: &Request) -> anyhow::Result<Response> {
    let path = socket_path(state);
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "no local cluster is running (nothing answers on {}): start one with `smidge local up`",
            path.display()
        )
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the daemon's answer")?;
    if answer.is_empty() {
        bail!("the local cluster's daemon closed the connection without answering");
    }
    serde_json::from_str(&answer).context("the daemon's answer")
}

/// The pid of a running daemon for `state`, if there is one.
pub fn running(state: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path(state))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let alive = crate::netns::process_alive(pid);
    (alive && request(state, &Request::Status).is_ok()).then_some(pid)
}

/// Runs the daemon until `down` or SIGTERM/SIGINT: starts the cluster, then serves requests.
/// Blocks those signals in every thread and takes them on one.
pub fn run(programs: Programs, state: &Path, userns: bool) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking signals")?;
    let exemption = if userns {
        crate::userns::prepare(state)?;
        Exemption::Mark
    } else {
        Exemption::Uid
    };
    let cluster = Cluster::start(programs, state, exemption)?;
    let cluster: Shared = Arc::new(Mutex::new(Some(cluster)));
    let socket = socket_path(state);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::write(pid_path(state), format!("{}\n", std::process::id()))?;
    tracing::info!(socket = %socket.display(), "local cluster up");

    let for_signals = cluster.clone();
    let state_dir = state.to_path_buf();
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            tracing::info!(signal = %sig, "stopping");
        }
        shutdown(&for_signals, &state_dir);
    });
    let for_reconcile = cluster.clone();
    std::thread::spawn(move || loop {
        if let Ok(mut guard) = for_reconcile.lock() {
            match guard.as_mut() {
                Some(c) => c.reconcile(),
                None => return,
            }
        }
        std::thread::sleep(RECONCILE_EVERY);
    });
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let cluster = cluster.clone();
        let state_dir = state.to_path_buf();
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, &cluster, &state_dir) {
                tracing::warn!(error = format!("{e:#}"), "a CLI request failed");
            }
        });
    }
    Ok(())
}

/// The cluster, shared by the request, reconcile and signal threads; `None` once shut down.
type Shared = Arc<Mutex<Option<Cluster>>>;

/// Stops everything and exits the process.
fn shutdown(cluster: &Shared, state: &Path) -> ! {
    let taken = match cluster.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(mut c) = taken {
        c.shutdown();
        // Dropping it removes the node's namespace.
        drop(c);
    }
    let _ = std::fs::remove_file(socket_path(state));
    let _ = std::fs::remove_file(pid_path(state));
    std::process::exit(0)
}

fn serve(conn: UnixStream, cluster: &Shared, state: &Path) -> anyhow::Result<()> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Down) => {
            answer(
                &conn,
                &Response::text(true, "local cluster stopped\n".into()),
            )?;
            shutdown(cluster, state);
        }
        Ok(Request::Wait { timeout_secs }) => wait(cluster, Duration::from_secs(timeout_secs)),
        Ok(req) => {
            let mut guard = cluster
                .lock()
                .map_err(|_| anyhow::anyhow!("the cluster's state is poisoned"))?;
            match guard.as_mut() {
                Some(c) => handle(c, req),
                None => Response::text(false, "error: the local cluster is shutting down\n".into()),
            }
        }
        Err(e) => Response::text(
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

fn wait(cluster: &Shared, timeout: Duration) -> Response {
    let deadline = Instant::now() + timeout;
    loop {
        let unready = match cluster.lock().as_deref() {
            Ok(Some(c)) => c.unready(),
            _ => {
                return Response::text(false, "error: the local cluster is shutting down\n".into())
            }
        };
        if unready.is_empty() {
            return Response::text(true, "every deployment is rolled out\n".into());
        }
        if Instant::now() > deadline {
            return Response::text(
                false,
                format!("error: timed out waiting for: {}\n", unready.join(", ")),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn handle(c: &mut Cluster, req: Request) -> Response {
    match req {
        Request::Status => Response::text(true, "running\n".into()),
        Request::Apply { files } => {
            let (out, ok) = c.apply(&files);
            c.reconcile();
            Response::text(ok, out)
        }
        Request::Delete { files } => {
            let (out, ok) = c.delete(&files);
            c.reconcile();
            Response::text(ok, out)
        }
        Request::DeletePods { namespace, names } => {
            let (out, ok) = c.delete_pods(&namespace, &names);
            c.reconcile();
            Response::text(ok, out)
        }
        Request::Get {
            kind,
            name,
            namespace,
            yaml,
        } => match get(c, &kind, name.as_deref(), namespace.as_deref(), yaml) {
            Ok(out) => Response::text(true, out),
            Err(e) => Response::text(false, format!("error: {e:#}\n")),
        },
        Request::Pod {
            namespace,
            name,
            action,
        } => match c.pod_action(&namespace, &name, action) {
            Ok(out) => Response::text(true, out + "\n"),
            Err(e) => Response::text(false, format!("error: {e:#}\n")),
        },
        Request::Locate { namespace, name } => match c.locate(&namespace, &name) {
            Ok(location) => Response {
                ok: true,
                out: String::new(),
                location: Some(location),
            },
            Err(e) => Response::text(false, format!("error: {e:#}\n")),
        },
        Request::Wait { .. } | Request::Down => Response::text(false, "error: not here\n".into()),
    }
}

/// What `get` may name: a stored kind, or one the cluster makes (pods, EndpointSlices).
enum GetKind {
    Stored(Kind),
    Pod,
    EndpointSlice,
    /// The SMI CRDs smidge installs, as the API server would show them once established.
    Crd,
}

fn get_kind(text: &str) -> Option<GetKind> {
    let t = text.to_ascii_lowercase();
    let t = t.split('.').next().unwrap_or(&t).to_string();
    Some(match t.as_str() {
        "pod" | "pods" | "po" => GetKind::Pod,
        "endpointslice" | "endpointslices" => GetKind::EndpointSlice,
        "customresourcedefinition" | "customresourcedefinitions" | "crd" | "crds" => GetKind::Crd,
        "namespace" | "namespaces" | "ns" => GetKind::Stored(Kind::Namespace),
        "serviceaccount" | "serviceaccounts" | "sa" => GetKind::Stored(Kind::ServiceAccount),
        "service" | "services" | "svc" => GetKind::Stored(Kind::Service),
        "deployment" | "deployments" | "deploy" => GetKind::Stored(Kind::Deployment),
        "httproutegroup" | "httproutegroups" | "htr" => GetKind::Stored(Kind::HttpRouteGroup),
        "tcproute" | "tcproutes" => GetKind::Stored(Kind::TcpRoute),
        "udproute" | "udproutes" => GetKind::Stored(Kind::UdpRoute),
        "traffictarget" | "traffictargets" | "tt" => GetKind::Stored(Kind::TrafficTarget),
        "trafficsplit" | "trafficsplits" | "ts" => GetKind::Stored(Kind::TrafficSplit),
        _ => return None,
    })
}

fn get(
    c: &mut Cluster,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    yaml: bool,
) -> anyhow::Result<String> {
    let Some(which) = get_kind(kind) else {
        bail!("the local cluster has no resource type {kind:?} (it has pods, endpointslices, customresourcedefinitions, namespaces, serviceaccounts, services, deployments, httproutegroups, tcproutes, udproutes, traffictargets, trafficsplits)");
    };
    let pods = c.pod_views();
    let ns_of = |v: &serde_json::Value| {
        v.pointer("/metadata/namespace")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name_of = |v: &serde_json::Value| {
        v.pointer("/metadata/name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let namespaced = !matches!(which, GetKind::Stored(Kind::Namespace) | GetKind::Crd);
    let objects: Vec<serde_json::Value> = match &which {
        GetKind::Pod => pods.iter().map(render::pod_object).collect(),
        GetKind::EndpointSlice => render::endpoint_slices(&c.store, &pods),
        GetKind::Crd => crds(),
        GetKind::Stored(Kind::Deployment) => c
            .store
            .list(Kind::Deployment, None)
            .map(|(k, s)| {
                render::deployment_object(&s.applied, &pods, c.failure(&k.namespace, &k.name))
            })
            .collect(),
        GetKind::Stored(k) => c
            .store
            .list(*k, None)
            .map(|(_, s)| s.applied.clone())
            .collect(),
    };
    let selected: Vec<serde_json::Value> = objects
        .into_iter()
        .filter(|o| !namespaced || namespace.is_none_or(|n| ns_of(o) == n))
        .filter(|o| name.is_none_or(|n| name_of(o) == n))
        .collect();
    if let (Some(n), true) = (name, selected.is_empty()) {
        bail!(
            "{kind} {n:?} not found{}",
            namespace
                .map(|ns| format!(" in namespace {ns}"))
                .unwrap_or_default()
        );
    }
    if yaml {
        return Ok(render::to_yaml(selected));
    }
    if selected.is_empty() {
        return Ok(format!(
            "No resources found{}.\n",
            namespace
                .map(|ns| format!(" in {ns} namespace"))
                .unwrap_or_default()
        ));
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    let with_ns = namespace.is_none() && namespaced;
    let header: Vec<&str> = match which {
        GetKind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "IP"],
        GetKind::EndpointSlice => vec!["NAME", "PORTS", "ENDPOINTS"],
        GetKind::Stored(Kind::Deployment) => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE"],
        GetKind::Stored(Kind::Service) => vec!["NAME", "CLUSTER-IP", "PORT(S)"],
        _ => vec!["NAME"],
    };
    for o in &selected {
        let field = |p: &str| {
            o.pointer(p)
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default()
        };
        let mut row = Vec::new();
        if with_ns {
            row.push(ns_of(o));
        }
        row.push(name_of(o));
        match which {
            GetKind::Pod => {
                let ready = field("/status/conditions/0/status") == "True";
                let restarts = field("/status/containerStatuses/0/restartCount");
                let state = o
                    .pointer("/status/containerStatuses/0/state")
                    .and_then(serde_json::Value::as_object)
                    .and_then(|m| m.keys().next().cloned())
                    .unwrap_or_else(|| "Running".into());
                row.push(if ready { "1/1".into() } else { "0/1".into() });
                row.push(state);
                row.push(if restarts.is_empty() {
                    "0".into()
                } else {
                    restarts
                });
                row.push(field("/status/podIP"));
            }
            GetKind::EndpointSlice => {
                let ports: Vec<String> = o["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["port"].to_string())
                    .collect();
                let eps: Vec<String> = o["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["conditions"]["ready"] == true)
                    .filter_map(|e| e["addresses"][0].as_str().map(str::to_string))
                    .collect();
                row.push(ports.join(","));
                row.push(if eps.is_empty() {
                    "<none>".into()
                } else {
                    eps.join(",")
                });
            }
            GetKind::Stored(Kind::Deployment) => {
                row.push(format!(
                    "{}/{}",
                    field("/status/readyReplicas"),
                    o.pointer("/spec/replicas")
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "1".into())
                ));
                row.push(field("/status/updatedReplicas"));
                row.push(field("/status/availableReplicas"));
            }
            GetKind::Stored(Kind::Service) => {
                let ports: Vec<String> = o
                    .pointer("/spec/ports")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                    .collect();
                row.push(field("/spec/clusterIP"));
                row.push(ports.join(","));
            }
            _ => {}
        }
        rows.push(row);
    }
    let mut header: Vec<String> = header.into_iter().map(str::to_string).collect();
    if with_ns {
        header.insert(0, "NAMESPACE".into());
    }
    Ok(table(&header, &rows))
}

/// The SMI CRDs with the status an API server gives them: names accepted, established.
fn crds() -> Vec<serde_json::Value> {
    smidge_controller::crds::all()
        .into_iter()
        .filter_map(|(_, crd)| serde_json::to_value(&crd).ok())
        .map(|mut v| {
            let names = v.pointer("/spec/names").cloned().unwrap_or_default();
            let versions: Vec<serde_json::Value> = v
                .pointer("/spec/versions")
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .filter(|ver| ver["storage"] == true)
                .map(|ver| ver["name"].clone())
                .collect();
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "status".into(),
                    serde_json::json!({
                        "acceptedNames": names,
                        "storedVersions": versions,
                        "conditions": [{"type": "Established", "status": "True"}],
                    }),
                );
            }
            v
        })
        .collect()
}

/// Columns padded to their widest cell, as kubectl prints them.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let mut out = String::new();
    for r in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}
