//! Cross-object checks: references that lead nowhere, backends that get no traffic, versions that
//! do not go together. Shared by `smidge lint` (offline) and the controller (reported per object).
//! None of these reject an object; they explain what the compiler will do with it.

use crate::index::Index;
use crate::model::{Body, Kind, NsName, Object, ObjectId, RouteKind};
use crate::smi::{self, Finding};

/// A finding about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub object: ObjectId,
    pub finding: Finding,
}

/// What the checks may assume about the Kubernetes objects around the SMI ones.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    /// Check Service and ServiceAccount references only in namespaces where the index holds objects
    /// of that kind (lint sees only the files it is given); the controller checks everywhere.
    pub only_where_present: bool,
}

/// Checks every SMI object of `namespace`.
pub fn namespace(index: &Index, namespace: &str, scope: Scope) -> Vec<Problem> {
    let mut out = Vec::new();
    let services_known =
        !scope.only_where_present || index.list(Kind::Service, namespace).next().is_some();
    let accounts_known =
        !scope.only_where_present || index.list(Kind::ServiceAccount, namespace).next().is_some();
    let ctx = Ctx {
        index,
        services_known,
        accounts_known,
        scope,
    };
    for obj in index.list(Kind::TrafficTarget, namespace) {
        ctx.target(obj, &mut out);
    }
    for obj in index.list(Kind::TrafficSplit, namespace) {
        ctx.split(obj, &mut out);
    }
    out
}

/// Checks every namespace.
pub fn all(index: &Index, scope: Scope) -> Vec<Problem> {
    index
        .namespaces()
        .iter()
        .flat_map(|ns| namespace(index, ns, scope))
        .collect()
}

struct Ctx<'a> {
    index: &'a Index,
    services_known: bool,
    accounts_known: bool,
    scope: Scope,
}

fn problem(obj: &Object, field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        object: obj.id.clone(),
        finding: Finding::new(field, message),
    }
}

fn version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

impl Ctx<'_> {
    fn account_exists(&self, ns: &str, name: &str) -> bool {
        name == "default"
            || self
                .index
                .get(&ObjectId::new(Kind::ServiceAccount, ns, name))
                .is_some()
            || (self.scope.only_where_present
                && self.index.list(Kind::ServiceAccount, ns).next().is_none())
    }

    fn target(&self, obj: &Object, out: &mut Vec<Problem>) {
        let Body::TrafficTarget(tt) = &obj.body else {
            return;
        };
        let ns = &obj.id.key.namespace;
        let d = &tt.destination;
        if d.kind != "ServiceAccount" {
            out.push(problem(obj, "spec.destination.kind", format!("{:?} is not supported; the destination must be a ServiceAccount, so this TrafficTarget admits nothing", d.kind)));
        } else if d.namespace != *ns {
            out.push(problem(obj, "spec.destination.namespace", format!("{:?} is not this TrafficTarget's namespace {ns:?}; a TrafficTarget only governs its own namespace, so it is ignored", d.namespace)));
        } else if self.accounts_known && !self.account_exists(&d.namespace, &d.name) {
            out.push(problem(
                obj,
                "spec.destination.name",
                format!("ServiceAccount {}/{} does not exist", d.namespace, d.name),
            ));
        }
        for (i, s) in tt.sources.iter().enumerate() {
            if s.kind != "ServiceAccount" {
                out.push(problem(
                    obj,
                    format!("spec.sources[{i}].kind"),
                    format!(
                        "{:?} is not supported and is ignored; sources are ServiceAccounts",
                        s.kind
                    ),
                ));
            } else if (!self.scope.only_where_present
                || self
                    .index
                    .list(Kind::ServiceAccount, &s.namespace)
                    .next()
                    .is_some())
                && !self.account_exists(&s.namespace, &s.name)
            {
                out.push(problem(
                    obj,
                    format!("spec.sources[{i}].name"),
                    format!("ServiceAccount {}/{} does not exist", s.namespace, s.name),
                ));
            }
        }
        let (_, tt_version) = version(&obj.api_version);
        let compatible = smi::compatible_specs_versions((smi::ACCESS_GROUP, tt_version));
        for (i, rule) in tt.rules.iter().enumerate() {
            let id = ObjectId::new(rule.kind.kind(), ns.clone(), rule.name.clone());
            let Some(route) = self.index.get(&id) else {
                out.push(problem(
                    obj,
                    format!("spec.rules[{i}]"),
                    format!(
                        "{} {}/{} does not exist; this rule admits nothing",
                        rule.kind.kind(),
                        ns,
                        rule.name
                    ),
                ));
                continue;
            };
            let (_, route_version) = version(&route.api_version);
            if !compatible.is_empty() && !compatible.contains(&route_version) {
                out.push(problem(
                    obj,
                    format!("spec.rules[{i}]"),
                    format!(
                        "mixed versions: {} works with specs {}, but {} {} is {}",
                        obj.api_version,
                        compatible.join(" or "),
                        rule.kind.kind(),
                        route.id.key,
                        route.api_version
                    ),
                ));
            }
            if let (RouteKind::HttpRouteGroup, Body::HttpRouteGroup(group)) =
                (rule.kind, &route.body)
            {
                for (j, m) in rule.matches.iter().enumerate() {
                    if !group.matches.iter().any(|gm| gm.name == *m) {
                        out.push(problem(
                            obj,
                            format!("spec.rules[{i}].matches[{j}]"),
                            format!("HTTPRouteGroup {} has no match named {m:?}", route.id.key),
                        ));
                    }
                }
            } else if !rule.matches.is_empty() {
                out.push(problem(
                    obj,
                    format!("spec.rules[{i}].matches"),
                    format!(
                        "only HTTPRouteGroup rules have matches; ignored for a {}",
                        rule.kind.kind()
                    ),
                ));
            }
        }
    }

    fn split(&self, obj: &Object, out: &mut Vec<Problem>) {
        let Body::TrafficSplit(split) = &obj.body else {
            return;
        };
        let ns = &obj.id.key.namespace;
        let root_key = NsName::new(ns.clone(), &split.service);
        if let Some(first) = self
            .index
            .list(Kind::TrafficSplit, ns)
            .find(|o| matches!(&o.body, Body::TrafficSplit(s) if s.service == split.service))
        {
            if first.id != obj.id {
                out.push(problem(obj, "spec.service", format!("TrafficSplit {} already splits Service {}; only that one (the first by name) is used", first.id.key, split.service)));
            }
        }
        let (_, ts_version) = version(&obj.api_version);
        let compatible = smi::compatible_specs_versions((smi::SPLIT_GROUP, ts_version));
        for (i, group) in split.matches.iter().enumerate() {
            match self.index.get(&ObjectId::new(
                Kind::HttpRouteGroup,
                ns.clone(),
                group.clone(),
            )) {
                None => out.push(problem(
                    obj,
                    format!("spec.matches[{i}]"),
                    format!("HTTPRouteGroup {ns}/{group} does not exist; it matches no request"),
                )),
                Some(route) => {
                    let (_, route_version) = version(&route.api_version);
                    if !compatible.is_empty() && !compatible.contains(&route_version) {
                        out.push(problem(
                            obj,
                            format!("spec.matches[{i}]"),
                            format!("mixed versions: {} works with specs {}, but HTTPRouteGroup {} is {}", obj.api_version, compatible.join(" or "), route.id.key, route.api_version),
                        ));
                    }
                }
            }
        }
        if split.backends.iter().all(|b| b.weight == 0) {
            out.push(problem(
                obj,
                "spec.backends",
                "every backend has weight 0, so requests to the root Service fail with 503",
            ));
        }
        if !self.services_known {
            return;
        }
        let service = |name: &str| match self
            .index
            .get(&ObjectId::new(Kind::Service, ns.clone(), name))
            .map(|o| &o.body)
        {
            Some(Body::Service(s)) => Some(s),
            _ => None,
        };
        let Some(root) = service(&root_key.name) else {
            out.push(problem(
                obj,
                "spec.service",
                format!("Service {root_key} does not exist; nothing is split"),
            ));
            return;
        };
        for (i, b) in split.backends.iter().enumerate() {
            match service(&b.service) {
                None => out.push(problem(
                    obj,
                    format!("spec.backends[{i}].service"),
                    format!(
                        "Service {ns}/{} does not exist; it gets no traffic",
                        b.service
                    ),
                )),
                Some(svc) => {
                    let missing: Vec<String> = root
                        .ports
                        .iter()
                        .filter(|rp| !svc.ports.iter().any(|p| p.port == rp.port))
                        .map(|p| p.port.to_string())
                        .collect();
                    if !missing.is_empty() {
                        out.push(problem(
                            obj,
                            format!("spec.backends[{i}].service"),
                            format!("Service {ns}/{} has no port {} of the root Service {root_key}; it gets no traffic on that port", b.service, missing.join(", ")),
                        ));
                    }
                }
            }
        }
    }
}
