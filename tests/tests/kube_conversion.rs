//! Every SMI version served by the real API server through smidge's conversion webhook: objects
//! written in old versions (v1alpha1 layouts, quantity weights, a v1alpha2 destination port) are
//! stored in the newest version and read back exactly in their own; a newest-version object reads
//! in v1alpha1 and comes back whole when written back; a malformed one is refused naming its
//! field; and without the webhook (strategy None) fields are lost.
//!
//! The webhook runs in this test on 127.0.0.1 with a certificate from smidge's identity CA, and
//! the CRDs name it by `url` (envtest's approach; the shipped CRDs name the Service); the
//! `caBundle` is set by `ensure_ca_bundle`, as the controller does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use smidge_controller::convert::ANNOTATION;
use smidge_controller::identity::{generate, Authority, Trust};
use smidge_controller::{crds, webhook};
use smidge_e2e::kube::{binaries, Kubectl};
use smidge_local_cluster::kube::{control_plane, ControlPlane, Options};

/// How long the API server may take to trust a new caBundle or switch a conversion strategy.
const SETTLE: Duration = Duration::from_secs(30);

/// kubectl with a discovery cache of this test's own (the CRDs change under it).
struct K {
    kubectl: Kubectl,
    cache: PathBuf,
    dir: PathBuf,
}

impl K {
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--cache-dir", self.cache.to_str().unwrap_or(".")];
        all.extend_from_slice(args);
        all
    }

    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl.ok(&self.args(args))
    }

    /// `kubectl apply` of `object`; the error carries kubectl's stderr.
    fn apply(&self, object: &Value) -> anyhow::Result<String> {
        let file = self.dir.join(format!(
            "{}.json",
            object["metadata"]["name"].as_str().unwrap_or("object")
        ));
        std::fs::write(&file, serde_json::to_vec(object)?)?;
        let path = file.to_str().context("path")?.to_string();
        self.ok(&["apply", "-f", &path])
    }

    fn replace(&self, object: &Value) -> anyhow::Result<String> {
        let file = self.dir.join("replace.json");
        std::fs::write(&file, serde_json::to_vec(object)?)?;
        let path = file.to_str().context("path")?.to_string();
        self.ok(&["replace", "-f", &path])
    }

    /// The object `name` of `resource` (plural) in namespace shop, read in `group/version`.
    fn get(&self, resource: &str, group: &str, version: &str, name: &str) -> anyhow::Result<Value> {
        self.get_in("shop", resource, group, version, name)
    }

    fn get_in(
        &self,
        namespace: &str,
        resource: &str,
        group: &str,
        version: &str,
        name: &str,
    ) -> anyhow::Result<Value> {
        let what = format!("{resource}.{version}.{group}");
        Ok(serde_json::from_str(&self.ok(&[
            "-n", namespace, "get", &what, name, "-o", "json",
        ])?)?)
    }
}

/// The annotations without kubectl's own.
fn annotations(object: &Value) -> Value {
    let mut a = object["metadata"]["annotations"].clone();
    if let Some(m) = a.as_object_mut() {
        m.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    a
}

/// Everything but apiVersion, kind, metadata and status.
fn body(object: &Value) -> Value {
    let mut b = object.clone();
    if let Some(o) = b.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata", "status"] {
            o.remove(key);
        }
    }
    b
}

/// The conversion annotation, parsed (null when there is none).
fn conversion_data(object: &Value) -> Value {
    object["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

/// The ecosystem samples the unit tests use: (what, object).
fn samples() -> anyhow::Result<Vec<(String, Value)>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/tests/data/smi-samples.json");
    let all: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )?;
    Ok(all
        .into_iter()
        .map(|s| {
            (
                s["what"].as_str().unwrap_or_default().to_string(),
                s["object"].clone(),
            )
        })
        .collect())
}

fn has_conversion_data(object: &Value) -> bool {
    object["metadata"]["annotations"].get(ANNOTATION).is_some()
}

/// The shipped CRDs, pointed at `url` instead of the Service.
fn crds_for(url: &str) -> anyhow::Result<Vec<Value>> {
    crds::all()
        .into_iter()
        .map(|(_, mut crd)| {
            if let Some(cc) = crd
                .spec
                .conversion
                .as_mut()
                .and_then(|c| c.webhook.as_mut())
                .and_then(|w| w.client_config.as_mut())
            {
                cc.service = None;
                cc.url = Some(url.to_string());
            }
            Ok(serde_json::to_value(&crd)?)
        })
        .collect()
}

fn until<T>(what: &str, mut check: impl FnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if std::time::Instant::now() > deadline {
            bail!("{what}: not within {SETTLE:?} ({last})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn webhook_authority(dir: &Path) -> anyhow::Result<Authority> {
    generate(dir, "cluster.local")?;
    let trust = Trust::load(dir)?;
    Authority::new(trust, "cluster.local", Duration::from_secs(3600))
}

#[test]
fn every_smi_version_is_served_through_the_conversion_webhook() -> anyhow::Result<()> {
    let Some(bin) = binaries()? else {
        return Ok(());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let plane = ControlPlane::start(&Options::new(state.path(), &bin))?;
    let k = K {
        kubectl: Kubectl {
            program: bin.join("kubectl"),
            kubeconfig: plane.kubeconfig(),
        },
        cache: work.path().join("cache"),
        dir: work.path().to_path_buf(),
    };

    // The webhook, with a certificate from the identity CA for the address the API server dials.
    let trust_dir = work.path().join("trust");
    std::fs::create_dir_all(&trust_dir)?;
    let authority = webhook_authority(&trust_dir)?;
    let tls = webhook::serving_cert(&authority, &["127.0.0.1".to_string()])?;
    let rt = tokio::runtime::Runtime::new()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    let server = rt.spawn(webhook::serve(listener, tls));

    // The CRDs, then their caBundle from ensure_ca_bundle (twice: the second changes nothing).
    for crd in crds_for(&format!("https://127.0.0.1:{port}/convert"))? {
        assert!(crd["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"].is_null());
        k.apply(&crd)?;
    }
    let client = rt.block_on(control_plane::client(&plane.kubeconfig()))?;
    let changed = rt.block_on(webhook::ensure_ca_bundle(
        client.clone(),
        &authority.anchor_pem,
    ))?;
    assert_eq!(changed.len(), 4, "{changed:?}");
    let again = rt.block_on(webhook::ensure_ca_bundle(client, &authority.anchor_pem))?;
    assert!(again.is_empty(), "{again:?}");
    for (_, crd) in crds::all() {
        let name = crd.metadata.name.unwrap_or_default();
        k.ok(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{name}"),
            "--timeout=60s",
        ])?;
    }
    k.ok(&["create", "namespace", "shop"])?;

    // A reinstall that drops the bundles is repaired by the task the controller runs.
    let bundle = |k: &K| -> anyhow::Result<String> {
        k.ok(&[
            "get",
            "crd",
            "trafficsplits.split.smi-spec.io",
            "-o",
            "jsonpath={.spec.conversion.webhook.clientConfig.caBundle}",
        ])
    };
    let set = bundle(&k)?;
    assert!(!set.is_empty());
    k.ok(&[
        "patch",
        "crd",
        "trafficsplits.split.smi-spec.io",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/conversion/webhook/clientConfig/caBundle"}]"#,
    ])?;
    assert_eq!(bundle(&k)?, "");
    let client = rt.block_on(control_plane::client(&plane.kubeconfig()))?;
    let maintainer = rt.spawn(webhook::maintain_ca_bundle(
        client,
        authority.anchor_pem.clone(),
        Duration::from_millis(500),
    ));
    until("the caBundle put back", || {
        Ok((bundle(&k)? == set).then_some(()))
    })?;

    // A v1alpha1 TrafficSplit with quantity weights (as linkerd-smi users write it).
    let old_split = json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"service": "web", "backends": [
            {"service": "web-v1", "weight": "500m"}, {"service": "web-v2", "weight": "1"}]}});
    until(
        "the first conversion (the API server trusting the caBundle)",
        || Ok(k.apply(&old_split).ok()),
    )?;
    let split = |v: &str| k.get("trafficsplits", "split.smi-spec.io", v, "web");
    let newest = split("v1alpha4")?;
    assert_eq!(newest["apiVersion"], "split.smi-spec.io/v1alpha4");
    assert_eq!(
        newest["spec"]["backends"],
        json!([{"service": "web-v1", "weight": 1}, {"service": "web-v2", "weight": 2}]),
        "{newest}"
    );
    assert!(has_conversion_data(&newest), "{newest}");
    for v in ["v1alpha2", "v1alpha3"] {
        assert_eq!(
            split(v)?["spec"]["backends"],
            newest["spec"]["backends"],
            "{v}"
        );
    }
    let own = split("v1alpha1")?;
    assert_eq!(own["spec"], old_split["spec"], "{own}");
    assert_eq!(annotations(&own), json!({}), "{own}");

    // A v1alpha2 TrafficTarget with a destination port (as Traefik Mesh users write it).
    let old_target = json!({"apiVersion": "access.smi-spec.io/v1alpha2", "kind": "TrafficTarget",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"destination": {"kind": "ServiceAccount", "name": "api", "namespace": "shop", "port": 8080},
            "rules": [{"kind": "HTTPRouteGroup", "name": "api-routes", "matches": ["metrics"]}],
            "sources": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "shop"}]}});
    k.apply(&old_target)?;
    let target = |v: &str| k.get("traffictargets", "access.smi-spec.io", v, "api");
    let newest = target("v1alpha3")?;
    assert!(
        newest["spec"]["destination"].get("port").is_none(),
        "{newest}"
    );
    assert!(has_conversion_data(&newest), "{newest}");
    let own = target("v1alpha2")?;
    assert_eq!(own["spec"], old_target["spec"], "{own}");
    let v1 = target("v1alpha1")?;
    assert_eq!(v1["destination"]["port"], 8080, "{v1}");
    assert_eq!(v1["specs"], old_target["spec"]["rules"], "{v1}");
    assert!(v1.get("spec").is_none(), "{v1}");

    // A v1alpha4 split with matches read as v1alpha1, then written back in v1alpha1.
    let ab = json!({"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
        "metadata": {"name": "ab", "namespace": "shop"},
        "spec": {"service": "web", "backends": [
            {"service": "web-v1", "weight": 90}, {"service": "web-v2", "weight": 10}],
            "matches": [{"kind": "HTTPRouteGroup", "name": "beta-users"}]}});
    k.apply(&ab)?;
    let ab_in = |v: &str| k.get("trafficsplits", "split.smi-spec.io", v, "ab");
    let mut v1 = ab_in("v1alpha1")?;
    assert_eq!(
        v1["spec"],
        json!({"service": "web", "backends": [
            {"service": "web-v1", "weight": "90"}, {"service": "web-v2", "weight": "10"}]}),
        "{v1}"
    );
    assert!(has_conversion_data(&v1), "{v1}");
    v1["metadata"]["labels"] = json!({"edited": "in-v1alpha1"});
    k.replace(&v1)?;
    let back = ab_in("v1alpha4")?;
    assert_eq!(back["spec"], ab["spec"], "{back}");
    assert_eq!(back["metadata"]["labels"]["edited"], "in-v1alpha1");
    assert!(!has_conversion_data(&back), "{back}");

    // Printer columns.
    let table = k.ok(&["-n", "shop", "get", "trafficsplits"])?;
    eprintln!("kubectl get trafficsplits:\n{table}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["SERVICE", "BACKENDS", "ACCEPTED", "AGE"] {
        assert!(header.contains(column), "{table}");
    }
    let web = table
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_default();
    assert!(
        web.contains(r#"{"service":"web-v1","weight":1}"#) && web.contains("web-v2"),
        "{table}"
    );

    // Every ecosystem sample of the unit tests applies unchanged, reads back exactly in its own
    // version, and reads in every other version as `convert` makes it.
    k.ok(&["create", "namespace", "samples"])?;
    for (what, mut sample) in samples()? {
        if let Some(m) = sample["metadata"].as_object_mut() {
            m.insert("namespace".into(), json!("samples"));
            // Their owners do not exist here; the garbage collector would delete them.
            m.remove("ownerReferences");
        }
        if let Some(o) = sample.as_object_mut() {
            o.remove("status");
        }
        k.apply(&sample).with_context(|| what.clone())?;
        let (group, own) = sample["apiVersion"]
            .as_str()
            .and_then(|a| a.rsplit_once('/'))
            .context("apiVersion")?;
        let kind = sample["kind"].as_str().context("kind")?;
        let plural = format!("{}s", kind.to_lowercase());
        let name = sample["metadata"]["name"].as_str().context("name")?;
        let versions = smidge_controller::convert::kind_versions(group, kind)
            .context("kind")?
            .versions;
        for version in versions {
            let read = k.get_in("samples", &plural, group, version, name)?;
            let expected =
                smidge_controller::convert::convert(&sample, &format!("{group}/{version}"))?;
            assert_eq!(
                body(&read),
                body(&expected),
                "{what} read in {version}: {read}"
            );
            assert_eq!(
                conversion_data(&read),
                conversion_data(&expected),
                "{what} read in {version}"
            );
            if *version == own {
                assert_eq!(body(&read), body(&sample), "{what}");
                assert!(conversion_data(&read).is_null(), "{what}: {read}");
            }
        }
    }

    // A weight that is no quantity: refused, naming the object and the field.
    let bad = json!({"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
        "metadata": {"name": "bad", "namespace": "shop"},
        "spec": {"service": "web", "backends": [{"service": "web-v1", "weight": "lots"}]}});
    let refused = format!(
        "{:#}",
        k.apply(&bad).expect_err("a weight of \"lots\" is refused")
    );
    eprintln!("refused: {refused}");
    assert!(refused.contains("TrafficSplit shop/bad"), "{refused}");
    assert!(refused.contains("spec.backends[0].weight"), "{refused}");

    // The same v1alpha1 HTTPRouteGroup keeps its matches with the webhook and loses them without.
    let group = |name: &str| {
        json!({"apiVersion": "specs.smi-spec.io/v1alpha1", "kind": "HTTPRouteGroup",
            "metadata": {"name": name, "namespace": "shop"},
            "matches": [{"name": "metrics", "pathRegex": "/metrics", "methods": ["GET"]}]})
    };
    k.apply(&group("kept"))?;
    let kept = k.get("httproutegroups", "specs.smi-spec.io", "v1alpha4", "kept")?;
    assert_eq!(kept["spec"]["matches"], group("kept")["matches"], "{kept}");
    k.ok(&[
        "patch",
        "crd",
        "httproutegroups.specs.smi-spec.io",
        "--type=merge",
        "-p",
        r#"{"spec":{"conversion":{"strategy":"None","webhook":null}}}"#,
    ])?;
    let mut attempt = 0;
    let lost = until("the API server converting without the webhook", || {
        attempt += 1;
        let name = format!("lost-{attempt}");
        k.apply(&group(&name))?;
        let read = k.get("httproutegroups", "specs.smi-spec.io", "v1alpha4", &name)?;
        Ok(read["spec"]["matches"].is_null().then_some(read))
    })?;
    assert!(lost.get("matches").is_none(), "{lost}");

    maintainer.abort();
    server.abort();
    drop(rt);
    plane.stop()?;
    Ok(())
}
