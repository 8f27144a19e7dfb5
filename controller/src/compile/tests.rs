//! One test per rule of REFERENCE.md §3 (access) and §4 (split), named after the rule.

use smidge_protocol::authz::{CompiledInbound, Decision, DenyReason};
use smidge_protocol::matching::{compile_all, first_match, SimpleRequest};
use smidge_protocol::{DefaultPolicy, Identity, OutboundView, View, ViewKey};

use super::{compile, MeshConfig};
use crate::index::Index;
use crate::manifest::{read_file, Outcome};

/// A meshed namespace `ns` with Services a, b, c (port 80 → 8080) at 10.96.0.1..3, one ready
/// pod each (10.0.0.1..3, ServiceAccounts a, b, c).
const WORLD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ns, labels: {smidge.io/inject: enabled}}
"#;

fn service(name: &str, n: u8, port: u16) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: ns}}
spec: {{clusterIP: 10.96.0.{n}, ports: [{{name: http, port: {port}, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}-pod, namespace: ns}}
spec: {{serviceAccountName: {name}, containers: [{{name: app, image: app}}]}}
status: {{podIP: 10.0.0.{n}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-x, namespace: ns, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [10.0.0.{n}], conditions: {{ready: true}}, targetRef: {{kind: Pod, name: {name}-pod}}}}]
"#
    )
}

fn world(extra: &str) -> Index {
    let mut text = WORLD.to_string();
    for (name, n) in [("a", 1), ("b", 2), ("c", 3)] {
        text.push_str(&service(name, n, 80));
    }
    text.push_str("\n---\n");
    text.push_str(extra);
    index_of(&text)
}

fn index_of(text: &str) -> Index {
    let mut index = Index::default();
    for (pos, outcome) in read_file(text) {
        match outcome {
            Outcome::Object { object, .. } => {
                index.apply(object);
            }
            Outcome::Skipped { .. } => {}
            Outcome::Invalid { what, errors, .. } => {
                panic!("fixture document {}: {what}: {errors}", pos.document)
            }
        }
    }
    index
}

fn inbound(index: &Index, sa: &str) -> CompiledInbound {
    inbound_with(index, sa, &MeshConfig::default())
}

fn inbound_with(index: &Index, sa: &str, config: &MeshConfig) -> CompiledInbound {
    match compile(index, &ViewKey::Inbound(Identity::new("ns", sa)), config).view {
        Some(View::Inbound(v)) => CompiledInbound::compile(&v).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn outbound(index: &Index, addr: &str) -> OutboundView {
    match compile(
        index,
        &ViewKey::Outbound(addr.parse().unwrap()),
        &MeshConfig::default(),
    )
    .view
    {
        Some(View::Outbound(v)) => v,
        other => panic!("{other:?}"),
    }
}

fn id(sa: &str) -> Identity {
    Identity::new("ns", sa)
}

fn allowed(d: Decision) -> bool {
    matches!(d, Decision::Allow { .. })
}

fn http(method: &str, path: &str) -> SimpleRequest {
    SimpleRequest::new(method, path)
}

const TCP_ALL: &str = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: all, namespace: ns}
spec: {matches: {ports: []}}
"#;

fn target(name: &str, dest: &str, sources: &[&str], rules: &str) -> String {
    let sources: Vec<String> = sources
        .iter()
        .map(|s| format!("{{kind: ServiceAccount, name: {s}, namespace: ns}}"))
        .collect();
    format!(
        "\n---\napiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  destination: {{kind: ServiceAccount, name: {dest}, namespace: ns}}\n  sources: [{}]\n  rules: {rules}\n",
        sources.join(", ")
    )
}

const ROUTES: &str = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: routes, namespace: ns}
spec:
  matches:
  - {name: api, pathRegex: /api, methods: ["*"]}
  - {name: metrics, pathRegex: /metrics, methods: [GET]}
"#;

// ---- §3.2 traffic access ----

#[test]
fn all_traffic_is_denied_by_default() {
    let index = world("");
    let b = inbound(&index, "b");
    assert_eq!(
        b.decide(Some(&id("a")), 8080, None),
        Decision::Deny(DenyReason::DefaultDeny)
    );
    assert_eq!(
        b.decide(Some(&id("a")), 8080, Some(&http("GET", "/"))),
        Decision::Deny(DenyReason::DefaultDeny)
    );
}

#[test]
fn destination_selects_the_workloads_of_its_service_account() {
    let index = world(&format!(
        "{TCP_ALL}{}",
        target("t", "b", &["a"], "[{kind: TCPRoute, name: all}]")
    ));
    assert!(allowed(inbound(&index, "b").decide(
        Some(&id("a")),
        8080,
        None
    )));
    assert!(!allowed(inbound(&index, "c").decide(
        Some(&id("a")),
        8080,
        None
    )));
}

#[test]
fn a_source_not_in_the_list_is_denied() {
    let index = world(&format!(
        "{TCP_ALL}{}",
        target("t", "b", &["a"], "[{kind: TCPRoute, name: all}]")
    ));
    assert_eq!(
        inbound(&index, "b").decide(Some(&id("c")), 8080, None),
        Decision::Deny(DenyReason::NotAuthorized)
    );
    assert_eq!(
        inbound(&index, "b").decide(None, 8080, None),
        Decision::Deny(DenyReason::Unauthenticated)
    );
}

#[test]
fn a_listed_source_on_a_route_not_in_the_list_is_denied() {
    let index = world(&format!(
        "{ROUTES}{}",
        target(
            "t",
            "b",
            &["a"],
            "[{kind: HTTPRouteGroup, name: routes, matches: [metrics]}]"
        )
    ));
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/metrics"))
    )));
    assert_eq!(
        b.decide(Some(&id("a")), 8080, Some(&http("POST", "/metrics"))),
        Decision::Deny(DenyReason::NoMatchingRoute)
    );
    assert_eq!(
        b.decide(Some(&id("a")), 8080, Some(&http("GET", "/api"))),
        Decision::Deny(DenyReason::NoMatchingRoute)
    );
}

#[test]
fn a_rule_without_matches_is_valid_for_all_matches_of_the_group() {
    let index = world(&format!(
        "{ROUTES}{}",
        target("t", "b", &["a"], "[{kind: HTTPRouteGroup, name: routes}]")
    ));
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("DELETE", "/api/x"))
    )));
    assert!(allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/metrics"))
    )));
    assert!(!allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/other"))
    )));
}

#[test]
fn tcp_route_ports_limit_the_ports_and_no_ports_means_all() {
    let some = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: some, namespace: ns}
spec: {matches: {ports: [8080, 9090]}}
"#;
    let index = world(&format!(
        "{some}{}",
        target("t", "b", &["a"], "[{kind: TCPRoute, name: some}]")
    ));
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(Some(&id("a")), 9090, None)));
    assert!(!allowed(b.decide(Some(&id("a")), 7070, None)));
    let index = world(&format!(
        "{TCP_ALL}{}",
        target("t", "b", &["a"], "[{kind: TCPRoute, name: all}]")
    ));
    assert!(allowed(inbound(&index, "b").decide(
        Some(&id("a")),
        7070,
        None
    )));
}

#[test]
fn a_tcp_route_alone_admits_http_on_its_ports() {
    let index = world(&format!(
        "{TCP_ALL}{}",
        target("t", "b", &["a"], "[{kind: TCPRoute, name: all}]")
    ));
    assert!(allowed(inbound(&index, "b").decide(
        Some(&id("a")),
        8080,
        Some(&http("POST", "/echo"))
    )));
}

#[test]
fn tcp_and_http_rules_in_one_target_need_both_the_port_and_a_route() {
    let port = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: api-port, namespace: ns}
spec: {matches: {ports: [8080]}}
"#;
    let rules = "[{kind: TCPRoute, name: api-port}, {kind: HTTPRouteGroup, name: routes, matches: [metrics]}]";
    let index = world(&format!(
        "{port}\n---\n{ROUTES}{}",
        target("t", "b", &["a"], rules)
    ));
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/metrics"))
    )));
    assert!(!allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/api"))
    )));
    assert!(!allowed(b.decide(
        Some(&id("a")),
        9999,
        Some(&http("GET", "/metrics"))
    )));
}

#[test]
fn http_rules_alone_make_the_port_http_only() {
    // Security review F1: an HTTP-only TrafficTarget admitted any connection that was not HTTP.
    let index = world(&format!(
        "{ROUTES}{}",
        target(
            "t",
            "b",
            &["a"],
            "[{kind: HTTPRouteGroup, name: routes, matches: [metrics]}]"
        )
    ));
    let b = inbound(&index, "b");
    assert_eq!(
        b.decide(Some(&id("a")), 8080, None),
        Decision::Deny(DenyReason::HttpOnly)
    );
    assert!(allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/metrics"))
    )));
}

#[test]
fn a_tcp_route_beside_http_rules_admits_opaque_traffic_on_its_ports_only() {
    let port = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: api-port, namespace: ns}
spec: {matches: {ports: [8080]}}
"#;
    let rules = "[{kind: TCPRoute, name: api-port}, {kind: HTTPRouteGroup, name: routes, matches: [metrics]}]";
    let index = world(&format!(
        "{port}\n---\n{ROUTES}{}",
        target("t", "b", &["a"], rules)
    ));
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(Some(&id("a")), 8080, None)));
    assert!(!allowed(b.decide(Some(&id("a")), 9090, None)));
    assert_eq!(
        b.decide(Some(&id("a")), 8080, Some(&http("GET", "/api"))),
        Decision::Deny(DenyReason::NoMatchingRoute)
    );
}

#[test]
fn a_missing_tcp_route_beside_http_rules_admits_no_opaque_traffic() {
    let rules = "[{kind: TCPRoute, name: nowhere}, {kind: HTTPRouteGroup, name: routes}]";
    let index = world(&format!("{ROUTES}{}", target("t", "b", &["a"], rules)));
    assert!(!allowed(inbound(&index, "b").decide(
        Some(&id("a")),
        8080,
        None
    )));
}

#[test]
fn the_view_says_which_authorizations_admit_opaque_traffic() {
    let index = world(&format!(
        "{ROUTES}\n---\n{TCP_ALL}{}{}",
        target(
            "http",
            "b",
            &["a"],
            "[{kind: HTTPRouteGroup, name: routes}]"
        ),
        target("tcp", "b", &["c"], "[{kind: TCPRoute, name: all}]")
    ));
    let view = match compile(
        &index,
        &ViewKey::Inbound(Identity::new("ns", "b")),
        &MeshConfig::default(),
    )
    .view
    {
        Some(View::Inbound(v)) => v,
        other => panic!("{other:?}"),
    };
    let opaque: Vec<(&str, bool)> = view
        .authorizations
        .iter()
        .map(|a| (a.name.as_str(), a.opaque))
        .collect();
    assert_eq!(opaque, vec![("ns/http", false), ("ns/tcp", true)]);
}

#[test]
fn udp_route_ports_do_not_admit_tcp() {
    let udp = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: UDPRoute
metadata: {name: dns, namespace: ns}
spec: {matches: {ports: [8301]}}
"#;
    let index = world(&format!(
        "{udp}{}",
        target("t", "b", &["a"], "[{kind: UDPRoute, name: dns}]")
    ));
    assert!(!allowed(inbound(&index, "b").decide(
        Some(&id("a")),
        8301,
        None
    )));
}

#[test]
fn access_is_additive_across_traffic_targets() {
    let index = world(&format!(
        "{ROUTES}{}{}",
        target(
            "t1",
            "b",
            &["a"],
            "[{kind: HTTPRouteGroup, name: routes, matches: [api]}]"
        ),
        target(
            "t2",
            "b",
            &["c"],
            "[{kind: HTTPRouteGroup, name: routes, matches: [metrics]}]"
        )
    ));
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("PUT", "/api"))
    )));
    assert!(allowed(b.decide(
        Some(&id("c")),
        8080,
        Some(&http("GET", "/metrics"))
    )));
    assert!(!allowed(b.decide(
        Some(&id("c")),
        8080,
        Some(&http("PUT", "/api"))
    )));
}

#[test]
fn a_v1alpha2_destination_port_limits_access_to_that_port() {
    let tt = r#"
apiVersion: access.smi-spec.io/v1alpha2
kind: TrafficTarget
metadata: {name: old, namespace: ns}
spec:
  destination: {kind: ServiceAccount, name: b, namespace: ns, port: 8080}
  sources: [{kind: ServiceAccount, name: a, namespace: ns}]
"#;
    let index = world(tt);
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(Some(&id("a")), 8080, None)));
    assert!(!allowed(b.decide(Some(&id("a")), 9090, None)));
}

#[test]
fn a_v1alpha1_target_reads_its_top_level_fields_and_specs() {
    let tt = r#"
apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: old, namespace: ns}
destination: {kind: ServiceAccount, name: b, namespace: ns, port: "8080"}
sources: [{kind: ServiceAccount, name: a, namespace: ns}]
specs: [{kind: HTTPRouteGroup, name: routes, matches: [api]}]
"#;
    let index = world(&format!("{ROUTES}\n---\n{tt}"));
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/api"))
    )));
    assert!(!allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/metrics"))
    )));
}

#[test]
fn a_v1alpha3_target_needs_a_destination_a_rule_and_a_source() {
    let text = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: t, namespace: ns}\nspec: {destination: {kind: ServiceAccount, name: b}, rules: [], sources: []}\n";
    match &read_file(text)[0].1 {
        Outcome::Invalid { errors, .. } => {
            let fields: Vec<_> = errors.0.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(fields, ["spec.rules", "spec.sources"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_namespace_defaults_to_the_target_namespace() {
    let tt = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: t, namespace: ns}\nspec:\n  destination: {kind: ServiceAccount, name: b}\n  sources: [{kind: ServiceAccount, name: a}]\n  rules: [{kind: TCPRoute, name: all}]\n";
    let index = world(&format!("{TCP_ALL}\n---\n{tt}"));
    assert!(allowed(inbound(&index, "b").decide(
        Some(&id("a")),
        8080,
        None
    )));
}

#[test]
fn a_target_only_governs_destinations_in_its_own_namespace() {
    let tt = "apiVersion: access.smi-spec.io/v1alpha3\nkind: TrafficTarget\nmetadata: {name: t, namespace: elsewhere}\nspec:\n  destination: {kind: ServiceAccount, name: b, namespace: ns}\n  sources: [{kind: ServiceAccount, name: a, namespace: ns}]\n  rules: [{kind: TCPRoute, name: all}]\n";
    let index = world(&format!(
        "{}\n---\n{tt}",
        TCP_ALL.replace("namespace: ns", "namespace: elsewhere")
    ));
    assert!(!allowed(inbound(&index, "b").decide(
        Some(&id("a")),
        8080,
        None
    )));
}

#[test]
fn a_rule_naming_a_missing_route_admits_nothing() {
    let index = world(&target(
        "t",
        "b",
        &["a"],
        "[{kind: HTTPRouteGroup, name: nowhere}, {kind: TCPRoute, name: nothing}]",
    ));
    let b = inbound(&index, "b");
    assert!(!allowed(b.decide(Some(&id("a")), 8080, None)));
    assert!(!allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("GET", "/"))
    )));
}

#[test]
fn the_default_policy_annotation_admits_meshed_or_all_clients() {
    let allow_meshed = index_of(&WORLD.replace(
        "labels:",
        "annotations: {smidge.io/default-policy: allow-meshed}, labels:",
    ));
    let b = inbound(&allow_meshed, "b");
    assert!(allowed(b.decide(Some(&id("a")), 8080, None)));
    assert_eq!(
        b.decide(None, 8080, None),
        Decision::Deny(DenyReason::Unauthenticated)
    );
    let allow_all = index_of(&WORLD.replace(
        "labels:",
        "annotations: {smidge.io/default-policy: allow-all}, labels:",
    ));
    assert!(allowed(inbound(&allow_all, "b").decide(None, 8080, None)));
    let mesh_wide = MeshConfig {
        default_policy: DefaultPolicy::AllowAll,
    };
    assert!(allowed(
        inbound_with(&world(""), "b", &mesh_wide).decide(None, 8080, None)
    ));
}

#[test]
fn the_default_policy_applies_only_while_no_target_names_the_workload() {
    let text = WORLD.replace(
        "labels:",
        "annotations: {smidge.io/default-policy: allow-all}, labels:",
    );
    let index = index_of(&format!(
        "{text}\n---\n{TCP_ALL}{}",
        target("t", "b", &["a"], "[{kind: TCPRoute, name: all}]")
    ));
    let b = inbound(&index, "b");
    assert!(allowed(b.decide(Some(&id("a")), 8080, None)));
    assert!(!allowed(b.decide(Some(&id("c")), 8080, None)));
    assert!(allowed(inbound(&index, "c").decide(None, 8080, None)));
}

// ---- §2.1 HTTPRouteGroup ----

#[test]
fn matches_of_a_group_are_ored_and_conditions_within_a_match_anded() {
    let group = r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: g, namespace: ns}
spec:
  matches:
  - {name: android, headers: [{user-agent: ".*Android.*"}], methods: [GET]}
  - {name: admin, pathRegex: /admin}
"#;
    let index = world(&format!(
        "{group}{}",
        target("t", "b", &["a"], "[{kind: HTTPRouteGroup, name: g}]")
    ));
    let b = inbound(&index, "b");
    let android = http("GET", "/x").header("User-Agent", "Mozilla (Android 14)");
    assert!(allowed(b.decide(Some(&id("a")), 8080, Some(&android))));
    assert!(!allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("POST", "/x").header("user-agent", "Android"))
    )));
    assert!(allowed(b.decide(
        Some(&id("a")),
        8080,
        Some(&http("POST", "/admin/users"))
    )));
}

// ---- §4 traffic split ----

fn split(backends: &str) -> String {
    format!("apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: s, namespace: ns}}\nspec:\n  service: a\n  backends: {backends}\n")
}

fn shares(view: &OutboundView, route: usize) -> Vec<(String, u32)> {
    view.routes[route]
        .targets
        .iter()
        .map(|t| (view.backends[t.backend as usize].name.clone(), t.weight))
        .collect()
}

#[test]
fn without_a_split_the_root_service_endpoints_serve() {
    let view = outbound(&world(""), "10.96.0.1:80");
    assert_eq!(shares(&view, 0), [("a".to_string(), 1)]);
    assert_eq!(
        view.backends[0].endpoints[0].addr,
        "10.0.0.1:8080".parse().unwrap()
    );
}

#[test]
fn an_address_that_is_no_service_port_has_no_view() {
    let index = world("");
    for addr in ["10.96.0.9:80", "10.96.0.1:81"] {
        assert!(compile(
            &index,
            &ViewKey::Outbound(addr.parse().unwrap()),
            &MeshConfig::default()
        )
        .view
        .is_none());
    }
}

#[test]
fn weights_are_relative() {
    let view = outbound(
        &world(&split(
            "[{service: b, weight: 1000}, {service: c, weight: 500}]",
        )),
        "10.96.0.1:80",
    );
    assert_eq!(
        shares(&view, 0),
        [("b".to_string(), 1000), ("c".to_string(), 500)]
    );
    assert_eq!(view.routes.len(), 1);
    assert_eq!(view.routes[0].name, "ns/s");
}

#[test]
fn weight_zero_never_receives_traffic() {
    let view = outbound(
        &world(&split("[{service: b, weight: 1}, {service: c, weight: 0}]")),
        "10.96.0.1:80",
    );
    assert_eq!(shares(&view, 0), [("b".to_string(), 1)]);
}

#[test]
fn a_backend_without_the_root_port_is_not_included() {
    let mut text = WORLD.to_string();
    text.push_str(&service("a", 1, 80));
    text.push_str(&service("b", 2, 80));
    text.push_str(&service("c", 3, 81));
    text.push_str("\n---\n");
    text.push_str(&split("[{service: b, weight: 1}, {service: c, weight: 1}]"));
    let view = outbound(&index_of(&text), "10.96.0.1:80");
    assert_eq!(shares(&view, 0), [("b".to_string(), 1)]);
}

#[test]
fn splits_are_not_hierarchical() {
    let nested = "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {name: nested, namespace: ns}\nspec: {service: b, backends: [{service: c, weight: 1}]}\n";
    let view = outbound(
        &world(&format!(
            "{}\n---\n{nested}",
            split("[{service: b, weight: 1}]")
        )),
        "10.96.0.1:80",
    );
    assert_eq!(view.backends[0].name, "b");
    assert_eq!(
        view.backends[0].endpoints[0].addr,
        "10.0.0.2:8080".parse().unwrap()
    );
}

#[test]
fn a_self_reference_sends_that_share_to_the_root_endpoints() {
    let view = outbound(
        &world(&split("[{service: a, weight: 1}, {service: b, weight: 3}]")),
        "10.96.0.1:80",
    );
    assert_eq!(
        shares(&view, 0),
        [("a".to_string(), 1), ("b".to_string(), 3)]
    );
    assert_eq!(
        view.backends[0].endpoints[0].addr,
        "10.0.0.1:8080".parse().unwrap()
    );
}

#[test]
fn with_matches_only_matching_requests_are_split_and_the_rest_go_to_the_root() {
    let text = format!(
        "{ROUTES}\n---\n{}  matches: [{{kind: HTTPRouteGroup, name: routes}}]\n",
        split("[{service: b, weight: 1}]")
    );
    let view = outbound(&world(&text), "10.96.0.1:80");
    assert_eq!(view.routes.len(), 2);
    let split_matches = compile_all(&view.routes[0].matches).unwrap();
    assert!(first_match(&split_matches, &http("GET", "/metrics")).is_some());
    assert!(first_match(&split_matches, &http("GET", "/other")).is_none());
    assert_eq!(shares(&view, 0), [("b".to_string(), 1)]);
    assert!(view.routes[1].matches.is_empty());
    assert_eq!(shares(&view, 1), [("a".to_string(), 1)]);
}

#[test]
fn several_route_groups_in_matches_are_merged_into_one() {
    let second = "apiVersion: specs.smi-spec.io/v1alpha4\nkind: HTTPRouteGroup\nmetadata: {name: more, namespace: ns}\nspec: {matches: [{name: beta, headers: {x-beta: 'yes'}}]}\n";
    let text = format!(
        "{ROUTES}\n---\n{second}\n---\n{}  matches: [{{kind: HTTPRouteGroup, name: routes}}, {{kind: HTTPRouteGroup, name: more}}]\n",
        split("[{service: b, weight: 1}]")
    );
    let view = outbound(&world(&text), "10.96.0.1:80");
    let names: Vec<_> = view.routes[0]
        .matches
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["ns/routes/api", "ns/routes/metrics", "ns/more/beta"]
    );
}

#[test]
fn matches_that_resolve_to_nothing_split_nothing() {
    let text = format!(
        "{}  matches: [{{kind: HTTPRouteGroup, name: missing}}]\n",
        split("[{service: b, weight: 1}]")
    );
    let view = outbound(&world(&text), "10.96.0.1:80");
    assert_eq!(view.routes.len(), 1);
    assert_eq!(shares(&view, 0), [("a".to_string(), 1)]);
}

#[test]
fn v1alpha1_quantity_weights_keep_their_ratio() {
    let old = "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: s, namespace: ns}\nspec: {service: a, backends: [{service: b, weight: 1}, {service: c, weight: 500m}]}\n";
    let view = outbound(&world(old), "10.96.0.1:80");
    assert_eq!(
        shares(&view, 0),
        [("b".to_string(), 2), ("c".to_string(), 1)]
    );
}

#[test]
fn when_several_splits_claim_one_root_the_first_by_name_is_used() {
    let other = split("[{service: c, weight: 1}]").replace("name: s,", "name: z,");
    let view = outbound(
        &world(&format!(
            "{}\n---\n{other}",
            split("[{service: b, weight: 1}]")
        )),
        "10.96.0.1:80",
    );
    assert_eq!(shares(&view, 0), [("b".to_string(), 1)]);
}

#[test]
fn endpoints_carry_the_identity_of_meshed_pods_only() {
    let view = outbound(&world(""), "10.96.0.1:80");
    assert_eq!(view.backends[0].endpoints[0].identity, Some(id("a")));
    let plain = index_of(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns}}\n{}",
        service("a", 1, 80)
    ));
    assert_eq!(
        outbound(&plain, "10.96.0.1:80").backends[0].endpoints[0].identity,
        None
    );
    let mut text = WORLD.to_string();
    text.push_str(&service("a", 1, 80).replace(
        "metadata: {name: a-pod, namespace: ns}",
        "metadata: {name: a-pod, namespace: ns, annotations: {smidge.io/inject: disabled}}",
    ));
    assert_eq!(
        outbound(&index_of(&text), "10.96.0.1:80").backends[0].endpoints[0].identity,
        None
    );
}

#[test]
fn endpoints_that_are_not_ready_are_left_out() {
    let mut text = WORLD.to_string();
    text.push_str(&service("a", 1, 80).replace("ready: true", "ready: false"));
    assert!(outbound(&index_of(&text), "10.96.0.1:80").backends[0]
        .endpoints
        .is_empty());
}

fn peer(index: &Index, ip: &str) -> Option<Identity> {
    let ip = ip.parse().expect("test address");
    match compile(index, &ViewKey::Peer(ip), &MeshConfig::default()).view {
        Some(View::Peer(p)) => p.identity,
        other => panic!("expected a peer view, got {other:?}"),
    }
}

#[test]
fn a_meshed_pod_address_names_its_service_account() {
    let index = world("");
    assert_eq!(peer(&index, "10.0.0.2"), Some(id("b")));
    assert_eq!(peer(&index, "10.0.0.99"), None);
}

#[test]
fn an_unmeshed_pod_address_has_no_identity() {
    let index = world(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: outsider, namespace: ns, annotations: {smidge.io/inject: disabled}}
spec: {serviceAccountName: a, containers: [{name: app, image: app}]}
status: {podIP: 10.0.0.50}
"#,
    );
    assert_eq!(peer(&index, "10.0.0.50"), None);
}

#[test]
fn two_identities_claiming_one_address_give_none() {
    let index = world(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: squatter, namespace: ns}
spec: {serviceAccountName: c, containers: [{name: app, image: app}]}
status: {podIP: 10.0.0.1}
"#,
    );
    assert_eq!(peer(&index, "10.0.0.1"), None);
}

#[test]
fn a_meshed_pod_called_by_its_address_gets_a_view_with_its_identity() {
    let index = world("");
    let view = outbound(&index, "10.0.0.2:9042");
    assert_eq!(view.service.name, "b-pod");
    assert_eq!(view.service.port, 9042);
    assert_eq!(view.routes.len(), 1);
    assert_eq!(view.routes[0].targets.len(), 1);
    let endpoints = &view.backends[usize::from(view.routes[0].targets[0].backend)].endpoints;
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].addr, "10.0.0.2:9042".parse().unwrap());
    assert_eq!(endpoints[0].identity, Some(id("b")));
}

#[test]
fn an_unmeshed_or_unknown_pod_address_has_no_outbound_view() {
    let index = index_of(&format!(
        "{}{}",
        WORLD,
        service("a", 1, 80).replace(
            "metadata: {name: a-pod, namespace: ns}",
            "metadata: {name: a-pod, namespace: ns, annotations: {smidge.io/inject: disabled}}",
        )
    ));
    for addr in ["10.0.0.1:8080", "10.0.0.9:8080"] {
        let compiled = compile(
            &index,
            &ViewKey::Outbound(addr.parse().unwrap()),
            &MeshConfig::default(),
        );
        assert!(compiled.view.is_none(), "{addr}: {:?}", compiled.view);
    }
}
