//! Request bodies (JSON, YAML or Kubernetes protobuf) to `serde_json::Value`,
//! noting duplicate fields (JSON) for strict field validation.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::status::ApiError;

/// kube-apiserver's limit on a request body: 3 MiB.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

/// A decoded body.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The document.
    pub value: Value,
    /// Paths of fields that appeared more than once (`metadata.name`); the last one wins.
    pub duplicates: Vec<String>,
}

/// The body formats the server accepts for objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (and `*/*+json`).
    Json,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.kubernetes.protobuf` ([`crate::protobuf`]).
    Protobuf,
}

impl BodyFormat {
    /// The format for a `Content-Type` header (parameters ignored); an empty header means JSON.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "" | "application/json" | "*/*" => Ok(Self::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(Self::Yaml),
            crate::protobuf::CONTENT_TYPE => Ok(Self::Protobuf),
            m if m.ends_with("+json") => Ok(Self::Json),
            m if m.ends_with("+yaml") => Ok(Self::Yaml),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// Decode a request body of the given `Content-Type`.
pub fn decode(bytes: &[u8], content_type: &str) -> Result<Decoded, ApiError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::too_large(MAX_REQUEST_BYTES));
    }
    match BodyFormat::from_content_type(content_type)? {
        BodyFormat::Json => decode_json(bytes),
        BodyFormat::Yaml => decode_yaml(bytes),
        BodyFormat::Protobuf => Ok(Decoded {
            value: crate::protobuf::decode(bytes)?,
            duplicates: Vec::new(),
        }),
    }
}

/// Decode JSON, recording duplicate keys.
pub fn decode_json(bytes: &[u8]) -> Result<Decoded, ApiError> {
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = ValueSeed {
        path: String::new(),
        duplicates: &mut duplicates,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|err| {
        ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {err}"
        ))
    })?;
    Ok(Decoded { value, duplicates })
}

/// Decode YAML (one document).
pub fn decode_yaml(bytes: &[u8]) -> Result<Decoded, ApiError> {
    let value: Value = serde_yaml_ng::from_slice(bytes).map_err(|err| {
        ApiError::bad_request(format!("error converting YAML to JSON: yaml: {err}"))
    })?;
    Ok(Decoded {
        value,
        duplicates: Vec::new(),
    })
}

/// Builds a `Value` like serde_json does, but notes repeated keys.
struct ValueSeed<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let seed = ValueSeed {
                path: format!("{}[{}]", self.path, out.len()),
                duplicates: &mut *self.duplicates,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join(&self.path, &key);
            if out.contains_key(&key) {
                self.duplicates.push(path.clone());
            }
            let value = map.next_value_seed(ValueSeed {
                path,
                duplicates: &mut *self.duplicates,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::status::StatusReason;

    #[test]
    fn json_and_yaml() {
        let j = decode(
            br#"{"a": {"b": [1, 2.5, "x", null, true]}}"#,
            "application/json",
        );
        assert_eq!(
            j.map(|d| d.value).ok(),
            Some(json!({"a": {"b": [1, 2.5, "x", null, true]}}))
        );
        let y = decode(b"a:\n  b: [1, x]\n", "application/yaml; charset=utf-8");
        assert_eq!(y.map(|d| d.value).ok(), Some(json!({"a": {"b": [1, "x"]}})));
    }

    #[test]
    fn duplicates_are_noted() {
        let d =
            decode_json(br#"{"metadata": {"name": "a", "name": "b"}, "l": [{"x": 1, "x": 2}]}"#);
        let d = d.unwrap_or(Decoded {
            value: Value::Null,
            duplicates: vec![],
        });
        assert_eq!(d.duplicates, vec!["metadata.name", "l[0].x"]);
        assert_eq!(d.value["metadata"]["name"], "b");
    }

    #[test]
    fn malformed_is_bad_request() {
        let err = decode(b"{\"a\": ", "application/json").err();
        assert_eq!(
            err.as_ref().map(|e| e.reason),
            Some(StatusReason::BadRequest)
        );
        assert!(err.is_some_and(|e| {
            e.message
                .starts_with("couldn't get version/kind; json parse error:")
        }));
        let err = decode(b"x", "application/vnd.kubernetes.protobuf").err();
        assert_eq!(err.map(|e| e.code()), Some(400));
        let err = decode(b"x", "application/cbor").err();
        assert_eq!(err.map(|e| e.code()), Some(415));
    }
}
