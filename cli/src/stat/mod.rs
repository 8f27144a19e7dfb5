//! `smidge stat`: requests per second, success rate and latency quantiles of a Deployment, or of
//! each backend of a TrafficSplit, from the proxies' own metrics.
//!
//! Each meshed pod's proxy serves `/metrics` on its admin port (public in injected pods); it is
//! read through the API server's pod proxy twice, `--window` apart, and the growth of the
//! inbound request counters and latency histogram over the pods is what a row shows. A backend
//! of a TrafficSplit is the pods its Service selects, so its row also counts requests that
//! reached that Service directly rather than through the split.

pub mod metrics;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use smidge_controller::labels;

use metrics::{Row, Totals};

/// The proxy's admin port, where `/metrics` is served.
pub const PROXY_ADMIN_PORT: u16 = 4191;

/// What to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Deployment(String),
    TrafficSplit(String),
}

impl Target {
    /// `deploy/NAME` (`deployment/`, `deployments/`) or `trafficsplit/NAME` (`ts/`,
    /// `trafficsplits/`).
    pub fn parse(s: &str) -> anyhow::Result<Target> {
        let Some((kind, name)) = s.split_once('/') else {
            bail!("{s:?}: expected deploy/NAME or trafficsplit/NAME");
        };
        if name.is_empty() || name.contains('/') {
            bail!("{s:?}: the name after {kind}/ is missing or has a '/'");
        }
        match kind.to_ascii_lowercase().as_str() {
            "deploy" | "deployment" | "deployments" => Ok(Target::Deployment(name.into())),
            "ts" | "trafficsplit" | "trafficsplits" => Ok(Target::TrafficSplit(name.into())),
            _ => bail!("{s:?}: unknown kind {kind:?}; expected deploy or trafficsplit"),
        }
    }
}

/// `10s`, `500ms`, `1m`, or plain seconds.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 10s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s or m)")),
    };
    if !(secs > 0.0 && secs <= 3600.0) {
        return Err(format!(
            "{s:?}: the window must be more than 0 and at most 1h"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A label selector as the API's query string (`a=b,c in (d,e),!f`).
pub fn selector_query(selector: &LabelSelector) -> anyhow::Result<String> {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => bail!("unknown selector operator {other:?} on {}", e.key),
        });
    }
    if parts.is_empty() {
        bail!("an empty selector (it would select every pod)");
    }
    Ok(parts.join(","))
}

/// The pods a selector picks that are running, and which of them carry a proxy.
async fn running_pods(client: &Client, ns: &str, selector: &str) -> anyhow::Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .with_context(|| format!("listing pods in {ns} with {selector}"))?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect())
}

fn is_meshed(p: &Pod) -> bool {
    p.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(labels::MESHED))
}

/// Inbound totals of each meshed pod, read through the API server's pod proxy; a pod whose
/// metrics cannot be read is left out (and logged).
async fn sample(client: &Client, ns: &str, pods: &[String]) -> BTreeMap<String, Totals> {
    let reads = pods.iter().map(|pod| async move {
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:{PROXY_ADMIN_PORT}/proxy/metrics");
        let result = async {
            let request = http::Request::get(&path).body(Vec::new())?;
            let text = client.request_text(request).await?;
            metrics::parse(&text, "inbound").map_err(anyhow::Error::msg)
        }
        .await;
        (pod.clone(), result.with_context(|| format!("GET {path}")))
    });
    let mut out = BTreeMap::new();
    for (pod, result) in join_all(reads).await {
        match result {
            Ok(t) => {
                out.insert(pod, t);
            }
            Err(e) => eprintln!("smidge stat: skipping {ns}/{pod}: {e:#}"),
        }
    }
    out
}

/// One group of pods to show as a row.
struct Group {
    name: String,
    weight: Option<String>,
    pods: Vec<Pod>,
}

async fn deployment_group(client: &Client, ns: &str, name: &str) -> anyhow::Result<Group> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading Deployment {ns}/{name}"))?
        .with_context(|| format!("no Deployment {ns}/{name}"))?;
    let query =
        selector_query(&d.spec.selector).with_context(|| format!("Deployment {ns}/{name}"))?;
    Ok(Group {
        name: format!("deploy/{name}"),
        weight: None,
        pods: running_pods(client, ns, &query).await?,
    })
}

async fn split_groups(client: &Client, ns: &str, name: &str) -> anyhow::Result<Vec<Group>> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "split.smi-spec.io",
        "v1alpha4",
        "TrafficSplit",
    ));
    let split = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .get_opt(name)
        .await
        .with_context(|| format!("reading TrafficSplit {ns}/{name}"))?
        .with_context(|| format!("no TrafficSplit {ns}/{name}"))?;
    let backends = split.data["spec"]["backends"]
        .as_array()
        .with_context(|| format!("TrafficSplit {ns}/{name} has no spec.backends"))?;
    let mut groups = Vec::new();
    for b in backends {
        let service = b["service"]
            .as_str()
            .with_context(|| format!("TrafficSplit {ns}/{name}: a backend without a service"))?;
        let weight = match &b["weight"] {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            _ => "-".into(),
        };
        let svc = Api::<Service>::namespaced(client.clone(), ns)
            .get_opt(service)
            .await
            .with_context(|| format!("reading Service {ns}/{service}"))?;
        let selector = svc.and_then(|s| s.spec?.selector).filter(|s| !s.is_empty());
        let pods = match selector {
            Some(sel) => {
                let query = sel
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                running_pods(client, ns, &query).await?
            }
            None => {
                eprintln!("smidge stat: Service {ns}/{service} is missing or selects no pods");
                Vec::new()
            }
        };
        groups.push(Group {
            name: service.to_string(),
            weight: Some(weight),
            pods,
        });
    }
    Ok(groups)
}

/// The table for `target`, from two samples `window` apart.
pub async fn stat(
    kube: &crate::kube::KubeArgs,
    ns: &str,
    target: &Target,
    window: Duration,
) -> anyhow::Result<String> {
    let client = kube.client().await?;
    let groups = match target {
        Target::Deployment(name) => vec![deployment_group(&client, ns, name).await?],
        Target::TrafficSplit(name) => split_groups(&client, ns, name).await?,
    };
    let meshed: Vec<String> = groups
        .iter()
        .flat_map(|g| &g.pods)
        .filter(|p| is_meshed(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let before = sample(&client, ns, &meshed).await;
    tokio::time::sleep(window).await;
    let after = sample(&client, ns, &meshed).await;
    let rows: Vec<Row> = groups
        .into_iter()
        .map(|g| {
            let mut growth = Totals::default();
            let mut read = 0;
            for pod in g.pods.iter().filter_map(|p| p.metadata.name.as_ref()) {
                if let (Some(a), Some(b)) = (after.get(pod), before.get(pod)) {
                    growth.add(&a.since(b));
                    read += 1;
                }
            }
            Row {
                name: g.name,
                meshed: (read, g.pods.len()),
                weight: g.weight,
                growth,
                window,
            }
        })
        .collect();
    Ok(metrics::table(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_kubectl_spells_them() {
        assert_eq!(
            Target::parse("deploy/web").expect("deploy"),
            Target::Deployment("web".into())
        );
        assert_eq!(
            Target::parse("deployments/web").expect("deployments"),
            Target::Deployment("web".into())
        );
        assert_eq!(
            Target::parse("ts/canary").expect("ts"),
            Target::TrafficSplit("canary".into())
        );
        for bad in ["web", "deploy/", "pod/web", "deploy/a/b"] {
            let e = Target::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_window("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_window("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_window("3"), Ok(Duration::from_secs(3)));
        assert!(parse_window("0s").is_err());
        assert!(parse_window("10h").is_err());
        assert!(parse_window("abc").is_err());
    }

    #[test]
    fn selectors_become_query_strings() {
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "old", "operator": "DoesNotExist"}
            ]
        }))
        .expect("selector");
        assert_eq!(
            selector_query(&s).expect("query"),
            "app=web,tier in (a,b),!old"
        );
        assert!(selector_query(&LabelSelector::default()).is_err());
    }
}
