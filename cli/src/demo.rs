//! `smidge demo`: a small shop on this machine. A storefront calls `checkout`, which a
//! TrafficSplit moves from v1 to v2 in three steps (90/10, 50/50, 0/100); an intruder with
//! another ServiceAccount calls it too and is refused. Every piece is real: network namespaces,
//! the controller, a proxy with its iptables rules per pod.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use smidge_local_cluster::apps::{self, H1};
use smidge_local_cluster::mesh::{
    admin_get, in_pod, spawn_in_pod, Binaries, Mesh, PodSpec, ADMIN_PRIVATE_PORT,
};
use smidge_local_cluster::netns;

const STOREFRONT: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 10);
const V1: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 11);
const V2: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 12);
const INTRUDER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 13);
const CHECKOUT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 96, 0, 20)), 80);
const TAG: &str = "demo";

/// Demo settings.
pub struct Options {
    pub requests: usize,
    pub connections: usize,
    pub keep: bool,
}

/// The shop, with the split weights of one step.
fn manifests(v1: u32, v2: u32) -> String {
    let mut text = String::from(
        r#"apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {smidge.io/inject: enabled}}
"#,
    );
    for sa in ["storefront", "checkout", "intruder"] {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: shop}}\n"
        ));
    }
    for (pod, sa, ip) in [
        ("storefront", "storefront", STOREFRONT),
        ("intruder", "intruder", INTRUDER),
        ("checkout-v1", "checkout", V1),
        ("checkout-v2", "checkout", V2),
    ] {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: shop}}\n\
             spec: {{serviceAccountName: {sa}, containers: [{{name: app, image: app}}]}}\n\
             status: {{podIP: {ip}}}\n"
        ));
    }
    for (svc, ip, pods) in [
        (
            "checkout",
            "10.96.0.20",
            &[("checkout-v1", V1), ("checkout-v2", V2)][..],
        ),
        ("checkout-v1", "10.96.0.21", &[("checkout-v1", V1)][..]),
        ("checkout-v2", "10.96.0.22", &[("checkout-v2", V2)][..]),
    ] {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: shop}}\n\
             spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {svc}-1, namespace: shop, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n"
        ));
        for (pod, ip) in pods {
            text.push_str(&format!(
                "- {{addresses: [{ip}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {pod}}}}}\n"
            ));
        }
    }
    text.push_str(&format!(
        r#"---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: checkout-canary, namespace: shop}}
spec:
  service: checkout
  backends:
  - {{service: checkout-v1, weight: {v1}}}
  - {{service: checkout-v2, weight: {v2}}}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {{name: checkout-api, namespace: shop}}
spec:
  matches:
  - {{name: read, pathRegex: /, methods: [GET]}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {{name: storefront-to-checkout, namespace: shop}}
spec:
  destination: {{kind: ServiceAccount, name: checkout, namespace: shop}}
  sources: [{{kind: ServiceAccount, name: storefront, namespace: shop}}]
  rules: [{{kind: HTTPRouteGroup, name: checkout-api, matches: [read]}}]
"#
    ));
    text
}

/// What one caller saw in one step.
#[derive(Default)]
struct Tally {
    /// Per answering backend (empty for refusals): latencies of its 2xx answers, and failures.
    by_backend: std::collections::BTreeMap<String, (Vec<Duration>, usize)>,
    denied: usize,
    deny_reason: String,
}

impl Tally {
    fn total(&self) -> usize {
        self.by_backend
            .values()
            .map(|(ok, failed)| ok.len() + failed)
            .sum::<usize>()
            + self.denied
    }
}

async fn traffic(connections: usize, requests: usize) -> anyhow::Result<Tally> {
    let per_conn = requests.div_ceil(connections.max(1));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut h1 = H1::connect(CHECKOUT).await?;
            for _ in 0..per_conn {
                let started = Instant::now();
                let a = h1.get("checkout.shop.svc.cluster.local", "/").await?;
                let took = started.elapsed();
                if a.status.as_u16() == 403 {
                    tally.denied += 1;
                    if let Some(r) = a.headers.get("smidge-denied").and_then(|v| v.to_str().ok()) {
                        tally.deny_reason = r.to_string();
                    }
                    continue;
                }
                let entry = tally.by_backend.entry(a.backend().to_string()).or_default();
                if a.status.is_success() {
                    entry.0.push(took);
                } else {
                    entry.1 += 1;
                }
            }
            anyhow::Ok(tally)
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await.context("traffic task")??;
        all.denied += t.denied;
        if !t.deny_reason.is_empty() {
            all.deny_reason = t.deny_reason;
        }
        for (backend, (ok, failed)) in t.by_backend {
            let e = all.by_backend.entry(backend).or_default();
            e.0.extend(ok);
            e.1 += failed;
        }
    }
    Ok(all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn print_tally(caller: &str, tally: &mut Tally) {
    let total = tally.total().max(1);
    for (backend, (ok, failed)) in tally.by_backend.iter_mut() {
        ok.sort();
        let n = ok.len() + *failed;
        println!(
            "  {caller:<11} {backend:<13} {n:>8} {:>7.1}% {:>8.1}% {:>10} {:>10} {:>7}",
            n as f64 * 100.0 / total as f64,
            ok.len() as f64 * 100.0 / n.max(1) as f64,
            ms(percentile(ok, 0.5)),
            ms(percentile(ok, 0.99)),
            0
        );
    }
    if tally.denied > 0 {
        println!(
            "  {caller:<11} {:<13} {:>8} {:>8} {:>8.1}% {:>10} {:>10} {:>7}  403 smidge-denied: {}",
            "(refused)", tally.denied, "-", 0.0, "-", "-", tally.denied, tally.deny_reason
        );
    }
}

/// The weights the storefront's proxy holds now for `checkout`, by backend name.
async fn proxy_weights() -> anyhow::Result<Vec<(String, u64)>> {
    let (code, body) = admin_get(ADMIN_PRIVATE_PORT, "/views").await?;
    if code != 200 {
        bail!("/views answered {code}");
    }
    let json: serde_json::Value = serde_json::from_str(&body)?;
    let key = format!("outbound:{CHECKOUT}");
    let views = json["views"].as_array().context("views")?;
    let Some(view) = views.iter().find(|v| v["key"] == key.as_str()) else {
        return Ok(Vec::new());
    };
    let out = &view["view"]["Outbound"];
    let backends = out["backends"].as_array().cloned().unwrap_or_default();
    let routes = out["routes"].as_array().cloned().unwrap_or_default();
    let mut weights = Vec::new();
    if let Some(route) = routes.first() {
        for t in route["targets"].as_array().cloned().unwrap_or_default() {
            let b = t["backend"].as_u64().unwrap_or(u64::MAX) as usize;
            let name = backends
                .get(b)
                .and_then(|x| x["name"].as_str())
                .unwrap_or("?")
                .to_string();
            weights.push((name, t["weight"].as_u64().unwrap_or(0)));
        }
    }
    Ok(weights)
}

fn same_split(held: &[(String, u64)], v1: u32, v2: u32) -> bool {
    let w = |name: &str| {
        held.iter()
            .find(|(n, _)| n.ends_with(name))
            .map_or(0, |(_, w)| *w)
    };
    let (h1, h2) = (w("checkout-v1"), w("checkout-v2"));
    h1 + h2 > 0 && h1 * u64::from(v2) == h2 * u64::from(v1)
}

/// Runs the demo; returns when it is done (or, with `keep`, when interrupted).
pub fn run(options: Options) -> anyhow::Result<()> {
    preflight()?;
    let removed = netns::remove_stale(TAG)?;
    if removed > 0 {
        println!(
            "removed {removed} network namespaces left by an earlier demo that did not finish"
        );
    }
    let bins = Binaries::beside_current_exe()?;
    println!("starting the shop: controller, 4 pods, a proxy with iptables rules in each ...");
    let pods = [
        PodSpec {
            name: "storefront",
            ip: STOREFRONT,
            service_account: "storefront",
        },
        PodSpec {
            name: "intruder",
            ip: INTRUDER,
            service_account: "intruder",
        },
        PodSpec {
            name: "checkout-v1",
            ip: V1,
            service_account: "checkout",
        },
        PodSpec {
            name: "checkout-v2",
            ip: V2,
            service_account: "checkout",
        },
    ];
    let mesh = Mesh::start(&bins, TAG, &manifests(90, 10), "shop", &pods, &[])?;
    spawn_in_pod(&mesh.pod("checkout-v1").pod, || {
        apps::backend("checkout-v1")
    })?;
    spawn_in_pod(&mesh.pod("checkout-v2").pod, || {
        apps::backend("checkout-v2")
    })?;
    let storefront = mesh.pod("storefront").pod.clone();
    let intruder = mesh.pod("intruder").pod.clone();
    println!(
        "ready. storefront and intruder call http://{CHECKOUT}/ (the checkout Service);\n\
         TrafficTarget admits ServiceAccount storefront for GET /*, nobody else.\n"
    );

    let steps = [(90, 10), (50, 50), (0, 100)];
    for (i, (v1, v2)) in steps.into_iter().enumerate() {
        if i > 0 {
            mesh.write_manifests(&manifests(v1, v2))?;
        }
        let applied = Instant::now();
        let deadline = applied + Duration::from_secs(10);
        loop {
            let held = in_pod(&storefront, proxy_weights)??;
            if same_split(&held, v1, v2) {
                break;
            }
            if held.is_empty() {
                // The proxy subscribes to a Service when its app first calls it.
                in_pod(&storefront, || async {
                    H1::connect(CHECKOUT).await?.get("checkout", "/").await
                })??;
            }
            if Instant::now() > deadline {
                bail!("the storefront's proxy did not get the {v1}/{v2} split within 10 s (it holds {held:?})\n{}", mesh.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let propagation = if i > 0 {
            format!(
                " (in the storefront's proxy {} after the file changed)",
                ms(applied.elapsed())
            )
        } else {
            String::new()
        };
        println!(
            "step {}/{}: TrafficSplit checkout-canary {v1}/{v2}{propagation}",
            i + 1,
            steps.len(),
        );
        let (requests, connections) = (options.requests, options.connections);
        let mut shop = in_pod(&storefront, move || traffic(connections, requests))??;
        let mut intr = in_pod(&intruder, || traffic(1, 50))??;
        println!(
            "  {:<11} {:<13} {:>8} {:>8} {:>9} {:>10} {:>10} {:>7}",
            "caller", "backend", "requests", "share", "success", "p50", "p99", "denied"
        );
        print_tally("storefront", &mut shop);
        print_tally("intruder", &mut intr);
        println!();
    }
    if options.keep {
        println!(
            "the shop keeps running until you press Ctrl-C. Inside a pod:\n  \
             ip netns exec {} curl -s http://checkout.shop.svc.cluster.local/\n  \
             ip netns exec {} curl -s localhost:4192/metrics",
            mesh.pod("storefront").pod.netns,
            mesh.pod("storefront").pod.netns
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(tokio::signal::ctrl_c())?;
    }
    println!("cleaning up (processes, namespaces, rules) ...");
    drop(mesh);
    Ok(())
}

fn preflight() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("smidge demo makes network namespaces and iptables rules: run it as root (unprivileged user namespaces are not supported yet)");
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables-restore", "iptables"),
        ("setpriv", "util-linux"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            bail!("{tool} is not installed: apt-get install -y {package}");
        }
    }
    Ok(())
}
