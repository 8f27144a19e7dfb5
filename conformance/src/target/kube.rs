//! The current kubectl context as a target, through kube-rs: objects are server-side applied,
//! read and deleted by the API; calls are made by the harness pod's sample app (`POST /call`,
//! which relays the callee's answer), reached through the API server's pod proxy. The harness
//! namespace admits every caller (the API server's proxy is not in the mesh).

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::{Target, HARNESS_NAMESPACE};
use crate::case::ObjectRef;
use crate::sample_app::{CallRequest, CALL_ERROR_HEADER, RELAYED_HEADER};

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "smidge-conformance";

/// The harness for a real cluster; the image is this repository's sample app.
fn harness(image: &str) -> Vec<Value> {
    vec![
        serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {
                "name": HARNESS_NAMESPACE,
                "labels": {"smidge.io/inject": "enabled"},
                "annotations": {"smidge.io/default-policy": "allow-all"},
            },
        }),
        serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": super::HARNESS_SERVICE_ACCOUNT, "namespace": HARNESS_NAMESPACE},
        }),
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "harness", "namespace": HARNESS_NAMESPACE},
            "spec": {
                "selector": {"matchLabels": {"app": "harness"}},
                "template": {
                    "metadata": {"labels": {"app": "harness"}},
                    "spec": {
                        "serviceAccountName": super::HARNESS_SERVICE_ACCOUNT,
                        "containers": [{
                            "name": "harness", "image": image,
                            "env": [{"name": "SERVICE_NAME", "value": "harness"}],
                            "ports": [{"name": "http", "containerPort": 9091}],
                        }],
                    },
                },
            },
        }),
    ]
}

/// The API resource of `apiVersion`/`kind`. Every kind the cases use is plural by adding `s`.
pub fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_ascii_lowercase()))
}

fn cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "CustomResourceDefinition")
}

/// A Kubernetes cluster.
pub struct Kube {
    client: kube::Client,
    rt: tokio::runtime::Runtime,
    harness_pod: String,
}

impl Kube {
    /// The current kubectl context (or the in-cluster config), with the harness deployed.
    pub fn start(image: &str) -> anyhow::Result<Kube> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(kube::Client::try_default()).map_err(|e| {
            anyhow::anyhow!("--target kube needs a kubectl context or an in-cluster config: {e}")
        })?;
        Kube::with_client(client, rt, image, Duration::from_secs(180))
    }

    /// With a given client: deploys the harness and waits up to `wait` for its pod.
    pub fn with_client(
        client: kube::Client,
        rt: tokio::runtime::Runtime,
        image: &str,
        wait: Duration,
    ) -> anyhow::Result<Kube> {
        let mut k = Kube {
            client,
            rt,
            harness_pod: String::new(),
        };
        k.apply(&harness(image))
            .map_err(|e| anyhow::anyhow!("deploying the harness: {e}"))?;
        let deadline = Instant::now() + wait;
        loop {
            let pods: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(k.client.clone(), HARNESS_NAMESPACE);
            let list =
                k.rt.block_on(pods.list(&ListParams::default().labels("app=harness")))?;
            let ready = list.items.into_iter().find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            if let Some(name) = ready.and_then(|p| p.metadata.name) {
                k.harness_pod = name;
                return Ok(k);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the harness pod in {HARNESS_NAMESPACE} was not ready within {wait:?}"
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn api(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = resource(api_version, kind);
        match namespace {
            Some(ns) if !cluster_scoped(kind) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }
}

fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Target for Kube {
    fn apply(&mut self, objects: &[Value]) -> Result<(), String> {
        let mut errors = Vec::new();
        for o in objects {
            let (api_version, kind, name) = (
                text(o, "/apiVersion"),
                text(o, "/kind"),
                text(o, "/metadata/name"),
            );
            let ns = o.pointer("/metadata/namespace").and_then(Value::as_str);
            let api = self.api(&api_version, &kind, ns);
            let params = PatchParams::apply(FIELD_MANAGER).force();
            if let Err(e) = self
                .rt
                .block_on(api.patch(&name, &params, &Patch::Apply(o)))
            {
                errors.push(format!("{kind} {name}: {e}"));
            }
        }
        super::all_ok(&errors)
    }

    fn delete(&mut self, refs: &[ObjectRef]) -> Result<(), String> {
        let mut errors = Vec::new();
        for r in refs {
            let ns = (!r.namespace.is_empty()).then_some(r.namespace.as_str());
            let api = self.api(&r.api_version, &r.kind, ns);
            match self
                .rt
                .block_on(api.delete(&r.name, &DeleteParams::default()))
            {
                Ok(_) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => errors.push(format!("{} {}: {e}", r.kind, r.name)),
            }
        }
        super::all_ok(&errors)
    }

    fn get(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, String> {
        let api = self.api(api_version, kind, namespace);
        match self.rt.block_on(api.get(name)) {
            Ok(o) => serde_json::to_value(o).map(Some).map_err(|e| e.to_string()),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(format!("reading {kind} {name}: {e}")),
        }
    }

    fn fetch(&mut self, method: &str, url: &str, body: &str) -> Result<(u16, String), String> {
        let call = serde_json::to_vec(&CallRequest {
            url: url.to_string(),
            method: method.to_string(),
            headers: Default::default(),
            body: body.to_string(),
        })
        .map_err(|e| e.to_string())?;
        let path = format!(
            "/api/v1/namespaces/{HARNESS_NAMESPACE}/pods/{}:9091/proxy/call",
            self.harness_pod
        );
        let req = http::Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(kube::client::Body::from(call))
            .map_err(|e| e.to_string())?;
        let client = self.client.clone();
        self.rt.block_on(async move {
            use http_body_util::BodyExt;
            let resp = client
                .send(req)
                .await
                .map_err(|e| format!("{method} {url}: {e}"))?;
            let status = resp.status().as_u16();
            let relayed = resp.headers().contains_key(RELAYED_HEADER);
            let call_error = resp
                .headers()
                .get(CALL_ERROR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .map_err(|e| e.to_string())?;
            match (relayed, call_error) {
                (true, _) => Ok((status, body)),
                (false, Some(why)) => Err(format!("{method} {url} from the harness: {why}")),
                (false, None) => Err(format!(
                    "{method} {url}: the API server's proxy to the harness answered {status}: {}",
                    body.lines().next().unwrap_or("")
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

    /// An API server that records every request (method, path and query, content type, body)
    /// and answers as a real one would for the few objects it knows.
    fn api_server(seen: Seen) -> kube::Client {
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let seen = seen.clone();
            async move {
                let method = req.method().to_string();
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let content_type = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = req.into_body().collect().await?.to_bytes();
                let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().expect("lock").push((
                    method.clone(),
                    path.clone(),
                    content_type,
                    sent.clone(),
                ));
                let json = |code: u16, v: Value| {
                    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
                    *r.status_mut() = http::StatusCode::from_u16(code).expect("status");
                    r
                };
                let not_found = json(
                    404,
                    serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "not found", "reason": "NotFound", "code": 404,
                    }),
                );
                let r = match (method.as_str(), path.split('?').next().unwrap_or("")) {
                    ("PATCH", _) => json(200, sent),
                    ("GET", "/api/v1/namespaces/smidge-conformance/pods") => json(200, serde_json::json!({
                        "apiVersion": "v1", "kind": "PodList", "metadata": {},
                        "items": [{"metadata": {"name": "harness-7d9f-x2kqj", "namespace": "smidge-conformance"},
                                   "status": {"conditions": [{"type": "Ready", "status": "True"}]}}],
                    })),
                    ("GET", "/apis/split.smi-spec.io/v1alpha4/namespaces/case/trafficsplits/server-split") => json(200, serde_json::json!({
                        "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
                        "metadata": {"name": "server-split", "namespace": "case"},
                        "spec": {"service": "app-svc", "backends": [{"service": "app-b", "weight": 1}]},
                    })),
                    ("POST", "/api/v1/namespaces/smidge-conformance/pods/harness-7d9f-x2kqj:9091/proxy/call") => {
                        if sent["url"] == "http://down/echo" {
                            let mut r = json(500, Value::Null);
                            r.headers_mut().insert(CALL_ERROR_HEADER, http::HeaderValue::from_static("calling http://down/echo: connection refused"));
                            r
                        } else {
                            let mut r = Response::new(Full::new(Bytes::from("denied")));
                            *r.status_mut() = http::StatusCode::FORBIDDEN;
                            r.headers_mut().insert(RELAYED_HEADER, http::HeaderValue::from_static("1"));
                            r
                        }
                    }
                    _ => not_found,
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(r)
            }
        });
        kube::Client::new(service, "default")
    }

    fn kube(seen: &Seen) -> Kube {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let client = rt.block_on(async { api_server(seen.clone()) });
        Kube::with_client(
            client,
            rt,
            "ghcr.io/smidge-mesh/sample-app:test",
            Duration::from_secs(5),
        )
        .expect("the harness starts")
    }

    #[test]
    fn the_harness_is_applied_server_side_and_its_ready_pod_found() {
        let seen = Seen::default();
        let k = kube(&seen);
        assert_eq!(k.harness_pod, "harness-7d9f-x2kqj");
        let s = seen.lock().expect("lock");
        let (method, path, content_type, body) = &s[0];
        assert_eq!(method, "PATCH");
        assert_eq!(
            path,
            "/api/v1/namespaces/smidge-conformance?&force=true&fieldManager=smidge-conformance"
        );
        assert_eq!(content_type, "application/apply-patch+yaml");
        assert_eq!(
            body["metadata"]["annotations"]["smidge.io/default-policy"],
            "allow-all"
        );
        assert!(s.iter().any(|(_, p, _, _)| p
            .starts_with("/apis/apps/v1/namespaces/smidge-conformance/deployments/harness?")));
    }

    #[test]
    fn objects_are_read_by_their_api_version_and_a_404_is_absent() {
        let seen = Seen::default();
        let mut k = kube(&seen);
        let split = k
            .get(
                "split.smi-spec.io/v1alpha4",
                "TrafficSplit",
                Some("case"),
                "server-split",
            )
            .expect("read");
        assert_eq!(
            split.map(|s| s["spec"]["service"].clone()),
            Some(Value::from("app-svc"))
        );
        let gone = k
            .get(
                "access.smi-spec.io/v1alpha3",
                "TrafficTarget",
                Some("case"),
                "t",
            )
            .expect("read");
        assert_eq!(gone, None);
        k.delete(&[ObjectRef {
            api_version: "access.smi-spec.io/v1alpha3".into(),
            kind: "TrafficTarget".into(),
            name: "t".into(),
            namespace: "case".into(),
        }])
        .expect("deleting what is gone is fine");
    }

    #[test]
    fn calls_go_through_the_harness_and_relay_the_callees_answer() {
        let seen = Seen::default();
        let mut k = kube(&seen);
        assert_eq!(
            k.fetch("GET", "http://app-b.case.svc.cluster.local:9091/echo", ""),
            Ok((403, "denied".to_string()))
        );
        let last = seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a request");
        assert_eq!(
            last.3["url"],
            "http://app-b.case.svc.cluster.local:9091/echo"
        );
        assert_eq!(last.3["method"], "GET");
        let e = k
            .fetch("GET", "http://down/echo", "")
            .expect_err("no response");
        assert!(e.contains("connection refused"), "{e}");
        let e = k.fetch("GET", "http://nowhere/x", "").err();
        assert_eq!(e, None, "a relayed answer is an answer");
    }
}
