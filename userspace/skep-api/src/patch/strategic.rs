//! Strategic merge patch application (`apimachinery/pkg/util/strategicpatch`
//! `StrategicMergePatch`): merge keys per list, `$patch`, `$retainKeys`,
//! `$setElementOrder/…`, `$deleteFromPrimitiveList/…`.

use serde_json::{Map, Value};

use super::schema::{ListStrategy, list_strategy};
use crate::registry::ResourceInfo;
use crate::status::ApiError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Apply a strategic merge `patch` to `original`, an object of `info`'s kind.
pub fn strategic_merge(
    info: &ResourceInfo,
    original: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request("invalid JSON document"));
    };
    let mut out = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let mut merger = Merger {
        info,
        path: Vec::new(),
    };
    merger.merge_map(&mut out, patch)?;
    Ok(Value::Object(out))
}

struct Merger<'a> {
    info: &'a ResourceInfo,
    path: Vec<String>,
}

/// Remove directives from a value that is inserted as is.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get(DIRECTIVE).is_none())
                .map(clean)
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Merger<'_> {
    fn path_refs(&self) -> Vec<&str> {
        self.path.iter().map(String::as_str).collect()
    }

    fn merge_map(
        &mut self,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> Result<(), ApiError> {
        match patch.get(DIRECTIVE).and_then(Value::as_str) {
            Some("replace") => {
                if let Value::Object(m) = clean(&Value::Object(patch.clone())) {
                    *original = m;
                }
                return Ok(());
            }
            Some("delete") => {
                original.clear();
                return Ok(());
            }
            Some("merge") | None => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Unknown patch type: {other}"
                )));
            }
        }
        if let Some(retain) = patch.get(RETAIN_KEYS) {
            let Value::Array(keys) = retain else {
                return Err(ApiError::bad_request(
                    "invalid patch: $retainKeys must be a list",
                ));
            };
            let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
            original.retain(|k, _| keep.contains(&k.as_str()));
        }
        let mut orders = Vec::new();
        for (key, value) in patch {
            if key == DIRECTIVE || key == RETAIN_KEYS {
                continue;
            }
            if let Some(field) = key.strip_prefix(SET_ORDER) {
                orders.push((field.to_owned(), value));
                continue;
            }
            if let Some(field) = key.strip_prefix(DELETE_PRIMITIVE) {
                let remove = value.as_array().cloned().unwrap_or_default();
                if let Some(Value::Array(list)) = original.get_mut(field) {
                    list.retain(|v| !remove.contains(v));
                }
                continue;
            }
            if value.is_null() {
                original.remove(key);
                continue;
            }
            self.path.push(key.clone());
            let result = self.merge_field(original, key, value);
            self.path.pop();
            result?;
        }
        for (field, order) in orders {
            self.path.push(field.clone());
            let strategy = list_strategy(self.info, &self.path_refs());
            self.path.pop();
            if let (Some(Value::Array(list)), Value::Array(order)) =
                (original.get_mut(&field), order)
            {
                reorder(list, order, strategy);
            }
        }
        Ok(())
    }

    fn merge_field(
        &mut self,
        original: &mut Map<String, Value>,
        key: &str,
        value: &Value,
    ) -> Result<(), ApiError> {
        match (original.get_mut(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                if p.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                    original.remove(key);
                    return Ok(());
                }
                self.merge_map(o, p)
            }
            (Some(Value::Array(o)), Value::Array(p)) => self.merge_list(o, p),
            (_, Value::Object(p)) if p.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") => {
                original.remove(key);
                Ok(())
            }
            (_, Value::Object(p)) => {
                // New map: merge into empty so nested directives are honoured.
                let mut fresh = Map::new();
                self.merge_map(&mut fresh, p)?;
                original.insert(key.to_owned(), Value::Object(fresh));
                Ok(())
            }
            (_, Value::Array(p)) => {
                let mut fresh = Vec::new();
                self.merge_list(&mut fresh, p)?;
                original.insert(key.to_owned(), Value::Array(fresh));
                Ok(())
            }
            (_, v) => {
                original.insert(key.to_owned(), v.clone());
                Ok(())
            }
        }
    }

    fn merge_list(&mut self, original: &mut Vec<Value>, patch: &[Value]) -> Result<(), ApiError> {
        let strategy = list_strategy(self.info, &self.path_refs());
        match strategy {
            ListStrategy::Replace => {
                *original = patch.iter().map(clean).collect();
            }
            ListStrategy::MergePrimitives => {
                if patch
                    .iter()
                    .any(|e| e.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"))
                {
                    *original = patch.iter().filter(|e| !e.is_object()).cloned().collect();
                    return Ok(());
                }
                for v in patch {
                    if !original.contains(v) {
                        original.push(v.clone());
                    }
                }
            }
            ListStrategy::MergeByKey(merge_key) => {
                if patch
                    .iter()
                    .any(|e| e.get(DIRECTIVE).and_then(Value::as_str) == Some("replace"))
                {
                    *original = patch
                        .iter()
                        .filter(|e| e.get(DIRECTIVE).is_none())
                        .map(clean)
                        .collect();
                    return Ok(());
                }
                for element in patch {
                    let Value::Object(p) = element else {
                        if !original.contains(element) {
                            original.push(element.clone());
                        }
                        continue;
                    };
                    let Some(key_value) = p.get(merge_key) else {
                        return Err(ApiError::bad_request(format!(
                            "map: {} does not contain declared merge key: {merge_key}",
                            Value::Object(p.clone())
                        )));
                    };
                    let directive = p.get(DIRECTIVE).and_then(Value::as_str);
                    if directive == Some("delete") {
                        original.retain(|o| o.get(merge_key) != Some(key_value));
                        continue;
                    }
                    if let Some(Value::Object(o)) = original
                        .iter_mut()
                        .find(|o| o.get(merge_key) == Some(key_value))
                    {
                        self.merge_map(o, p)?;
                    } else {
                        let mut fresh = Map::new();
                        self.merge_map(&mut fresh, p)?;
                        original.push(Value::Object(fresh));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `$setElementOrder`: listed elements first in the given order, then the rest
/// in their current relative order.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let identity = |v: &Value| -> Value {
        match strategy {
            ListStrategy::MergeByKey(k) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let mut remaining = std::mem::take(list);
    for wanted in order {
        let id = identity(wanted);
        if let Some(pos) = remaining.iter().position(|v| identity(v) == id) {
            list.push(remaining.remove(pos));
        }
    }
    list.extend(remaining);
}
