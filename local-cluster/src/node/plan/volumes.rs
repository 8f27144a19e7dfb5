//! Volumes as the kubelet fills them: which files a ConfigMap, Secret, downwardAPI or
//! projected volume holds, with which modes, and which service-account tokens a pod needs
//! and when to refresh them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1 as core;
use serde_json::Value;

use super::env::{configmap_not_found, secret_not_found};
use super::{
    check_relative, err, field_value, ConfigMapData, DownwardItem, Facts, FieldPath, FieldUse,
    KeyToPath, Lookup, PlanError, PodPlan, Projection, VolumePlan, VolumeSource, DEFAULT_MODE,
    DEFAULT_TOKEN_EXPIRATION_SECONDS, MIN_TOKEN_EXPIRATION_SECONDS,
};

pub(super) fn volume(v: &core::Volume, field: &str) -> Result<VolumePlan, PlanError> {
    if v.name.is_empty() {
        return Err(err(format!("{field}.name"), "is empty"));
    }
    let source = if v.empty_dir.is_some() {
        VolumeSource::EmptyDir
    } else if let Some(c) = &v.config_map {
        let f = format!("{field}.configMap");
        VolumeSource::ConfigMap {
            name: c.name.clone(),
            items: items(c.items.as_deref(), &f)?,
            optional: c.optional.unwrap_or(false),
            default_mode: mode(c.default_mode, &format!("{f}.defaultMode"))?
                .unwrap_or(DEFAULT_MODE),
        }
    } else if let Some(s) = &v.secret {
        let f = format!("{field}.secret");
        VolumeSource::Secret {
            name: s
                .secret_name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| err(format!("{f}.secretName"), "is missing"))?,
            items: items(s.items.as_deref(), &f)?,
            optional: s.optional.unwrap_or(false),
            default_mode: mode(s.default_mode, &format!("{f}.defaultMode"))?
                .unwrap_or(DEFAULT_MODE),
        }
    } else if let Some(d) = &v.downward_api {
        let f = format!("{field}.downwardAPI");
        VolumeSource::DownwardApi {
            items: downward_items(d.items.as_deref(), &f)?,
            default_mode: mode(d.default_mode, &format!("{f}.defaultMode"))?
                .unwrap_or(DEFAULT_MODE),
        }
    } else if let Some(p) = &v.projected {
        let f = format!("{field}.projected");
        let mut sources = Vec::new();
        for (i, s) in p.sources.iter().flatten().enumerate() {
            sources.push(projection(s, &format!("{f}.sources[{i}]"))?);
        }
        VolumeSource::Projected {
            sources,
            default_mode: mode(p.default_mode, &format!("{f}.defaultMode"))?
                .unwrap_or(DEFAULT_MODE),
        }
    } else {
        VolumeSource::Unsupported(kind_of(v))
    };
    Ok(VolumePlan {
        name: v.name.clone(),
        source,
    })
}

/// The field name of a volume's kind (`hostPath`, `persistentVolumeClaim`, …).
fn kind_of(v: &core::Volume) -> String {
    match serde_json::to_value(v) {
        Ok(Value::Object(map)) => map
            .keys()
            .find(|k| *k != "name")
            .cloned()
            .unwrap_or_else(|| "(no source)".into()),
        _ => "(unknown)".into(),
    }
}

fn projection(s: &core::VolumeProjection, field: &str) -> Result<Projection, PlanError> {
    let mut found = Vec::new();
    if let Some(t) = &s.service_account_token {
        let f = format!("{field}.serviceAccountToken");
        let expiration_seconds = t
            .expiration_seconds
            .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS);
        if expiration_seconds < MIN_TOKEN_EXPIRATION_SECONDS {
            return Err(err(
                format!("{f}.expirationSeconds"),
                format!("may not be less than 10 minutes ({MIN_TOKEN_EXPIRATION_SECONDS} s)"),
            ));
        }
        if expiration_seconds > 1 << 32 {
            return Err(err(
                format!("{f}.expirationSeconds"),
                "may not exceed 2^32 seconds",
            ));
        }
        check_relative(&t.path).map_err(|m| err(format!("{f}.path"), m))?;
        found.push(Projection::ServiceAccountToken {
            audience: t.audience.clone().filter(|a| !a.is_empty()),
            expiration_seconds,
            path: t.path.clone(),
        });
    }
    if let Some(c) = &s.config_map {
        found.push(Projection::ConfigMap {
            name: c.name.clone(),
            items: items(c.items.as_deref(), &format!("{field}.configMap"))?,
            optional: c.optional.unwrap_or(false),
        });
    }
    if let Some(c) = &s.secret {
        found.push(Projection::Secret {
            name: c.name.clone(),
            items: items(c.items.as_deref(), &format!("{field}.secret"))?,
            optional: c.optional.unwrap_or(false),
        });
    }
    if let Some(d) = &s.downward_api {
        found.push(Projection::DownwardApi(downward_items(
            d.items.as_deref(),
            &format!("{field}.downwardAPI"),
        )?));
    }
    if s.cluster_trust_bundle.is_some() {
        return Err(err(
            format!("{field}.clusterTrustBundle"),
            "is not supported by the local cluster",
        ));
    }
    if s.pod_certificate.is_some() {
        return Err(err(
            format!("{field}.podCertificate"),
            "is not supported by the local cluster",
        ));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(err(field, "has no source")),
        _ => Err(err(field, "has more than one source")),
    }
}

fn mode(m: Option<i32>, field: &str) -> Result<Option<u32>, PlanError> {
    m.map(|m| {
        u32::try_from(m)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| err(field, format!("{m} is not a file mode (0–0777)")))
    })
    .transpose()
}

fn items(items: Option<&[core::KeyToPath]>, field: &str) -> Result<Vec<KeyToPath>, PlanError> {
    items
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let f = format!("{field}.items[{i}]");
            if k.key.is_empty() {
                return Err(err(format!("{f}.key"), "is empty"));
            }
            check_relative(&k.path).map_err(|m| err(format!("{f}.path"), m))?;
            Ok(KeyToPath {
                key: k.key.clone(),
                path: k.path.clone(),
                mode: mode(k.mode, &format!("{f}.mode"))?,
            })
        })
        .collect()
}

fn downward_items(
    items: Option<&[core::DownwardAPIVolumeFile]>,
    field: &str,
) -> Result<Vec<DownwardItem>, PlanError> {
    items
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let f = format!("{field}.items[{i}]");
            check_relative(&d.path).map_err(|m| err(format!("{f}.path"), m))?;
            if d.resource_field_ref.is_some() {
                return Err(err(
                    format!("{f}.resourceFieldRef"),
                    "is not supported by the local cluster",
                ));
            }
            let r = d
                .field_ref
                .as_ref()
                .ok_or_else(|| err(format!("{f}.fieldRef"), "is missing"))?;
            Ok(DownwardItem {
                path: d.path.clone(),
                field: FieldPath::parse(r, FieldUse::Volume, &format!("{f}.fieldRef"))?,
                mode: mode(d.mode, &format!("{f}.mode"))?,
            })
        })
        .collect()
}

/// A file a volume holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    /// Relative to the volume's directory; no `..`.
    pub path: String,
    pub data: Vec<u8>,
    /// The file's final mode (group read added when the pod has an `fsGroup`).
    pub mode: u32,
    /// Owner, when not the agent's user: the pod's `fs_user` for token files.
    pub uid: Option<i64>,
    /// Group owner: the pod's `fsGroup`.
    pub gid: Option<i64>,
}

type Payload = BTreeMap<String, (Vec<u8>, u32, Option<i64>)>;

/// A ConfigMap's or Secret's files (the kubelet's `MakePayload`): every key when `items` is
/// empty, else the items (a missing key is an error unless the volume is optional).
fn key_files(
    payload: &mut Payload,
    data: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    optional: bool,
    default_mode: u32,
    missing_key: &str,
) -> Result<(), String> {
    if items.is_empty() {
        for (k, v) in data {
            payload.insert(k.clone(), (v.clone(), default_mode, None));
        }
        return Ok(());
    }
    for item in items {
        match data.get(&item.key) {
            Some(v) => {
                payload.insert(
                    item.path.clone(),
                    (v.clone(), item.mode.unwrap_or(default_mode), None),
                );
            }
            None if optional => {}
            None => return Err(format!("{missing_key}: {}", item.key)),
        }
    }
    Ok(())
}

fn config_map_bytes(cm: ConfigMapData) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = cm.binary_data;
    for (k, v) in cm.data {
        data.insert(k, v.into_bytes());
    }
    data
}

fn downward_files(
    payload: &mut Payload,
    pod: &PodPlan,
    items: &[DownwardItem],
    facts: &Facts,
    default_mode: u32,
) {
    for item in items {
        let value = field_value(pod, &item.field, facts);
        payload.insert(
            item.path.clone(),
            (value.into_bytes(), item.mode.unwrap_or(default_mode), None),
        );
    }
}

/// The files of volume `v` of `pod`, sorted by path. `token(audience, expiration_seconds)`
/// gives the current service-account token for that request (the agent obtains them through
/// TokenRequest, bound to the pod; see [`token_requests`]); `None` is an error (not yet
/// issued). A missing ConfigMap, Secret or key that is not optional is an error worded as the
/// kubelet's. Token files take the volume's `defaultMode`, or 0600 owned by the pod's user
/// when it has one (`fs_user`) or an `fsGroup`, as the kubelet does. An `emptyDir` or
/// unsupported volume holds no files.
pub fn volume_files(
    pod: &PodPlan,
    v: &VolumePlan,
    facts: &Facts,
    lookup: &dyn Lookup,
    token: &dyn Fn(Option<&str>, i64) -> Option<String>,
) -> Result<Vec<FileProjection>, String> {
    let ns = pod.namespace.as_str();
    let mut payload = Payload::new();
    let config_map = |name: &str, optional: bool| match lookup.config_map(ns, name) {
        Some(cm) => Ok(config_map_bytes(cm)),
        None if optional => Ok(BTreeMap::new()),
        None => Err(configmap_not_found(name)),
    };
    let secret = |name: &str, optional: bool| match lookup.secret(ns, name) {
        Some(s) => Ok(s),
        None if optional => Ok(BTreeMap::new()),
        None => Err(secret_not_found(name)),
    };
    const CM_KEY: &str = "configmap references non-existent config key";
    const SECRET_KEY: &str = "references non-existent secret key";
    match &v.source {
        VolumeSource::EmptyDir | VolumeSource::Unsupported(_) => {}
        VolumeSource::ConfigMap {
            name,
            items,
            optional,
            default_mode,
        } => {
            let data = config_map(name, *optional)?;
            key_files(&mut payload, &data, items, *optional, *default_mode, CM_KEY)?;
        }
        VolumeSource::Secret {
            name,
            items,
            optional,
            default_mode,
        } => {
            let data = secret(name, *optional)?;
            key_files(
                &mut payload,
                &data,
                items,
                *optional,
                *default_mode,
                SECRET_KEY,
            )?;
        }
        VolumeSource::DownwardApi {
            items,
            default_mode,
        } => downward_files(&mut payload, pod, items, facts, *default_mode),
        VolumeSource::Projected {
            sources,
            default_mode,
        } => {
            for source in sources {
                match source {
                    Projection::ServiceAccountToken {
                        audience,
                        expiration_seconds,
                        path,
                    } => {
                        let jwt =
                            token(audience.as_deref(), *expiration_seconds).ok_or_else(|| {
                                format!(
                                    "no service account token yet for audience {} \
                                     (expirationSeconds {expiration_seconds})",
                                    audience.as_deref().unwrap_or("(the API server's)")
                                )
                            })?;
                        let private = pod.fs_user.is_some() || pod.fs_group.is_some();
                        let mode = if private { 0o600 } else { *default_mode };
                        payload.insert(path.clone(), (jwt.into_bytes(), mode, pod.fs_user));
                    }
                    Projection::ConfigMap {
                        name,
                        items,
                        optional,
                    } => {
                        let data = config_map(name, *optional)?;
                        key_files(&mut payload, &data, items, *optional, *default_mode, CM_KEY)?;
                    }
                    Projection::Secret {
                        name,
                        items,
                        optional,
                    } => {
                        let data = secret(name, *optional)?;
                        let m = *default_mode;
                        key_files(&mut payload, &data, items, *optional, m, SECRET_KEY)?;
                    }
                    Projection::DownwardApi(items) => {
                        downward_files(&mut payload, pod, items, facts, *default_mode)
                    }
                }
            }
        }
    }
    payload
        .into_iter()
        .map(|(path, (data, mode, uid))| {
            check_relative(&path).map_err(|m| format!("volume {:?}: file path {m}", v.name))?;
            // SetVolumeOwnership: an fsGroup owns the files and may read them.
            let mode = if pod.fs_group.is_some() {
                mode | 0o440
            } else {
                mode
            };
            Ok(FileProjection {
                path,
                data,
                mode,
                uid,
                gid: pod.fs_group,
            })
        })
        .collect()
}

/// A service-account token a pod's volumes need.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenSpec {
    /// The API server's default audiences when `None`.
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

/// The distinct tokens `pod`'s projected volumes need, to request (TokenRequest bound to the
/// pod) and keep fresh.
pub fn token_requests(pod: &PodPlan) -> Vec<TokenSpec> {
    let mut specs: Vec<TokenSpec> = pod
        .volumes
        .iter()
        .filter_map(|v| match &v.source {
            VolumeSource::Projected { sources, .. } => Some(sources),
            _ => None,
        })
        .flatten()
        .filter_map(|s| match s {
            Projection::ServiceAccountToken {
                audience,
                expiration_seconds,
                ..
            } => Some(TokenSpec {
                audience: audience.clone(),
                expiration_seconds: *expiration_seconds,
            }),
            _ => None,
        })
        .collect();
    specs.sort();
    specs.dedup();
    specs
}

/// The kubelet never keeps a token longer than this.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// When a token issued at `issued_at` that expires at `expires_at` is due for refresh: at 80 %
/// of its lifetime, or 24 h after issue, whichever comes first (the kubelet's token manager,
/// without its jitter). As the kubelet, pass `issued_at = expires_at − requested
/// expirationSeconds`, so a token the API server extended is still refreshed on the requested
/// schedule.
pub fn next_refresh(issued_at: SystemTime, expires_at: SystemTime) -> SystemTime {
    let ttl = expires_at
        .duration_since(issued_at)
        .unwrap_or(Duration::ZERO);
    let at_80 = issued_at + ttl.mul_f64(0.8);
    at_80.min(issued_at + MAX_TOKEN_AGE)
}

/// Whether the token is due for refresh at `now` (see [`next_refresh`]).
pub fn refresh_due(issued_at: SystemTime, expires_at: SystemTime, now: SystemTime) -> bool {
    now >= next_refresh(issued_at, expires_at)
}
