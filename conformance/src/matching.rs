//! kuttl's assert rule: an expected object matches an actual one when every field it names is
//! there with the same value; maps may hold more, lists must have the same length and match
//! item by item. Pure.

use serde_json::Value;

/// `Ok` when `expected` is contained in `actual`, else the first difference, by path.
pub fn contains(expected: &Value, actual: &Value) -> Result<(), String> {
    walk(expected, actual, "")
}

fn walk(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    let at = |p: &str| {
        if p.is_empty() {
            "the object".to_string()
        } else {
            p.to_string()
        }
    };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    Some(av) => walk(ev, av, &p)?,
                    None if ev.is_null() => {}
                    None => return Err(format!("{p}: missing (expected {})", short(ev))),
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{}: {} items, expected {}",
                    at(path),
                    a.len(),
                    e.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                walk(ev, av, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (e, a) if same_scalar(e, a) => Ok(()),
        (e, a) => Err(format!(
            "{}: is {}, expected {}",
            at(path),
            short(a),
            short(e)
        )),
    }
}

/// Numbers compare by value (1 and 1.0); a quoted number matches the number (YAML writers differ).
fn same_scalar(e: &Value, a: &Value) -> bool {
    match (e, a) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.parse::<f64>().ok() == n.as_f64()
        }
        _ => e == a,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}…", &s[..80])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_may_hold_more_and_lists_must_match_item_by_item() {
        let actual = json!({"spec": {"ports": [{"port": 80, "name": "http"}], "type": "NodePort"}, "status": {"readyReplicas": 1}});
        assert_eq!(
            contains(&json!({"spec": {"ports": [{"port": 80}]}}), &actual),
            Ok(())
        );
        assert_eq!(
            contains(&json!({"status": {"readyReplicas": 1.0}}), &actual),
            Ok(())
        );
        assert_eq!(
            contains(&json!({"status": {"readyReplicas": 2}}), &actual),
            Err("status.readyReplicas: is 1, expected 2".into())
        );
        assert_eq!(
            contains(&json!({"spec": {"ports": []}}), &actual),
            Err("spec.ports: 1 items, expected 0".into())
        );
        assert_eq!(
            contains(&json!({"spec": {"selector": {"app": "a"}}}), &actual),
            Err("spec.selector: missing (expected {\"app\":\"a\"})".into())
        );
        assert_eq!(
            contains(&json!({"spec": {"ports": [{"port": "80"}]}}), &actual),
            Ok(())
        );
    }
}
