use serde_json::json;

use super::super::certs::tests::{cert, NOW};
use super::super::certs::DAY;
use super::super::Severity;
use super::*;

const NS: &str = "smidge-system";

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("object")
}

/// (description, error) of each outcome.
fn lines(out: &[Outcome]) -> Vec<(String, Option<String>)> {
    out.iter()
        .map(|o| (o.check.description.clone(), o.error.clone()))
        .collect()
}

fn failed<'a>(out: &'a [Outcome], description: &str) -> &'a str {
    out.iter()
        .find(|o| o.check.description.contains(description))
        .and_then(|o| o.error.as_deref())
        .unwrap_or_else(|| panic!("{description:?} did not fail: {:#?}", lines(out)))
}

fn all_pass(out: &[Outcome]) {
    assert!(out.iter().all(Outcome::passed), "{:#?}", lines(out));
}

fn info(major: &str, minor: &str) -> Info {
    obj(
        json!({"major": major, "minor": minor, "gitVersion": format!("v{major}.{minor}"),
        "gitCommit": "", "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "", "platform": ""}),
    )
}

#[test]
fn the_api_checks_stop_at_a_client_that_cannot_be_built() {
    let out = kubernetes_api(Err("no kubeconfig".into()), &Err("unused".into()));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].check.severity, Severity::Fatal);
    let out = kubernetes_api(Ok(()), &Err("connection refused".into()));
    assert_eq!(failed(&out, "can query"), "connection refused");
    all_pass(&kubernetes_api(Ok(()), &Ok(info("1", "37"))));
}

#[test]
fn the_minimum_version_is_1_31_and_a_plus_suffix_is_read() {
    all_pass(&kubernetes_version(&info("1", "31")));
    all_pass(&kubernetes_version(&info("1", "37+")));
    all_pass(&kubernetes_version(&info("2", "0")));
    let e = kubernetes_version(&info("1", "30"));
    assert!(failed(&e, "minimum").contains("1.31 or later"));
    let e = kubernetes_version(&info("", ""));
    assert!(failed(&e, "minimum").contains("cannot read"));
}

#[test]
fn pre_warns_about_an_existing_namespace_and_fails_on_a_missing_permission() {
    let yes = Ok(Access {
        allowed: true,
        reason: String::new(),
    });
    let no = Ok(Access {
        allowed: false,
        reason: "RBAC: no".into(),
    });
    all_pass(&pre(NS, &Ok(false), &[("Secrets", yes.clone())]));
    let out = pre(NS, &Ok(true), &[("Secrets", yes), ("ClusterRoles", no)]);
    assert_eq!(out[0].check.severity, Severity::Warning);
    assert!(failed(&out, "does not already exist").contains(NS));
    assert_eq!(
        failed(&out, "can create ClusterRoles"),
        "not allowed to create ClusterRoles: RBAC: no"
    );
    assert!(out[1].passed());
}

fn installed_crds(mutate: impl Fn(&mut CustomResourceDefinition)) -> Vec<CustomResourceDefinition> {
    smidge_controller::crds::all()
        .into_iter()
        .map(|(_, mut crd)| {
            if let Some(c) = crd
                .spec
                .conversion
                .as_mut()
                .and_then(|c| c.webhook.as_mut())
                .and_then(|w| w.client_config.as_mut())
            {
                c.ca_bundle = Some(k8s_openapi::ByteString(b"PEM".to_vec()));
            }
            mutate(&mut crd);
            crd
        })
        .collect()
}

fn expected() -> Vec<CustomResourceDefinition> {
    smidge_controller::crds::all()
        .into_iter()
        .map(|(_, c)| c)
        .collect()
}

#[test]
fn crds_must_exist_serve_every_version_and_have_a_ca_bundle() {
    all_pass(&crds(NS, &Ok(installed_crds(|_| {})), &expected()));

    // One missing: fatal, named, and nothing else judged.
    let mut some = installed_crds(|_| {});
    let gone = some.remove(0).metadata.name.expect("name");
    let out = crds(NS, &Ok(some), &expected());
    assert_eq!(out.len(), 1);
    assert!(out[0].check.retry);
    assert_eq!(failed(&out, "exist"), format!("missing: {gone}"));

    // A version not served.
    let out = crds(
        NS,
        &Ok(installed_crds(|c| {
            if c.metadata.name.as_deref() == Some("trafficsplits.split.smi-spec.io") {
                c.spec.versions[0].served = false;
            }
        })),
        &expected(),
    );
    assert!(failed(&out, "serve every version").contains("trafficsplits.split.smi-spec.io v1alpha"));

    // No caBundle, or a webhook in another namespace.
    let out = crds(
        NS,
        &Ok(installed_crds(|c| {
            if let Some(cc) = c
                .spec
                .conversion
                .as_mut()
                .and_then(|c| c.webhook.as_mut())
                .and_then(|w| w.client_config.as_mut())
            {
                cc.ca_bundle = None;
            }
        })),
        &expected(),
    );
    assert!(failed(&out, "conversion webhook").contains("no caBundle"));
    let out = crds("mesh", &Ok(installed_crds(|_| {})), &expected());
    assert!(failed(&out, "conversion webhook").contains("not mesh/smidge-controller"));
    // The listing failed.
    let out = crds(NS, &Err("forbidden".into()), &expected());
    assert_eq!(failed(&out, "exist"), "forbidden");
}

fn pod(name: &str, ready: bool, labels: serde_json::Value) -> Pod {
    obj(json!({
        "metadata": {"name": name, "namespace": "app", "labels": labels},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "message": "containers not ready"}]}
    }))
}

fn controller_pod(name: &str, ready: bool) -> Pod {
    let mut p = pod(name, ready, json!({labels::COMPONENT: "controller"}));
    p.metadata.namespace = Some(NS.into());
    p
}

fn lease(holder: &str, renewed: i64) -> Lease {
    obj(json!({
        "metadata": {"name": LEASE, "namespace": NS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": certs::iso(renewed).replace('Z', ".000000Z")}
    }))
}

fn healthy_existence() -> Existence {
    Existence {
        namespace: Ok(Some(obj(json!({"metadata": {"name": NS}})))),
        deployment: Ok(Some(obj(json!({
            "metadata": {"name": CONTROLLER},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"readyReplicas": 2}
        })))),
        pods: Ok(vec![
            controller_pod("c-1", true),
            controller_pod("c-2", true),
        ]),
        lease: Ok(Some(lease("c-2", NOW - 3))),
        now: NOW,
    }
}

#[test]
fn existence_wants_the_namespace_ready_replicas_and_pods_and_a_live_leader() {
    all_pass(&existence(NS, &healthy_existence()));

    let out = existence(
        NS,
        &Existence {
            namespace: Ok(None),
            ..healthy_existence()
        },
    );
    assert_eq!(out.len(), 1, "fatal: nothing after it");
    assert!(failed(&out, "namespace exists").contains("is smidge installed"));

    let mut f = healthy_existence();
    f.deployment = Ok(Some(obj(json!({
        "metadata": {"name": CONTROLLER},
        "spec": {"replicas": 0, "selector": {}, "template": {}}, "status": {}
    }))));
    let out = existence(NS, &f);
    assert!(failed(&out, "replicas ready").contains("scaled to 0"));
    assert_eq!(out.len(), 2);

    let mut f = healthy_existence();
    f.deployment = Ok(None);
    assert!(failed(&existence(NS, &f), "replicas ready").contains("does not exist"));

    let mut f = healthy_existence();
    f.pods = Ok(vec![
        controller_pod("c-1", true),
        controller_pod("c-2", false),
    ]);
    assert_eq!(
        failed(&existence(NS, &f), "pods are ready"),
        "not ready: c-2 (containers not ready)"
    );

    // The holder is gone, or stopped renewing.
    let mut f = healthy_existence();
    f.lease = Ok(Some(lease("c-old", NOW - 3)));
    let out = existence(NS, &f);
    assert!(failed(&out, "leader").contains("\"c-old\", which is not a ready controller pod"));
    assert_eq!(out[3].check.severity, Severity::Error);
    let mut f = healthy_existence();
    f.lease = Ok(Some(lease("c-1", NOW - 60)));
    assert!(failed(&existence(NS, &f), "leader").contains("has run out"));
    let mut f = healthy_existence();
    f.lease = Ok(None);
    assert!(failed(&existence(NS, &f), "leader").contains("no replica has claimed"));
}

fn identity_secret(anchor: &str, issuer: &str) -> Result<Option<Secret>, String> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    Ok(Some(obj(json!({
        "metadata": {"name": IDENTITY_SECRET, "namespace": NS},
        "data": {"ca.crt": b64(anchor), "issuer.crt": b64(issuer)}
    }))))
}

#[test]
fn identity_checks_parse_signature_validity_and_the_warning() {
    let (anchor, _, anchor_key) = cert("anchor", true, NOW - DAY, NOW + 3650 * DAY, None);
    let (issuer, _, _) = cert(
        "issuer",
        true,
        NOW - DAY,
        NOW + 365 * DAY,
        Some((&anchor, &anchor_key)),
    );
    all_pass(&identity(NS, &identity_secret(&anchor, &issuer), NOW));

    // Near expiry: a warning, not a failure.
    let (soon, _, _) = cert(
        "issuer",
        true,
        NOW - DAY,
        NOW + 10 * DAY,
        Some((&anchor, &anchor_key)),
    );
    let out = identity(NS, &identity_secret(&anchor, &soon), NOW);
    let warn = out.iter().find(|o| !o.passed()).expect("a warning");
    assert_eq!(warn.check.severity, Severity::Warning);
    assert!(warn
        .check
        .description
        .contains("issuer certificate is valid for at least 60 days"));
    assert!(
        out.iter().filter(|o| !o.passed()).count() == 1,
        "{:#?}",
        lines(&out)
    );

    // Signed by another anchor; expired.
    let (other, _, other_key) = cert("other", true, NOW - DAY, NOW + 3650 * DAY, None);
    let (foreign, _, _) = cert(
        "issuer",
        true,
        NOW - 3 * DAY,
        NOW - DAY,
        Some((&other, &other_key)),
    );
    let out = identity(NS, &identity_secret(&anchor, &foreign), NOW);
    assert!(failed(&out, "issued by the trust anchor").contains("not signed by"));
    assert!(failed(&out, "issuer certificate is within").contains("expired"));

    // Not a certificate at all: fatal, and the issuer is not judged.
    let out = identity(NS, &identity_secret("junk", &issuer), NOW);
    assert!(failed(&out, "trust anchor is a valid CA").contains("ca.crt"));
    assert!(!out.iter().any(|o| o.check.description.contains("issuer")));

    let out = identity(NS, &Ok(None), NOW);
    assert!(failed(&out, "Secret exists").contains("smidge-system/smidge-identity"));
}

fn webhook_facts(chain: Vec<Vec<u8>>, bundle: &str) -> Webhook {
    Webhook {
        endpoints: Ok(vec!["10.0.0.5:8443".into()]),
        conversion: Ok(()),
        injector_bundle: Ok(Some(bundle.into())),
        crd_bundles: vec![(
            "trafficsplits.split.smi-spec.io".into(),
            Some(bundle.into()),
        )],
        served: Ok(vec![Served {
            from: "pod smidge-controller-1".into(),
            chain,
        }]),
        now: NOW,
    }
}

#[test]
fn the_webhook_certificate_must_verify_under_every_ca_bundle_for_the_service_name() {
    let (anchor, _, anchor_key) = cert("anchor", true, NOW - DAY, NOW + 3650 * DAY, None);
    let (issuer, issuer_der, issuer_key) = cert(
        "issuer",
        true,
        NOW - DAY,
        NOW + 365 * DAY,
        Some((&anchor, &anchor_key)),
    );
    let leaf = |days: i64, name: &str| {
        cert(
            name,
            false,
            NOW - DAY,
            NOW + days * DAY,
            Some((&issuer, &issuer_key)),
        )
        .1
    };
    let name = "smidge-controller.smidge-system.svc";
    let good = vec![leaf(90, name), issuer_der.clone()];
    all_pass(&webhook(NS, &webhook_facts(good.clone(), &anchor)));

    // 30 days left: warned.
    let out = webhook(
        NS,
        &webhook_facts(vec![leaf(30, name), issuer_der.clone()], &anchor),
    );
    assert_eq!(
        out.last().map(|o| o.check.severity),
        Some(Severity::Warning)
    );
    assert!(failed(&out, "at least 60 days").contains("30 days from now"));

    // Another name; a CRD with a stale bundle; no bundle on a CRD.
    let out = webhook(
        NS,
        &webhook_facts(vec![leaf(90, "other.svc"), issuer_der.clone()], &anchor),
    );
    assert!(failed(&out, "valid certificate")
        .contains("not valid for smidge-controller.smidge-system.svc"));
    let (stale, _, _) = cert("old-anchor", true, NOW - DAY, NOW + DAY, None);
    let mut f = webhook_facts(good.clone(), &anchor);
    f.crd_bundles
        .push(("tcproutes.specs.smi-spec.io".into(), Some(stale)));
    f.crd_bundles
        .push(("udproutes.specs.smi-spec.io".into(), None));
    let e = failed(&webhook(NS, &f), "valid certificate").to_string();
    assert!(
        e.contains("under the caBundle of CRD tcproutes.specs.smi-spec.io"),
        "{e}"
    );
    assert!(
        e.contains("CRD udproutes.specs.smi-spec.io has no caBundle"),
        "{e}"
    );
    assert!(!e.contains("trafficsplits"), "{e}");

    // The injector off: a warning, and the CRDs' bundles still judged.
    let mut f = webhook_facts(good.clone(), &anchor);
    f.injector_bundle = Ok(None);
    let out = webhook(NS, &f);
    assert_eq!(
        out.iter()
            .filter(|o| !o.passed())
            .map(|o| o.check.severity)
            .collect::<Vec<_>>(),
        [Severity::Warning]
    );

    // One replica of two serves a certificate for another name: named.
    let mut f = webhook_facts(good.clone(), &anchor);
    if let Ok(served) = f.served.as_mut() {
        served.push(Served {
            from: "pod smidge-controller-2".into(),
            chain: vec![leaf(90, "other.svc"), issuer_der.clone()],
        });
    }
    let e = failed(&webhook(NS, &f), "valid certificate").to_string();
    assert!(e.starts_with("pod smidge-controller-2, under"), "{e}");
    assert!(!e.contains("smidge-controller-1"), "{e}");

    // The API server cannot convert through it: an error, the rest still judged.
    let mut f = webhook_facts(good.clone(), &anchor);
    f.conversion = Err("conversion webhook failed: x509: unknown authority".into());
    let out = webhook(NS, &f);
    assert!(failed(&out, "reaches the conversion webhook").contains("x509"));
    assert_eq!(out.len(), 5);

    // Unreadable, or no endpoints: fatal with the reason.
    let mut f = webhook_facts(good, &anchor);
    f.served = Err("GET /webhook-cert: 502".into());
    assert!(failed(&webhook(NS, &f), "valid certificate").contains("502"));
    f.endpoints = Ok(vec![]);
    let out = webhook(NS, &f);
    assert_eq!(out.len(), 1);
    assert!(failed(&out, "ready endpoint").contains("no ready endpoint"));
}

fn proxy(ns: &str, pod: &str, acked: Option<u64>, current: u64) -> ProxyStatus {
    obj(json!({
        "namespace": ns, "pod": pod, "identity": format!("{ns}/default"),
        "views": [{"view": "outbound 10.96.0.10:80", "acked": acked, "current": current}],
        "current": acked == Some(current)
    }))
}

#[test]
fn the_data_plane_is_ready_connected_current_and_unmeshed_pods_are_named() {
    let meshed = |name: &str, ready: bool| pod(name, ready, json!({labels::MESHED: NS}));
    let healthy = || DataPlane {
        meshed: Ok(vec![meshed("web-1", true), meshed("web-2", true)]),
        proxies: Ok(vec![
            proxy("app", "web-1", Some(5), 5),
            proxy("app", "web-2", Some(5), 5),
        ]),
        in_injected_namespaces: Ok(vec![meshed("web-1", true), meshed("web-2", true)]),
    };
    all_pass(&data_plane(&healthy()));

    let mut f = healthy();
    f.meshed = Ok(vec![meshed("web-1", true), meshed("web-2", false)]);
    f.proxies = Ok(vec![proxy("app", "web-1", Some(5), 5)]);
    all_pass(&data_plane(&f)[1..]);
    assert!(failed(&data_plane(&f), "pods are ready").contains("app/web-2"));

    let mut f = healthy();
    f.proxies = Ok(vec![proxy("app", "web-1", Some(4), 5)]);
    let out = data_plane(&f);
    assert_eq!(failed(&out, "connected"), "not connected: app/web-2");
    assert_eq!(
        failed(&out, "current view version"),
        "behind: app/web-1 (outbound 10.96.0.10:80: acked 4, current 5)"
    );
    assert!(out
        .iter()
        .all(|o| o.passed() || o.check.retry || o.check.severity == Severity::Warning));

    let mut f = healthy();
    f.proxies = Err("503 Service Unavailable".into());
    assert!(failed(&data_plane(&f), "connected").contains("/proxies: 503"));
    // The controller down but no meshed pod: nothing misses it.
    f.meshed = Ok(vec![]);
    all_pass(&data_plane(&f)[..2]);

    // In an injected namespace: an un-meshed pod is named; opted-out, smidge's own, hostNetwork
    // and finished pods are not.
    let mut f = healthy();
    let mut opted_out = pod("batch", true, json!({}));
    opted_out.metadata.annotations =
        Some([(labels::INJECT.to_string(), "disabled".to_string())].into());
    let mut host = pod("node-exporter", true, json!({}));
    host.spec.as_mut().expect("spec").host_network = Some(true);
    let mut done = pod("job-1", false, json!({}));
    done.status.as_mut().expect("status").phase = Some("Succeeded".into());
    f.in_injected_namespaces = Ok(vec![
        meshed("web-1", true),
        pod("legacy", true, json!({})),
        opted_out,
        host,
        done,
        pod("ctl", true, json!({labels::COMPONENT: "controller"})),
    ]);
    let out = data_plane(&f);
    let warn = out.last().expect("unmeshed");
    assert_eq!(warn.check.severity, Severity::Warning);
    let e = failed(&out, "is meshed");
    assert!(e.contains("un-meshed") && e.contains("app/legacy"), "{e}");
    for quiet in ["batch", "node-exporter", "job-1", "ctl"] {
        assert!(!e.contains(quiet), "{quiet} named: {e}");
    }
}
