//! Deletion semantics (`registry/rest/delete.go` `BeforeDelete`): preconditions,
//! finalizers and propagation policies, and each kind's grace period and
//! finalization from its [`crate::kinds::Strategy`] (graceful deletion of
//! pods, namespaces going `Terminating`).

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::admission::format_time;
use crate::object::{array, ensure_object, get, get_i64, str_or_empty};
use crate::query::{DRY_RUN_ALL, Params};
use crate::registry::ResourceInfo;
use crate::status::ApiError;

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are orphaned (`orphan` finalizer).
    Orphan,
    /// The owner goes first; the garbage collector deletes dependents.
    Background,
    /// Dependents first (`foregroundDeletion` finalizer).
    Foreground,
}

/// The parts of `meta/v1 DeleteOptions` that change what a delete does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds` (query or body).
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`.
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
}

impl DeleteOptions {
    /// Read a `DeleteOptions` body (`None` or `{}` for defaults).
    pub fn from_value(v: Option<&Value>) -> Result<Self, ApiError> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(Self::default());
        };
        let propagation = match get(v, &["propagationPolicy"]).and_then(Value::as_str) {
            None => None,
            Some("Orphan") => Some(Propagation::Orphan),
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                )));
            }
        };
        let orphan = get(v, &["orphanDependents"]).and_then(Value::as_bool);
        Ok(Self {
            grace_period_seconds: get_i64(v, &["gracePeriodSeconds"]),
            propagation: propagation.or(match orphan {
                Some(true) => Some(Propagation::Orphan),
                Some(false) => Some(Propagation::Background),
                None => None,
            }),
            precondition_uid: get(v, &["preconditions", "uid"])
                .and_then(Value::as_str)
                .map(str::to_owned),
            precondition_resource_version: get(v, &["preconditions", "resourceVersion"])
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

impl DeleteOptions {
    /// A delete request's options as upstream's `DeleteResource` and
    /// `DeleteCollection` handlers read them: the `DeleteOptions` body when
    /// there is one, else the query (`gracePeriodSeconds`,
    /// `propagationPolicy`, `orphanDependents`, `dryRun`, and the `uid` and
    /// `resourceVersion` preconditions); with whether it is a dry run.
    pub fn from_request(params: &Params, body: &[u8]) -> Result<(Self, bool), ApiError> {
        let value: Value = if body.is_empty() {
            let mut v = json!({});
            if let Some(grace) = params.int64("gracePeriodSeconds")? {
                v["gracePeriodSeconds"] = json!(grace);
            }
            if let Some(orphan) = params.optional_flag("orphanDependents") {
                v["orphanDependents"] = json!(orphan);
            }
            if let Some(policy) = params.get("propagationPolicy") {
                v["propagationPolicy"] = json!(policy);
            }
            if let Some(uid) = params.get("uid").filter(|u| !u.is_empty()) {
                v["preconditions"]["uid"] = json!(uid);
            }
            if let Some(rv) = params.get("resourceVersion").filter(|r| !r.is_empty()) {
                v["preconditions"]["resourceVersion"] = json!(rv);
            }
            v["dryRun"] = json!(params.values("dryRun").collect::<Vec<_>>());
            v
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        let dry_run = get(&value, &["dryRun"])
            .and_then(Value::as_array)
            .is_some_and(|values| values.iter().any(|v| v == DRY_RUN_ALL));
        Ok((Self::from_value(Some(&value))?, dry_run))
    }
}

/// What the store should do for a delete.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// Remove the object now.
    Remove,
    /// Store this object (deletionTimestamp set, finalizers pending or grace running).
    Update(Value),
    /// Nothing to do: deletion is already in progress as requested.
    Unchanged,
}

fn precondition_failed(what: &str, expected: &str, actual: &str) -> ApiError {
    ApiError::new(
        crate::status::StatusReason::Conflict,
        format!(
            "Precondition failed: {what} in precondition: {expected}, {what} in object meta: {actual}"
        ),
    )
}

/// Decide what deleting `obj` (an object of `info`) means.
pub fn prepare_delete(
    info: &ResourceInfo,
    obj: &Value,
    opts: &DeleteOptions,
    now: Timestamp,
) -> Result<DeleteOutcome, ApiError> {
    if let Some(uid) = &opts.precondition_uid {
        let actual = str_or_empty(obj, &["metadata", "uid"]);
        if uid != actual {
            return Err(precondition_failed("UID", uid, actual));
        }
    }
    if let Some(rv) = &opts.precondition_resource_version {
        let actual = str_or_empty(obj, &["metadata", "resourceVersion"]);
        if rv != actual {
            return Err(precondition_failed("ResourceVersion", rv, actual));
        }
    }
    if let Some(g) = opts.grace_period_seconds.filter(|g| *g < 0) {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            &[crate::field::FieldError::invalid(
                &crate::field::FieldPath::new("gracePeriodSeconds"),
                g,
                "must be greater than or equal to 0",
            )],
        ));
    }
    let strategy = info.strategy();
    let grace = strategy.grace_period(obj, opts);
    let deleting = get(obj, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null());
    let mut out = obj.clone();
    let mut changed = false;
    {
        let meta = ensure_object(&mut out, &["metadata"]);
        let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Value::Array(list) = finalizers {
            let (add, drop) = match opts.propagation {
                Some(Propagation::Orphan) => (Some("orphan"), "foregroundDeletion"),
                Some(Propagation::Foreground) => (Some("foregroundDeletion"), "orphan"),
                Some(Propagation::Background) | None => (None, ""),
            };
            if opts.propagation == Some(Propagation::Background) {
                let before = list.len();
                list.retain(|f| f != "orphan" && f != "foregroundDeletion");
                changed |= before != list.len();
            }
            if let Some(add) = add {
                list.retain(|f| f != drop);
                if !list.iter().any(|f| f == add) {
                    list.push(add.into());
                    changed = true;
                }
            }
        }
        if meta
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            meta.remove("finalizers");
        }
    }
    let has_finalizers = !array(&out, &["metadata", "finalizers"]).is_empty();
    let finalizing = strategy.finalizing(&out);
    if deleting {
        // Only a shorter grace period changes a deletion in progress.
        let current = get_i64(&out, &["metadata", "deletionGracePeriodSeconds"]).unwrap_or(0);
        if grace < current {
            set_deletion(&mut out, grace, now);
            changed = true;
        }
        if !has_finalizers && !finalizing && grace == 0 {
            return Ok(DeleteOutcome::Remove);
        }
        return Ok(if changed {
            DeleteOutcome::Update(out)
        } else {
            DeleteOutcome::Unchanged
        });
    }
    if grace == 0 && !has_finalizers && !finalizing {
        return Ok(DeleteOutcome::Remove);
    }
    set_deletion(&mut out, grace, now);
    strategy.begin_deletion(&mut out);
    if info.tracks_generation {
        let g = get_i64(&out, &["metadata", "generation"]).unwrap_or(0) + 1;
        ensure_object(&mut out, &["metadata"]).insert("generation".into(), g.into());
    }
    Ok(DeleteOutcome::Update(out))
}

fn set_deletion(obj: &mut Value, grace: i64, now: Timestamp) {
    let at = now
        .checked_add(SignedDuration::from_secs(grace))
        .unwrap_or(now);
    let meta = ensure_object(obj, &["metadata"]);
    meta.insert("deletionTimestamp".into(), format_time(at).into());
    meta.insert("deletionGracePeriodSeconds".into(), grace.into());
}

/// After an update: whether an object being deleted has nothing left holding it
/// (no finalizers, and for pods a zero grace period) and should now be removed.
pub fn ready_to_remove(info: &ResourceInfo, obj: &Value) -> bool {
    let deleting = get(obj, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null());
    if !deleting || !array(obj, &["metadata", "finalizers"]).is_empty() {
        return false;
    }
    info.strategy().ready_to_remove(obj)
}

#[cfg(test)]
#[path = "delete_test.rs"]
mod tests;
