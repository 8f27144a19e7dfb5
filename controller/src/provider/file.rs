//! The `file` provider: a directory of multi-document Kubernetes YAML, re-read on change.
//!
//! [`FileSet`] is the pure part: given a file's new text it works out the index events and the
//! reports. A refused object keeps its last good version; a document that cannot even be
//! identified keeps every object the file had before, since any of them may be the broken one.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{Event, Report, Severity, Sink};
use crate::lint::is_manifest;
use crate::manifest::{read_file, Outcome};
use crate::model::{ById, ObjectId};

#[derive(Debug, Default)]
struct FileState {
    /// SHA-256 of the text last read: an unchanged file is skipped without keeping its text
    /// (19 MB for a mesh of 50,000 endpoints).
    digest: Option<[u8; 32]>,
    /// Shared with the effective set and the index: one allocation per object.
    objects: BTreeSet<ById>,
    reports: Vec<Report>,
}

fn digest(text: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The objects of every file, merged; later files (in path order) win over earlier ones.
#[derive(Debug, Default)]
pub struct FileSet {
    files: BTreeMap<PathBuf, FileState>,
    effective: HashSet<ById>,
}

impl FileSet {
    /// Takes a file's new text (`None`: the file is gone) and returns the resulting index events.
    pub fn update(&mut self, path: &Path, text: Option<String>) -> Vec<Event> {
        // Only the objects this file had or has can change: the rest of the mesh is not looked
        // at (a split edit beside a file of 50,000 endpoints costs what the split costs).
        let mut touched: Vec<ObjectId> = self
            .files
            .get(path)
            .map(|f| f.objects.iter().map(|o| o.0.id.clone()).collect())
            .unwrap_or_default();
        match text {
            None => {
                self.files.remove(path);
            }
            Some(text) => {
                let digest = digest(&text);
                if self
                    .files
                    .get(path)
                    .is_some_and(|f| f.digest == Some(digest))
                {
                    return Vec::new();
                }
                let old = self.files.remove(path).unwrap_or_default();
                let state = read_state(path, &text, digest, old);
                touched.extend(state.objects.iter().map(|o| o.0.id.clone()));
                self.files.insert(path.to_path_buf(), state);
            }
        }
        touched.sort();
        touched.dedup();
        self.recompute(&touched)
    }

    /// Every current report, file by file.
    pub fn reports(&self) -> Vec<Report> {
        self.files
            .values()
            .flat_map(|f| f.reports.iter().cloned())
            .collect()
    }

    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.keys()
    }

    /// The events for `ids`: each one's effective object is the last file's (in path order)
    /// that has it.
    fn recompute(&mut self, ids: &[ObjectId]) -> Vec<Event> {
        let mut events: Vec<Event> = Vec::new();
        for id in ids {
            let next = self
                .files
                .values()
                .rev()
                .find_map(|state| state.objects.get(id));
            match next {
                Some(ById(obj)) if !self.effective.get(id).is_some_and(|e| e.holds(obj)) => {
                    self.effective.replace(ById(obj.clone()));
                    events.push(Event::Apply(obj.clone()));
                }
                Some(_) => {}
                None => {
                    if self.effective.remove(id) {
                        events.push(Event::Delete(id.clone()));
                    }
                }
            }
        }
        events
    }
}

fn read_state(path: &Path, text: &str, digest: [u8; 32], old: FileState) -> FileState {
    let mut objects = BTreeSet::new();
    let mut reports = Vec::new();
    let mut unidentified_error = false;
    let mut refused = Vec::new();
    let report = |severity, object: String, field: String, message: String| Report {
        severity,
        file: Some(path.to_path_buf()),
        object,
        field,
        message,
        refused: None,
    };
    for (pos, outcome) in read_file(text) {
        match outcome {
            Outcome::Object { object, notices } => {
                for n in notices {
                    reports.push(report(
                        Severity::Warning,
                        object.id.to_string(),
                        n.field,
                        n.message,
                    ));
                }
                // A later document with the same id wins, as it would in kubectl apply.
                objects.replace(ById(Arc::new(object)));
            }
            Outcome::Skipped { .. } => {}
            Outcome::Invalid { id, what, errors } => {
                let name = match &id {
                    Some(id) => id.to_string(),
                    None => format!("document {} (line {}) {what}", pos.document, pos.line),
                };
                let kept = match &id {
                    Some(id) if old.objects.contains(id) => {
                        "; the last good version stays in effect"
                    }
                    Some(_) => "; the object is not in effect",
                    None => "; every object this file had before stays as it was",
                };
                for e in errors.0 {
                    reports.push(Report {
                        refused: id.clone(),
                        ..report(
                            Severity::Error,
                            name.clone(),
                            e.field,
                            format!("{}{kept}", e.message),
                        )
                    });
                }
                match id {
                    Some(id) => refused.push(id),
                    None => unidentified_error = true,
                }
            }
        }
    }
    for id in refused {
        if let Some(good) = old.objects.get(&id) {
            if !objects.contains(&id) {
                objects.insert(good.clone());
            }
        }
    }
    if unidentified_error {
        for obj in &old.objects {
            if !objects.contains(obj) {
                objects.insert(obj.clone());
            }
        }
    }
    FileState {
        digest: Some(digest),
        objects,
        reports,
    }
}

/// The manifest files under `dir` with their modification time and size.
fn scan(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, (SystemTime, u64)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(path);
            } else if is_manifest(&path)
                && !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                out.insert(path, (meta.modified()?, meta.len()));
            }
        }
    }
    Ok(out)
}

/// Watches `dir` and sends batches of events, plus the current reports after each batch.
/// The first batch holds everything present at start.
pub async fn run(dir: PathBuf, tx: Sink) -> anyhow::Result<()> {
    use anyhow::Context;
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reading the files (ours included) is not a change; waking on it would spin.
        if res.is_ok_and(|e| matches!(e.kind, notify::EventKind::Access(_))) {
            return;
        }
        let _ = wake_tx.try_send(());
    })
    .context("starting the file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", dir.display()))?;

    let mut set = FileSet::default();
    let mut seen: BTreeMap<PathBuf, (SystemTime, u64)> = BTreeMap::new();
    let mut first = true;
    let mut last_reports: Vec<Report> = Vec::new();
    loop {
        let now = match scan(&dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list the manifest directory; keeping what was read");
                seen.clone()
            }
        };
        let mut events = Vec::new();
        for path in seen.keys().filter(|p| !now.contains_key(*p)) {
            events.extend(set.update(path, None));
        }
        for (path, stamp) in &now {
            if seen.get(path) == Some(stamp) {
                continue;
            }
            match tokio::fs::read_to_string(path).await {
                Ok(text) => events.extend(set.update(path, Some(text))),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read manifest file; keeping what was read from it")
                }
            }
        }
        seen = now;
        let reports = set.reports();
        // The first read is always sent (it makes the controller ready), later ones only when
        // something changed.
        if first || !events.is_empty() || reports != last_reports {
            first = false;
            tracing::debug!(events = events.len(), "manifests read");
            last_reports = reports.clone();
            if tx.send((events, reports)).await.is_err() {
                return Ok(());
            }
        }
        // Wait for a change (or re-check every few seconds in case an event was missed), then let
        // a burst of writes settle.
        let _ = tokio::time::timeout(Duration::from_secs(5), wake_rx.recv()).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        while wake_rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: n}\n";
    const SPLIT: &str = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: s, namespace: n}\nspec: {service: a, backends: [{service: b, weight: WEIGHT}]}\n";

    fn applied(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Apply(o) => format!("apply {}", o.id),
                Event::Delete(id) => format!("delete {id}"),
            })
            .collect()
    }

    #[test]
    fn a_refused_object_keeps_its_last_good_version_and_nothing_else_changes() {
        let mut set = FileSet::default();
        let path = Path::new("/m/a.yaml");
        let good = format!("{SVC}---\n{}", SPLIT.replace("WEIGHT", "1"));
        assert_eq!(set.update(path, Some(good)).len(), 2);
        let bad = format!("{SVC}---\n{}", SPLIT.replace("WEIGHT", "-1"));
        assert!(set.update(path, Some(bad)).is_empty(), "nothing changes");
        let reports = set.reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].severity, Severity::Error);
        assert_eq!(reports[0].object, "TrafficSplit n/s");
        assert_eq!(reports[0].field, "spec.backends[0].weight");
        assert!(
            reports[0].message.contains("last good version stays"),
            "{}",
            reports[0].message
        );
        let fixed = format!("{SVC}---\n{}", SPLIT.replace("WEIGHT", "2"));
        assert_eq!(
            applied(&set.update(path, Some(fixed))),
            ["apply TrafficSplit n/s"]
        );
        assert!(set.reports().is_empty());
    }

    #[test]
    fn a_later_file_wins_and_the_earlier_version_returns_when_it_goes() {
        let mut set = FileSet::default();
        let (a, b) = (Path::new("/m/a.yaml"), Path::new("/m/b.yaml"));
        let one = SPLIT.replace("WEIGHT", "1");
        let two = SPLIT.replace("WEIGHT", "2");
        assert_eq!(
            applied(&set.update(a, Some(format!("{SVC}---\n{one}")))).len(),
            2
        );
        assert_eq!(
            applied(&set.update(b, Some(two.clone()))),
            ["apply TrafficSplit n/s"]
        );
        assert!(
            set.update(
                a,
                Some(format!("{SVC}---\n{}", SPLIT.replace("WEIGHT", "3")))
            )
            .is_empty(),
            "b still wins"
        );
        let back = set.update(b, None);
        assert_eq!(applied(&back), ["apply TrafficSplit n/s"]);
        match &back[0] {
            Event::Apply(o) => assert!(format!("{o:?}").contains("weight: 3"), "{o:?}"),
            Event::Delete(_) => unreachable!(),
        }
        assert_eq!(
            applied(&set.update(a, None)),
            ["delete ServiceAccount n/a", "delete TrafficSplit n/s"]
        );
    }

    #[test]
    fn broken_yaml_keeps_every_object_the_file_had() {
        let mut set = FileSet::default();
        let path = Path::new("/m/a.yaml");
        set.update(
            path,
            Some(format!("{SVC}---\n{}", SPLIT.replace("WEIGHT", "1"))),
        );
        let events = set.update(path, Some(format!("{SVC}---\nspec: [unclosed\n")));
        assert!(events.is_empty(), "{events:?}");
        assert!(
            set.reports()[0].object.starts_with("document 2 (line 5)"),
            "{:?}",
            set.reports()
        );
    }

    #[test]
    fn removing_an_object_or_a_file_deletes_it() {
        let mut set = FileSet::default();
        let path = Path::new("/m/a.yaml");
        set.update(
            path,
            Some(format!("{SVC}---\n{}", SPLIT.replace("WEIGHT", "1"))),
        );
        assert_eq!(
            applied(&set.update(path, Some(SVC.to_string()))),
            ["delete TrafficSplit n/s"]
        );
        assert_eq!(
            applied(&set.update(path, None)),
            ["delete ServiceAccount n/a"]
        );
    }

    #[test]
    fn the_same_text_twice_is_a_no_op() {
        let mut set = FileSet::default();
        let path = Path::new("/m/a.yaml");
        assert_eq!(set.update(path, Some(SVC.into())).len(), 1);
        assert!(set.update(path, Some(SVC.into())).is_empty());
        assert!(
            set.update(Path::new("/m/copy.yaml"), Some(SVC.into()))
                .is_empty(),
            "an identical definition elsewhere changes nothing"
        );
    }
}
