//! A container's environment and argv as the kubelet makes them: `envFrom`, then `env` in
//! order with `$(VAR)` expansion of what came before, then `$(VAR)` in command and args.

use k8s_openapi::api::core::v1 as core;

use super::{
    err, field_value, ContainerPlan, EnvFrom, EnvFromSource, EnvSource, EnvVar, Facts, FieldPath,
    FieldUse, Lookup, PlanError, PodPlan,
};

pub(super) fn env_var(e: &core::EnvVar, field: &str) -> Result<EnvVar, PlanError> {
    if e.name.is_empty() {
        return Err(err(format!("{field}.name"), "is empty"));
    }
    let value = e.value.clone().filter(|v| !v.is_empty());
    let source = match (&value, &e.value_from) {
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{field}.valueFrom"),
                "may not be given with a non-empty value",
            ));
        }
        (v, None) => EnvSource::Value(v.clone().unwrap_or_default()),
        (None, Some(from)) => value_from(from, &format!("{field}.valueFrom"))?,
    };
    Ok(EnvVar {
        name: e.name.clone(),
        source,
    })
}

fn value_from(from: &core::EnvVarSource, field: &str) -> Result<EnvSource, PlanError> {
    if from.resource_field_ref.is_some() {
        return Err(err(
            format!("{field}.resourceFieldRef"),
            "is not supported by the local cluster",
        ));
    }
    if from.file_key_ref.is_some() {
        return Err(err(
            format!("{field}.fileKeyRef"),
            "is not supported by the local cluster",
        ));
    }
    let mut sources = Vec::new();
    if let Some(f) = &from.field_ref {
        sources.push(EnvSource::Field(FieldPath::parse(
            f,
            FieldUse::Env,
            &format!("{field}.fieldRef"),
        )?));
    }
    if let Some(k) = &from.config_map_key_ref {
        sources.push(EnvSource::ConfigMapKey {
            name: k.name.clone(),
            key: k.key.clone(),
            optional: k.optional.unwrap_or(false),
        });
    }
    if let Some(k) = &from.secret_key_ref {
        sources.push(EnvSource::SecretKey {
            name: k.name.clone(),
            key: k.key.clone(),
            optional: k.optional.unwrap_or(false),
        });
    }
    match sources.len() {
        1 => Ok(sources.remove(0)),
        0 => Err(err(
            field,
            "has no source (fieldRef, configMapKeyRef or secretKeyRef)",
        )),
        _ => Err(err(field, "has more than one source")),
    }
}

pub(super) fn env_from(e: &core::EnvFromSource, field: &str) -> Result<EnvFrom, PlanError> {
    let source = match (&e.config_map_ref, &e.secret_ref) {
        (Some(c), None) => EnvFromSource::ConfigMap {
            name: c.name.clone(),
            optional: c.optional.unwrap_or(false),
        },
        (None, Some(s)) => EnvFromSource::Secret {
            name: s.name.clone(),
            optional: s.optional.unwrap_or(false),
        },
        (Some(_), Some(_)) => {
            return Err(err(field, "has both configMapRef and secretRef"));
        }
        (None, None) => return Err(err(field, "has neither configMapRef nor secretRef")),
    };
    Ok(EnvFrom {
        prefix: e.prefix.clone().unwrap_or_default(),
        source,
    })
}

/// An environment variable name as the API accepts it (relaxed validation, GA since 1.34):
/// printable ASCII without `=`. `envFrom` skips keys that are not, as the kubelet does.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// Variables in order of first definition; a later definition replaces the value in place.
#[derive(Default)]
struct Vars(Vec<(String, String)>);

impl Vars {
    fn set(&mut self, name: String, value: String) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The kubelet's error for a missing ConfigMap (its watch-based manager's NotFound).
pub(super) fn configmap_not_found(name: &str) -> String {
    format!("configmap {name:?} not found")
}

pub(super) fn secret_not_found(name: &str) -> String {
    format!("secret {name:?} not found")
}

/// The container's environment: every `envFrom` source (keys prefixed; invalid names
/// skipped), then `env` in order, each value expanded against the variables before it.
/// A missing ConfigMap, Secret or key that is not optional is an error worded as the
/// kubelet's (the agent reports it as `CreateContainerConfigError`). Service variables
/// (`<SVC>_SERVICE_HOST`) are not made.
pub fn environment(
    pod: &PodPlan,
    c: &ContainerPlan,
    facts: &Facts,
    lookup: &dyn Lookup,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.namespace.as_str();
    let mut vars = Vars::default();
    for from in &c.env_from {
        let entries: Vec<(String, String)> = match &from.source {
            EnvFromSource::ConfigMap { name, optional } => match lookup.config_map(ns, name) {
                Some(cm) => cm.data.into_iter().collect(),
                None if *optional => continue,
                None => return Err(configmap_not_found(name)),
            },
            EnvFromSource::Secret { name, optional } => match lookup.secret(ns, name) {
                Some(s) => s
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect(),
                None if *optional => continue,
                None => return Err(secret_not_found(name)),
            },
        };
        for (k, v) in entries {
            let k = format!("{}{k}", from.prefix);
            if valid_name(&k) {
                vars.set(k, v);
            }
        }
    }
    for e in &c.env {
        let value = match &e.source {
            EnvSource::Value(v) => expand(v, |name| vars.get(name).map(str::to_owned)),
            EnvSource::Field(f) => field_value(pod, f, facts),
            EnvSource::ConfigMapKey {
                name,
                key,
                optional,
            } => {
                let Some(cm) = lookup.config_map(ns, name) else {
                    if *optional {
                        continue;
                    }
                    return Err(configmap_not_found(name));
                };
                match cm.data.get(key) {
                    Some(v) => v.clone(),
                    None if *optional => continue,
                    None => {
                        return Err(format!("couldn't find key {key} in ConfigMap {ns}/{name}"))
                    }
                }
            }
            EnvSource::SecretKey {
                name,
                key,
                optional,
            } => {
                let Some(s) = lookup.secret(ns, name) else {
                    if *optional {
                        continue;
                    }
                    return Err(secret_not_found(name));
                };
                match s.get(key) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if *optional => continue,
                    None => return Err(format!("couldn't find key {key} in Secret {ns}/{name}")),
                }
            }
        };
        vars.set(e.name.clone(), value);
    }
    Ok(vars.0)
}

/// `$(VAR)` expansion in `command` and `args` against the container's environment.
pub fn expand_argv(argv: &[String], env: &[(String, String)]) -> Vec<String> {
    argv.iter()
        .map(|a| {
            expand(a, |name| {
                env.iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
        })
        .collect()
}

/// The kubelet's expansion (`third_party/forked/golang/expansion`): `$(NAME)` becomes the
/// variable's value, or stays as written when it has none; `$$` is one `$`; a `$` before
/// anything else, or an unclosed `$(`, stays as written.
pub fn expand(input: &str, mapping: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match mapping(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
