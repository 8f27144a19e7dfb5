//! The conditions each SMI object should carry, from the index and the cross-object checks of
//! [`crate::diagnose`]: `Accepted` on every SMI object, `ResolvedRefs` on the kinds that name
//! Services, routes or ServiceAccounts (TrafficSplit, TrafficTarget).
//!
//! Pure: the index in, a [`Snapshot`] out; [`merge`] turns what an object carries now and what it
//! should carry into the conditions to write, keeping `lastTransitionTime` while a condition's
//! status stays the same.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::diagnose::{self, Problem, Scope};
use crate::index::Index;
use crate::model::{Kind, ObjectId};
use crate::smi::Finding;

/// The condition every SMI object carries: whether smidge uses it.
pub const ACCEPTED: &str = "Accepted";
/// The condition of objects that name other objects: whether every one of them exists.
pub const RESOLVED_REFS: &str = "ResolvedRefs";

/// One condition as it should be, before times and generations are added.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Want {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// One problem about an object, as a Warning Event says it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Note {
    pub reason: String,
    /// `field: message`, as `smidge lint` prints it.
    pub message: String,
}

/// What one SMI object's status and Events should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `metadata.generation` of the object these conditions were computed from, when the provider
    /// knows it; otherwise the writer uses the generation it reads.
    pub generation: Option<i64>,
    pub conditions: Vec<Want>,
    pub notes: Vec<Note>,
}

/// The desired status of every SMI object, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub reports: BTreeMap<ObjectId, Report>,
}

/// An SMI object the provider refused (it is not in the index): it gets `Accepted=False`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub id: ObjectId,
    pub findings: Vec<Finding>,
}

/// The objects the providers refused, from their reports (the `Error` reports that name one
/// object), each with every finding about it.
pub fn refused(reports: &[crate::provider::Report]) -> Vec<Refused> {
    let mut by_object: BTreeMap<&ObjectId, Vec<Finding>> = BTreeMap::new();
    for r in reports {
        if let Some(id) = &r.refused {
            by_object.entry(id).or_default().push(Finding {
                field: r.field.clone(),
                message: r.message.clone(),
            });
        }
    }
    by_object
        .into_iter()
        .map(|(id, findings)| Refused {
            id: id.clone(),
            findings,
        })
        .collect()
}

/// What a problem does to the object's conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// The object has no effect at all: `Accepted=False`.
    NotAccepted,
    /// A reference leads nowhere (or to something unusable): `ResolvedRefs=False`.
    Unresolved,
    /// Worth an Event, but the object is used and its references resolve.
    Note,
}

/// The desired status of every SMI object in `index` (and of the `refused` ones), with the
/// problems the controller's checks find (every namespace, every reference).
/// `generation` gives each object's `metadata.generation` when the provider keeps it.
pub fn snapshot(
    index: &Index,
    refused: &[Refused],
    generation: impl Fn(&ObjectId) -> Option<i64>,
) -> Snapshot {
    let problems = diagnose::all(
        index,
        Scope {
            only_where_present: false,
        },
    );
    let mut by_object: BTreeMap<&ObjectId, Vec<(Effect, Note)>> = BTreeMap::new();
    for p in &problems {
        by_object
            .entry(&p.object)
            .or_default()
            .push(classify(index, p));
    }
    let mut reports = BTreeMap::new();
    for obj in index.iter().filter(|o| o.id.kind.is_smi()) {
        let found = by_object.remove(&obj.id).unwrap_or_default();
        reports.insert(
            obj.id.clone(),
            Report {
                generation: generation(&obj.id),
                conditions: wants(obj.id.kind, &found),
                notes: found.into_iter().map(|(_, n)| n).collect(),
            },
        );
    }
    for r in refused.iter().filter(|r| r.id.kind.is_smi()) {
        let found: Vec<(Effect, Note)> = r
            .findings
            .iter()
            .map(|f| (Effect::NotAccepted, note("Invalid", f)))
            .collect();
        reports.insert(
            r.id.clone(),
            Report {
                generation: generation(&r.id),
                conditions: wants(r.id.kind, &found),
                notes: found.into_iter().map(|(_, n)| n).collect(),
            },
        );
    }
    Snapshot { reports }
}

fn note(reason: &str, f: &Finding) -> Note {
    Note {
        reason: reason.into(),
        message: if f.field.is_empty() {
            f.message.clone()
        } else {
            format!("{}: {}", f.field, f.message)
        },
    }
}

/// The conditions of an object of `kind` with the problems `found`.
fn wants(kind: Kind, found: &[(Effect, Note)]) -> Vec<Want> {
    let summary = |effect: Effect| {
        let hits: Vec<&Note> = found
            .iter()
            .filter(|(e, _)| *e == effect)
            .map(|(_, n)| n)
            .collect();
        let first = hits.first()?;
        let message: Vec<&str> = hits.iter().map(|n| n.message.as_str()).collect();
        Some((first.reason.clone(), message.join("; ")))
    };
    let mut out = vec![match summary(Effect::NotAccepted) {
        Some((reason, message)) => Want {
            type_: ACCEPTED,
            status: false,
            reason,
            message,
        },
        None => Want {
            type_: ACCEPTED,
            status: true,
            reason: ACCEPTED.into(),
            message: "smidge uses this object".into(),
        },
    }];
    if matches!(kind, Kind::TrafficSplit | Kind::TrafficTarget) {
        out.push(match summary(Effect::Unresolved) {
            Some((reason, message)) => Want {
                type_: RESOLVED_REFS,
                status: false,
                reason,
                message,
            },
            None => Want {
                type_: RESOLVED_REFS,
                status: true,
                reason: RESOLVED_REFS.into(),
                message: "every reference resolves".into(),
            },
        });
    }
    out
}

/// `spec.backends[1].service` → `spec.backends[].service`.
fn shape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// The `i` of the first `[i]` in `field`.
fn first_index(field: &str) -> Option<usize> {
    let start = field.find('[')? + 1;
    let end = start + field[start..].find(']')?;
    field[start..end].parse().ok()
}

/// The reason and effect of one problem. The field path says which reference it is about; where
/// one field carries two kinds of problem, the index says which (does the named object exist?).
fn classify(index: &Index, p: &Problem) -> (Effect, Note) {
    use crate::model::Body;
    let obj = index.get(&p.object);
    let ns = &p.object.key.namespace;
    let exists =
        |kind: Kind, name: &str| index.get(&ObjectId::new(kind, ns.clone(), name)).is_some();
    let field = shape(&p.finding.field);
    let (effect, reason) = match (p.object.kind, field.as_str()) {
        (Kind::TrafficTarget, "spec.destination.kind") => (Effect::NotAccepted, "InvalidKind"),
        (Kind::TrafficTarget, "spec.destination.namespace") => {
            (Effect::NotAccepted, "InvalidDestination")
        }
        (Kind::TrafficTarget, "spec.destination.name" | "spec.sources[].name") => {
            (Effect::Unresolved, "ServiceAccountNotFound")
        }
        (Kind::TrafficTarget, "spec.sources[].kind") => (Effect::Unresolved, "InvalidKind"),
        (Kind::TrafficTarget, "spec.rules[]") => {
            let rule = match obj.map(|o| &o.body) {
                Some(Body::TrafficTarget(tt)) => {
                    first_index(&p.finding.field).and_then(|i| tt.rules.get(i))
                }
                _ => None,
            };
            match rule {
                Some(r) if exists(r.kind.kind(), &r.name) => {
                    (Effect::Unresolved, "IncompatibleVersion")
                }
                _ => (Effect::Unresolved, "RouteNotFound"),
            }
        }
        (Kind::TrafficTarget, "spec.rules[].matches[]") => (Effect::Unresolved, "MatchNotFound"),
        (Kind::TrafficTarget, "spec.rules[].matches") => (Effect::Note, "MatchesIgnored"),
        (Kind::TrafficSplit, "spec.service") if p.finding.message.starts_with("TrafficSplit ") => {
            (Effect::NotAccepted, "Conflicted")
        }
        (Kind::TrafficSplit, "spec.service") => (Effect::Unresolved, "ServiceNotFound"),
        (Kind::TrafficSplit, "spec.matches[]") => {
            let group = match obj.map(|o| &o.body) {
                Some(Body::TrafficSplit(s)) => {
                    first_index(&p.finding.field).and_then(|i| s.matches.get(i))
                }
                _ => None,
            };
            match group {
                Some(g) if exists(Kind::HttpRouteGroup, g) => {
                    (Effect::Unresolved, "IncompatibleVersion")
                }
                _ => (Effect::Unresolved, "RouteNotFound"),
            }
        }
        (Kind::TrafficSplit, "spec.backends") => (Effect::Note, "NoWeight"),
        (Kind::TrafficSplit, "spec.backends[].service") => {
            let backend = match obj.map(|o| &o.body) {
                Some(Body::TrafficSplit(s)) => {
                    first_index(&p.finding.field).and_then(|i| s.backends.get(i))
                }
                _ => None,
            };
            match backend {
                Some(b) if exists(Kind::Service, &b.service) => {
                    (Effect::Unresolved, "BackendPortNotFound")
                }
                _ => (Effect::Unresolved, "BackendNotFound"),
            }
        }
        _ => (Effect::Note, "Problem"),
    };
    (effect, note(reason, &p.finding))
}

/// The conditions to write: `wanted` with `observedGeneration` set and `lastTransitionTime` taken
/// from `previous` where a condition of the same type had the same status (`now` otherwise).
pub fn merge(
    previous: &[Condition],
    wanted: &[Want],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: w.type_.into(),
                status: status.into(),
                reason: w.reason.clone(),
                message: w.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{read_file, Outcome};

    fn index(yaml: &str) -> Index {
        let mut index = Index::default();
        for (_, outcome) in read_file(yaml) {
            match outcome {
                Outcome::Object { object, .. } => {
                    index.apply(object);
                }
                other => panic!("test object not read: {other:?}"),
            }
        }
        index
    }

    fn report<'a>(snap: &'a Snapshot, kind: Kind, name: &str) -> &'a Report {
        snap.reports
            .get(&ObjectId::new(kind, "ns", name))
            .unwrap_or_else(|| panic!("no report for {kind} ns/{name}: {snap:?}"))
    }

    fn cond<'a>(r: &'a Report, type_: &str) -> &'a Want {
        r.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} in {r:?}"))
    }

    const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns}
spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: ns}
spec: {clusterIP: 10.0.0.2, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: ns}
spec: {clusterIP: 10.0.0.3, ports: [{port: 8080}]}
";

    fn split(name: &str, service: &str, backends: &[&str]) -> String {
        let backends: Vec<String> = backends
            .iter()
            .map(|b| format!("{{service: {b}, weight: 50}}"))
            .collect();
        format!(
            "---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: {name}, namespace: ns}}
spec: {{service: {service}, backends: [{}]}}
",
            backends.join(", ")
        )
    }

    fn snap(yaml: &str) -> Snapshot {
        snapshot(&index(yaml), &[], |_| Some(3))
    }

    #[test]
    fn a_split_whose_references_resolve_is_accepted_and_resolved() {
        let s = snap(&format!("{SERVICES}{}", split("s", "web", &["web-v1"])));
        let r = report(&s, Kind::TrafficSplit, "s");
        assert!(cond(r, ACCEPTED).status);
        assert!(cond(r, RESOLVED_REFS).status);
        assert_eq!(r.generation, Some(3));
        assert!(r.notes.is_empty(), "{r:?}");
    }

    #[test]
    fn a_missing_backend_is_backend_not_found_naming_it() {
        let s = snap(&format!(
            "{SERVICES}{}",
            split("s", "web", &["web-v1", "gone"])
        ));
        let r = report(&s, Kind::TrafficSplit, "s");
        assert!(
            cond(r, ACCEPTED).status,
            "a missing backend only loses its share"
        );
        let c = cond(r, RESOLVED_REFS);
        assert!(!c.status);
        assert_eq!(c.reason, "BackendNotFound");
        assert!(c.message.contains("spec.backends[1].service"), "{c:?}");
        assert!(c.message.contains("ns/gone"), "{c:?}");
        assert_eq!(r.notes.len(), 1);
        assert_eq!(r.notes[0].reason, "BackendNotFound");
    }

    #[test]
    fn a_backend_without_the_root_port_is_backend_port_not_found() {
        let s = snap(&format!("{SERVICES}{}", split("s", "web", &["web-v2"])));
        let c = cond(report(&s, Kind::TrafficSplit, "s"), RESOLVED_REFS).clone();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (false, "BackendPortNotFound")
        );
    }

    #[test]
    fn a_missing_root_service_is_service_not_found() {
        let s = snap(&format!("{SERVICES}{}", split("s", "nope", &["web-v1"])));
        let c = cond(report(&s, Kind::TrafficSplit, "s"), RESOLVED_REFS).clone();
        assert_eq!((c.status, c.reason.as_str()), (false, "ServiceNotFound"));
        assert!(c.message.contains("ns/nope"), "{c:?}");
    }

    #[test]
    fn the_second_split_of_a_service_is_not_accepted() {
        let s = snap(&format!(
            "{SERVICES}{}{}",
            split("a", "web", &["web-v1"]),
            split("b", "web", &["web-v1"])
        ));
        assert!(cond(report(&s, Kind::TrafficSplit, "a"), ACCEPTED).status);
        let c = cond(report(&s, Kind::TrafficSplit, "b"), ACCEPTED).clone();
        assert_eq!((c.status, c.reason.as_str()), (false, "Conflicted"));
        assert!(c.message.contains("ns/a"), "{c:?}");
    }

    #[test]
    fn a_missing_route_group_of_a_split_is_route_not_found() {
        let s = snap(&format!(
            "{SERVICES}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: s, namespace: ns}}
spec: {{service: web, backends: [{{service: web-v1, weight: 1}}], matches: [{{kind: HTTPRouteGroup, name: missing}}]}}
"
        ));
        let c = cond(report(&s, Kind::TrafficSplit, "s"), RESOLVED_REFS).clone();
        assert_eq!((c.status, c.reason.as_str()), (false, "RouteNotFound"));
        assert!(c.message.contains("ns/missing"), "{c:?}");
    }

    #[test]
    fn all_zero_weights_is_an_event_but_no_condition() {
        let s = snap(&format!(
            "{SERVICES}---
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {{name: s, namespace: ns}}
spec: {{service: web, backends: [{{service: web-v1, weight: 0}}]}}
"
        ));
        let r = report(&s, Kind::TrafficSplit, "s");
        assert!(cond(r, ACCEPTED).status && cond(r, RESOLVED_REFS).status);
        assert_eq!(r.notes.len(), 1);
        assert_eq!(r.notes[0].reason, "NoWeight");
    }

    const TARGET: &str = "---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: t, namespace: ns}
spec:
  destination: {kind: ServiceAccount, name: server, namespace: ns}
  sources: [{kind: ServiceAccount, name: client, namespace: ns}]
  rules: [{kind: HTTPRouteGroup, name: routes, matches: [all]}]
";

    const ACCOUNTS_AND_ROUTES: &str = "
apiVersion: v1
kind: ServiceAccount
metadata: {name: server, namespace: ns}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: ns}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: routes, namespace: ns}
spec: {matches: [{name: all, pathRegex: '.*'}]}
";

    #[test]
    fn a_target_whose_references_resolve_is_accepted_and_resolved() {
        let s = snap(&format!("{ACCOUNTS_AND_ROUTES}{TARGET}"));
        let r = report(&s, Kind::TrafficTarget, "t");
        assert!(
            cond(r, ACCEPTED).status && cond(r, RESOLVED_REFS).status,
            "{r:?}"
        );
        let g = report(&s, Kind::HttpRouteGroup, "routes");
        assert_eq!(g.conditions.len(), 1, "routes name nothing: only Accepted");
        assert!(cond(g, ACCEPTED).status);
    }

    #[test]
    fn a_target_with_a_missing_route_is_route_not_found() {
        let only_accounts = ACCOUNTS_AND_ROUTES
            .split("---\napiVersion: specs")
            .next()
            .unwrap();
        let s = snap(&format!("{only_accounts}{TARGET}"));
        let c = cond(report(&s, Kind::TrafficTarget, "t"), RESOLVED_REFS).clone();
        assert_eq!((c.status, c.reason.as_str()), (false, "RouteNotFound"));
        assert!(c.message.contains("ns/routes"), "{c:?}");
    }

    #[test]
    fn a_target_with_a_missing_account_is_service_account_not_found() {
        let s = snap(&format!(
            "{ACCOUNTS_AND_ROUTES}{}",
            TARGET.replace("name: client", "name: stranger")
        ));
        let c = cond(report(&s, Kind::TrafficTarget, "t"), RESOLVED_REFS).clone();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (false, "ServiceAccountNotFound")
        );
        assert!(c.message.contains("ns/stranger"), "{c:?}");
    }

    #[test]
    fn a_target_with_an_unknown_match_is_match_not_found() {
        let s = snap(&format!(
            "{ACCOUNTS_AND_ROUTES}{}",
            TARGET.replace("matches: [all]", "matches: [nothing]")
        ));
        let c = cond(report(&s, Kind::TrafficTarget, "t"), RESOLVED_REFS).clone();
        assert_eq!((c.status, c.reason.as_str()), (false, "MatchNotFound"));
    }

    #[test]
    fn a_target_for_another_namespace_is_not_accepted() {
        let s = snap(&format!(
            "{ACCOUNTS_AND_ROUTES}{}",
            TARGET.replace(
                "name: server, namespace: ns",
                "name: server, namespace: other"
            )
        ));
        let c = cond(report(&s, Kind::TrafficTarget, "t"), ACCEPTED).clone();
        assert_eq!((c.status, c.reason.as_str()), (false, "InvalidDestination"));
    }

    #[test]
    fn a_refused_object_is_not_accepted_with_its_findings() {
        let id = ObjectId::new(Kind::TrafficSplit, "ns", "bad");
        let s = snapshot(
            &Index::default(),
            &[Refused {
                id: id.clone(),
                findings: vec![Finding::new(
                    "spec.backends[0].weight",
                    "must not be negative",
                )],
            }],
            |_| None,
        );
        let r = &s.reports[&id];
        let c = cond(r, ACCEPTED);
        assert_eq!((c.status, c.reason.as_str()), (false, "Invalid"));
        assert_eq!(c.message, "spec.backends[0].weight: must not be negative");
        assert_eq!(r.notes.len(), 1);
    }

    fn provider_report(refused: Option<ObjectId>, field: &str) -> crate::provider::Report {
        crate::provider::Report {
            severity: if refused.is_some() {
                crate::provider::Severity::Error
            } else {
                crate::provider::Severity::Warning
            },
            file: None,
            object: "TrafficSplit ns/bad".into(),
            field: field.into(),
            message: "is wrong".into(),
            refused,
        }
    }

    #[test]
    fn the_refused_objects_are_those_error_reports_name_with_all_their_findings() {
        let bad = ObjectId::new(Kind::TrafficSplit, "ns", "bad");
        let worse = ObjectId::new(Kind::TrafficTarget, "ns", "worse");
        let reports = [
            provider_report(Some(bad.clone()), "spec.backends[0].weight"),
            provider_report(None, "spec.matches"),
            provider_report(Some(worse.clone()), "spec"),
            provider_report(Some(bad.clone()), "spec.backends[1].weight"),
        ];
        let refused = refused(&reports);
        let fields: Vec<(&ObjectId, Vec<&str>)> = refused
            .iter()
            .map(|r| (&r.id, r.findings.iter().map(|f| f.field.as_str()).collect()))
            .collect();
        assert_eq!(
            fields,
            [
                (&worse, vec!["spec"]),
                (
                    &bad,
                    vec!["spec.backends[0].weight", "spec.backends[1].weight"]
                ),
            ],
            "by object id"
        );
        // Refused while its last good version is in the index: the refusal is what shows.
        let s = snapshot(
            &index(&format!("{SERVICES}{}", split("bad", "web", &["web-v1"]))),
            &refused,
            |_| None,
        );
        let c = cond(&s.reports[&bad], ACCEPTED);
        assert_eq!((c.status, c.reason.as_str()), (false, "Invalid"));
        assert_eq!(
            c.message,
            "spec.backends[0].weight: is wrong; spec.backends[1].weight: is wrong"
        );
    }

    #[test]
    fn only_smi_objects_get_reports() {
        let s = snap(SERVICES);
        assert!(s.reports.is_empty(), "{s:?}");
    }

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn want(type_: &'static str, status: bool, reason: &str) -> Want {
        Want {
            type_,
            status,
            reason: reason.into(),
            message: format!("{reason} message"),
        }
    }

    #[test]
    fn merge_keeps_the_transition_time_while_the_status_is_unchanged() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-02T00:00:00Z");
        let first = merge(
            &[],
            &[want(RESOLVED_REFS, false, "BackendNotFound")],
            Some(1),
            &t0,
        );
        assert_eq!(first[0].last_transition_time, t0);
        assert_eq!(first[0].observed_generation, Some(1));
        // Same status, another reason and generation: the time stays, the rest follows.
        let second = merge(
            &first,
            &[want(RESOLVED_REFS, false, "RouteNotFound")],
            Some(2),
            &t1,
        );
        assert_eq!(second[0].last_transition_time, t0);
        assert_eq!(second[0].reason, "RouteNotFound");
        assert_eq!(second[0].observed_generation, Some(2));
        // The status flips: the time moves.
        let third = merge(
            &second,
            &[want(RESOLVED_REFS, true, RESOLVED_REFS)],
            Some(3),
            &t1,
        );
        assert_eq!(third[0].last_transition_time, t1);
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn merge_of_an_unchanged_condition_equals_the_previous_one() {
        let t0 = time("2026-01-01T00:00:00Z");
        let wanted = [
            want(ACCEPTED, true, ACCEPTED),
            want(RESOLVED_REFS, true, RESOLVED_REFS),
        ];
        let first = merge(&[], &wanted, Some(1), &t0);
        let again = merge(&first, &wanted, Some(1), &time("2026-02-01T00:00:00Z"));
        assert_eq!(first, again, "nothing changed, so nothing is written");
    }

    #[test]
    fn merge_drops_conditions_no_longer_wanted_and_matches_by_type() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-02T00:00:00Z");
        let prev = merge(
            &[],
            &[
                want(ACCEPTED, true, ACCEPTED),
                want(RESOLVED_REFS, true, RESOLVED_REFS),
            ],
            Some(1),
            &t0,
        );
        let next = merge(&prev, &[want(ACCEPTED, true, ACCEPTED)], Some(1), &t1);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].last_transition_time, t0);
    }

    #[test]
    fn shape_and_first_index_read_field_paths() {
        assert_eq!(
            shape("spec.backends[12].service"),
            "spec.backends[].service"
        );
        assert_eq!(shape("spec.rules[0].matches[3]"), "spec.rules[].matches[]");
        assert_eq!(first_index("spec.rules[7].matches[3]"), Some(7));
        assert_eq!(first_index("spec.service"), None);
    }
}
