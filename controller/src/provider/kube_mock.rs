//! The kubernetes provider's watch against kube-rs's mocked client (a `tower-test` service behind
//! `kube::Client::new`), only for what the real API server cannot be made to do on demand: send
//! an object its schema would refuse, and fail a watch mid-stream. Everything else is tested
//! against the real control plane (`tests/tests/kube_provider.rs`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower_test::mock;

use super::kube::{kinds, run};
use super::{Batch, Event, Report, Severity, Sink};
use crate::model::{Body, Kind};

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// Bounds a broken run only: a mocked answer arrives in microseconds (plus one watch back-off).
const WAIT: Duration = Duration::from_secs(20);

/// What the mocked API server answers, request by request.
enum Answer {
    /// A list of these items at `rv`.
    List { rv: &'static str, items: Vec<Value> },
    /// A watch from `from`: these lines, then the stream stays open.
    Watch {
        from: &'static str,
        lines: Vec<String>,
    },
}

/// A TrafficSplit as the API server sends it.
fn split(name: &str, rv: &str, weight: u64) -> Value {
    json!({
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
        "spec": {"service": "root", "backends": [{"service": "b", "weight": weight}]},
    })
}

fn event(type_: &str, object: Value) -> String {
    json!({"type": type_, "object": object}).to_string()
}

/// Serves `script` in order (checking each request is the list or watch it answers), records
/// every request, and leaves requests past the script unanswered (as a quiet watch would be).
fn server(script: Vec<Answer>) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let (service, handle) = mock::pair::<Request<kube::client::Body>, Reply>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut handle = Box::pin(handle);
        let mut script = script.into_iter();
        let mut parked = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let uri = request.uri().to_string();
            log.lock().expect("log").push(uri.clone());
            assert!(
                uri.starts_with("/apis/split.smi-spec.io/v1alpha4/trafficsplits?"),
                "{uri}"
            );
            let watch = uri.contains("watch=true");
            match script.next() {
                Some(Answer::List { rv, items }) => {
                    assert!(!watch, "expected a list, got {uri}");
                    let list = json!({
                        "apiVersion": "split.smi-spec.io/v1alpha4",
                        "kind": "TrafficSplitList",
                        "metadata": {"resourceVersion": rv},
                        "items": items,
                    });
                    let body = Full::new(Bytes::from(list.to_string())).boxed();
                    respond.send_response(Response::new(body));
                }
                Some(Answer::Watch { from, lines }) => {
                    assert!(
                        watch && uri.contains(&format!("resourceVersion={from}&"))
                            || uri.ends_with(&format!("resourceVersion={from}")),
                        "expected a watch from {from}, got {uri}"
                    );
                    let frames = lines
                        .into_iter()
                        .map(|l| Ok(Frame::data(Bytes::from(l + "\n"))));
                    let stream =
                        futures_util::stream::iter(frames).chain(futures_util::stream::pending());
                    respond.send_response(Response::new(BodyExt::boxed(StreamBody::new(stream))));
                }
                None => parked.push(respond),
            }
        }
    });
    (kube::Client::new(service, "default"), seen)
}

/// Runs the TrafficSplit watch on `client`; its batches arrive on the receiver.
fn watch(client: kube::Client) -> mpsc::Receiver<(usize, Batch)> {
    let watched = kinds()
        .into_iter()
        .find(|w| w.kind == Kind::TrafficSplit)
        .expect("TrafficSplits are watched");
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run(client, watched, Sink::new(0, tx)));
    rx
}

/// The index as the batches build it: name → weight of the first backend.
#[derive(Default)]
struct Model {
    splits: BTreeMap<String, u64>,
    reports: Vec<Report>,
}

impl Model {
    async fn next(&mut self, rx: &mut mpsc::Receiver<(usize, Batch)>) {
        let (_, (events, reports)) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a batch in time")
            .expect("the watch runs");
        for e in events {
            match e {
                Event::Apply(o) => {
                    let Body::TrafficSplit(s) = &o.body else {
                        panic!("{o:?}")
                    };
                    self.splits
                        .insert(o.id.key.name.clone(), s.backends[0].weight);
                }
                Event::Delete(id) => {
                    assert!(self.splits.remove(&id.key.name).is_some(), "{id}");
                }
            }
        }
        self.reports = reports;
    }

    /// Takes batches until `done` holds.
    async fn until(
        &mut self,
        rx: &mut mpsc::Receiver<(usize, Batch)>,
        done: impl Fn(&Model) -> bool,
    ) {
        while !done(self) {
            self.next(rx).await;
        }
    }

    fn splits(&self) -> Vec<(&str, u64)> {
        self.splits.iter().map(|(n, w)| (n.as_str(), *w)).collect()
    }
}

#[tokio::test]
async fn objects_the_schema_would_refuse_are_reported_and_skipped_and_the_watch_goes_on() {
    // `spec.backends` a string, and metadata no ObjectMeta can hold: the CRD's schema (and the
    // API server) refuse both, so only a mocked server sends them.
    let unreadable = json!({
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": ["not", "a", "name"], "namespace": "ns", "resourceVersion": "4"},
        "spec": {},
    });
    let mut wrong_shape = split("bad", "3", 1);
    wrong_shape["spec"]["backends"] = json!("everything");
    let (client, _) = server(vec![
        Answer::List {
            rv: "1",
            items: vec![split("a", "1", 1)],
        },
        Answer::Watch {
            from: "1",
            lines: vec![
                event("ADDED", wrong_shape),
                event("ADDED", unreadable),
                event("ADDED", split("later", "5", 2)),
            ],
        },
    ]);
    let mut rx = watch(client);
    let mut model = Model::default();
    model.next(&mut rx).await;
    assert_eq!(model.splits(), [("a", 1)], "the first list");
    model
        .until(&mut rx, |m| m.splits.contains_key("later"))
        .await;
    assert_eq!(model.splits(), [("a", 1), ("later", 2)]);
    let [report] = &model.reports[..] else {
        panic!("{:?}", model.reports)
    };
    assert_eq!(
        (
            report.severity,
            report.object.as_str(),
            report.field.as_str()
        ),
        (Severity::Error, "TrafficSplit ns/bad", "spec.backends")
    );
    assert!(
        report.message.ends_with("the object is not in effect"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn a_watch_error_mid_stream_backs_off_relists_and_leaves_exactly_the_servers_objects() {
    let gone = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: 1 (9)", "reason": "Expired", "code": 410,
    });
    let (client, seen) = server(vec![
        Answer::List {
            rv: "1",
            items: vec![split("a", "1", 1), split("b", "1", 1), split("c", "1", 1)],
        },
        Answer::Watch {
            from: "1",
            lines: vec![
                event("MODIFIED", split("a", "2", 2)),
                event("ADDED", split("d", "3", 1)),
                event("ERROR", gone),
            ],
        },
        // What the server holds when the watcher lists again: b and c were deleted and a
        // changed while the watch was failing, e is new.
        Answer::List {
            rv: "9",
            items: vec![split("a", "7", 5), split("d", "3", 1), split("e", "8", 1)],
        },
        Answer::Watch {
            from: "9",
            lines: vec![],
        },
    ]);
    let mut rx = watch(client);
    let mut model = Model::default();
    model.next(&mut rx).await;
    assert_eq!(model.splits(), [("a", 1), ("b", 1), ("c", 1)]);
    model.until(&mut rx, |m| m.splits.contains_key("e")).await;
    assert_eq!(
        model.splits(),
        [("a", 5), ("d", 1), ("e", 1)],
        "exactly the server's objects after the relist"
    );
    assert!(model.reports.is_empty(), "{:?}", model.reports);
    let requests = seen.lock().expect("log").clone();
    let kinds: Vec<&str> = requests
        .iter()
        .map(|u| {
            if u.contains("watch=true") {
                "watch"
            } else {
                "list"
            }
        })
        .collect();
    assert_eq!(kinds[..3], ["list", "watch", "list"], "{requests:?}");
}
