//! The Kubernetes REST API: discovery, then each verb on each resource,
//! translated to store operations. Object rules (decoding, defaulting,
//! validation, selectors, list and watch shapes) come from `skep-api`; this
//! module does the HTTP side and the store calls.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};
use skep_api::{
    ApiError, Kind, ResourceInfo, StatusReason,
    admission::{self, AdmitOptions, Admitted},
    apply::{self as server_side_apply, ApplyOptions},
    decode::{self, Decoded},
    delete::{self as deletion, DeleteOptions, DeleteOutcome},
    fieldcheck::FieldValidation,
    object::{self, ListMeta, WatchEventType},
    patch::{self as patching, PatchType},
    registry,
    selector::{FieldSelector, LabelSelector},
    table::{self, IncludeObject},
};
use skep_store::{EventKind, KeyValue, ListRequest, ReadConsistency, Store, StoreError};

use crate::{
    request::{self, ResourceRequest, Target, Verb},
    tls::Identity,
};

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The store under the API.
    pub store: Store,
    /// The address clients reach the server at (`host:port`), for discovery.
    pub server_address: String,
}

/// The API router: every path goes through [`dispatch`].
pub fn router(state: ApiState) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::max(
            decode::MAX_REQUEST_BYTES,
        ))
        .with_state(Arc::new(state))
}

type Params = HashMap<String, String>;

async fn dispatch(
    State(state): State<Arc<ApiState>>,
    identity: Option<Extension<Identity>>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(&ApiError::too_large(decode::MAX_REQUEST_BYTES));
        }
        Err(rejection) => return error_response(&ApiError::bad_request(rejection.body_text())),
    };
    let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    let Some(target) = request::parse(&method, uri.path(), watch) else {
        return error_response(&ApiError::new(
            StatusReason::NotFound,
            "the server could not find the requested resource",
        ));
    };
    let identity = identity.map(|Extension(i)| i).unwrap_or_default();
    if identity.is_anonymous() && !matches!(target, Target::Health | Target::Version) {
        return error_response(&ApiError::unauthorized());
    }
    let span = tracing::debug_span!("request", %method, path = uri.path(), user = %identity.user);
    let entered = span.enter();
    match target {
        Target::Health => (StatusCode::OK, "ok").into_response(),
        Target::Version => json_response(StatusCode::OK, &version()),
        Target::CoreVersions => json_response(
            StatusCode::OK,
            &registry::api_versions(&state.server_address),
        ),
        Target::Groups => json_response(StatusCode::OK, &registry::api_group_list()),
        Target::Group(group) => match registry::api_group(&group) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => not_served(),
        },
        Target::Resources { group, version } => {
            match registry::api_resource_list(&group, &version) {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => not_served(),
            }
        }
        Target::OpenApi(path) => match path.as_str() {
            "v3" => json_response(StatusCode::OK, &crate::openapi::root()),
            _ => match path
                .strip_prefix("v3/")
                .and_then(crate::openapi::group_version)
            {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => not_served(),
            },
        },
        Target::Resource(req) => {
            drop(entered);
            match resource(&state, &req, &params, &headers, body).await {
                Ok(response) => response,
                Err(err) => error_response(&err),
            }
        }
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0-skep.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

fn not_served() -> Response {
    error_response(&ApiError::new(
        StatusReason::NotFound,
        "the server could not find the requested resource",
    ))
}

/// Renders an error as a `Status` with its HTTP code.
pub fn error_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &err.to_status())
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        code,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The store key of an object: `/registry/<group>/<plural>/[<ns>/]<name>`.
fn key(info: &ResourceInfo, namespace: &str, name: &str) -> String {
    format!("{}{name}", prefix(info, namespace))
}

/// The store prefix of a collection (all namespaces when `namespace` is "").
fn prefix(info: &ResourceInfo, namespace: &str) -> String {
    let group = if info.group.is_empty() {
        "core"
    } else {
        info.group
    };
    if namespace.is_empty() {
        format!("/registry/{group}/{}/", info.plural)
    } else {
        format!("/registry/{group}/{}/{namespace}/", info.plural)
    }
}

/// Maps a store failure to the API error a client expects.
fn store_error(info: &ResourceInfo, name: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::AlreadyExists { .. } => ApiError::already_exists(info.group, info.plural, name),
        StoreError::NotFound { .. } => ApiError::not_found(info.group, info.plural, name),
        StoreError::Conflict { .. } => ApiError::conflict_modified(info.group, info.plural, name),
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::gone(requested, compacted),
        other => {
            tracing::error!(err = %other, "store failure");
            ApiError::internal(other)
        }
    }
}

/// An object as stored, with its `resourceVersion` from the store.
fn output(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    object::set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

fn stored_bytes(obj: &Value) -> Result<Vec<u8>, ApiError> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).map_err(ApiError::internal)
}

fn admit_options(params: &Params) -> Result<AdmitOptions, ApiError> {
    let field_validation = match params.get("fieldValidation") {
        Some(v) => FieldValidation::parse(v)?,
        None => FieldValidation::default(),
    };
    Ok(AdmitOptions {
        field_validation,
        ..AdmitOptions::default()
    })
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", warning.replace('"', "'"))) {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    response
}

/// Whether the client asked for a `meta.k8s.io/v1` Table (kubectl get does).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

/// The field manager of a write: `?fieldManager=`, else the client's program
/// name from its User-Agent, as kube-apiserver defaults it.
fn field_manager(params: &Params, headers: &HeaderMap) -> String {
    params.get("fieldManager").cloned().unwrap_or_else(|| {
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|name| !name.is_empty())
            .unwrap_or("unknown")
            .to_owned()
    })
}

fn dry_run(params: &Params) -> bool {
    params.get("dryRun").is_some_and(|v| v == "All")
}

#[tracing::instrument(skip_all, fields(verb = ?req.verb, resource = %req.resource, namespace = %req.namespace, name = %req.name))]
async fn resource(
    state: &ApiState,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let info = registry::by_plural(&req.group, &req.version, &req.resource).ok_or_else(|| {
        ApiError::new(
            StatusReason::NotFound,
            "the server could not find the requested resource",
        )
    })?;
    if !req.subresource.is_empty() && info.subresource(&req.subresource).is_none() {
        return Err(ApiError::new(
            StatusReason::NotFound,
            "the server could not find the requested resource",
        ));
    }
    if info.namespaced && req.namespace.is_empty() && !matches!(req.verb, Verb::List | Verb::Watch)
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the request (resource {} is namespaced)",
            info.plural
        )));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    match req.verb {
        Verb::Get => get(state, info, req, params, headers).await,
        Verb::List => list(state, info, req, params, headers).await,
        Verb::Watch => watch(state, info, req, params).await,
        Verb::Create => create(state, info, req, params, headers, content_type, &body).await,
        Verb::Update => update(state, info, req, params, headers, content_type, &body).await,
        Verb::Patch => patch(state, info, req, params, headers, content_type, &body).await,
        Verb::Delete => delete(state, info, req, params, &body).await,
        Verb::DeleteCollection => Err(ApiError::method_not_allowed()),
    }
}

async fn read(
    state: &ApiState,
    info: &ResourceInfo,
    namespace: &str,
    name: &str,
) -> Result<KeyValue, ApiError> {
    state
        .store
        .get(key(info, namespace, name), ReadConsistency::Linearizable)
        .await
        .map_err(|e| store_error(info, name, e))?
        .ok_or_else(|| ApiError::not_found(info.group, info.plural, name))
}

async fn get(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let kv = read(state, info, &req.namespace, &req.name).await?;
    let obj = output(&kv)?;
    if req.subresource.is_empty() && wants_table(headers) {
        let meta = ListMeta {
            resource_version: kv.mod_revision,
            continue_token: None,
            remaining_item_count: None,
        };
        return Ok(json_response(
            StatusCode::OK,
            &render_table(info, &[obj], &meta, params),
        ));
    }
    let obj = if req.subresource == "scale" {
        admission::scale_of(&obj)
    } else {
        obj
    };
    Ok(json_response(StatusCode::OK, &obj))
}

/// Label and field selectors of a list or watch.
struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
    kind: Kind,
}

impl Filter {
    fn from_params(
        info: &ResourceInfo,
        req: &ResourceRequest,
        params: &Params,
    ) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))?;
        let mut field_string = params.get("fieldSelector").cloned().unwrap_or_default();
        // A watch on one object is a watch with metadata.name=<name>.
        if !req.name.is_empty() {
            if !field_string.is_empty() {
                field_string.push(',');
            }
            field_string.push_str("metadata.name=");
            field_string.push_str(&req.name);
        }
        let fields = FieldSelector::parse(info.id, &field_string)?;
        Ok(Self {
            labels,
            fields,
            kind: info.id,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(self.kind, obj)
    }
}

/// The `continue` token: the revision of the first page and the last key.
fn encode_continue(revision: u64, last_key: &[u8]) -> String {
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": revision, "start": String::from_utf8_lossy(last_key)});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: the token is malformed");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let revision = value["rv"].as_u64().ok_or_else(bad)?;
    let start = value["start"].as_str().ok_or_else(bad)?.to_owned();
    Ok((revision, start))
}

fn render_table(info: &ResourceInfo, objects: &[Value], meta: &ListMeta, params: &Params) -> Value {
    let include = IncludeObject::parse(params.get("includeObject").map_or("", String::as_str));
    table::table(info, objects, meta, include, AdmitOptions::default().now)
}

async fn list(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let filter = Filter::from_params(info, req, params)?;
    let limit: usize = match params.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let list_prefix = prefix(info, &req.namespace);
    let (mut revision, mut start_after) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, start) = decode_continue(token)?;
            if !start.starts_with(&list_prefix) {
                return Err(ApiError::bad_request(
                    "continue key is not valid: it is for another collection",
                ));
            }
            (Some(rv), Some(start))
        }
        None => (None, None),
    };
    let mut items = Vec::new();
    let mut continue_token = None;
    loop {
        let page = state
            .store
            .list(
                ListRequest {
                    prefix: list_prefix.clone().into(),
                    start_after: start_after.clone().map(Into::into),
                    limit: if limit == 0 { 0 } else { limit - items.len() },
                    revision,
                },
                ReadConsistency::Linearizable,
            )
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => store_error(info, "", other),
            })?;
        revision = Some(page.revision);
        let last_key = page.items.last().map(|kv| kv.key.clone());
        for kv in &page.items {
            let obj = output(kv)?;
            if filter.matches(&obj) {
                items.push(obj);
            }
        }
        match last_key {
            Some(last) if page.more => {
                if limit != 0 && items.len() >= limit {
                    continue_token = Some(encode_continue(page.revision, &last));
                    break;
                }
                start_after = Some(String::from_utf8_lossy(&last).into_owned());
            }
            _ => break,
        }
    }
    let meta = ListMeta {
        resource_version: revision.unwrap_or_default(),
        continue_token,
        remaining_item_count: None,
    };
    if wants_table(headers) {
        return Ok(json_response(
            StatusCode::OK,
            &render_table(info, &items, &meta, params),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &object::wrap_list(info, items, &meta),
    ))
}

async fn ensure_namespace_active(state: &ApiState, namespace: &str) -> Result<(), ApiError> {
    let ns_info = registry::by_id(Kind::Namespace);
    let kv = state
        .store
        .get(key(ns_info, "", namespace), ReadConsistency::Linearizable)
        .await
        .map_err(|e| store_error(ns_info, namespace, e))?;
    let Some(kv) = kv else {
        return Err(ApiError::not_found("", "namespaces", namespace));
    };
    let ns = output(&kv)?;
    if object::get(&ns, &["metadata", "deletionTimestamp"]).is_some() {
        return Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        )));
    }
    Ok(())
}

async fn create(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !req.name.is_empty() || !req.subresource.is_empty() {
        return match req.subresource.as_str() {
            "binding" if info.id == Kind::Pod => bind(state, info, req, content_type, body).await,
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let decoded = decode::decode(body, content_type)?;
    let opts = admit_options(params)?;
    let Admitted {
        object: mut obj,
        warnings,
        ..
    } = admission::admit_create(info, &req.namespace, decoded, &opts)?;
    let manager = field_manager(params, headers);
    server_side_apply::record_update(info, None, &mut obj, &manager, "", opts.now);
    store_new(state, info, req, params, obj, warnings).await
}

/// Stores an admitted new object, after checking its namespace is active.
async fn store_new(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    obj: Value,
    warnings: Vec<String>,
) -> Result<Response, ApiError> {
    if info.namespaced {
        ensure_namespace_active(state, &req.namespace).await?;
    }
    let name = object::name(&obj).to_owned();
    let ns = object::namespace(&obj).to_owned();
    if dry_run(params) {
        return Ok(with_warnings(
            json_response(StatusCode::CREATED, &obj),
            &warnings,
        ));
    }
    let kv = state
        .store
        .create(key(info, &ns, &name), stored_bytes(&obj)?)
        .await
        .map_err(|e| store_error(info, &name, e))?;
    tracing::info!(kind = info.kind, namespace = %ns, %name, revision = kv.mod_revision, "created");
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &output(&kv)?),
        &warnings,
    ))
}

async fn bind(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let kv = read(state, info, &req.namespace, &req.name).await?;
    let pod = output(&kv)?;
    let binding = decode::decode(body, content_type)?;
    let bound = admission::bind_pod(&pod, &binding, AdmitOptions::default().now)?;
    state
        .store
        .update(
            key(info, &req.namespace, &req.name),
            stored_bytes(&bound)?,
            Some(kv.mod_revision),
        )
        .await
        .map_err(|e| store_error(info, &req.name, e))?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Admits `body` as the new state of `old` for the request's subresource.
fn admit_replacement(
    info: &ResourceInfo,
    req: &ResourceRequest,
    body: Decoded,
    old: &Value,
    opts: &AdmitOptions,
) -> Result<Admitted, ApiError> {
    match req.subresource.as_str() {
        "" => admission::admit_update(info, &req.namespace, &req.name, body, old, opts),
        "status" => {
            admission::admit_status_update(info, &req.namespace, &req.name, body, old, opts)
        }
        "scale" => admission::admit_scale_update(info, &req.namespace, &req.name, body, old, opts),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Stores an admitted replacement of `old` (compare-and-swap on the revision
/// the client named, else the one read), deleting the object instead when
/// it is being deleted and its last finalizer went away.
async fn store_replacement(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    old: &KeyValue,
    admitted: Admitted,
) -> Result<Response, ApiError> {
    let Admitted {
        object: new,
        warnings,
        precondition,
    } = admitted;
    let respond = |obj: &Value| {
        let obj = if req.subresource == "scale" {
            admission::scale_of(obj)
        } else {
            obj.clone()
        };
        with_warnings(json_response(StatusCode::OK, &obj), &warnings)
    };
    if dry_run(params) {
        return Ok(respond(&new));
    }
    let expected = precondition.unwrap_or(old.mod_revision);
    let key = key(info, &req.namespace, &req.name);
    if deletion::ready_to_remove(info, &new) {
        let deleted = state
            .store
            .delete(key, Some(expected))
            .await
            .map_err(|e| store_error(info, &req.name, e))?;
        tracing::info!(kind = info.kind, "finalized and deleted");
        let mut obj = new;
        object::set_resource_version(&mut obj, deleted.revision);
        return Ok(respond(&obj));
    }
    let kv = state
        .store
        .update(key, stored_bytes(&new)?, Some(expected))
        .await
        .map_err(|e| store_error(info, &req.name, e))?;
    Ok(respond(&output(&kv)?))
}

async fn update(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let decoded = decode::decode(body, content_type)?;
    let old_kv = read(state, info, &req.namespace, &req.name).await?;
    let old = output(&old_kv)?;
    let opts = admit_options(params)?;
    let manager = field_manager(params, headers);
    let ctx = Replacement {
        state,
        info,
        req,
        params,
        opts: &opts,
        manager: &manager,
    };
    ctx.admit_and_store(&old_kv, &old, decoded).await
}

/// One replacement write (PUT or a patch) of an existing object.
struct Replacement<'a> {
    state: &'a ApiState,
    info: &'a ResourceInfo,
    req: &'a ResourceRequest,
    params: &'a Params,
    opts: &'a AdmitOptions,
    manager: &'a str,
}

impl Replacement<'_> {
    /// Admits `body` as the new state of `old`, records the write's manager in
    /// managedFields, and stores it with compare-and-swap.
    async fn admit_and_store(
        &self,
        old_kv: &KeyValue,
        old: &Value,
        body: Decoded,
    ) -> Result<Response, ApiError> {
        let mut admitted = admit_replacement(self.info, self.req, body, old, self.opts)?;
        server_side_apply::record_update(
            self.info,
            Some(old),
            &mut admitted.object,
            self.manager,
            &self.req.subresource,
            self.opts.now,
        );
        store_replacement(
            self.state,
            self.info,
            self.req,
            self.params,
            old_kv,
            admitted,
        )
        .await
    }
}

async fn patch(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let patch_type = PatchType::from_content_type(content_type)?;
    let opts = admit_options(params)?;
    let manager = field_manager(params, headers);
    if patch_type == PatchType::Apply {
        return server_side(state, info, req, params, &opts, body).await;
    }
    let old_kv = read(state, info, &req.namespace, &req.name).await?;
    let old = output(&old_kv)?;
    let base = if req.subresource == "scale" {
        admission::scale_of(&old)
    } else {
        old.clone()
    };
    let patched = patching::apply_patch(info.id, &base, patch_type, body)?;
    let decoded = Decoded {
        value: patched,
        duplicates: Vec::new(),
    };
    let ctx = Replacement {
        state,
        info,
        req,
        params,
        opts: &opts,
        manager: &manager,
    };
    ctx.admit_and_store(&old_kv, &old, decoded).await
}

/// Server-side apply (`application/apply-patch+yaml`): merges the applied
/// configuration into the live object (or creates it), tracking field owners.
async fn server_side(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    opts: &AdmitOptions,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !req.subresource.is_empty() {
        return Err(ApiError::method_not_allowed());
    }
    let Some(manager) = params.get("fieldManager").filter(|m| !m.is_empty()) else {
        return Err(ApiError::bad_request(
            "PATCH requests with apply must include fieldManager",
        ));
    };
    let config = decode::decode(body, "application/yaml")?;
    let apply_opts = ApplyOptions {
        field_manager: manager,
        force: params.get("force").is_some_and(|f| f == "true"),
        now: opts.now,
    };
    let live_kv = state
        .store
        .get(
            key(info, &req.namespace, &req.name),
            ReadConsistency::Linearizable,
        )
        .await
        .map_err(|e| store_error(info, &req.name, e))?;
    let live = live_kv.as_ref().map(output).transpose()?;
    let merged = server_side_apply::apply(info, live.as_ref(), &config.value, &apply_opts)?;
    let decoded = Decoded {
        value: merged,
        duplicates: config.duplicates,
    };
    if let (Some(kv), Some(live)) = (live_kv, live) {
        let admitted =
            admission::admit_update(info, &req.namespace, &req.name, decoded, &live, opts)?;
        store_replacement(state, info, req, params, &kv, admitted).await
    } else {
        let Admitted {
            object, warnings, ..
        } = admission::admit_create(info, &req.namespace, decoded, opts)?;
        store_new(state, info, req, params, object, warnings).await
    }
}

async fn delete(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    body: &[u8],
) -> Result<Response, ApiError> {
    let options: Option<Value> = if body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?,
        )
    };
    let mut options = DeleteOptions::from_value(options.as_ref())?;
    if let Some(policy) = params.get("propagationPolicy") {
        options = DeleteOptions::from_value(Some(&json!({"propagationPolicy": policy})))?;
    }
    let kv = read(state, info, &req.namespace, &req.name).await?;
    let obj = output(&kv)?;
    let outcome = deletion::prepare_delete(info, &obj, &options, AdmitOptions::default().now)?;
    if dry_run(params) {
        return Ok(json_response(StatusCode::OK, &obj));
    }
    let key = key(info, &req.namespace, &req.name);
    match outcome {
        DeleteOutcome::Remove => {
            let deleted = state
                .store
                .delete(key, Some(kv.mod_revision))
                .await
                .map_err(|e| store_error(info, &req.name, e))?;
            tracing::info!(kind = info.kind, revision = deleted.revision, "deleted");
            Ok(json_response(StatusCode::OK, &obj))
        }
        DeleteOutcome::Update(marked) => {
            // Finalizers or a grace period hold the object: mark it and let
            // their owners finish.
            let kv = state
                .store
                .update(key, stored_bytes(&marked)?, Some(kv.mod_revision))
                .await
                .map_err(|e| store_error(info, &req.name, e))?;
            Ok(json_response(StatusCode::ACCEPTED, &output(&kv)?))
        }
        DeleteOutcome::Unchanged => Ok(json_response(StatusCode::ACCEPTED, &obj)),
    }
}

/// How long an idle watch waits before sending a bookmark.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

#[expect(
    clippy::too_many_lines,
    reason = "one request's watch: initial state, stream task and response; to be split with the watch cache"
)]
async fn watch(
    state: &ApiState,
    info: &'static ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
) -> Result<Response, ApiError> {
    let filter = Filter::from_params(info, req, params)?;
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let watch_prefix = prefix(info, &req.namespace);
    let requested: u64 = match params.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => 0,
        Some(rv) => rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
    };
    // Without a resourceVersion a watch starts with the current state as ADDED events.
    let mut initial = Vec::new();
    let from = if requested == 0 {
        let page = state
            .store
            .list(
                ListRequest {
                    prefix: watch_prefix.clone().into(),
                    ..ListRequest::default()
                },
                ReadConsistency::Linearizable,
            )
            .await
            .map_err(|e| store_error(info, "", e))?;
        for kv in &page.items {
            let obj = output(kv)?;
            if filter.matches(&obj) {
                initial.push(object::watch_event(WatchEventType::Added, obj));
            }
        }
        page.revision
    } else {
        requested
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let stream = match state.store.watch(watch_prefix.into_bytes(), from) {
        Ok(stream) => Ok(stream),
        // As kube-apiserver does: a 200 stream whose one event is a 410 Status.
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => Err(ApiError::gone(requested, compacted)),
        Err(other) => return Err(store_error(info, "", other)),
    };
    tokio::spawn(async move {
        for event in initial {
            if send_line(&tx, &event).await.is_err() {
                return;
            }
        }
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(gone) => {
                let _ = send_line(
                    &tx,
                    &object::watch_event(WatchEventType::Error, gone.to_status()),
                )
                .await;
                return;
            }
        };
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut last_revision = from;
        loop {
            let next = tokio::time::timeout(BOOKMARK_INTERVAL, stream.next());
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                    Ok(n) => n,
                    Err(_) => return,
                },
                None => next.await,
            };
            let line = match next {
                // Idle: tell the client how far it is, if it asked.
                Err(_) if bookmarks => object::watch_event(
                    WatchEventType::Bookmark,
                    object::bookmark(info, last_revision),
                ),
                Err(_) => continue,
                Ok(None) => return,
                Ok(Some(Err(StoreError::Compacted {
                    requested,
                    compacted,
                }))) => {
                    let gone = ApiError::gone(requested, compacted);
                    object::watch_event(WatchEventType::Error, gone.to_status())
                }
                Ok(Some(Err(err))) => {
                    tracing::warn!(%err, "watch stream failed");
                    return;
                }
                Ok(Some(Ok(event))) => {
                    last_revision = event.revision();
                    match translate(&filter, &event) {
                        Some(line) => line,
                        None => continue,
                    }
                }
            };
            let is_error = line["type"] == "ERROR";
            if send_line(&tx, &line).await.is_err() || is_error {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            ),
        ],
        body,
    )
        .into_response())
}

async fn send_line(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    v: &Value,
) -> Result<(), ()> {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    tx.send(Ok(Bytes::from(line))).await.map_err(|_| ())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A store event as the watch event a client sees, given its selectors: an
/// object entering the selection is ADDED, leaving it is DELETED.
fn translate(filter: &Filter, event: &skep_store::Event) -> Option<Value> {
    let prev = event.prev_kv.as_ref().and_then(|kv| output(kv).ok());
    let prev_matches = prev.as_ref().is_some_and(|p| filter.matches(p));
    match event.kind {
        EventKind::Put => {
            let obj = output(&event.kv).ok()?;
            let now_matches = filter.matches(&obj);
            match (prev_matches, now_matches) {
                (_, true) if event.prev_kv.is_none() => {
                    Some(object::watch_event(WatchEventType::Added, obj))
                }
                (true, true) => Some(object::watch_event(WatchEventType::Modified, obj)),
                (false, true) => Some(object::watch_event(WatchEventType::Added, obj)),
                (true, false) => Some(object::watch_event(WatchEventType::Deleted, obj)),
                (false, false) => None,
            }
        }
        EventKind::Delete => {
            let mut obj = prev?;
            if !prev_matches {
                return None;
            }
            object::set_resource_version(&mut obj, event.revision());
            Some(object::watch_event(WatchEventType::Deleted, obj))
        }
    }
}
