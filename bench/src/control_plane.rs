//! The control plane at scale: the real controller on a generated mesh, and simulated proxies
//! that speak the real protocol over TCP (Hello, Subscribe, Ack). Measures how long a
//! TrafficSplit edit on disk takes to reach every affected proxy, how long all proxies take to
//! resync after the controller is killed and restarted, the controller's memory, and the size
//! of a one-endpoint view and of an endpoint-add delta on the wire.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use smidge_protocol::{
    encode, ClientMessage, FrameCodec, ProxyId, ServerMessage, ViewKey, ViewUpdate,
    PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::mesh::{self, Shape};
use crate::report::{Figure, Report};

/// The scenario's size.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub shape: Shape,
    pub proxies: u32,
    pub subscriptions: u32,
}

impl Scale {
    /// The scale: 10,000 services, 50,000 endpoints, 1,000 proxies on 10 services each.
    pub fn full() -> Scale {
        Scale {
            shape: Shape {
                services: 10_000,
                endpoints_per_service: 5,
            },
            proxies: 1_000,
            subscriptions: 10,
        }
    }

    /// A tenth of it, for a run under a minute.
    pub fn quick() -> Scale {
        Scale {
            shape: Shape {
                services: 1_000,
                endpoints_per_service: 5,
            },
            proxies: 100,
            subscriptions: 10,
        }
    }
}

/// The controller process.
struct Controller {
    child: Child,
}

impl Controller {
    /// Starts the controller; returns once it listens (it may still be reading the manifests).
    fn start(bin: &Path, manifests: &Path, listen: SocketAddr) -> anyhow::Result<Controller> {
        let mut child = Command::new(bin)
            .args(["--provider", "file", "--manifests"])
            .arg(manifests)
            .arg("--listen")
            .arg(listen.to_string())
            .args(["--admin", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                "warn,smidge_controller=info,smidge_controller::provider=debug",
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("controller stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // The controller's log, for a look after a surprising figure.
        let log_path = manifests.with_file_name("controller.log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("controller listening") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(120))
            .context("the controller did not start listening within 120 s")?;
        Ok(Controller { child })
    }

    fn rss(&self) -> anyhow::Result<(f64, f64)> {
        crate::report::rss_mib(self.child.id())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a simulated proxy saw: a view (key, version, whether a delta, encoded size) on its
/// `session`-th connection.
#[derive(Debug)]
struct Seen {
    proxy: u32,
    session: u32,
    key: ViewKey,
    version: u64,
    delta: bool,
    /// The controller said nothing answers to the key (it had not read the manifests yet).
    absent: bool,
    bytes: usize,
    at: Instant,
}

/// One simulated proxy: connects (again, after a loss), subscribes to `keys`, acks every view.
async fn proxy(id: u32, addr: SocketAddr, keys: Vec<ViewKey>, seen: mpsc::UnboundedSender<Seen>) {
    let mut session = 0;
    loop {
        let Ok(stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        session += 1;
        let mut conn: Framed<TcpStream, FrameCodec<ServerMessage, ClientMessage>> =
            Framed::new(stream, FrameCodec::default());
        let hello = ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            proxy: ProxyId {
                namespace: mesh::NAMESPACE.into(),
                pod: format!("client-{id}"),
                service_account: "client".into(),
            },
            token: None,
        };
        if conn.send(hello).await.is_err() {
            continue;
        }
        let mut subscribed = false;
        while let Some(Ok(msg)) = conn.next().await {
            match msg {
                ServerMessage::Welcome { .. } if !subscribed => {
                    subscribed = true;
                    for k in &keys {
                        if conn
                            .feed(ClientMessage::Subscribe(k.clone()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    if conn.flush().await.is_err() {
                        break;
                    }
                }
                ServerMessage::View {
                    key,
                    version,
                    update,
                } => {
                    let at = Instant::now();
                    let delta = matches!(update, ViewUpdate::Delta { .. });
                    let absent = matches!(update, ViewUpdate::Absent);
                    let msg = ServerMessage::View {
                        key: key.clone(),
                        version,
                        update,
                    };
                    let bytes = encode(&msg).map(|b| b.len()).unwrap_or(0);
                    let _ = seen.send(Seen {
                        proxy: id,
                        session,
                        key: key.clone(),
                        version,
                        delta,
                        absent,
                        bytes,
                        at,
                    });
                    if conn
                        .send(ClientMessage::Ack { key, version })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Views every proxy holds: (proxy, key) → (session, version).
#[derive(Default)]
struct Table {
    views: HashMap<(u32, ViewKey), (u32, u64)>,
}

impl Table {
    /// Notes a view a proxy holds; an absent answer is not a view.
    fn record(&mut self, s: &Seen) {
        if s.absent {
            self.views.remove(&(s.proxy, s.key.clone()));
        } else {
            self.views
                .insert((s.proxy, s.key.clone()), (s.session, s.version));
        }
    }

    /// How many proxies hold all their views from session `session` or later.
    fn synced(&self, proxies: u32, per: u32, session: u32) -> u32 {
        let mut count: HashMap<u32, u32> = HashMap::new();
        for ((p, _), (s, _)) in &self.views {
            if *s >= session {
                *count.entry(*p).or_default() += 1;
            }
        }
        (0..proxies)
            .filter(|p| count.get(p).copied().unwrap_or(0) >= per)
            .count() as u32
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Drains `rx` into `table`, calling `seen` with each view, until it says done or `limit`
/// passes.
async fn until(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    table: &mut Table,
    limit: Duration,
    mut seen: impl FnMut(&Seen, &Table) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => {
                table.record(&s);
                if seen(&s, table) {
                    return Ok(());
                }
            }
            Ok(None) => bail!("every simulated proxy stopped"),
            Err(_) => bail!("not done within {limit:?}"),
        }
    }
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Runs the scenario; `controller` is the smidge-controller binary.
pub fn run(controller: &Path, scale: Scale) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(scenario(controller, scale))
}

async fn scenario(bin: &Path, scale: Scale) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    // SMIDGE_BENCH_KEEP=1 keeps the manifests and the controller's log.
    let dir_path = dir.path().to_path_buf();
    if std::env::var_os("SMIDGE_BENCH_KEEP").is_some() {
        eprintln!("  keeping {}", dir_path.display());
    }
    let manifests: PathBuf = dir.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    let shape = scale.shape;
    // The last service has one endpoint, in a file of its own, for the wire-size figures.
    let probe = shape.services - 1;
    let generated = Instant::now();
    let body = mesh::workloads(Shape {
        services: shape.services - 1,
        ..shape
    });
    std::fs::write(manifests.join("workloads.yaml"), &body)?;
    let probe_file = manifests.join("probe.yaml");
    let probe_service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{probe}, namespace: {}}}\nspec: {{clusterIP: {}, ports: [{{name: http, port: {}, targetPort: 8080}}]}}\n",
        mesh::NAMESPACE,
        mesh::cluster_ip(probe),
        mesh::PORT
    );
    std::fs::write(
        &probe_file,
        format!("{probe_service}{}", mesh::endpoint_slice(shape, probe, 1)),
    )?;
    let split_file = manifests.join("split.yaml");
    std::fs::write(&split_file, mesh::split(50, 50))?;
    eprintln!(
        "  mesh: {} services, {} endpoints ({:.1} MB of YAML, made in {:?})",
        shape.services,
        shape.services * shape.endpoints_per_service - shape.endpoints_per_service + 1,
        body.len() as f64 / 1e6,
        generated.elapsed()
    );

    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let started = Instant::now();
    let mut controller = Controller::start(bin, &manifests, listen)?;
    let startup = started.elapsed();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let others = shape.services - 4;
    for p in 0..scale.proxies {
        // Everyone uses the split's apex, plus services spread over the mesh.
        let mut keys = vec![ViewKey::Outbound(mesh::service_addr(0))];
        for k in 1..scale.subscriptions {
            keys.push(ViewKey::Outbound(mesh::service_addr(
                3 + (p * 9 + k) % others,
            )));
        }
        tokio::spawn(proxy(p, listen, keys, tx.clone()));
    }
    let probe_key = ViewKey::Outbound(mesh::service_addr(probe));
    tokio::spawn(proxy(
        scale.proxies,
        listen,
        vec![probe_key.clone()],
        tx.clone(),
    ));
    let all = scale.proxies;
    let per = scale.subscriptions;
    let mut table = Table::default();
    let sync_started = Instant::now();
    let mut one_endpoint_view = 0;
    until(&mut rx, &mut table, Duration::from_secs(120), |s, t| {
        if s.key == probe_key && !s.delta && !s.absent {
            one_endpoint_view = s.bytes;
        }
        one_endpoint_view > 0 && t.synced(all, per, 1) == all
    })
    .await
    .context("the first sync")?;
    let first_sync = sync_started.elapsed();
    let (rss, anon) = controller.rss()?;

    // A TrafficSplit edit on disk → every proxy holds the new view of the apex.
    let apex = ViewKey::Outbound(mesh::service_addr(0));
    let before: HashMap<u32, u64> = (0..all)
        .filter_map(|p| table.views.get(&(p, apex.clone())).map(|(_, v)| (p, *v)))
        .collect();
    let edited = Instant::now();
    write_atomically(&split_file, &mesh::split(90, 10))?;
    if std::env::var_os("SMIDGE_BENCH_KEEP").is_some() {
        eprintln!("  split edited at {:?}", std::time::SystemTime::now());
    }
    let mut latencies: HashMap<u32, Duration> = HashMap::new();
    until(&mut rx, &mut table, Duration::from_secs(60), |s, _| {
        if s.key == apex && s.version > before.get(&s.proxy).copied().unwrap_or(0) {
            latencies.entry(s.proxy).or_insert(s.at - edited);
        }
        latencies.len() as u32 == all
    })
    .await
    .context("the split edit reaching every proxy")?;
    let mut sorted: Vec<Duration> = latencies.into_values().collect();
    sorted.sort();

    // An endpoint added to the one-endpoint service → a delta.
    let probe_version = table
        .views
        .get(&(scale.proxies, probe_key.clone()))
        .map(|(_, v)| *v)
        .unwrap_or(0);
    let mut delta_bytes = 0;
    let mut delta_was_delta = false;
    write_atomically(
        &probe_file,
        &format!("{probe_service}{}", mesh::endpoint_slice(shape, probe, 2)),
    )?;
    until(&mut rx, &mut table, Duration::from_secs(60), |s, _| {
        if s.key == probe_key && !s.absent && s.version > probe_version {
            delta_bytes = s.bytes;
            delta_was_delta = s.delta;
        }
        delta_bytes > 0
    })
    .await
    .context("the endpoint-add delta")?;

    // Kill the controller; start it again; every proxy resyncs.
    controller.kill();
    let restarted = Instant::now();
    let controller = Controller::start(bin, &manifests, listen)?;
    until(&mut rx, &mut table, Duration::from_secs(120), |_, t| {
        t.synced(all, per, 2) == all
    })
    .await
    .context("the resync after a restart")?;
    let resync = restarted.elapsed();
    let (rss_after, _) = controller.rss()?;

    let mut report = Report::new("control-plane");
    report.note(format!(
        "{} services, {} endpoints, {} proxies × {} subscriptions; controller started in {:.2} s, first sync {:.2} s",
        shape.services,
        (shape.services - 1) * shape.endpoints_per_service + 1,
        all,
        per,
        startup.as_secs_f64(),
        first_sync.as_secs_f64()
    ));
    report.push(Figure::new(
        "split change → all affected proxies, p50",
        sorted_ms(percentile(&sorted, 0.5)),
        "ms",
    ));
    report.push(
        Figure::new(
            "split change → all affected proxies, p99",
            sorted_ms(percentile(&sorted, 0.99)),
            "ms",
        )
        .target("≤ 250 ms at 1,000 proxies"),
    );
    report.push(Figure::new(
        "split change → all affected proxies, max",
        sorted_ms(sorted.last().copied().unwrap_or_default()),
        "ms",
    ));
    report.push(
        Figure::new(
            "restart → every proxy resynced",
            resync.as_secs_f64() * 1000.0,
            "ms",
        )
        .peer("OSM: over 2 min to settle at 1,000 pods"),
    );
    report.push(
        Figure::new("controller VmRSS after sync", rss, "MiB").target("≤ 200 MiB at full scale"),
    );
    report.push(Figure::new("controller RssAnon after sync", anon, "MiB"));
    report.push(Figure::new(
        "controller VmRSS after resync",
        rss_after,
        "MiB",
    ));
    report.push(
        Figure::new(
            "one-endpoint view on the wire",
            one_endpoint_view as f64,
            "bytes",
        )
        .target("≤ 200 bytes")
        .peer("xDS: ~350 lines of YAML for one service with one pod"),
    );
    report.push(
        Figure::new(
            if delta_was_delta {
                "endpoint-add delta on the wire"
            } else {
                "endpoint-add update on the wire (sent whole, not as a delta)"
            },
            delta_bytes as f64,
            "bytes",
        )
        .target("≤ 64 bytes"),
    );
    if std::env::var_os("SMIDGE_BENCH_KEEP").is_some() {
        std::mem::forget(dir);
    }
    Ok(report)
}

fn sorted_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
