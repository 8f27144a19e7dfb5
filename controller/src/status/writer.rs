//! The status writer: while this replica holds the Lease, server-side applies each SMI object's
//! `status.conditions` (field manager [`FIELD_MANAGER`]) and publishes its due Warning Events.
//! It runs as its own task and never blocks anything else: every replica keeps serving proxies,
//! and a write that fails is retried on the next pass.
//!
//! Only what changed is written: an object whose desired report equals the one last written is
//! skipped without a request; otherwise the object is read (uid, generation, current conditions),
//! the conditions merged (transition times kept) and applied only when they differ.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use kube_lease_manager::LeaseManager;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::model::{Kind, ObjectId};
use crate::status::conditions::{merge, Report, Snapshot};
use crate::status::events::Emitted;
use crate::status::leader::{self, LeaseConfig};

/// The field manager of every status write (and the Events' reporting controller).
pub const FIELD_MANAGER: &str = "smidge-controller";

/// Where the Lease lives and how often to pass.
#[derive(Clone, Debug)]
pub struct Config {
    pub lease: LeaseConfig,
    /// A pass also runs this often without a new snapshot (retries failed writes).
    pub resync: Duration,
    /// This often the leader lists every SMI object and rewrites those whose status is not what
    /// it last wrote (changed by someone else, or the object deleted and created again).
    pub verify: Duration,
    /// Passes start at least this far apart, so a burst of snapshots costs one pass.
    pub min_interval: Duration,
}

impl Config {
    /// Lease `smidge-system/smidge-controller-status`, 15 s terms renewed 5 s before expiry,
    /// a resync every 30 s, a verification every 5 min.
    pub fn new(identity: impl Into<String>) -> Config {
        Config {
            lease: LeaseConfig {
                namespace: "smidge-system".into(),
                name: "smidge-controller-status".into(),
                identity: identity.into(),
                duration: Duration::from_secs(15),
                grace: Duration::from_secs(5),
            },
            resync: Duration::from_secs(30),
            verify: Duration::from_secs(300),
            min_interval: Duration::from_millis(250),
        }
    }
}

/// A running writer. Dropping it stops it at once without giving the Lease up (as a crash
/// would: another replica takes over when the term ends); [`StatusWriter::shutdown`] gives it up.
pub struct StatusWriter {
    task: JoinHandle<()>,
    lease_task: LeaseTask,
    writing: watch::Receiver<bool>,
    writes: Arc<AtomicU64>,
}

impl StatusWriter {
    /// Starts the writer on the snapshots `snapshots` publishes (the latest is what counts).
    pub fn spawn(
        client: Client,
        config: Config,
        snapshots: watch::Receiver<Arc<Snapshot>>,
    ) -> StatusWriter {
        let (writing_tx, writing) = watch::channel(false);
        let writes = Arc::new(AtomicU64::new(0));
        let lease_task = Arc::new(Mutex::new(None));
        let run = Run {
            client,
            config,
            writing: writing_tx,
            writes: writes.clone(),
            written: HashMap::new(),
            emitted: Emitted::default(),
            verified_at: None,
        };
        let task = tokio::spawn(run.run(snapshots, lease_task.clone()));
        StatusWriter {
            task,
            lease_task,
            writing,
            writes,
        }
    }

    /// Whether the last pass ran as the Lease holder.
    pub fn leading(&self) -> bool {
        *self.writing.borrow()
    }

    /// A channel that says whether this replica writes (it flips on each gain or loss).
    pub fn leading_changes(&self) -> watch::Receiver<bool> {
        self.writing.clone()
    }

    /// How many status writes (server-side applies) this writer made.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Stops writing and gives the Lease up, so another replica takes over at once.
    pub async fn shutdown(self) {
        self.task.abort();
        let lease_task = self.lease_task.lock().ok().and_then(|mut t| t.take());
        if let Some(handle) = lease_task {
            // The lease task sees its channel closed, releases the Lease and ends.
            match handle.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "releasing the status Lease"),
                Err(e) => tracing::warn!(error = %e, "the status Lease task failed"),
            }
        }
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        // The lease task first, so it cannot release the Lease when the writer's channel closes.
        if let Ok(mut t) = self.lease_task.lock() {
            if let Some(handle) = t.take() {
                handle.abort();
            }
        }
        self.task.abort();
    }
}

struct Run {
    client: Client,
    config: Config,
    writing: watch::Sender<bool>,
    writes: Arc<AtomicU64>,
    /// The report last written per object: an equal one needs no request.
    written: HashMap<ObjectId, Report>,
    emitted: Emitted,
    /// When the leader last verified what it wrote (`None`: it just started leading).
    verified_at: Option<Instant>,
}

/// The lease manager's task, once started (shared so dropping the writer can abort it).
type LeaseTask = Arc<Mutex<Option<JoinHandle<kube_lease_manager::Result<LeaseManager>>>>>;

impl Run {
    async fn run(mut self, mut snapshots: watch::Receiver<Arc<Snapshot>>, lease_task: LeaseTask) {
        let mut backoff = Duration::from_millis(500);
        let manager = loop {
            match leader::manager(self.client.clone(), &self.config.lease).await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "status writer waits for its Lease");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        };
        let (mut leading, handle) = manager.watch().await;
        let abort: AbortHandle = handle.abort_handle();
        match lease_task.lock() {
            Ok(mut slot) => *slot = Some(handle),
            Err(_) => abort.abort(),
        }
        loop {
            let started = Instant::now();
            let snapshot = snapshots.borrow_and_update().clone();
            leading.borrow_and_update();
            if !self.pass(&snapshot, &leading).await {
                // Stopped at the end of the term read: confirm the renewed term and go on.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() {
                        tracing::error!("the status Lease task ended; status is no longer written");
                        self.writing.send_replace(false);
                        return;
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(self.config.resync) => {}
            }
            tokio::time::sleep(self.config.min_interval.saturating_sub(started.elapsed())).await;
        }
    }

    /// One pass: writes what changed while this replica holds the Lease. The Lease is read
    /// first; the pass stops when the lease manager reports the claim lost or the term read
    /// then ends (less a margin for the write in flight), whichever comes first.
    ///
    /// Says whether the pass got through (false: stopped early while still claiming the Lease).
    async fn pass(&mut self, snapshot: &Snapshot, leading: &watch::Receiver<bool>) -> bool {
        let term = if *leading.borrow() {
            match leader::holds(&self.client, &self.config.lease).await {
                Ok(end) => end,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot confirm the status Lease; not writing");
                    None
                }
            }
        } else {
            None
        };
        let Some(term_end) = term else {
            if self.writing.send_replace(false) {
                tracing::info!(identity = %self.config.lease.identity, "no longer writing status");
            }
            // The next leader writes; when this replica leads again it starts afresh.
            self.written.clear();
            self.emitted.clear();
            self.verified_at = None;
            return true;
        };
        let stop_at = term_end
            .checked_sub(self.config.lease.grace / 2)
            .unwrap_or(term_end);
        if !self.writing.send_replace(true) {
            tracing::info!(identity = %self.config.lease.identity, "writing status (Lease holder)");
        }
        match self.verified_at {
            // Nothing is remembered yet: every object is read before it is written.
            None => self.verified_at = Some(Instant::now()),
            Some(at) if at.elapsed() >= self.config.verify => {
                if let Err(e) = self.verify(snapshot).await {
                    tracing::warn!(error = %e, "verifying written status; retried on the next pass");
                } else {
                    self.verified_at = Some(Instant::now());
                }
            }
            Some(_) => {}
        }
        self.written
            .retain(|id, _| snapshot.reports.contains_key(id));
        self.emitted.retain(|id| snapshot.reports.contains_key(id));
        for (id, report) in &snapshot.reports {
            if self.written.get(id).is_some_and(|r| r == report) {
                continue;
            }
            if !*leading.borrow() {
                return true;
            }
            if SystemTime::now() >= stop_at {
                return false;
            }
            match self.write(id, report).await {
                Ok(true) => {
                    self.written.insert(id.clone(), report.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(object = %id, error = %e, "writing status; retried on the next pass")
                }
            }
        }
        true
    }

    /// Lists every SMI object (in pages) and forgets having written those whose conditions are
    /// not what the snapshot wants, so this pass writes them again.
    async fn verify(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        for kind in SMI_KINDS {
            let Some(resource) = api_resource(kind) else {
                continue;
            };
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
            let mut params = ListParams::default().limit(500);
            loop {
                let page = api
                    .list(&params)
                    .await
                    .map_err(|e| anyhow::anyhow!("listing {}: {e}", resource.plural))?;
                for obj in &page.items {
                    let id = ObjectId::new(
                        kind,
                        obj.metadata.namespace.clone().unwrap_or_default(),
                        obj.metadata.name.clone().unwrap_or_default(),
                    );
                    let Some(report) = snapshot.reports.get(&id) else {
                        continue;
                    };
                    let previous = current_conditions(obj);
                    let generation = report.generation.or(obj.metadata.generation);
                    if merge(&previous, &report.conditions, generation, &now) != previous {
                        self.written.remove(&id);
                    }
                }
                match page.metadata.continue_ {
                    Some(token) if !token.is_empty() => params = params.continue_token(&token),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// Writes one object's status and Events; false when the object is gone from the API server.
    async fn write(&mut self, id: &ObjectId, report: &Report) -> anyhow::Result<bool> {
        let resource = api_resource(id.kind)
            .ok_or_else(|| anyhow::anyhow!("{id} is not an SMI kind smidge writes status on"))?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &id.key.namespace, &resource);
        let Some(current) = api
            .get_opt(&id.key.name)
            .await
            .map_err(|e| anyhow::anyhow!("reading {id}: {e}"))?
        else {
            return Ok(false);
        };
        let uid = current.metadata.uid.clone().unwrap_or_default();
        let previous = current_conditions(&current);
        let generation = report.generation.or(current.metadata.generation);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let conditions = merge(&previous, &report.conditions, generation, &now);
        if conditions != previous {
            let body = serde_json::json!({
                "apiVersion": resource.api_version,
                "kind": resource.kind,
                "metadata": {"name": id.key.name, "namespace": id.key.namespace},
                "status": {"conditions": conditions},
            });
            api.patch_status(
                &id.key.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| anyhow::anyhow!("applying the status of {id}: {e}"))?;
            self.writes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(object = %id, "status written");
        }
        let due = self.emitted.due(id, &uid, &report.notes);
        if !due.is_empty() {
            let reference = ObjectReference {
                api_version: Some(resource.api_version.clone()),
                kind: Some(resource.kind.clone()),
                name: Some(id.key.name.clone()),
                namespace: Some(id.key.namespace.clone()),
                uid: current.metadata.uid.clone(),
                ..Default::default()
            };
            for note in due {
                // A recorder per Event: kube's groups Events by reason alone into a series, which
                // would fold two different problems with one reason into one Event.
                let recorder = Recorder::new(
                    self.client.clone(),
                    Reporter {
                        controller: FIELD_MANAGER.into(),
                        instance: Some(self.config.lease.identity.clone()),
                    },
                );
                let event = Event {
                    type_: EventType::Warning,
                    reason: note.reason.clone(),
                    note: Some(note.message.clone()),
                    action: "Check".into(),
                    secondary: None,
                };
                recorder
                    .publish(&event, &reference)
                    .await
                    .map_err(|e| anyhow::anyhow!("publishing an Event on {id}: {e}"))?;
                self.emitted.published(id, note);
            }
        }
        Ok(true)
    }
}

/// The conditions `obj` carries now (none when it has none or they do not read as conditions).
fn current_conditions(obj: &DynamicObject) -> Vec<Condition> {
    let Some(value) = obj.data.get("status").and_then(|s| s.get("conditions")) else {
        return Vec::new();
    };
    match serde_json::from_value(value.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(object = ?obj.metadata.name, error = %e, "unreadable status.conditions; replacing them");
            Vec::new()
        }
    }
}

/// The kinds that carry status.
const SMI_KINDS: [Kind; 5] = [
    Kind::TrafficTarget,
    Kind::HttpRouteGroup,
    Kind::TcpRoute,
    Kind::UdpRoute,
    Kind::TrafficSplit,
];

/// The API resource of an SMI kind, in the newest version (the hub every other version
/// converts to, so it is served whatever version the object was written in).
pub fn api_resource(kind: Kind) -> Option<ApiResource> {
    use crate::smi::{access, specs, split};
    Some(match kind {
        Kind::TrafficTarget => ApiResource::erase::<access::v1alpha3::TrafficTarget>(&()),
        Kind::HttpRouteGroup => ApiResource::erase::<specs::v1alpha4::HTTPRouteGroup>(&()),
        Kind::TcpRoute => ApiResource::erase::<specs::v1alpha4::TCPRoute>(&()),
        Kind::UdpRoute => ApiResource::erase::<specs::v1alpha4::UDPRoute>(&()),
        Kind::TrafficSplit => ApiResource::erase::<split::v1alpha4::TrafficSplit>(&()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_resources_of_smi_kinds_only() {
        let r = api_resource(Kind::TrafficSplit).unwrap();
        assert_eq!(
            (
                r.group.as_str(),
                r.version.as_str(),
                r.plural.as_str(),
                r.kind.as_str()
            ),
            (
                "split.smi-spec.io",
                "v1alpha4",
                "trafficsplits",
                "TrafficSplit"
            )
        );
        for (kind, plural) in [
            (Kind::TrafficTarget, "traffictargets"),
            (Kind::HttpRouteGroup, "httproutegroups"),
            (Kind::TcpRoute, "tcproutes"),
            (Kind::UdpRoute, "udproutes"),
        ] {
            assert_eq!(api_resource(kind).unwrap().plural, plural);
        }
        assert!(api_resource(Kind::Service).is_none());
    }
}
