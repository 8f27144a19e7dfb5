//! The real `smidge-controller` on a manifest directory, driven as a proxy would drive it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use smidge_e2e::{Controller, ProxyClient};
use smidge_protocol::delta::Change;
use smidge_protocol::{ClientMessage, OutboundView, ServerMessage, View, ViewKey, ViewUpdate};

const APP_SVC: &str = "10.96.0.10:9091";

/// Services app-svc (root), app-b and app-c in a meshed namespace, one pod each for b and c.
fn cluster(extra_c_endpoint: bool) -> String {
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: ns, labels: {smidge.io/inject: enabled}}\n");
    for (name, ip) in [
        ("app-svc", "10.96.0.10"),
        ("app-b", "10.96.0.11"),
        ("app-c", "10.96.0.12"),
    ] {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 9091}}]}}\n"
        ));
    }
    for (svc, pod, ip) in [("app-b", "b-0", "10.0.0.11"), ("app-c", "c-0", "10.0.0.12")] {
        let more = if extra_c_endpoint && svc == "app-c" {
            ", {addresses: [10.0.0.13]}"
        } else {
            ""
        };
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: ns}}\nspec: {{serviceAccountName: {svc}, containers: [{{name: app, image: app}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-1, namespace: ns, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 9091}}]\nendpoints: [{{addresses: [{ip}], targetRef: {{kind: Pod, name: {pod}}}}}{more}]\n"
        ));
    }
    text
}

fn split(b: &str, c: &str) -> String {
    format!(
        "apiVersion: split.smi-spec.io/v1alpha4\nkind: TrafficSplit\nmetadata: {{name: server-split, namespace: ns}}\n\
         spec:\n  service: app-svc\n  backends:\n  - service: app-b\n    weight: {b}\n  - service: app-c\n    weight: {c}\n"
    )
}

/// Writes a file the way editors do: a temporary file renamed over the old one.
fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// Backend name → weight of the view's first route.
fn weights(view: &OutboundView) -> Vec<(String, u32)> {
    view.routes[0]
        .targets
        .iter()
        .map(|t| (view.backends[t.backend as usize].name.clone(), t.weight))
        .collect()
}

async fn full_outbound(client: &mut ProxyClient, wait: Duration) -> (u64, OutboundView) {
    match client.recv(wait).await.unwrap() {
        ServerMessage::View {
            version,
            update: ViewUpdate::Full(View::Outbound(v)),
            ..
        } => (version, v),
        other => panic!("expected a full outbound view, got {other:?}"),
    }
}

async fn subscribe(push: SocketAddr, pod: &str) -> (ProxyClient, u64, OutboundView) {
    let mut client = ProxyClient::connect(push, pod).await.unwrap();
    client
        .send(ClientMessage::Subscribe(ViewKey::Outbound(
            APP_SVC.parse().unwrap(),
        )))
        .await
        .unwrap();
    let (version, view) = full_outbound(&mut client, Duration::from_secs(5)).await;
    (client, version, view)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_edit_reaches_a_subscribed_proxy_and_a_broken_file_keeps_the_old_view() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cluster.yaml", &cluster(false));
    write(dir.path(), "split.yaml", &split("1", "0"));
    let controller = Controller::start(dir.path(), &[]).unwrap();

    let (mut proxy, version, view) = subscribe(controller.push, "a-0").await;
    assert_eq!(
        weights(&view),
        [("app-b".to_string(), 1)],
        "weight 0 never receives traffic"
    );
    assert_eq!(
        view.backends[0].endpoints[0].addr,
        "10.0.0.11:9091".parse().unwrap()
    );
    proxy
        .send(ClientMessage::Ack {
            key: ViewKey::Outbound(APP_SVC.parse().unwrap()),
            version,
        })
        .await
        .unwrap();

    // Edit the split: the new weights arrive within a second.
    let edited = Instant::now();
    write(dir.path(), "split.yaml", &split("0", "1"));
    let (v2, view) = full_outbound(&mut proxy, Duration::from_secs(1)).await;
    eprintln!("split edit reached the proxy in {:?}", edited.elapsed());
    assert!(v2 > version);
    assert_eq!(weights(&view), [("app-c".to_string(), 1)]);

    // A broken object: reported with file and object, and the old view stays served.
    write(dir.path(), "split.yaml", &split("0", "-1"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let problems = loop {
        let (_, body) = controller.admin_get("/problems").unwrap();
        if body.contains("spec.backends[1].weight") || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        problems.contains("split.yaml") && problems.contains("TrafficSplit ns/server-split"),
        "{problems}"
    );
    let log = controller.log();
    assert!(
        log.contains("split.yaml")
            && log.contains("TrafficSplit ns/server-split")
            && log.contains("refused"),
        "{log}"
    );
    assert!(
        proxy.recv(Duration::from_millis(300)).await.is_err(),
        "no new version for a refused object"
    );
    let (_, _, fresh) = subscribe(controller.push, "a-1").await;
    assert_eq!(
        weights(&fresh),
        [("app-c".to_string(), 1)],
        "a new subscriber gets the last good view"
    );

    // Broken YAML is refused the same way.
    write(dir.path(), "split.yaml", "spec: [unclosed\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, fresh) = subscribe(controller.push, "a-2").await;
    assert_eq!(weights(&fresh), [("app-c".to_string(), 1)]);

    // Fixed again: the change flows.
    write(dir.path(), "split.yaml", &split("75", "25"));
    let (_, view) = full_outbound(&mut proxy, Duration::from_secs(2)).await;
    assert_eq!(
        weights(&view),
        [("app-b".to_string(), 75), ("app-c".to_string(), 25)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_arrives_as_a_small_delta() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cluster.yaml", &cluster(false));
    write(dir.path(), "split.yaml", &split("1", "1"));
    let controller = Controller::start(dir.path(), &[]).unwrap();
    let (mut proxy, version, _) = subscribe(controller.push, "a-0").await;

    write(dir.path(), "cluster.yaml", &cluster(true));
    match proxy.recv(Duration::from_secs(2)).await.unwrap() {
        ServerMessage::View {
            version: v,
            update: ViewUpdate::Delta { base, changes },
            ..
        } => {
            assert_eq!(base, version);
            assert!(v > version);
            match changes.as_slice() {
                [Change::Upsert { endpoint, .. }] => {
                    assert_eq!(endpoint.addr, "10.0.0.13:9091".parse().unwrap());
                    assert_eq!(
                        endpoint.identity, None,
                        "no pod is named, so no identity is claimed"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("expected a delta, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_destination_is_absent_and_a_wrong_protocol_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cluster.yaml", &cluster(false));
    let controller = Controller::start(dir.path(), &[]).unwrap();

    let mut proxy = ProxyClient::connect(controller.push, "a-0").await.unwrap();
    proxy
        .send(ClientMessage::Subscribe(ViewKey::Outbound(
            "192.0.2.1:80".parse().unwrap(),
        )))
        .await
        .unwrap();
    match proxy.recv(Duration::from_secs(5)).await.unwrap() {
        ServerMessage::View {
            update: ViewUpdate::Absent,
            ..
        } => {}
        other => panic!("{other:?}"),
    }

    let mut old = ProxyClient::connect_raw(controller.push).await.unwrap();
    let proxy_id = smidge_protocol::ProxyId {
        namespace: "ns".into(),
        pod: "x".into(),
        service_account: "default".into(),
    };
    old.send(ClientMessage::Hello {
        protocol_version: 999,
        proxy: proxy_id,
        token: None,
    })
    .await
    .unwrap();
    match old.recv(Duration::from_secs(5)).await.unwrap() {
        ServerMessage::Refused { reason } => assert!(reason.contains("999"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// `/proxies` (what `smidge check` reads): a connected proxy, the versions it acknowledged, and
/// whether it is on the controller's current version; it leaves the list when it disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_lists_connected_proxies_and_whether_they_acked_the_current_views() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "cluster.yaml", &cluster(false));
    write(dir.path(), "split.yaml", &split("1", "0"));
    let controller = Controller::start(dir.path(), &[]).unwrap();
    let key = ViewKey::Outbound(APP_SVC.parse().unwrap());
    let proxies = || -> serde_json::Value {
        let (code, body) = controller.admin_get("/proxies").unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };

    let (mut proxy, version, _) = subscribe(controller.push, "a-0").await;
    let list = proxies();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    assert_eq!(list[0]["namespace"], "ns");
    assert_eq!(list[0]["pod"], "a-0");
    assert_eq!(list[0]["identity"], "ns/default");
    assert_eq!(list[0]["views"][0]["current"], version);
    assert!(list[0]["views"][0]["acked"].is_null(), "{list:#}");
    assert_eq!(list[0]["current"], false, "not acked yet");

    proxy
        .send(ClientMessage::Ack {
            key: key.clone(),
            version,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxies()[0]["current"] != true {
        assert!(
            Instant::now() < deadline,
            "the ack never showed: {:#}",
            proxies()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxies()[0]["views"][0]["acked"], version);

    // A new version the proxy has not acknowledged: behind.
    write(dir.path(), "split.yaml", &split("0", "1"));
    let (v2, _) = full_outbound(&mut proxy, Duration::from_secs(2)).await;
    let list = proxies();
    assert_eq!(list[0]["views"][0]["current"], v2);
    assert_eq!(list[0]["views"][0]["acked"], version);
    assert_eq!(list[0]["current"], false, "{list:#}");

    drop(proxy);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxies().as_array().map(Vec::len) != Some(0) {
        assert!(Instant::now() < deadline, "still listed: {:#}", proxies());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
