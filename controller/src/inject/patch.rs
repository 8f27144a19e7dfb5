//! The mutation of an opted-in pod: the `smidge-init` container (iptables, non-root with
//! NET_ADMIN/NET_RAW only), the `smidge-proxy` container (a native sidecar, or the first container),
//! the projected token and xtables-lock volumes, and the label naming the control plane. Also the
//! RFC 6902 patch between two JSON documents, which is what the webhook answers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::Settings;
use super::decide::{INIT_CONTAINER, PROXY_CONTAINER};
use super::overrides::Overrides;
use crate::labels::MESHED;

pub const TOKEN_VOLUME: &str = "smidge-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/smidge";
pub const TOKEN_FILE: &str = "token";
/// Projected tokens live this long (the kubelet refreshes them at 80%).
pub const TOKEN_SECONDS: i64 = 86400;
pub const XTABLES_VOLUME: &str = "smidge-xtables-lock";
/// The environment the proxy reads its pod identity and trust anchor from.
pub const ENV_POD_NAME: &str = "SMIDGE_POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "SMIDGE_POD_NAMESPACE";
pub const ENV_SERVICE_ACCOUNT: &str = "SMIDGE_SERVICE_ACCOUNT";
pub const ENV_POD_IP: &str = "SMIDGE_POD_IP";
pub const ENV_TRUST_ANCHORS: &str = "SMIDGE_TRUST_ANCHORS";

/// Mutates `meta` and `spec` in place: the pod as it runs in the mesh.
pub fn mutate(
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    settings: &Settings,
    overrides: &Overrides,
    anchor_pem: &str,
) {
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(MESHED.into(), settings.control_plane_namespace.clone());
    let resources = resources(settings, overrides);
    let init = init_container(settings, overrides, resources.clone());
    // Before the proxy's own containers join: their probes already go to the admin port.
    let skip_inbound = overrides
        .skip_inbound_ports
        .as_deref()
        .unwrap_or(&settings.proxy.skip_inbound_ports);
    let app_probes = super::probes::rewrite(
        spec,
        settings.proxy.ports.admin,
        skip_inbound,
        settings.proxy.native_sidecar,
    );
    let mut proxy = proxy_container(settings, overrides, resources, anchor_pem);
    if !app_probes.is_empty() {
        if let Ok(json) = serde_json::to_string(&app_probes) {
            proxy
                .env
                .get_or_insert_with(Vec::new)
                .push(value_env(smidge_protocol::probes::ENV, &json));
        }
    }
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    inits.insert(0, init);
    if settings.proxy.native_sidecar {
        proxy.restart_policy = Some("Always".into());
        // Holds the app containers back until the proxy is ready.
        proxy.startup_probe = Some(probe(settings, "/ready", 1, 120));
        inits.insert(1, proxy);
    } else {
        spec.containers.insert(0, proxy);
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(settings.token_audience.clone()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    path: TOKEN_FILE.into(),
                    ..ServiceAccountTokenProjection::default()
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    });
    volumes.push(Volume {
        name: XTABLES_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
}

/// The settings' requests and limits with the pod's annotations over them.
fn resources(settings: &Settings, overrides: &Overrides) -> ResourceRequirements {
    let mut requests = settings.proxy.resources.requests.clone();
    let mut limits = settings.proxy.resources.limits.clone();
    for (kind, name, q) in &overrides.resources {
        let list = if *kind == "limits" {
            &mut limits
        } else {
            &mut requests
        };
        list.insert((*name).to_string(), q.clone());
    }
    let quantities = |m: BTreeMap<String, String>| {
        (!m.is_empty()).then(|| m.into_iter().map(|(k, v)| (k, Quantity(v))).collect())
    };
    ResourceRequirements {
        requests: quantities(requests),
        limits: quantities(limits),
        ..ResourceRequirements::default()
    }
}

fn ports_arg(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn init_container(
    settings: &Settings,
    overrides: &Overrides,
    resources: ResourceRequirements,
) -> Container {
    let p = &settings.proxy;
    let mut args: Vec<String> = vec![
        "init".into(),
        "--proxy-uid".into(),
        p.uid.to_string(),
        "--outbound-port".into(),
        p.ports.outbound.to_string(),
        "--inbound-port".into(),
        p.ports.inbound.to_string(),
        "--admin-port".into(),
        p.ports.admin.to_string(),
    ];
    let inbound = overrides
        .skip_inbound_ports
        .as_deref()
        .unwrap_or(&p.skip_inbound_ports);
    let outbound = overrides
        .skip_outbound_ports
        .as_deref()
        .unwrap_or(&p.skip_outbound_ports);
    let cidrs = overrides
        .skip_outbound_cidrs
        .as_deref()
        .unwrap_or(&p.skip_outbound_cidrs);
    if !inbound.is_empty() {
        args.extend(["--skip-inbound-ports".into(), ports_arg(inbound)]);
    }
    if !outbound.is_empty() {
        args.extend(["--skip-outbound-ports".into(), ports_arg(outbound)]);
    }
    if !cidrs.is_empty() {
        args.extend(["--skip-outbound-cidrs".into(), cidrs.join(",")]);
    }
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(p.image.reference()),
        image_pull_policy: Some(p.image.pull_policy.clone()),
        args: Some(args),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            run_as_user: Some(p.init_uid),
            run_as_group: Some(p.init_uid),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..restricted()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: XTABLES_VOLUME.into(),
            mount_path: "/run".into(),
            ..VolumeMount::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// Non-root, no privilege escalation, read-only root, the runtime's seccomp profile, no
/// capabilities.
fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

fn probe(settings: &Settings, path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(settings.proxy.ports.admin)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn proxy_container(
    settings: &Settings,
    overrides: &Overrides,
    resources: ResourceRequirements,
    anchor_pem: &str,
) -> Container {
    let p = &settings.proxy;
    let mut args: Vec<String> = vec![
        "run".into(),
        "--controller".into(),
        settings.controller_address.clone(),
        "--controller-name".into(),
        settings.controller_name.clone(),
        "--trust-domain".into(),
        settings.trust_domain.clone(),
        "--token-file".into(),
        format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        "--inbound".into(),
        format!("0.0.0.0:{}", p.ports.inbound),
        "--outbound".into(),
        format!("127.0.0.1:{}", p.ports.outbound),
        "--admin".into(),
        format!("0.0.0.0:{}", p.ports.admin),
    ];
    // None or empty keeps the proxy's own list.
    let opaque = overrides
        .opaque_ports
        .as_deref()
        .or(Some(p.opaque_ports.as_slice()));
    if let Some(opaque) = opaque.filter(|o| !o.is_empty()) {
        args.push(format!("--opaque-ports={}", ports_arg(opaque)));
    }
    if p.metrics_public {
        args.push("--metrics-public".into());
    }
    args.extend(p.extra_args.iter().cloned());
    let log_level = overrides.log_level.as_deref().unwrap_or(&p.log_level);
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(p.image.reference()),
        image_pull_policy: Some(p.image.pull_policy.clone()),
        args: Some(args),
        env: Some(vec![
            field_env(ENV_POD_NAME, "metadata.name"),
            field_env(ENV_POD_NAMESPACE, "metadata.namespace"),
            field_env(ENV_SERVICE_ACCOUNT, "spec.serviceAccountName"),
            field_env(ENV_POD_IP, "status.podIP"),
            value_env("RUST_LOG", log_level),
            value_env(ENV_TRUST_ANCHORS, anchor_pem),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("smidge-proxy".into()),
                container_port: i32::from(p.ports.inbound),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("smidge-admin".into()),
                container_port: i32::from(p.ports.admin),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe(settings, "/ready", 10, 3)),
        liveness_probe: Some(probe(settings, "/live", 10, 3)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            run_as_user: Some(p.uid),
            ..restricted()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// The RFC 6902 patch that turns `before` into `after`.
pub fn json_patch(before: &serde_json::Value, after: &serde_json::Value) -> json_patch::Patch {
    json_patch::diff(before, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::overrides::{
        OPAQUE_PORTS, PROXY_CPU_LIMIT, PROXY_LOG_LEVEL, PROXY_MEMORY_REQUEST, SKIP_INBOUND_PORTS,
        SKIP_OUTBOUND_CIDRS, SKIP_OUTBOUND_PORTS,
    };

    const ANCHOR: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn app_spec() -> PodSpec {
        PodSpec {
            init_containers: Some(vec![Container {
                name: "migrate".into(),
                ..Container::default()
            }]),
            containers: vec![Container {
                name: "app".into(),
                ..Container::default()
            }],
            volumes: Some(vec![Volume {
                name: "data".into(),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }
    }

    fn injected(settings: &Settings, annotations: &[(&str, &str)]) -> (ObjectMeta, PodSpec) {
        let mut meta = ObjectMeta::default();
        let mut spec = app_spec();
        let overrides = Overrides::read(
            &annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .expect("overrides");
        mutate(&mut meta, &mut spec, settings, &overrides, ANCHOR);
        (meta, spec)
    }

    fn names(containers: &[Container]) -> Vec<&str> {
        containers.iter().map(|c| c.name.as_str()).collect()
    }

    fn arg_after<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
        let args = c.args.as_deref()?;
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(String::as_str)
    }

    fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
        c.env.as_deref()?.iter().find(|e| e.name == name)
    }

    #[test]
    fn the_proxy_is_a_native_sidecar_after_the_init_step_and_before_the_apps_inits() {
        let (meta, spec) = injected(&Settings::default(), &[]);
        let inits = spec.init_containers.as_deref().expect("inits");
        assert_eq!(names(inits), ["smidge-init", "smidge-proxy", "migrate"]);
        assert_eq!(names(&spec.containers), ["app"]);
        let proxy = &inits[1];
        assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
        let startup = proxy.startup_probe.as_ref().expect("startup probe");
        let get = startup.http_get.as_ref().expect("http");
        assert_eq!(get.path.as_deref(), Some("/ready"));
        assert_eq!(get.port, IntOrString::Int(4191));
        assert_eq!(meta.labels.expect("labels")[MESHED], "smidge-system");
    }

    #[test]
    fn the_apps_probes_go_to_the_proxy_which_is_told_what_to_check() {
        let (_, spec) = injected(&Settings::default(), &[]);
        let proxy = &spec.init_containers.as_deref().expect("inits")[1];
        assert!(
            env(proxy, smidge_protocol::probes::ENV).is_none(),
            "no probes, no variable"
        );

        let mut meta = ObjectMeta::default();
        let mut spec = app_spec();
        spec.containers[0].readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::Int(8080),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        });
        mutate(
            &mut meta,
            &mut spec,
            &Settings::default(),
            &Overrides::default(),
            ANCHOR,
        );
        let get = spec.containers[0]
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("httpGet");
        assert_eq!(get.port, IntOrString::Int(4191));
        let proxy = &spec.init_containers.as_deref().expect("inits")[1];
        let json = env(proxy, smidge_protocol::probes::ENV)
            .and_then(|e| e.value.as_deref())
            .expect("the probes variable");
        let probes = smidge_protocol::probes::parse(json).expect("valid");
        assert_eq!(probes["/app-probe/app/readiness"].port, 8080);
        assert_eq!(
            probes["/app-probe/app/readiness"].http_path.as_deref(),
            Some("/healthz")
        );
        // The proxy's own probes are not rewritten.
        assert_eq!(
            proxy
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|g| g.path.as_deref()),
            Some("/ready")
        );
    }

    #[test]
    fn without_native_sidecars_the_proxy_is_the_first_container() {
        let mut settings = Settings::default();
        settings.proxy.native_sidecar = false;
        let (_, spec) = injected(&settings, &[]);
        assert_eq!(
            names(spec.init_containers.as_deref().expect("inits")),
            ["smidge-init", "migrate"]
        );
        assert_eq!(names(&spec.containers), ["smidge-proxy", "app"]);
        assert_eq!(spec.containers[0].restart_policy, None);
        assert_eq!(spec.containers[0].startup_probe, None);
    }

    #[test]
    fn the_init_step_has_only_net_admin_and_net_raw_as_the_init_uid() {
        let (_, spec) = injected(&Settings::default(), &[]);
        let init = &spec.init_containers.expect("inits")[0];
        let sc = init.security_context.as_ref().expect("security context");
        assert_eq!(sc.run_as_user, Some(65534));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref().expect("caps");
        assert_eq!(
            caps.add.as_deref(),
            Some(&["NET_ADMIN".to_string(), "NET_RAW".into()][..])
        );
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        let args = init.args.as_deref().expect("args");
        assert_eq!(
            args,
            [
                "init",
                "--proxy-uid",
                "2102",
                "--outbound-port",
                "4140",
                "--inbound-port",
                "4143",
                "--admin-port",
                "4191"
            ]
        );
        let mount = &init.volume_mounts.as_deref().expect("mounts")[0];
        assert_eq!(
            (mount.name.as_str(), mount.mount_path.as_str()),
            (XTABLES_VOLUME, "/run")
        );
        assert_eq!(
            init.image.as_deref(),
            Some(Settings::default().proxy.image.reference().as_str())
        );
    }

    #[test]
    fn the_proxy_runs_as_its_uid_with_no_capabilities_and_the_token_and_anchor() {
        let (_, spec) = injected(&Settings::default(), &[]);
        let proxy = &spec.init_containers.expect("inits")[1];
        let sc = proxy.security_context.as_ref().expect("sc");
        assert_eq!(sc.run_as_user, Some(2102));
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.add.clone()), None);
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            arg_after(proxy, "--controller"),
            Some("smidge-controller.smidge-system.svc.cluster.local:8086")
        );
        assert_eq!(
            arg_after(proxy, "--controller-name"),
            Some("smidge-controller")
        );
        assert_eq!(
            arg_after(proxy, "--token-file"),
            Some("/var/run/secrets/smidge/token")
        );
        assert_eq!(arg_after(proxy, "--admin"), Some("0.0.0.0:4191"));
        assert!(proxy
            .args
            .as_ref()
            .expect("args")
            .contains(&"--metrics-public".to_string()));
        assert!(!proxy
            .args
            .as_ref()
            .expect("args")
            .iter()
            .any(|a| a.starts_with("--opaque-ports")));
        assert_eq!(
            env(proxy, ENV_TRUST_ANCHORS).and_then(|e| e.value.as_deref()),
            Some(ANCHOR)
        );
        assert_eq!(
            env(proxy, "RUST_LOG").and_then(|e| e.value.as_deref()),
            Some("info")
        );
        let from = |name| {
            env(proxy, name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.clone())
        };
        assert_eq!(from(ENV_POD_NAME).as_deref(), Some("metadata.name"));
        assert_eq!(
            from(ENV_POD_NAMESPACE).as_deref(),
            Some("metadata.namespace")
        );
        assert_eq!(
            from(ENV_SERVICE_ACCOUNT).as_deref(),
            Some("spec.serviceAccountName")
        );
        assert_eq!(from(ENV_POD_IP).as_deref(), Some("status.podIP"));
        let mount = &proxy.volume_mounts.as_deref().expect("mounts")[0];
        assert_eq!(
            (mount.name.as_str(), mount.mount_path.as_str()),
            (TOKEN_VOLUME, TOKEN_DIR)
        );
        let volumes = spec.volumes.expect("volumes");
        assert_eq!(
            volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["data", TOKEN_VOLUME, XTABLES_VOLUME]
        );
        let token = volumes[1]
            .projected
            .as_ref()
            .expect("projected")
            .sources
            .as_ref()
            .expect("sources")[0]
            .service_account_token
            .clone()
            .expect("token");
        assert_eq!(token.audience.as_deref(), Some("smidge-identity"));
        assert_eq!(token.expiration_seconds, Some(86400));
        assert_eq!(token.path, "token");
    }

    #[test]
    fn resources_come_from_the_settings_and_annotations_override_them() {
        let q = |s: &str| Quantity(s.into());
        let (_, spec) = injected(&Settings::default(), &[]);
        let r = spec.init_containers.expect("inits")[1]
            .resources
            .clone()
            .expect("resources");
        assert_eq!(
            r.requests.expect("requests"),
            [("cpu".to_string(), q("10m")), ("memory".into(), q("16Mi"))].into()
        );
        assert_eq!(
            r.limits.expect("limits"),
            [("memory".to_string(), q("128Mi"))].into()
        );
        let (_, spec) = injected(
            &Settings::default(),
            &[(PROXY_CPU_LIMIT, "1"), (PROXY_MEMORY_REQUEST, "32Mi")],
        );
        let inits = spec.init_containers.expect("inits");
        for c in &inits[..2] {
            let r = c.resources.clone().expect("resources");
            assert_eq!(
                r.requests.expect("requests"),
                [("cpu".to_string(), q("10m")), ("memory".into(), q("32Mi"))].into()
            );
            assert_eq!(
                r.limits.expect("limits"),
                [("cpu".to_string(), q("1")), ("memory".into(), q("128Mi"))].into()
            );
        }
        let mut settings = Settings::default();
        settings.proxy.resources.requests.clear();
        settings.proxy.resources.limits.clear();
        let (_, spec) = injected(&settings, &[]);
        let r = spec.init_containers.expect("inits")[1]
            .resources
            .clone()
            .expect("resources");
        assert_eq!((r.requests, r.limits), (None, None));
    }

    #[test]
    fn skip_ports_cidrs_and_opaque_ports_come_from_settings_or_annotations() {
        let mut settings = Settings::default();
        settings.proxy.skip_inbound_ports = vec![22];
        settings.proxy.skip_outbound_ports = vec![443, 8443];
        settings.proxy.skip_outbound_cidrs = vec!["169.254.169.254/32".into()];
        settings.proxy.opaque_ports = vec![3306];
        let (_, spec) = injected(&settings, &[]);
        let inits = spec.init_containers.expect("inits");
        assert_eq!(arg_after(&inits[0], "--skip-inbound-ports"), Some("22"));
        assert_eq!(
            arg_after(&inits[0], "--skip-outbound-ports"),
            Some("443,8443")
        );
        assert_eq!(
            arg_after(&inits[0], "--skip-outbound-cidrs"),
            Some("169.254.169.254/32")
        );
        assert!(inits[1]
            .args
            .as_ref()
            .expect("args")
            .contains(&"--opaque-ports=3306".to_string()));

        let (_, spec) = injected(
            &settings,
            &[
                (SKIP_INBOUND_PORTS, "2222"),
                (SKIP_OUTBOUND_PORTS, ""),
                (SKIP_OUTBOUND_CIDRS, "10.0.0.0/8,fd00::/8"),
                (OPAQUE_PORTS, "5432,6379"),
                (PROXY_LOG_LEVEL, "debug"),
            ],
        );
        let inits = spec.init_containers.expect("inits");
        assert_eq!(arg_after(&inits[0], "--skip-inbound-ports"), Some("2222"));
        assert_eq!(
            arg_after(&inits[0], "--skip-outbound-ports"),
            None,
            "emptied by the annotation"
        );
        assert_eq!(
            arg_after(&inits[0], "--skip-outbound-cidrs"),
            Some("10.0.0.0/8,fd00::/8")
        );
        assert!(inits[1]
            .args
            .as_ref()
            .expect("args")
            .contains(&"--opaque-ports=5432,6379".to_string()));
        assert_eq!(
            env(&inits[1], "RUST_LOG").and_then(|e| e.value.as_deref()),
            Some("debug")
        );
    }

    #[test]
    fn ports_and_extra_args_follow_the_settings() {
        let mut settings = Settings::default();
        settings.proxy.ports.admin = 9191;
        settings.proxy.metrics_public = false;
        settings.proxy.extra_args = vec!["--threads".into(), "2".into()];
        let (_, spec) = injected(&settings, &[]);
        let inits = spec.init_containers.expect("inits");
        assert_eq!(arg_after(&inits[0], "--admin-port"), Some("9191"));
        let proxy = &inits[1];
        assert_eq!(arg_after(proxy, "--admin"), Some("0.0.0.0:9191"));
        assert_eq!(arg_after(proxy, "--threads"), Some("2"));
        assert!(!proxy
            .args
            .as_ref()
            .expect("args")
            .contains(&"--metrics-public".to_string()));
        let ports: Vec<i32> = proxy
            .ports
            .as_ref()
            .expect("ports")
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, [4143, 9191]);
        assert_eq!(
            proxy
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|g| g.port.clone()),
            Some(IntOrString::Int(9191))
        );
    }

    #[test]
    fn the_json_patch_turns_before_into_after() {
        let before = serde_json::json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "app"}]}});
        let after = serde_json::json!({"metadata": {"name": "a", "labels": {"x": "y"}},
            "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "p"}, {"name": "app"}]}});
        let patch = json_patch(&before, &after);
        let mut doc = before.clone();
        json_patch::patch(&mut doc, &patch).expect("applies");
        assert_eq!(doc, after);
        assert!(json_patch(&before, &before).0.is_empty());
    }
}
