//! What shape a read answers in, from its `Accept` header, as upstream's
//! `negotiation.NegotiateOutputMediaType` chooses: the first media type
//! skep serves whose `as`/`g`/`v` parameters name a conversion it has
//! (`Table`, `PartialObjectMetadata`, `PartialObjectMetadataList` in
//! `meta.k8s.io` `v1` or `v1beta1`), else the object itself. Responses are
//! JSON; a client offering only protobuf gets JSON too.

use axum::http::{HeaderMap, header};
use skep_api::{ApiError, ResourceInfo, StatusReason};

/// The shape of a read's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The object or list itself.
    Object,
    /// A `meta.k8s.io` Table (kubectl get).
    Table,
    /// `PartialObjectMetadata` in this `apiVersion` (`meta.k8s.io/v1`).
    PartialObjectMetadata(String),
    /// `PartialObjectMetadataList` in this `apiVersion`.
    PartialObjectMetadataList(String),
}

/// The media types skep answers (all as JSON); a `*/*` or
/// `application/*` range matches too.
const SERVED: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/*",
    "*/*",
];

/// The output an `Accept` header asks for.
#[must_use]
pub fn output(headers: &HeaderMap) -> Output {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Output::Object;
    };
    accept
        .split(',')
        .find_map(|clause| clause_output(clause.trim()))
        .unwrap_or(Output::Object)
}

/// One `Accept` clause's output, `None` when skep cannot serve it.
fn clause_output(clause: &str) -> Option<Output> {
    let mut parts = clause.split(';');
    let media_type = parts.next()?.trim().to_ascii_lowercase();
    if !SERVED.contains(&media_type.as_str()) {
        return None;
    }
    let (mut as_kind, mut group, mut version) = (None, None, None);
    for param in parts {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim() {
            "as" => as_kind = Some(v),
            "g" => group = Some(v),
            "v" => version = Some(v),
            "q" if v.parse::<f32>().is_ok_and(|q| q <= 0.0) => return None,
            _ => {}
        }
    }
    let Some(kind) = as_kind else {
        return Some(Output::Object);
    };
    // Upstream's `AllowsConversion`: only these kinds, only in meta.k8s.io.
    if group != Some("meta.k8s.io") || !matches!(version, Some("v1" | "v1beta1")) {
        return None;
    }
    let api_version = format!("meta.k8s.io/{}", version.unwrap_or("v1"));
    match kind {
        "Table" => Some(Output::Table),
        "PartialObjectMetadata" => Some(Output::PartialObjectMetadata(api_version)),
        "PartialObjectMetadataList" => Some(Output::PartialObjectMetadataList(api_version)),
        _ => None,
    }
}

/// Upstream's Go type of a kind's object (`%T` in its messages): the
/// internal package of the group (`core` for the core group).
fn go_type(info: &ResourceInfo, list: bool) -> String {
    let package = match info.group {
        "" => "core",
        group => group.split('.').next().unwrap_or(group),
    };
    format!("*{package}.{}{}", info.kind, if list { "List" } else { "" })
}

/// The 406 for `as=PartialObjectMetadata` on a list.
#[must_use]
pub fn list_for_single(info: &ResourceInfo) -> ApiError {
    ApiError::new(
        StatusReason::NotAcceptable,
        format!(
            "you requested PartialObjectMetadata, but the requested object is a list ({})",
            go_type(info, true)
        ),
    )
}

/// The 406 for `as=PartialObjectMetadataList` on one object.
#[must_use]
pub fn single_for_list(info: &ResourceInfo) -> ApiError {
    ApiError::new(
        StatusReason::NotAcceptable,
        format!(
            "you requested PartialObjectMetadataList, but the requested object is not a list ({})",
            go_type(info, false)
        ),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use skep_api::kinds;

    use super::*;

    fn accept(value: &str) -> Output {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(header::ACCEPT, v);
        }
        output(&headers)
    }

    #[test]
    fn accept_headers_clients_send() {
        assert_eq!(accept(""), Output::Object);
        assert_eq!(accept("application/json"), Output::Object);
        // kubectl get
        assert_eq!(
            accept(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            Output::Table
        );
        // client-go's metadata client: protobuf first, which skep answers as JSON
        assert_eq!(
            accept(
                "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
            ),
            Output::PartialObjectMetadataList("meta.k8s.io/v1".into())
        );
        assert_eq!(
            accept("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1"),
            Output::PartialObjectMetadata("meta.k8s.io/v1beta1".into())
        );
        // A conversion skep does not have is skipped for the next clause.
        assert_eq!(
            accept("application/json;as=Foo;g=meta.k8s.io;v=v1, application/json"),
            Output::Object
        );
        assert_eq!(
            accept("application/json;as=Table;g=apps;v=v1"),
            Output::Object
        );
        assert_eq!(accept("text/html, */*"), Output::Object);
    }

    #[test]
    fn mismatched_partial_requests_are_406_with_upstream_text() {
        let err = list_for_single(&kinds::CONFIG_MAP);
        assert_eq!(
            (err.code(), err.message.as_str()),
            (
                406,
                "you requested PartialObjectMetadata, but the requested object is a list (*core.ConfigMapList)"
            )
        );
        let err = single_for_list(&kinds::DEPLOYMENT);
        assert_eq!(
            err.message,
            "you requested PartialObjectMetadataList, but the requested object is not a list (*apps.Deployment)"
        );
    }
}
