//! The controller's runtime: identity bootstrap, one task per source turning it into index
//! events, one apply loop feeding the index (and through it the push server), the admin
//! endpoint's readiness (every source's first complete read), and shutdown.

pub mod identity;
pub mod memory;
pub mod sources;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use smidge_controller::admin::{self, Status};
use smidge_controller::compile::MeshConfig;
use smidge_controller::diagnose::{self, Scope};
use smidge_controller::provider::{self, Batch, Report, Severity, Sink};
use smidge_controller::push::{registry::Registry, server};
use smidge_protocol::DefaultPolicy;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use sources::Sources;

/// Where objects come from.
#[derive(Clone, Debug)]
pub enum Provider {
    /// A directory of Kubernetes YAML.
    File(PathBuf),
    /// The Kubernetes API: one watch per kind.
    Kubernetes,
}

/// The webhooks (CRD conversion, injection): where they listen and the names on their
/// certificate.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub listen: SocketAddr,
    pub names: Vec<String>,
    /// The certificate from this directory (tls.crt, tls.key; cert-manager), reloaded on change;
    /// then the controller leaves every caBundle alone.
    pub cert_dir: Option<PathBuf>,
    /// The injector's settings; `None`: `/inject` allows every pod unchanged.
    pub inject: Option<smidge_controller::inject::Settings>,
    /// This replica's name, on the injector's Events.
    pub instance: Option<String>,
}

/// The status writer: this replica's Lease identity and the Lease's namespace.
#[derive(Clone, Debug)]
pub struct StatusSettings {
    pub identity: String,
    pub namespace: String,
}

/// Everything the runtime needs, from the flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub webhook: Option<Webhook>,
    pub status: Option<StatusSettings>,
    pub provider: Provider,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub max_unauthenticated: usize,
    pub default_policy: DefaultPolicy,
    pub identity: identity::Settings,
}

type Tasks = JoinSet<anyhow::Result<()>>;

/// Runs the controller until a task fails or a signal asks it to stop.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    memory::raise_open_file_limit();
    let kubernetes = matches!(config.provider, Provider::Kubernetes);
    let client = if kubernetes || config.identity.needs_kubernetes() {
        Some(
            kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API")?,
        )
    } else {
        None
    };
    let secured = identity::bootstrap(&config.identity, client.as_ref()).await?;
    if let Provider::File(dir) = &config.provider {
        if !dir.is_dir() {
            anyhow::bail!("--manifests {}: not a directory", dir.display());
        }
    }

    let first_version = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let registry = Arc::new(Mutex::new(Registry::new(
        MeshConfig {
            default_policy: config.default_policy,
        },
        first_version,
    )));
    let status = Arc::new(Mutex::new(Status::default()));
    let push = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the push listener on {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin)
        .await
        .with_context(|| format!("binding the admin listener on {}", config.admin))?;
    tracing::info!(push = %push.local_addr()?, admin = %admin_listener.local_addr()?, provider = ?config.provider, "controller listening");

    let mut tasks = Tasks::new();
    if let Some(webhook) = &config.webhook {
        spawn_webhook(
            webhook,
            secured.as_deref(),
            client.as_ref(),
            &status,
            &mut tasks,
        )
        .await?;
    }
    if let Some(task) =
        identity::trust_anchor_task(&config.identity, client.as_ref(), secured.as_deref())?
    {
        tasks.spawn(async move {
            task.await;
            Ok(())
        });
    }
    let writer = match (&config.status, &client) {
        (Some(settings), Some(client)) => {
            let mut status_config = smidge_controller::status::Config::new(&settings.identity);
            status_config
                .lease
                .namespace
                .clone_from(&settings.namespace);
            let (snapshots, rx) = tokio::sync::watch::channel(Arc::new(
                smidge_controller::status::Snapshot::default(),
            ));
            let writer =
                smidge_controller::status::StatusWriter::spawn(client.clone(), status_config, rx);
            Some((writer, snapshots))
        }
        _ => None,
    };
    let (tx, rx) = mpsc::channel(16);
    let names = spawn_sources(&config.provider, client.as_ref(), &mut tasks, &tx)?;
    drop(tx);
    spawn_servers(
        &config,
        &mut tasks,
        push,
        admin_listener,
        &registry,
        secured,
        &status,
    );
    let (writer, snapshots) = match writer {
        Some((w, s)) => (Some(w), Some(s)),
        None => (None, None),
    };
    let result = apply_loop(
        rx,
        Sources::new(names),
        &registry,
        &status,
        snapshots.as_ref(),
        &mut tasks,
    )
    .await;
    if let Some(writer) = writer {
        // Gives the Lease up, so another replica takes over at once.
        writer.shutdown().await;
    }
    result
}

/// The webhook server (conversion and injection) and, unless cert-manager provides the
/// certificate, the task that keeps the caBundles at the identity anchor.
async fn spawn_webhook(
    webhook: &Webhook,
    secured: Option<&server::Secured>,
    client: Option<&kube::Client>,
    status: &Arc<Mutex<Status>>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    use smidge_controller::webhook;
    let tls = match (&webhook.cert_dir, secured) {
        (Some(dir), _) => {
            let certs = webhook::cert_dir::CertDir::load(dir)
                .with_context(|| format!("--webhook-cert-dir {}", dir.display()))?;
            let config = certs.server_config();
            tasks.spawn(async move {
                certs.watch(std::time::Duration::from_secs(10)).await;
                Ok(())
            });
            config
        }
        (None, Some(secured)) => webhook::serving_cert(&secured.authority, &webhook.names)
            .context("the webhook's certificate")?,
        (None, None) => anyhow::bail!("--webhook-listen needs trust material (--identity-dir or --identity-secret) or --webhook-cert-dir for its certificate"),
    };
    let injector = match (&webhook.inject, secured) {
        (Some(settings), Some(secured)) => Some(Arc::new(webhook::inject::Injector::new(
            settings.clone(),
            secured.authority.anchor_pem.clone(),
            client.cloned(),
            webhook.instance.clone(),
        ))),
        (Some(_), None) => anyhow::bail!("--inject-config needs trust material (--identity-dir or --identity-secret): proxies get its anchor"),
        (None, _) => {
            tracing::warn!("no --inject-config: the injector is off; /inject leaves every pod unchanged");
            None
        }
    };
    let listener = TcpListener::bind(webhook.listen)
        .await
        .with_context(|| format!("binding the webhook server on {}", webhook.listen))?;
    tracing::info!(webhook = %listener.local_addr()?, injector = injector.is_some(), "webhook server listening");
    // The admin endpoint's /webhook-cert dials it to show the chain it serves.
    if let (Ok(mut s), Some(name)) = (status.lock(), webhook.names.first()) {
        s.webhook = Some((listener.local_addr()?, name.clone()));
    }
    tasks.spawn(async move {
        webhook::serve_with(listener, tls, injector)
            .await
            .context("webhook server")
    });
    if let (Some(client), Some(secured), None) = (client, secured, &webhook.cert_dir) {
        // Every replica keeps the caBundles; each writes only when one differs.
        let (client, anchor) = (client.clone(), secured.authority.anchor_pem.clone());
        tasks.spawn(async move {
            webhook::maintain_ca_bundle(client, anchor, std::time::Duration::from_secs(300)).await;
            Ok(())
        });
    }
    Ok(())
}

/// How often, at most, the status writer gets a new snapshot (computing one diagnoses the whole
/// index).
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Publishes the index's conditions, and `Accepted=False` for the objects the sources refused
/// (`reports`), to the status writer.
fn publish_status(
    registry: &Arc<Mutex<Registry>>,
    reports: &[Report],
    snapshots: &tokio::sync::watch::Sender<Arc<smidge_controller::status::Snapshot>>,
) {
    let refused = smidge_controller::status::refused(reports);
    let snapshot = tokio::task::block_in_place(|| {
        registry
            .lock()
            .ok()
            .map(|r| smidge_controller::status::snapshot(r.index(), &refused, |_| None))
    });
    if let Some(s) = snapshot {
        snapshots.send_replace(Arc::new(s));
    }
}

/// Starts one task per source; returns their names, by source number.
fn spawn_sources(
    provider: &Provider,
    client: Option<&kube::Client>,
    tasks: &mut Tasks,
    tx: &mpsc::Sender<(usize, Batch)>,
) -> anyhow::Result<Vec<String>> {
    match (provider, client) {
        (Provider::File(dir), _) => {
            let name = format!("file {}", dir.display());
            let (dir, sink) = (dir.clone(), Sink::new(0, tx.clone()));
            tasks.spawn(async move {
                provider::file::run(dir, sink)
                    .await
                    .context("file provider")
            });
            Ok(vec![name])
        }
        (Provider::Kubernetes, Some(client)) => {
            let mut names = Vec::new();
            for (i, watched) in provider::kube::kinds().into_iter().enumerate() {
                let name = format!("{} watch", watched.kind);
                let (client, sink, what) = (client.clone(), Sink::new(i, tx.clone()), name.clone());
                tasks.spawn(async move {
                    provider::kube::run(client, watched, sink)
                        .await
                        .context(what)
                });
                names.push(name);
            }
            Ok(names)
        }
        (Provider::Kubernetes, None) => anyhow::bail!("the kubernetes provider needs a client"),
    }
}

/// The push server, the admin endpoint and the memory trimmer.
fn spawn_servers(
    config: &Config,
    tasks: &mut Tasks,
    push: TcpListener,
    admin_listener: TcpListener,
    registry: &Arc<Mutex<Registry>>,
    secured: Option<Arc<server::Secured>>,
    status: &Arc<Mutex<Status>>,
) {
    let churn = Arc::new(server::Churn::default());
    let limits = server::Limits {
        max_unauthenticated: config.max_unauthenticated.max(1),
    };
    let (reg, ch) = (registry.clone(), churn.clone());
    tasks.spawn(async move {
        server::serve(push, reg, secured, limits, ch)
            .await
            .context("push server")
    });
    tasks.spawn(async move {
        memory::trim_after_bursts(&churn).await;
        Ok(())
    });
    let (st, reg) = (status.clone(), registry.clone());
    tasks.spawn(async move {
        admin::serve(admin_listener, st, reg)
            .await
            .context("admin server")
    });
}

/// Feeds every source's batches into the index until a task ends or a signal arrives.
async fn apply_loop(
    mut rx: mpsc::Receiver<(usize, Batch)>,
    mut sources: Sources,
    registry: &Arc<Mutex<Registry>>,
    status: &Arc<Mutex<Status>>,
    snapshots: Option<&tokio::sync::watch::Sender<Arc<smidge_controller::status::Snapshot>>>,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    let mut shown: Vec<Report> = Vec::new();
    // Status snapshots: at most one per STATUS_EVERY, after changes.
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let mut status_dirty = false;
    // One signal listener for the whole loop: one made anew per iteration misses a SIGTERM
    // that arrives while a batch is applied (deleting the pod sends its watch event at the same
    // moment), and the controller is then killed at the end of the grace period.
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = status_tick.tick(), if snapshots.is_some() && status_dirty => {
                if let Some(s) = snapshots {
                    publish_status(registry, &sources.reports(), s);
                }
                status_dirty = false;
            }
            first = rx.recv() => {
                let Some(first) = first else { anyhow::bail!("every source stopped") };
                // Take every batch already waiting: one compile and diagnosis for all of them.
                let mut ready = None;
                let mut next = Some(first);
                while let Some((source, (events, reports))) = next {
                    if let Some(now) = sources.receive(source, events, reports) {
                        ready.get_or_insert_with(Vec::new).extend(now);
                    }
                    next = rx.try_recv().ok();
                }
                match ready {
                    Some(events) => {
                        apply(events, &sources, registry, status, &mut shown)?;
                        status_dirty = true;
                    }
                    None => tracing::info!(waiting_for = ?sources.waiting_for(), "waiting for every source's first read"),
                }
            }
            Some(done) = tasks.join_next() => {
                return match done {
                    Ok(Ok(())) => Err(anyhow::anyhow!("a controller task stopped")),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("a controller task panicked: {e}")),
                };
            }
            _ = &mut stop => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
    }
}

/// Applies events to the index, recompiles what they touched, and publishes the reports (the
/// sources' and the diagnosis of the whole index) and readiness.
fn apply(
    events: Vec<provider::Event>,
    sources: &Sources,
    registry: &Arc<Mutex<Registry>>,
    status: &Arc<Mutex<Status>>,
    shown: &mut Vec<Report>,
) -> anyhow::Result<()> {
    let n = events.len();
    let mut reports = sources.reports();
    // Compiling and diagnosing a large mesh is CPU work: done in place of a worker thread, so
    // the proxies' connection tasks (woken by the new views) move to another worker instead of
    // waiting behind it.
    let started = std::time::Instant::now();
    let (changed, objects, views, applied_in) = tokio::task::block_in_place(|| {
        let changed = {
            let mut r = registry
                .lock()
                .map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
            r.apply(events)
        };
        let applied_in = started.elapsed();
        let r = registry
            .lock()
            .map_err(|_| anyhow::anyhow!("registry lock poisoned"))?;
        for p in diagnose::all(
            r.index(),
            Scope {
                only_where_present: false,
            },
        ) {
            reports.push(Report {
                severity: Severity::Warning,
                file: None,
                object: p.object.to_string(),
                field: p.finding.field,
                message: p.finding.message,
                refused: None,
            });
        }
        anyhow::Ok((changed, r.index().len(), r.view_count(), applied_in))
    })?;
    if n > 0 {
        tracing::info!(
            events = n,
            views_changed = changed,
            objects,
            apply_ms = applied_in.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "applied changes"
        );
    }
    if n >= memory::TRIM_AFTER_EVENTS {
        memory::release_free_memory();
    }
    for report in reports.iter().filter(|r| !shown.contains(r)) {
        match report.severity {
            Severity::Error => {
                tracing::warn!(file = ?report.file, object = %report.object, field = %report.field, "refused: {}", report.message)
            }
            Severity::Warning => {
                tracing::info!(file = ?report.file, object = %report.object, field = %report.field, "{}", report.message)
            }
        }
    }
    shown.clone_from(&reports);
    if let Ok(mut s) = status.lock() {
        s.ready = true;
        s.problems = reports;
        s.objects = objects;
        s.views = views;
    }
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
