//! The traffic-check step kind: calls made through the sample apps (`POST /call`) and
//! expectations on their counters, as REFERENCE.md §8.4 describes the upstream custom tests'
//! intent. The definitions and the evaluation are pure; the runner makes the calls.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sample_app::Counters;

/// `apiVersion` of the step kind.
pub const API_VERSION: &str = "conformance.smidge.io/v1";
/// `kind` of the step kind.
pub const KIND: &str = "TrafficCheck";

/// A traffic check: reset the apps' counters, make the calls, then every expectation must hold.
/// The whole check is retried until it holds or `timeout` seconds pass (config takes a moment to
/// reach the proxies), each attempt from fresh counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficCheck {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// The port every sample app's Service listens on.
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Apps whose counters are cleared first (`DELETE /metrics`).
    #[serde(default)]
    pub reset: Vec<String>,
    pub calls: Vec<CallSpec>,
    pub expect: Vec<Expectation>,
}

fn default_port() -> u16 {
    9091
}

fn default_timeout() -> u64 {
    10
}

/// `times` calls of `method url` made by the app `from` (its Service's `/call`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    pub from: String,
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "one")]
    pub times: u32,
}

fn default_method() -> String {
    "GET".into()
}

fn one() -> u32 {
    1
}

/// Which counter list of an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum List {
    ReqReceived,
    RespSucceeded,
    RespFailed,
}

/// What must hold for one list of one app; every field given must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expectation {
    pub app: String,
    pub list: List,
    /// Exactly this many entries.
    pub count: Option<usize>,
    /// At least this many.
    pub min: Option<usize>,
    /// `ReqReceived` only: exactly these callers, in order.
    pub items: Option<Vec<String>>,
    /// Calls only: every entry has this URL.
    pub url: Option<String>,
    /// Calls only: every entry has this method.
    pub method: Option<String>,
    /// More entries than that app's list.
    pub more_than: Option<Other>,
}

/// Another app's list, for comparisons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Other {
    pub app: String,
    pub list: List,
}

fn length(c: &Counters, list: List) -> usize {
    match list {
        List::ReqReceived => c.req_received.len(),
        List::RespSucceeded => c.resp_succeeded.len(),
        List::RespFailed => c.resp_failed.len(),
    }
}

/// The expectations that do not hold against `counters` (by app), one sentence each.
pub fn unmet(expect: &[Expectation], counters: &BTreeMap<String, Counters>) -> Vec<String> {
    let empty = Counters::default();
    let get = |app: &str| counters.get(app).unwrap_or(&empty);
    let mut out = Vec::new();
    for e in expect {
        let c = get(&e.app);
        let n = length(c, e.list);
        let what = format!("{} {:?}", e.app, e.list);
        if let Some(want) = e.count {
            if n != want {
                out.push(format!("{what} has {n} entries, expected exactly {want}"));
            }
        }
        if let Some(min) = e.min {
            if n < min {
                out.push(format!("{what} has {n} entries, expected at least {min}"));
            }
        }
        if let Some(items) = &e.items {
            if e.list == List::ReqReceived && c.req_received != *items {
                out.push(format!(
                    "{what} is {:?}, expected {items:?}",
                    c.req_received
                ));
            }
        }
        let calls = match e.list {
            List::RespSucceeded => &c.resp_succeeded,
            List::RespFailed => &c.resp_failed,
            List::ReqReceived => &Vec::new(),
        };
        if let Some(url) = &e.url {
            if let Some(bad) = calls.iter().find(|call| call.url != *url) {
                out.push(format!(
                    "{what} has a call to {}, expected only {url}",
                    bad.url
                ));
            }
        }
        if let Some(method) = &e.method {
            if let Some(bad) = calls.iter().find(|call| call.method != *method) {
                out.push(format!(
                    "{what} has a {} call, expected only {method}",
                    bad.method
                ));
            }
        }
        if let Some(other) = &e.more_than {
            let m = length(get(&other.app), other.list);
            if n <= m {
                out.push(format!(
                    "{what} has {n} entries, expected more than {} {:?} ({m})",
                    other.app, other.list
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample_app::Call;

    fn call(url: &str, method: &str) -> Call {
        Call {
            url: url.into(),
            method: method.into(),
            headers: BTreeMap::new(),
        }
    }

    fn check(yaml: &str) -> TrafficCheck {
        serde_yaml_ng::from_str(yaml).expect("a valid check")
    }

    #[test]
    fn a_check_reads_from_yaml_and_unknown_fields_are_refused() {
        let c = check(
            "apiVersion: conformance.smidge.io/v1\nkind: TrafficCheck\nreset: [app-a]\ncalls: [{from: app-a, url: 'http://b/echo'}]\nexpect: [{app: app-a, list: RespFailed, count: 1}]\n",
        );
        assert_eq!(c.port, 9091);
        assert_eq!(c.calls[0].method, "GET");
        assert_eq!(c.calls[0].times, 1);
        let bad: Result<TrafficCheck, _> = serde_yaml_ng::from_str(
            "apiVersion: v\nkind: TrafficCheck\ncalls: []\nexpect: [{app: a, list: RespFailed, cuont: 1}]\n",
        );
        assert!(bad.is_err());
    }

    #[test]
    fn every_unmet_expectation_is_named() {
        let mut counters = BTreeMap::new();
        counters.insert(
            "app-a".to_string(),
            Counters {
                req_received: vec![],
                resp_succeeded: vec![call("http://b/echo", "GET")],
                resp_failed: vec![call("http://b/echo", "POST")],
            },
        );
        counters.insert(
            "app-b".to_string(),
            Counters {
                req_received: vec!["app-a".into(), "app-a".into()],
                ..Default::default()
            },
        );
        let expect: Vec<Expectation> = serde_yaml_ng::from_str(
            r#"
- {app: app-a, list: RespSucceeded, count: 1, url: "http://b/echo", method: GET}
- {app: app-a, list: RespFailed, count: 1, method: POST}
- {app: app-b, list: ReqReceived, items: [app-a, app-a]}
- {app: app-b, list: ReqReceived, moreThan: {app: app-c, list: ReqReceived}}
"#,
        )
        .expect("yaml");
        assert!(unmet(&expect, &counters).is_empty());
        let wrong: Vec<Expectation> = serde_yaml_ng::from_str(
            r#"
- {app: app-a, list: RespFailed, count: 0}
- {app: app-a, list: RespSucceeded, method: POST}
- {app: app-c, list: ReqReceived, min: 1}
- {app: app-c, list: ReqReceived, moreThan: {app: app-b, list: ReqReceived}}
"#,
        )
        .expect("yaml");
        assert_eq!(
            unmet(&wrong, &counters),
            [
                "app-a RespFailed has 1 entries, expected exactly 0",
                "app-a RespSucceeded has a GET call, expected only POST",
                "app-c ReqReceived has 0 entries, expected at least 1",
                "app-c ReqReceived has 0 entries, expected more than app-b ReqReceived (2)",
            ]
        );
    }
}
