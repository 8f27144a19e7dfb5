//! Pods written as YAML, as users and the API server write them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1 as core;

use super::*;
use crate::node::images::Location;

fn pod(yaml: &str) -> core::Pod {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// A pod `web` in `shop` (uid `u-1`, node `node-1`, service account `web-sa`) whose spec is
/// `spec` (indented by four spaces under `spec:`).
fn pod_with(spec: &str) -> core::Pod {
    pod(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  uid: u-1
  labels: {{app: web, tier: front}}
  annotations: {{note: \"say \\\"hi\\\"\"}}
spec:
  nodeName: node-1
  serviceAccountName: web-sa
{spec}"
    ))
}

fn planned(spec: &str) -> PodPlan {
    plan(&pod_with(spec)).unwrap()
}

fn plan_err(spec: &str) -> PlanError {
    plan(&pod_with(spec)).unwrap_err()
}

#[derive(Default)]
struct Objects {
    config_maps: BTreeMap<(String, String), ConfigMapData>,
    secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
}

impl Objects {
    fn cm(mut self, name: &str, data: &[(&str, &str)]) -> Self {
        self.config_maps.insert(
            ("shop".into(), name.into()),
            ConfigMapData {
                data: data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                binary_data: BTreeMap::new(),
            },
        );
        self
    }

    fn secret(mut self, name: &str, data: &[(&str, &[u8])]) -> Self {
        self.secrets.insert(
            ("shop".into(), name.into()),
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        );
        self
    }
}

impl Lookup for Objects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMapData> {
        self.config_maps
            .get(&(namespace.into(), name.into()))
            .cloned()
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.secrets.get(&(namespace.into(), name.into())).cloned()
    }
}

fn facts() -> Facts {
    Facts {
        pod_ips: vec!["10.42.0.7".into(), "fd00::7".into()],
        host_ips: vec!["192.168.1.2".into()],
    }
}

fn env_of(p: &PodPlan, objects: &Objects) -> Result<Vec<(String, String)>, String> {
    environment(p, &p.containers[0], &facts(), objects)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---- argv and images ----

#[test]
fn command_replaces_the_entrypoint_and_args_follow() {
    let p = planned(
        "  containers:
  - name: a
    image: busybox:1.36
    command: [/bin/sh, -c]
    args: [echo hi]
  - name: b
    image: docker.io/library/busybox
    args: [-c, sleep 1]
  - name: c
    image: ghcr.io/smidge-mesh/smidge-proxy:v1
    args: [run]
  - name: d
    image: registry.k8s.io/pause:3.10
",
    );
    assert_eq!(
        p.containers[0].argv,
        Argv::Resolved {
            executable: "sh",
            location: Location::Host,
            argv: strings(&["/bin/sh", "-c", "echo hi"]),
        }
    );
    assert_eq!(
        p.containers[1].argv,
        Argv::Resolved {
            executable: "sh",
            location: Location::Host,
            argv: strings(&["sh", "-c", "sleep 1"]),
        }
    );
    assert_eq!(
        p.containers[2].argv,
        Argv::Resolved {
            executable: "smidge-proxy",
            location: Location::Workspace,
            argv: strings(&["smidge-proxy", "run"]),
        }
    );
    assert_eq!(
        p.containers[3].argv,
        Argv::Resolved {
            executable: "sleep",
            location: Location::Host,
            argv: strings(&["sleep", "infinity"]),
        }
    );
}

#[test]
fn an_unknown_image_or_command_fails_only_that_container() {
    let p = planned(
        "  containers:
  - name: good
    image: smidge/echo:1.2
  - name: nginx
    image: nginx:1.27
  - name: py
    image: busybox
    command: [python3, -m, http.server]
",
    );
    assert!(matches!(
        p.containers[0].argv,
        Argv::Resolved {
            executable: "smidge-echo",
            ..
        }
    ));
    match &p.containers[1].argv {
        Argv::UnknownImage(m) => {
            assert!(m.contains("\"nginx:1.27\""), "{m}");
            assert!(m.contains("smidge/echo"), "names the table: {m}");
        }
        other => panic!("{other:?}"),
    }
    match &p.containers[2].argv {
        Argv::UnknownCommand(m) => assert!(m.contains("\"python3\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_empty_command_is_no_command() {
    let p = planned(
        "  containers:
  - name: a
    image: curlimages/curl
    command: []
    args: [-s, http://x]
",
    );
    assert!(matches!(
        &p.containers[0].argv,
        Argv::Resolved { argv, .. } if *argv == strings(&["curl", "-s", "http://x"])
    ));
}

// ---- the pod ----

#[test]
fn pod_defaults_and_identity() {
    let p = planned(
        "  containers:
  - name: a
    image: smidge/echo
",
    );
    assert_eq!(p.uid, "u-1");
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("shop", "web"));
    assert_eq!(p.service_account, "web-sa");
    assert_eq!(p.node_name.as_deref(), Some("node-1"));
    assert_eq!(p.hostname, "web");
    assert_eq!(p.restart_policy, RestartPolicy::Always);
    assert_eq!(p.grace_period_seconds, 30);
    assert!(!p.host_network);
    assert_eq!(p.fs_user, None);

    let p = plan(&pod("metadata: {name: x, uid: u}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers: [{name: a, image: smidge/echo}]
"))
    .unwrap();
    assert_eq!(p.service_account, "default");
    assert_eq!(p.namespace, "default");
    assert_eq!(p.node_name, None);
    assert_eq!(p.restart_policy, RestartPolicy::Never);
    assert_eq!(p.grace_period_seconds, 5);

    let long = format!("{}-x", "a".repeat(62));
    let p = plan(&pod(&format!(
        "metadata: {{name: {long}, uid: u}}\nspec: {{containers: [{{name: a, image: busybox}}]}}"
    )))
    .unwrap();
    assert_eq!(
        p.hostname,
        "a".repeat(62),
        "cut to 63, trailing '-' trimmed"
    );
    let p = plan(&pod(
        "metadata: {name: x, uid: u}\nspec: {hostname: h, containers: [{name: a, image: busybox}]}",
    ))
    .unwrap();
    assert_eq!(p.hostname, "h");
}

#[test]
fn malformed_pods_name_the_field() {
    let e = plan(&pod(
        "metadata: {name: x}\nspec: {containers: [{name: a, image: busybox}]}",
    ))
    .unwrap_err();
    assert_eq!(e.field, "metadata.uid");
    assert_eq!(
        plan_err("  restartPolicy: Sometimes\n  containers: [{name: a, image: busybox}]").field,
        "spec.restartPolicy"
    );
    assert_eq!(
        plan_err("  containers: [{name: a}]").field,
        "spec.containers[0].image"
    );
    assert_eq!(plan_err("  containers: []").field, "spec.containers");
    let e = plan_err("  containers: [{name: a, image: busybox}, {name: a, image: busybox}]");
    assert!(e.message.contains("\"a\""), "{e}");
    let e = plan_err(
        "  containers:
  - name: a
    image: busybox
    volumeMounts: [{name: nope, mountPath: /x}]
",
    );
    assert_eq!(e.field, "spec.containers[0].volumeMounts[0].name");
    let e = plan_err(
        "  containers:
  - name: a
    image: busybox
    ports: [{containerPort: 70000}]
",
    );
    assert_eq!(e.field, "spec.containers[0].ports[0].containerPort");
    assert_eq!(
        e.to_string(),
        "spec.containers[0].ports[0].containerPort: 70000 is not a port (1–65535)"
    );
}

#[test]
fn native_sidecars_are_init_containers_with_restart_policy_always() {
    let p = planned(
        "  initContainers:
  - name: setup
    image: ghcr.io/smidge-mesh/smidge-proxy
    args: [init]
  - name: proxy
    image: ghcr.io/smidge-mesh/smidge-proxy
    args: [run]
    restartPolicy: Always
  containers:
  - name: app
    image: smidge/echo
",
    );
    let names: Vec<(&str, bool)> = p
        .init
        .iter()
        .map(|c| (c.name.as_str(), c.sidecar))
        .collect();
    assert_eq!(names, [("setup", false), ("proxy", true)]);
    assert!(!p.containers[0].sidecar);
    let e = plan_err(
        "  containers:
  - name: app
    image: smidge/echo
    restartPolicy: Always
",
    );
    assert_eq!(e.field, "spec.containers[0].restartPolicy");
}

#[test]
fn security_context_container_over_pod() {
    let p = planned(
        "  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000, runAsNonRoot: true}
  initContainers:
  - name: init
    image: ghcr.io/smidge-mesh/smidge-proxy
    args: [init]
    securityContext:
      runAsUser: 0
      runAsNonRoot: false
      capabilities: {add: [NET_ADMIN, NET_RAW], drop: [ALL]}
  containers:
  - name: app
    image: smidge/echo
    securityContext: {privileged: true}
",
    );
    let init = &p.init[0];
    assert_eq!((init.run_as_user, init.run_as_group), (Some(0), Some(3000)));
    assert!(!init.run_as_non_root);
    assert_eq!(init.add_capabilities, ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(init.drop_capabilities, ["ALL"]);
    let app = &p.containers[0];
    assert_eq!(
        (app.run_as_user, app.run_as_group),
        (Some(1000), Some(3000))
    );
    assert!(app.run_as_non_root && app.privileged);
    assert_eq!((p.run_as_user, p.fs_group), (Some(1000), Some(2000)));
    assert_eq!(p.fs_user, None, "two users: no fs user");

    let p = planned(
        "  securityContext: {runAsUser: 1000}
  initContainers: [{name: i, image: busybox}]
  containers: [{name: a, image: busybox}]
",
    );
    assert_eq!(p.fs_user, Some(1000));
}

#[test]
fn mounts() {
    let p = planned(
        "  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: a
    image: busybox
    workingDir: /work
    volumeMounts:
    - {name: data, mountPath: /data, subPath: sub/dir, readOnly: true}
    - {name: data, mountPath: /all}
",
    );
    let c = &p.containers[0];
    assert_eq!(c.working_dir.as_deref(), Some("/work"));
    assert_eq!(
        c.mounts,
        [
            Mount {
                volume: "data".into(),
                mount_path: "/data".into(),
                sub_path: Some("sub/dir".into()),
                read_only: true
            },
            Mount {
                volume: "data".into(),
                mount_path: "/all".into(),
                sub_path: None,
                read_only: false
            },
        ]
    );
    for bad in ["/etc", "../up", "a/../../b"] {
        let e = plan_err(&format!(
            "  volumes: [{{name: data, emptyDir: {{}}}}]
  containers:
  - name: a
    image: busybox
    volumeMounts: [{{name: data, mountPath: /d, subPath: \"{bad}\"}}]
"
        ));
        assert_eq!(
            e.field, "spec.containers[0].volumeMounts[0].subPath",
            "{bad}"
        );
    }
}

// ---- probes ----

#[test]
fn probes_resolve_named_ports_and_take_the_api_defaults() {
    let p = planned(
        "  containers:
  - name: a
    image: smidge/echo
    ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 4191, protocol: TCP}]
    startupProbe:
      httpGet: {path: /ready, port: admin, scheme: HTTPS, httpHeaders: [{name: X-A, value: b}]}
      failureThreshold: 30
      periodSeconds: 1
    readinessProbe:
      tcpSocket: {port: http}
    livenessProbe:
      exec: {command: [cat, /tmp/ok]}
      initialDelaySeconds: 5
",
    );
    let c = &p.containers[0];
    assert_eq!(
        c.ports[1],
        Port {
            name: Some("admin".into()),
            container_port: 4191,
            protocol: "TCP".into()
        }
    );
    let startup = c.startup_probe.clone().unwrap();
    assert_eq!(
        startup.action,
        ProbeAction::HttpGet {
            host: None,
            path: "/ready".into(),
            port: 4191,
            https: true,
            headers: vec![("X-A".into(), "b".into())],
        }
    );
    assert_eq!((startup.period_seconds, startup.failure_threshold), (1, 30));
    let ready = c.readiness_probe.clone().unwrap();
    assert_eq!(
        ready.action,
        ProbeAction::TcpSocket {
            host: None,
            port: 8080
        }
    );
    assert_eq!(
        (
            ready.initial_delay_seconds,
            ready.period_seconds,
            ready.timeout_seconds,
            ready.success_threshold,
            ready.failure_threshold
        ),
        (0, 10, 1, 1, 3)
    );
    let live = c.liveness_probe.clone().unwrap();
    assert_eq!(
        live.action,
        ProbeAction::Exec {
            command: strings(&["cat", "/tmp/ok"])
        }
    );
    assert_eq!(live.initial_delay_seconds, 5);
}

#[test]
fn bad_probes_name_the_field() {
    for (probe, field) in [
        (
            "{httpGet: {port: nope}}",
            "spec.containers[0].readinessProbe.httpGet.port",
        ),
        (
            "{httpGet: {port: 0}}",
            "spec.containers[0].readinessProbe.httpGet.port",
        ),
        (
            "{tcpSocket: {port: admin}}",
            "spec.containers[0].readinessProbe.tcpSocket.port",
        ),
        (
            "{grpc: {port: 80}}",
            "spec.containers[0].readinessProbe.grpc",
        ),
        ("{periodSeconds: 3}", "spec.containers[0].readinessProbe"),
        (
            "{exec: {command: [x]}, tcpSocket: {port: 80}}",
            "spec.containers[0].readinessProbe",
        ),
        (
            "{tcpSocket: {port: 80}, timeoutSeconds: -1}",
            "spec.containers[0].readinessProbe.timeoutSeconds",
        ),
    ] {
        let e = plan_err(&format!(
            "  containers:
  - name: a
    image: smidge/echo
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {probe}
"
        ));
        assert_eq!(e.field, field, "{probe}: {e}");
    }
}

// ---- environment ----

#[test]
fn every_env_field_ref() {
    let p = planned(
        "  containers:
  - name: a
    image: busybox
    env:
    - {name: NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace, apiVersion: v1}}}
    - {name: UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: IPS, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}
    - {name: HOST, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: HOSTS, valueFrom: {fieldRef: {fieldPath: status.hostIPs}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}}
    - {name: NONE, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['missing']\"}}}
    - {name: NOTE, valueFrom: {fieldRef: {fieldPath: \"metadata.annotations['note']\"}}}
",
    );
    let env = env_of(&p, &Objects::default()).unwrap();
    let want: Vec<(String, String)> = [
        ("NAME", "web"),
        ("NS", "shop"),
        ("UID", "u-1"),
        ("IP", "10.42.0.7"),
        ("IPS", "10.42.0.7,fd00::7"),
        ("HOST", "192.168.1.2"),
        ("HOSTS", "192.168.1.2"),
        ("NODE", "node-1"),
        ("SA", "web-sa"),
        ("APP", "web"),
        ("NONE", ""),
        ("NOTE", "say \"hi\""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env, want);
}

#[test]
fn unsupported_env_field_refs_are_plan_errors() {
    for (path, field) in [
        (
            "metadata.labels",
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        ),
        (
            "metadata.generateName",
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        ),
        (
            "metadata.labels['']",
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        ),
        (
            "metadata.labels[app]",
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
        ),
    ] {
        let e = plan_err(&format!(
            "  containers:
  - name: a
    image: busybox
    env: [{{name: X, valueFrom: {{fieldRef: {{fieldPath: \"{path}\"}}}}}}]
"
        ));
        assert_eq!(e.field, field, "{path}");
    }
    for (from, field) in [
        (
            "{resourceFieldRef: {resource: limits.cpu}}",
            "spec.containers[0].env[0].valueFrom.resourceFieldRef",
        ),
        (
            "{fieldRef: {fieldPath: metadata.name, apiVersion: v2}}",
            "spec.containers[0].env[0].valueFrom.fieldRef.apiVersion",
        ),
        ("{}", "spec.containers[0].env[0].valueFrom"),
        (
            "{fieldRef: {fieldPath: metadata.name}, configMapKeyRef: {name: a, key: b}}",
            "spec.containers[0].env[0].valueFrom",
        ),
    ] {
        let e = plan_err(&format!(
            "  containers:
  - name: a
    image: busybox
    env: [{{name: X, valueFrom: {from}}}]
"
        ));
        assert_eq!(e.field, field, "{from}");
    }
}

#[test]
fn env_in_order_with_expansion_of_earlier_variables_only() {
    let p = planned(
        "  containers:
  - name: a
    image: busybox
    env:
    - {name: A, value: one}
    - {name: B, value: \"$(A)-two-$(C)\"}
    - {name: C, value: three}
    - {name: D, value: \"$$(A) $$$(A) $(A $( $ $x $(UNKNOWN) $()\"}
    - {name: E}
    - {name: A, value: \"again-$(A)\"}
",
    );
    let env = env_of(&p, &Objects::default()).unwrap();
    assert_eq!(
        env,
        [
            ("A".to_string(), "again-one".to_string()),
            ("B".into(), "one-two-$(C)".into()),
            ("C".into(), "three".into()),
            ("D".into(), "$(A) $one $(A $( $ $x $(UNKNOWN) $()".into()),
            ("E".into(), String::new()),
        ]
    );
}

#[test]
fn expansion_follows_the_kubelets_rules() {
    let m = |name: &str| (name == "X").then(|| "x".to_string());
    for (input, want) in [
        ("$(X)", "x"),
        ("a$(X)b$(X)", "axbx"),
        ("$$(X)", "$(X)"),
        ("$$$$", "$$"),
        ("$", "$"),
        ("a$", "a$"),
        ("$(X", "$(X"),
        ("$(Y)", "$(Y)"),
        ("$X", "$X"),
        ("€$(X)€", "€x€"),
        ("$€", "$€"),
    ] {
        assert_eq!(expand(input, m), want, "{input}");
    }
    let env = vec![("PORT".to_string(), "8080".to_string())];
    assert_eq!(
        expand_argv(
            &strings(&["echo", "--port=$(PORT)", "$$(PORT)", "$(NOPE)"]),
            &env
        ),
        strings(&["echo", "--port=8080", "$(PORT)", "$(NOPE)"])
    );
}

#[test]
fn env_from_with_prefix_then_env_overrides() {
    let p = planned(
        "  containers:
  - name: a
    image: busybox
    envFrom:
    - configMapRef: {name: settings}
    - prefix: S_
      secretRef: {name: creds}
    - configMapRef: {name: absent, optional: true}
    - secretRef: {name: absent, optional: true}
    env:
    - {name: MODE, value: \"env-$(MODE)\"}
    - {name: FROM_CM, valueFrom: {configMapKeyRef: {name: settings, key: MODE}}}
    - {name: FROM_SECRET, valueFrom: {secretKeyRef: {name: creds, key: token}}}
    - {name: OPT_KEY, valueFrom: {configMapKeyRef: {name: settings, key: nope, optional: true}}}
    - {name: OPT_CM, valueFrom: {configMapKeyRef: {name: absent, key: k, optional: true}}}
    - {name: OPT_SECRET, valueFrom: {secretKeyRef: {name: absent, key: k, optional: true}}}
",
    );
    let objects = Objects::default()
        .cm(
            "settings",
            &[("MODE", "fast"), ("bad=key", "x"), ("LEVEL", "3")],
        )
        .secret("creds", &[("token", b"s3cret"), ("user", b"me")]);
    let env: BTreeMap<String, String> = env_of(&p, &objects).unwrap().into_iter().collect();
    let want: BTreeMap<String, String> = [
        ("MODE", "env-fast"),
        ("LEVEL", "3"),
        ("S_token", "s3cret"),
        ("S_user", "me"),
        ("FROM_CM", "fast"),
        ("FROM_SECRET", "s3cret"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env, want, "invalid key skipped, optional absences skipped");
}

#[test]
fn missing_required_refs_are_errors_worded_as_the_kubelets() {
    let objects = Objects::default()
        .cm("settings", &[("MODE", "fast")])
        .secret("creds", &[("token", b"t")]);
    for (entry, want) in [
        (
            "envFrom: [{configMapRef: {name: absent}}]",
            "configmap \"absent\" not found",
        ),
        (
            "envFrom: [{secretRef: {name: absent}}]",
            "secret \"absent\" not found",
        ),
        (
            "env: [{name: X, valueFrom: {configMapKeyRef: {name: absent, key: k}}}]",
            "configmap \"absent\" not found",
        ),
        (
            "env: [{name: X, valueFrom: {configMapKeyRef: {name: settings, key: k}}}]",
            "couldn't find key k in ConfigMap shop/settings",
        ),
        (
            "env: [{name: X, valueFrom: {secretKeyRef: {name: absent, key: k}}}]",
            "secret \"absent\" not found",
        ),
        (
            "env: [{name: X, valueFrom: {secretKeyRef: {name: creds, key: k}}}]",
            "couldn't find key k in Secret shop/creds",
        ),
    ] {
        let p = planned(&format!(
            "  containers:
  - name: a
    image: busybox
    {entry}
"
        ));
        assert_eq!(env_of(&p, &objects).unwrap_err(), want, "{entry}");
    }
}

// ---- volumes ----

/// The volume the ServiceAccount admission plugin adds to every pod, as the API server
/// stores it (defaults applied).
const KUBE_API_ACCESS: &str = "  volumes:
  - name: kube-api-access-x7k2p
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken:
          expirationSeconds: 3607
          path: token
      - configMap:
          name: kube-root-ca.crt
          items:
          - key: ca.crt
            path: ca.crt
      - downwardAPI:
          items:
          - fieldRef:
              apiVersion: v1
              fieldPath: metadata.namespace
            path: namespace
  containers:
  - name: a
    image: smidge/echo
    volumeMounts:
    - name: kube-api-access-x7k2p
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
";

fn token_for(audience: Option<&str>, seconds: i64) -> Option<String> {
    Some(format!("jwt:{}:{seconds}", audience.unwrap_or("-")))
}

#[test]
fn the_kube_api_access_volume() {
    let p = planned(KUBE_API_ACCESS);
    let v = &p.volumes[0];
    assert_eq!(
        v.source,
        VolumeSource::Projected {
            default_mode: 0o644,
            sources: vec![
                Projection::ServiceAccountToken {
                    audience: None,
                    expiration_seconds: 3607,
                    path: "token".into(),
                },
                Projection::ConfigMap {
                    name: "kube-root-ca.crt".into(),
                    items: vec![KeyToPath {
                        key: "ca.crt".into(),
                        path: "ca.crt".into(),
                        mode: None,
                    }],
                    optional: false,
                },
                Projection::DownwardApi(vec![DownwardItem {
                    path: "namespace".into(),
                    field: FieldPath::Namespace,
                    mode: None,
                }]),
            ],
        }
    );
    assert_eq!(
        token_requests(&p),
        [TokenSpec {
            audience: None,
            expiration_seconds: 3607
        }]
    );
    let objects = Objects::default().cm("kube-root-ca.crt", &[("ca.crt", "PEM"), ("other", "x")]);
    let files = volume_files(&p, v, &facts(), &objects, &token_for).unwrap();
    let file = |path: &str, data: &str| FileProjection {
        path: path.into(),
        data: data.as_bytes().to_vec(),
        mode: 0o644,
        uid: None,
        gid: None,
    };
    assert_eq!(
        files,
        [
            file("ca.crt", "PEM"),
            file("namespace", "shop"),
            file("token", "jwt:-:3607"),
        ]
    );
    // Before the root CA publisher has run, the volume cannot be made yet.
    let e = volume_files(&p, v, &facts(), &Objects::default(), &token_for).unwrap_err();
    assert_eq!(e, "configmap \"kube-root-ca.crt\" not found");
    // Nor before the token is issued.
    let e = volume_files(&p, v, &facts(), &objects, &|_, _| None).unwrap_err();
    assert!(e.contains("3607"), "{e}");
}

#[test]
fn token_files_are_private_to_the_pods_user_or_fs_group() {
    let spec = KUBE_API_ACCESS.replace(
        "  containers:\n",
        "  securityContext: {runAsUser: 2102}\n  containers:\n",
    );
    let p = planned(&spec);
    let objects = Objects::default().cm("kube-root-ca.crt", &[("ca.crt", "PEM")]);
    let files = volume_files(&p, &p.volumes[0], &facts(), &objects, &token_for).unwrap();
    let modes: Vec<(&str, u32, Option<i64>)> = files
        .iter()
        .map(|f| (f.path.as_str(), f.mode, f.uid))
        .collect();
    assert_eq!(
        modes,
        [
            ("ca.crt", 0o644, None),
            ("namespace", 0o644, None),
            ("token", 0o600, Some(2102))
        ]
    );

    let spec = KUBE_API_ACCESS.replace(
        "  containers:\n",
        "  securityContext: {fsGroup: 3000}\n  containers:\n",
    );
    let p = planned(&spec);
    let files = volume_files(&p, &p.volumes[0], &facts(), &objects, &token_for).unwrap();
    let modes: Vec<(&str, u32, Option<i64>)> = files
        .iter()
        .map(|f| (f.path.as_str(), f.mode, f.gid))
        .collect();
    assert_eq!(
        modes,
        [
            ("ca.crt", 0o644, Some(3000)),
            ("namespace", 0o644, Some(3000)),
            ("token", 0o640, Some(3000))
        ]
    );
}

#[test]
fn projected_tokens_with_an_audience_and_expiry() {
    let p = planned(
        "  volumes:
  - name: tokens
    projected:
      sources:
      - serviceAccountToken: {audience: smidge-test, expirationSeconds: 600, path: smidge/token}
      - serviceAccountToken: {audience: smidge-test, expirationSeconds: 600, path: again}
      - serviceAccountToken: {path: default}
  containers: [{name: a, image: busybox}]
",
    );
    assert_eq!(
        token_requests(&p),
        [
            TokenSpec {
                audience: None,
                expiration_seconds: 3600
            },
            TokenSpec {
                audience: Some("smidge-test".into()),
                expiration_seconds: 600
            },
        ]
    );
    let files = volume_files(&p, &p.volumes[0], &facts(), &Objects::default(), &token_for).unwrap();
    let got: Vec<(&str, &[u8])> = files
        .iter()
        .map(|f| (f.path.as_str(), f.data.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("again", &b"jwt:smidge-test:600"[..]),
            ("default", b"jwt:-:3600"),
            ("smidge/token", b"jwt:smidge-test:600"),
        ]
    );
    let e = plan_err(
        "  volumes:
  - name: tokens
    projected:
      sources: [{serviceAccountToken: {expirationSeconds: 599, path: t}}]
  containers: [{name: a, image: busybox}]
",
    );
    assert_eq!(
        e.field,
        "spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds"
    );
}

#[test]
fn config_map_and_secret_volumes_with_items_and_modes() {
    let p = planned(
        "  volumes:
  - name: all
    configMap: {name: settings}
  - name: some
    configMap:
      name: settings
      defaultMode: 0o400
      items: [{key: MODE, path: conf/mode}, {key: LEVEL, path: level, mode: 0o755}]
  - name: creds
    secret: {secretName: creds, defaultMode: 0o440}
  - name: opt
    secret: {secretName: absent, optional: true}
  - name: opt-items
    configMap: {name: settings, optional: true, items: [{key: nope, path: n}, {key: MODE, path: m}]}
  containers: [{name: a, image: busybox}]
",
    );
    let mut objects = Objects::default()
        .cm("settings", &[("MODE", "fast"), ("LEVEL", "3")])
        .secret("creds", &[("token", &[0, 159, 255])]);
    objects
        .config_maps
        .get_mut(&("shop".to_string(), "settings".to_string()))
        .unwrap()
        .binary_data
        .insert("blob".into(), vec![1, 2]);
    let files = |i: usize| -> Vec<(String, Vec<u8>, u32)> {
        volume_files(&p, &p.volumes[i], &facts(), &objects, &token_for)
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.data, f.mode))
            .collect()
    };
    assert_eq!(
        files(0),
        [
            ("LEVEL".to_string(), b"3".to_vec(), 0o644),
            ("MODE".into(), b"fast".to_vec(), 0o644),
            ("blob".into(), vec![1, 2], 0o644),
        ]
    );
    assert_eq!(
        files(1),
        [
            ("conf/mode".to_string(), b"fast".to_vec(), 0o400),
            ("level".into(), b"3".to_vec(), 0o755),
        ]
    );
    assert_eq!(files(2), [("token".to_string(), vec![0, 159, 255], 0o440)]);
    assert_eq!(files(3), []);
    assert_eq!(files(4), [("m".to_string(), b"fast".to_vec(), 0o644)]);
}

#[test]
fn missing_volume_objects_and_keys_are_errors() {
    let p = planned(
        "  volumes:
  - {name: a, configMap: {name: absent}}
  - {name: b, secret: {secretName: absent}}
  - {name: c, configMap: {name: settings, items: [{key: nope, path: n}]}}
  - {name: d, secret: {secretName: creds, items: [{key: nope, path: n}]}}
  containers: [{name: a, image: busybox}]
",
    );
    let objects = Objects::default()
        .cm("settings", &[("MODE", "fast")])
        .secret("creds", &[("token", b"t")]);
    let e = |i: usize| volume_files(&p, &p.volumes[i], &facts(), &objects, &token_for).unwrap_err();
    assert_eq!(e(0), "configmap \"absent\" not found");
    assert_eq!(e(1), "secret \"absent\" not found");
    assert_eq!(e(2), "configmap references non-existent config key: nope");
    assert_eq!(e(3), "references non-existent secret key: nope");
}

#[test]
fn downward_api_volumes() {
    let p = planned(
        "  volumes:
  - name: info
    downwardAPI:
      defaultMode: 0o600
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}, mode: 0o644}
      - {path: app, fieldRef: {fieldPath: \"metadata.labels['app']\"}}
      - {path: meta/uid, fieldRef: {fieldPath: metadata.uid}}
  containers: [{name: a, image: busybox}]
",
    );
    let files: Vec<(String, String, u32)> =
        volume_files(&p, &p.volumes[0], &facts(), &Objects::default(), &token_for)
            .unwrap()
            .into_iter()
            .map(|f| (f.path, String::from_utf8(f.data).unwrap(), f.mode))
            .collect();
    assert_eq!(
        files,
        [
            (
                "annotations".to_string(),
                "note=\"say \\\"hi\\\"\"".to_string(),
                0o644
            ),
            ("app".into(), "web".into(), 0o600),
            ("labels".into(), "app=\"web\"\ntier=\"front\"".into(), 0o600),
            ("meta/uid".into(), "u-1".into(), 0o600),
        ]
    );
    // The API allows only metadata in a downwardAPI volume.
    let e = plan_err(
        "  volumes:
  - name: info
    downwardAPI:
      items: [{path: ip, fieldRef: {fieldPath: status.podIP}}]
  containers: [{name: a, image: busybox}]
",
    );
    assert_eq!(
        e.field,
        "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath"
    );
}

#[test]
fn bad_volume_paths_and_modes_are_refused() {
    for (volume, field) in [
        (
            "{name: v, configMap: {name: c, items: [{key: k, path: /etc/passwd}]}}",
            "spec.volumes[0].configMap.items[0].path",
        ),
        (
            "{name: v, secret: {secretName: s, items: [{key: k, path: ../../x}]}}",
            "spec.volumes[0].secret.items[0].path",
        ),
        (
            "{name: v, secret: {secretName: s, items: [{key: k, path: a/../b}]}}",
            "spec.volumes[0].secret.items[0].path",
        ),
        (
            "{name: v, configMap: {name: c, items: [{key: k, path: \"\"}]}}",
            "spec.volumes[0].configMap.items[0].path",
        ),
        (
            "{name: v, downwardAPI: {items: [{path: /x, fieldRef: {fieldPath: metadata.name}}]}}",
            "spec.volumes[0].downwardAPI.items[0].path",
        ),
        (
            "{name: v, projected: {sources: [{serviceAccountToken: {path: ../token}}]}}",
            "spec.volumes[0].projected.sources[0].serviceAccountToken.path",
        ),
        (
            "{name: v, configMap: {name: c, defaultMode: 512}}",
            "spec.volumes[0].configMap.defaultMode",
        ),
        (
            "{name: v, configMap: {name: c, items: [{key: k, path: p, mode: -1}]}}",
            "spec.volumes[0].configMap.items[0].mode",
        ),
        ("{name: v, secret: {}}", "spec.volumes[0].secret.secretName"),
        (
            "{name: v, projected: {sources: [{}]}}",
            "spec.volumes[0].projected.sources[0]",
        ),
    ] {
        let e = plan_err(&format!(
            "  volumes: [{volume}]\n  containers: [{{name: a, image: busybox}}]\n"
        ));
        assert_eq!(e.field, field, "{volume}: {e}");
    }
    // A key that is not a safe path (the API forbids such keys, but the files are checked).
    let p = planned(
        "  volumes: [{name: v, configMap: {name: c}}]\n  containers: [{name: a, image: busybox}]\n",
    );
    let objects = Objects::default().cm("c", &[("..", "x")]);
    let e = volume_files(&p, &p.volumes[0], &facts(), &objects, &token_for).unwrap_err();
    assert!(e.contains("'..'"), "{e}");
}

#[test]
fn empty_dir_and_unsupported_volumes() {
    let p = planned(
        "  volumes:
  - {name: scratch, emptyDir: {medium: Memory}}
  - {name: host, hostPath: {path: /var/log}}
  - {name: claim, persistentVolumeClaim: {claimName: data}}
  containers: [{name: a, image: busybox}]
",
    );
    let kinds: Vec<&VolumeSource> = p.volumes.iter().map(|v| &v.source).collect();
    assert_eq!(
        kinds,
        [
            &VolumeSource::EmptyDir,
            &VolumeSource::Unsupported("hostPath".into()),
            &VolumeSource::Unsupported("persistentVolumeClaim".into()),
        ]
    );
    let files = volume_files(&p, &p.volumes[0], &facts(), &Objects::default(), &token_for).unwrap();
    assert!(files.is_empty());
}

// ---- token refresh ----

#[test]
fn tokens_refresh_at_80_percent_of_their_life_or_after_a_day() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let hour = Duration::from_secs(3600);
    let exp = t0 + hour;
    assert!(!refresh_due(t0, exp, t0));
    assert!(!refresh_due(t0, exp, t0 + Duration::from_secs(2879)));
    assert!(refresh_due(t0, exp, t0 + Duration::from_secs(2880)));
    assert!(refresh_due(t0, exp, exp + hour), "expired");
    assert_eq!(next_refresh(t0, exp), t0 + Duration::from_secs(2880));
    // A token valid for a year is refreshed after a day.
    let year = t0 + hour * 24 * 365;
    assert_eq!(next_refresh(t0, year), t0 + hour * 24);
    assert!(!refresh_due(t0, year, t0 + hour * 23));
    assert!(refresh_due(t0, year, t0 + hour * 24));
    // A token expiring before it was issued (clock skew) is due at once.
    assert!(refresh_due(t0, t0 - hour, t0));
}
