//! The sources feeding the index, as the apply loop sees them: which have finished their first
//! read, the events held until all have, and each source's current reports. Pure.

use smidge_controller::provider::{Event, Report};

/// Every source's state. Events are held back until every source has sent its first batch
/// (its complete first read): a view compiled from half the cluster (a Service without its
/// TrafficSplit) would send proxies wrong weights for a moment.
#[derive(Debug)]
pub struct Sources {
    names: Vec<String>,
    /// `None` until the source's first batch.
    reports: Vec<Option<Vec<Report>>>,
    held: Vec<Event>,
}

impl Sources {
    pub fn new(names: Vec<String>) -> Self {
        let reports = vec![None; names.len()];
        Sources {
            names,
            reports,
            held: Vec::new(),
        }
    }

    /// Takes one batch of `source`; returns the events to apply now, or `None` while some
    /// source has not finished its first read (the events are held until then).
    pub fn receive(
        &mut self,
        source: usize,
        events: Vec<Event>,
        reports: Vec<Report>,
    ) -> Option<Vec<Event>> {
        if let Some(slot) = self.reports.get_mut(source) {
            *slot = Some(reports);
        }
        self.held.extend(events);
        self.ready().then(|| std::mem::take(&mut self.held))
    }

    /// Whether every source has sent its first batch.
    pub fn ready(&self) -> bool {
        self.reports.iter().all(Option::is_some)
    }

    /// The sources that have not finished their first read.
    pub fn waiting_for(&self) -> Vec<&str> {
        self.names
            .iter()
            .zip(&self.reports)
            .filter(|(_, r)| r.is_none())
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Every source's current reports, source by source.
    pub fn reports(&self) -> Vec<Report> {
        self.reports.iter().flatten().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smidge_controller::model::{Body, Kind, Object, ObjectId};
    use smidge_controller::provider::Severity;

    fn apply(name: &str) -> Event {
        Event::Apply(std::sync::Arc::new(Object {
            id: ObjectId::new(Kind::ServiceAccount, "n", name),
            api_version: "v1".into(),
            body: Body::ServiceAccount,
        }))
    }

    fn report(object: &str) -> Report {
        Report {
            severity: Severity::Error,
            file: None,
            object: object.into(),
            field: "spec".into(),
            message: "bad".into(),
            refused: None,
        }
    }

    #[test]
    fn events_wait_until_every_source_has_read_once_then_flow() {
        let mut s = Sources::new(vec!["a".into(), "b".into()]);
        assert_eq!(s.receive(0, vec![apply("1")], vec![]), None);
        assert_eq!(s.receive(0, vec![apply("2")], vec![]), None);
        assert_eq!(s.waiting_for(), ["b"]);
        assert!(!s.ready());
        let first = s.receive(1, vec![apply("3")], vec![]).expect("ready");
        assert_eq!(first, [apply("1"), apply("2"), apply("3")]);
        assert!(s.ready());
        assert_eq!(
            s.receive(0, vec![apply("4")], vec![]),
            Some(vec![apply("4")])
        );
    }

    #[test]
    fn an_empty_first_read_counts() {
        let mut s = Sources::new(vec!["a".into()]);
        assert_eq!(s.receive(0, vec![], vec![]), Some(vec![]));
        assert!(s.waiting_for().is_empty());
    }

    #[test]
    fn each_batch_replaces_its_sources_reports_only() {
        let mut s = Sources::new(vec!["a".into(), "b".into()]);
        s.receive(0, vec![], vec![report("x")]);
        s.receive(1, vec![], vec![report("y")]);
        assert_eq!(s.reports(), [report("x"), report("y")]);
        s.receive(0, vec![], vec![]);
        assert_eq!(s.reports(), [report("y")]);
    }

    #[test]
    fn no_sources_is_ready_at_once() {
        assert!(Sources::new(vec![]).ready());
    }
}
