//! Field types that accept every shape the SMI ecosystem writes, and describe themselves to the
//! CRD schema the way the upstream CRDs do.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// HTTPRouteGroup `headers`: the sdk writes a list of one-entry maps, the later spec text a plain
/// map. Both are read; a list element with more than one entry is refused (as the sdk does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpHeaders(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for HttpHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Map(BTreeMap<String, String>),
            List(Vec<BTreeMap<String, String>>),
        }
        match Shape::deserialize(d).map_err(|_| {
            de::Error::custom("expected a map of header name to regex, or a list of one-entry maps")
        })? {
            Shape::Map(m) => Ok(HttpHeaders(m.into_iter().collect())),
            Shape::List(items) => {
                let mut out: Vec<(String, String)> = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    if item.len() != 1 {
                        return Err(de::Error::custom(format!(
                            "list element {i} has {} entries; each element names exactly one header",
                            item.len()
                        )));
                    }
                    for (k, v) in item {
                        out.retain(|(name, _)| !name.eq_ignore_ascii_case(&k));
                        out.push((k, v));
                    }
                }
                Ok(HttpHeaders(out))
            }
        }
    }
}

impl Serialize for HttpHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let items: Vec<BTreeMap<&str, &str>> = self
            .0
            .iter()
            .map(|(k, v)| BTreeMap::from([(k.as_str(), v.as_str())]))
            .collect();
        items.serialize(s)
    }
}

impl JsonSchema for HttpHeaders {
    fn schema_name() -> Cow<'static, str> {
        "HttpHeaders".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Header match conditions of this route.",
            "type": "array",
            "items": {
                "description": "Header match condition of this route.",
                "type": "object",
                "additionalProperties": { "type": "string" }
            }
        })
    }
}

/// A number or a string that should hold one (`destination.port: "9091"`, quantity weights).
#[derive(Clone, Debug, PartialEq)]
pub enum NumberOrString {
    Number(serde_json::Number),
    String(String),
}

impl<'de> Deserialize<'de> for NumberOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Number(serde_json::Number),
            String(String),
        }
        match Shape::deserialize(d)
            .map_err(|_| de::Error::custom("expected a number or a string"))?
        {
            Shape::Number(n) => Ok(NumberOrString::Number(n)),
            Shape::String(s) => Ok(NumberOrString::String(s)),
        }
    }
}

impl Serialize for NumberOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NumberOrString::Number(n) => n.serialize(s),
            NumberOrString::String(v) => v.serialize(s),
        }
    }
}

impl JsonSchema for NumberOrString {
    fn schema_name() -> Cow<'static, str> {
        "NumberOrString".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

impl NumberOrString {
    /// A port: a whole number from 1 to 65535, written as a number or a string of digits.
    pub fn to_port(&self) -> Result<u16, String> {
        let text = match self {
            NumberOrString::Number(n) => n.to_string(),
            NumberOrString::String(s) => s.trim().to_string(),
        };
        match text.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{text:?} is not a port number (1-65535)")),
        }
    }
}

/// A whole, non-negative weight (split v1alpha2+: "Weights must be whole numbers").
pub fn whole_weight(n: &serde_json::Number) -> Result<u64, String> {
    if let Some(w) = n.as_u64() {
        return Ok(w);
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64 => Ok(f as u64),
        Some(f) if f < 0.0 => Err(format!("{n} is negative; weights are 0 or more")),
        _ => Err(format!(
            "{n} is not a whole number; weights must be whole numbers"
        )),
    }
}

/// A v1alpha1 weight, a Kubernetes quantity (`1`, `500m`, `1500m`), in thousandths: `1` is 1000,
/// `500m` is 500. (The sdk's conversion keeps only the unscaled digits, which makes `1` lighter
/// than `500m`; thousandths keep the ratio the user wrote.)
pub fn quantity_weight_milli(v: &NumberOrString) -> Result<u64, String> {
    let text = match v {
        NumberOrString::Number(n) => n.to_string(),
        NumberOrString::String(s) => s.trim().to_string(),
    };
    let bad = || format!("{text:?} is not a quantity weight such as 1, 10, 500m or 1500m");
    let (digits, milli) = match text.strip_suffix('m') {
        Some(d) => (d, true),
        None => (text.as_str(), false),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let value: f64 = digits.parse().map_err(|_| bad())?;
    let milli_value = if milli { value } else { value * 1000.0 };
    if milli_value.fract() != 0.0 || milli_value > u32::MAX as f64 {
        return Err(format!("{text:?} is finer than a thousandth or too large"));
    }
    Ok(milli_value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_map_or_list_of_one_entry_maps() {
        let map: HttpHeaders = serde_json::from_str(r#"{"user-agent": ".*Android.*"}"#).unwrap();
        let list: HttpHeaders = serde_json::from_str(r#"[{"user-agent": ".*Android.*"}]"#).unwrap();
        assert_eq!(map, list);
        let err = serde_json::from_str::<HttpHeaders>(r#"[{"a": "1", "b": "2"}]"#).unwrap_err();
        assert!(err.to_string().contains("exactly one header"), "{err}");
    }

    #[test]
    fn later_duplicate_headers_overwrite_earlier_ones() {
        let list: HttpHeaders = serde_json::from_str(r#"[{"x": "1"}, {"X": "2"}]"#).unwrap();
        assert_eq!(list.0, vec![("X".to_string(), "2".to_string())]);
    }

    #[test]
    fn ports_read_as_number_or_string() {
        let n: NumberOrString = serde_json::from_str("9091").unwrap();
        let s: NumberOrString = serde_json::from_str("\"9091\"").unwrap();
        assert_eq!(n.to_port(), Ok(9091));
        assert_eq!(s.to_port(), Ok(9091));
        let bad: NumberOrString = serde_json::from_str("\"http\"").unwrap();
        assert!(bad.to_port().is_err());
    }

    #[test]
    fn v1alpha1_weights_read_as_quantities_in_thousandths() {
        let q =
            |s: &str| quantity_weight_milli(&serde_json::from_str::<NumberOrString>(s).unwrap());
        assert_eq!(q("1"), Ok(1000));
        assert_eq!(q("\"1\""), Ok(1000));
        assert_eq!(q("\"500m\""), Ok(500));
        assert_eq!(q("\"1500m\""), Ok(1500));
        assert_eq!(q("\"0.5\""), Ok(500));
        assert!(q("\"10Ki\"").is_err());
        assert!(q("\"-1\"").is_err());
    }

    #[test]
    fn weights_must_be_whole_and_not_negative() {
        let w = |s: &str| whole_weight(&serde_json::from_str::<serde_json::Number>(s).unwrap());
        assert_eq!(w("75"), Ok(75));
        assert_eq!(w("2.0"), Ok(2));
        assert!(w("0.5").is_err());
        assert!(w("-1").is_err());
    }
}
