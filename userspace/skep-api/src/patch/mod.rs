//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! Kubernetes strategic merge patch, applied to the stored object as JSON.

pub mod merge;
pub mod schema;
pub mod strategic;

use serde_json::Value;

use crate::registry::ResourceInfo;
use crate::status::{ApiError, StatusReason};

/// The patch formats, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply, see [`crate::apply`]).
    Apply,
}

impl PatchType {
    /// The patch type for a `Content-Type` header, or 415.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            _ => Err(ApiError::new(
                StatusReason::UnsupportedMediaType,
                format!(
                    "the media type {media:?} is not supported for patch; supported media types: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
                ),
            )),
        }
    }
}

/// Apply a JSON, merge or strategic patch body to `original` (an object of `info`'s kind).
/// Server-side apply goes through [`crate::apply::apply`] instead.
pub fn apply_patch(
    info: &ResourceInfo,
    original: &Value,
    patch_type: PatchType,
    body: &[u8],
) -> Result<Value, ApiError> {
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops.0)
                .map_err(|e| ApiError::new(StatusReason::Invalid, e.to_string()))?;
            Ok(doc)
        }
        PatchType::Merge => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(merge::merge_patch(original, &patch))
        }
        PatchType::Strategic => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            strategic::strategic_merge(info, original, &patch)
        }
        PatchType::Apply => Err(ApiError::internal(
            "server-side apply must use apply::apply",
        )),
    }
}

#[cfg(test)]
#[path = "patch_test.rs"]
mod tests;
