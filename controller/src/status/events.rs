//! Which Warning Events are due: each distinct problem of an object once, not on every pass.
//! A problem that goes away and comes back is due again; so is every problem of an object that
//! was deleted and created again (another uid).
//!
//! Pure: what was emitted in, what to emit out.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::ObjectId;
use crate::status::conditions::Note;

/// The problems already published, per object (and the uid they were published on).
#[derive(Clone, Debug, Default)]
pub struct Emitted {
    by_object: BTreeMap<ObjectId, (String, BTreeSet<Note>)>,
}

impl Emitted {
    /// The notes of `id` (uid `uid`) not yet published; records them as published only when
    /// [`Emitted::published`] says so. Forgets notes no longer current, so they are due again
    /// when they return.
    pub fn due(&mut self, id: &ObjectId, uid: &str, current: &[Note]) -> Vec<Note> {
        let entry = self
            .by_object
            .entry(id.clone())
            .or_insert_with(|| (uid.to_string(), BTreeSet::new()));
        if entry.0 != uid {
            *entry = (uid.to_string(), BTreeSet::new());
        }
        entry.1.retain(|n| current.contains(n));
        let mut due: Vec<Note> = current
            .iter()
            .filter(|n| !entry.1.contains(n))
            .cloned()
            .collect();
        due.sort();
        due.dedup();
        due
    }

    /// Records that `note` was published on `id`.
    pub fn published(&mut self, id: &ObjectId, note: Note) {
        if let Some(entry) = self.by_object.get_mut(id) {
            entry.1.insert(note);
        }
    }

    /// Forgets objects that are gone.
    pub fn retain(&mut self, keep: impl Fn(&ObjectId) -> bool) {
        self.by_object.retain(|id, _| keep(id));
    }

    /// Forgets everything (leadership was lost: the next leader publishes afresh).
    pub fn clear(&mut self) {
        self.by_object.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn note(reason: &str) -> Note {
        Note {
            reason: reason.into(),
            message: format!("{reason}: something"),
        }
    }

    fn publish_all(e: &mut Emitted, id: &ObjectId, uid: &str, current: &[Note]) -> Vec<Note> {
        let due = e.due(id, uid, current);
        for n in &due {
            e.published(id, n.clone());
        }
        due
    }

    #[test]
    fn each_problem_is_due_once() {
        let mut e = Emitted::default();
        let id = ObjectId::new(Kind::TrafficSplit, "ns", "s");
        let notes = [note("BackendNotFound"), note("NoWeight")];
        assert_eq!(publish_all(&mut e, &id, "u1", &notes).len(), 2);
        assert!(
            publish_all(&mut e, &id, "u1", &notes).is_empty(),
            "a resync emits nothing"
        );
        let more = [
            note("BackendNotFound"),
            note("NoWeight"),
            note("RouteNotFound"),
        ];
        assert_eq!(
            publish_all(&mut e, &id, "u1", &more),
            [note("RouteNotFound")]
        );
    }

    #[test]
    fn a_problem_that_returns_is_due_again() {
        let mut e = Emitted::default();
        let id = ObjectId::new(Kind::TrafficSplit, "ns", "s");
        let notes = [note("BackendNotFound")];
        publish_all(&mut e, &id, "u1", &notes);
        assert!(publish_all(&mut e, &id, "u1", &[]).is_empty());
        assert_eq!(publish_all(&mut e, &id, "u1", &notes).len(), 1);
    }

    #[test]
    fn a_failed_publish_stays_due() {
        let mut e = Emitted::default();
        let id = ObjectId::new(Kind::TrafficSplit, "ns", "s");
        let notes = [note("BackendNotFound")];
        assert_eq!(e.due(&id, "u1", &notes).len(), 1);
        assert_eq!(
            e.due(&id, "u1", &notes).len(),
            1,
            "not published, so still due"
        );
    }

    #[test]
    fn a_recreated_object_gets_its_events_again() {
        let mut e = Emitted::default();
        let id = ObjectId::new(Kind::TrafficSplit, "ns", "s");
        let notes = [note("BackendNotFound")];
        publish_all(&mut e, &id, "u1", &notes);
        assert_eq!(publish_all(&mut e, &id, "u2", &notes).len(), 1);
    }
}
