//! The Kubernetes REST API: discovery, then each verb on each resource,
//! translated to store operations. Object rules (decoding, defaulting,
//! validation, selectors, list and watch shapes) come from `skep-api`; this
//! module does the HTTP side; `skep-objects` the reads and writes.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use skep_api::{
    ApiError, ResourceInfo, StatusReason,
    admission::{self, AdmitOptions},
    apply::{self as server_side_apply, ApplyOptions},
    decode::{self, Decoded},
    delete::DeleteOptions,
    fieldcheck::FieldValidation,
    kinds,
    object::{self, ListMeta, WatchEventType},
    patch::{self as patching, PatchType},
    query::Params,
    registry,
    registry::Serving,
    table::{self, IncludeObject},
};
use skep_nodeauthz::Operation;
use skep_objects::{Deleted, Filter, ListOptions, ObjectWatch, Objects, WriteOptions, Written};

use skep_proto::v1::node_sync_server::NodeSyncServer;

use crate::{
    authn::Authenticator,
    authz::{self, Authorizer},
    negotiation::{self, Output},
    node_restriction,
    nodesync::NodeSyncService,
    request::{self, ResourceRequest, Target, Verb},
    tls::Identity,
};

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// The objects the API serves.
    pub objects: Objects,
    /// The address clients reach the server at (`host:port`), for discovery.
    pub server_address: String,
    /// Dials node agents for pods' logs and exec.
    pub nodes: crate::proxy::NodeClient,
    /// Who a request comes from.
    pub authenticator: Authenticator,
    /// What a user may do.
    pub authorizer: Authorizer,
    /// Service account tokens: issuing, reviewing, OIDC discovery.
    pub tokens: crate::sa_tokens::ServiceAccountTokens,
}

/// The API router: node sync's gRPC service under its own path, every
/// other path through [`dispatch`].
pub fn router(state: ApiState) -> Router {
    use tonic::server::NamedService as _;
    use tower::ServiceExt as _;
    type NodeSync = NodeSyncServer<NodeSyncService>;
    let node_sync = NodeSync::new(NodeSyncService::new(
        state.objects.clone(),
        state.tokens.clone(),
        state.authorizer.clone(),
    ))
    .map_request(|req: axum::http::Request<Body>| req.map(tonic::body::Body::new));
    Router::new()
        .route_service(&format!("/{}/{{*rest}}", NodeSync::NAME), node_sync)
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            axum::routing::any(crate::proxy::pod_exec),
        )
        .fallback(dispatch)
        .layer(axum::extract::DefaultBodyLimit::max(
            decode::MAX_REQUEST_BYTES,
        ))
        .with_state(Arc::new(state))
}

async fn dispatch(
    State(state): State<Arc<ApiState>>,
    identity: Option<Extension<Identity>>,
    method: Method,
    uri: Uri,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let params = Params::new(pairs);
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(&ApiError::too_large(decode::MAX_REQUEST_BYTES));
        }
        Err(rejection) => return error_response(&ApiError::bad_request(rejection.body_text())),
    };
    let target = request::parse(&method, uri.path(), params.flag("watch"));
    let user = match Box::pin(gate(
        &state,
        identity,
        &method,
        uri.path(),
        target.as_ref(),
        &params,
        &headers,
    ))
    .await
    {
        Ok(user) => user,
        Err(err) => return error_response(&err),
    };
    let Some(target) = target else {
        return error_response(&ApiError::new(
            StatusReason::NotFound,
            "the server could not find the requested resource",
        ));
    };
    let span = tracing::debug_span!("request", %method, path = uri.path(), user = %user.name);
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
        Target::OpenIdConfiguration | Target::Jwks => {
            crate::sa_tokens::discovery_response(&state.tokens, &target)
        }
        Target::Resource(req) => {
            drop(entered);
            // Boxed: the verbs' futures nested in `dispatch`'s overflow the
            // compiler's query depth.
            match Box::pin(resource(&state, &user, &req, &params, &headers, body)).await {
                Ok(response) => response,
                Err(err) => error_response(&err),
            }
        }
    }
}

/// Authentication, impersonation and authorization of one request
/// (kube-apiserver's filter chain, in its order): the user it acts as, or the
/// 401/403 to answer. Node sync's gRPC service is not behind it: it checks
/// the node's certificate itself.
pub(crate) async fn gate(
    state: &ApiState,
    identity: Option<Extension<Identity>>,
    method: &Method,
    path: &str,
    target: Option<&Target>,
    params: &Params,
    headers: &HeaderMap,
) -> Result<skep_user::UserInfo, ApiError> {
    let identity = identity.map(|Extension(i)| i).unwrap_or_default();
    let user = state.authenticator.authenticate(&identity, headers).await?;
    let user = crate::impersonate::impersonate(user, headers, &state.authorizer)?;
    let selector = params.get("fieldSelector");
    let attrs = authz::attributes(&user, method, path, target, selector);
    state.authorizer.check_selected(&attrs, selector)?;
    Ok(user)
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

/// The field manager of a write: `?fieldManager=`, else the client's program
/// name from its User-Agent, as kube-apiserver defaults it.
fn field_manager(params: &Params, headers: &HeaderMap) -> String {
    params.get("fieldManager").map_or_else(
        || {
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|name| !name.is_empty())
                .unwrap_or("unknown")
                .to_owned()
        },
        str::to_owned,
    )
}

#[tracing::instrument(skip_all, fields(verb = ?req.verb, resource = %req.resource, namespace = %req.namespace, name = %req.name))]
async fn resource(
    state: &ApiState,
    user: &skep_user::UserInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(endpoint) = crate::sa_tokens::Endpoint::of(req) {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        // Boxed: kept out of `dispatch`'s future, which is deep enough.
        let (obj, warnings) =
            Box::pin(endpoint.serve(&state.tokens, req, content_type, &body)).await?;
        return Ok(with_warnings(
            json_response(StatusCode::CREATED, &obj),
            &warnings,
        ));
    }
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
    match info.serving {
        Serving::Stored => {}
        Serving::CreateOnly => {
            return create_only(state, user, info, req, content_type, &body).await;
        }
    }
    match req.verb {
        Verb::Get => get(state, info, req, params, headers).await,
        Verb::List => list(state, info, req, params, headers).await,
        Verb::Watch => watch(state, info, req, params, headers).await,
        Verb::Create => create(state, user, info, req, params, headers, content_type, &body).await,
        Verb::Update => update(state, user, info, req, params, headers, content_type, &body).await,
        Verb::Patch => patch(state, user, info, req, params, headers, content_type, &body).await,
        Verb::Delete => {
            node_restriction::admit(
                &state.objects,
                user,
                info,
                req,
                Operation::Delete,
                None,
                None,
            )
            .await?;
            delete(state, info, req, params, &body).await
        }
        Verb::DeleteCollection => delete_collection(state, user, info, req, params, &body).await,
    }
}

/// A create-only kind (`Serving::CreateOnly`): nothing is stored, and the
/// only request is a create to the collection, answered by the kind's
/// handler. Top-level `bindings` bind the pod the Binding names.
async fn create_only(
    state: &ApiState,
    user: &skep_user::UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    if req.verb != Verb::Create || !req.name.is_empty() || !req.subresource.is_empty() {
        return Err(ApiError::method_not_allowed());
    }
    let decoded = decode::decode(body, content_type)?;
    if *info == kinds::BINDING {
        let pod = object::name(&decoded.value).to_owned();
        state
            .objects
            .bind(&req.namespace, &pod, &decoded, admission::now())
            .await?;
        return Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ));
    }
    if crate::reviews::answers(info) {
        crate::reviews::validate(info, &decoded.value)?;
        let answer = crate::reviews::answer(&state.authorizer, user, info, req, decoded.value)?;
        return Ok(json_response(StatusCode::CREATED, &answer));
    }
    Err(ApiError::method_not_allowed())
}

async fn get(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let obj = state.objects.get(info, &req.namespace, &req.name).await?;
    if req.subresource == "log" {
        return crate::proxy::pod_log(state, &obj, params).await;
    }
    if req.subresource.is_empty() {
        match negotiation::output(headers) {
            Output::Object => {}
            Output::Table => {
                let meta = ListMeta {
                    resource_version: object::resource_version(&obj).unwrap_or_default(),
                    continue_token: None,
                    remaining_item_count: None,
                };
                return Ok(json_response(
                    StatusCode::OK,
                    &render_table(info, &[obj], &meta, params),
                ));
            }
            Output::PartialObjectMetadata(api_version) => {
                return Ok(json_response(
                    StatusCode::OK,
                    &object::partial_object_metadata(&obj, &api_version),
                ));
            }
            Output::PartialObjectMetadataList(_) => {
                return Err(negotiation::single_for_list(info));
            }
        }
    }
    let obj = if req.subresource == "scale" {
        admission::scale_of(&obj)
    } else {
        obj
    };
    Ok(json_response(StatusCode::OK, &obj))
}

/// The label and field selectors of a list or watch; a watch on one object
/// is a watch with `metadata.name=<name>`.
fn filter(info: &ResourceInfo, req: &ResourceRequest, params: &Params) -> Result<Filter, ApiError> {
    let mut fields = params.get("fieldSelector").unwrap_or_default().to_owned();
    if !req.name.is_empty() {
        if !fields.is_empty() {
            fields.push(',');
        }
        fields.push_str("metadata.name=");
        fields.push_str(&req.name);
    }
    let labels = params.get("labelSelector").unwrap_or_default();
    Filter::parse(info, labels, &fields)
}

fn render_table(info: &ResourceInfo, objects: &[Value], meta: &ListMeta, params: &Params) -> Value {
    let include = IncludeObject::parse(params.get("includeObject").unwrap_or_default());
    table::table(info, objects, meta, include, AdmitOptions::default().now)
}

/// A list's selectors and paging: `limit` is Go's `ParseInt` (a negative
/// one, like upstream's, lists everything), `continue` the token.
fn list_options(
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
) -> Result<ListOptions, ApiError> {
    let limit = params.int64("limit")?.unwrap_or(0);
    Ok(ListOptions {
        filter: Some(filter(info, req, params)?),
        limit: usize::try_from(limit).unwrap_or(0),
        continue_token: params.get("continue").map(str::to_owned),
    })
}

async fn list(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let options = list_options(info, req, params)?;
    let (items, meta) = state.objects.list(info, &req.namespace, &options).await?;
    let body = match negotiation::output(headers) {
        Output::Object => object::wrap_list(info, items, &meta),
        Output::Table => render_table(info, &items, &meta, params),
        Output::PartialObjectMetadataList(api_version) => {
            object::partial_object_metadata_list(&items, &meta, &api_version)
        }
        Output::PartialObjectMetadata(_) => return Err(negotiation::list_for_single(info)),
    };
    Ok(json_response(StatusCode::OK, &body))
}

fn write_options(params: &Params, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions {
        manager: field_manager(params, headers),
        admit: admit_options(params)?,
        dry_run: params.dry_run(),
    })
}

/// The response to a write: the object (as a `Scale` through `/scale`) and
/// its warnings.
fn written(code: StatusCode, req: &ResourceRequest, written: &Written) -> Response {
    let body = if req.subresource == "scale" {
        admission::scale_of(&written.object)
    } else {
        written.object.clone()
    };
    with_warnings(json_response(code, &body), &written.warnings)
}

#[expect(clippy::too_many_arguments, reason = "one request's parts")]
async fn create(
    state: &ApiState,
    user: &skep_user::UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !req.name.is_empty() || !req.subresource.is_empty() {
        return match req.subresource.as_str() {
            "binding" if *info == kinds::POD => {
                let binding = decode::decode(body, content_type)?;
                state
                    .objects
                    .bind(&req.namespace, &req.name, &binding, admission::now())
                    .await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ))
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let decoded = decode::decode(body, content_type)?;
    crate::escalation::check(&state.authorizer, user, info, req, &decoded.value)?;
    node_restriction::admit(
        &state.objects,
        user,
        info,
        req,
        Operation::Create,
        Some(&decoded.value),
        None,
    )
    .await?;
    let opts = write_options(params, headers)?;
    let done = state
        .objects
        .create(info, &req.namespace, decoded, &opts)
        .await?;
    Ok(written(StatusCode::CREATED, req, &done))
}

#[expect(clippy::too_many_arguments, reason = "one request's parts")]
async fn update(
    state: &ApiState,
    user: &skep_user::UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let decoded = decode::decode(body, content_type)?;
    crate::escalation::check(&state.authorizer, user, info, req, &decoded.value)?;
    let old = state.objects.get(info, &req.namespace, &req.name).await?;
    node_restriction::admit(
        &state.objects,
        user,
        info,
        req,
        Operation::Update,
        Some(&decoded.value),
        Some(&old),
    )
    .await?;
    let opts = write_options(params, headers)?;
    let done = state
        .objects
        .replace(info, &req.subresource, &old, decoded, &opts)
        .await?;
    Ok(written(StatusCode::OK, req, &done))
}

#[expect(clippy::too_many_arguments, reason = "one request's parts")]
async fn patch(
    state: &ApiState,
    user: &skep_user::UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let patch_type = PatchType::from_content_type(content_type)?;
    let opts = write_options(params, headers)?;
    if patch_type == PatchType::Apply {
        return server_side(state, user, info, req, params, &opts, body).await;
    }
    let old = state.objects.get(info, &req.namespace, &req.name).await?;
    let base = if req.subresource == "scale" {
        admission::scale_of(&old)
    } else {
        old.clone()
    };
    let patched = patching::apply_patch(info, &base, patch_type, body)?;
    crate::escalation::check(&state.authorizer, user, info, req, &patched)?;
    node_restriction::admit(
        &state.objects,
        user,
        info,
        req,
        Operation::Update,
        Some(&patched),
        Some(&old),
    )
    .await?;
    let decoded = Decoded {
        value: patched,
        duplicates: Vec::new(),
    };
    let done = state
        .objects
        .replace(info, &req.subresource, &old, decoded, &opts)
        .await?;
    Ok(written(StatusCode::OK, req, &done))
}

/// Server-side apply (`application/apply-patch+yaml`): merges the applied
/// configuration into the live object (or creates it), tracking field owners.
async fn server_side(
    state: &ApiState,
    user: &skep_user::UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    opts: &WriteOptions,
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
        force: params.flag("force"),
        now: opts.admit.now,
    };
    let live = state
        .objects
        .try_get(info, &req.namespace, &req.name)
        .await?;
    let merged = server_side_apply::apply(info, live.as_ref(), &config.value, &apply_opts)?;
    crate::escalation::check(&state.authorizer, user, info, req, &merged)?;
    let operation = if live.is_some() {
        Operation::Update
    } else {
        Operation::Create
    };
    node_restriction::admit(
        &state.objects,
        user,
        info,
        req,
        operation,
        Some(&merged),
        live.as_ref(),
    )
    .await?;
    let decoded = Decoded {
        value: merged,
        duplicates: config.duplicates,
    };
    if let Some(live) = live {
        let admitted =
            admission::admit_update(info, &req.namespace, &req.name, decoded, &live, &opts.admit)?;
        let done = state
            .objects
            .store_replacement(info, &live, admitted, opts.dry_run)
            .await?;
        Ok(written(StatusCode::OK, req, &done))
    } else {
        let admitted = admission::admit_create(info, &req.namespace, decoded, &opts.admit)?;
        let done = state
            .objects
            .store_new(info, admitted, opts.dry_run)
            .await?;
        Ok(written(StatusCode::CREATED, req, &done))
    }
}

async fn delete(
    state: &ApiState,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    body: &[u8],
) -> Result<Response, ApiError> {
    let (options, dry_run) = DeleteOptions::from_request(params, body)?;
    let deleted = state
        .objects
        .delete(info, &req.namespace, &req.name, &options, dry_run)
        .await?;
    Ok(match deleted {
        Deleted::Removed(obj) => json_response(StatusCode::OK, &obj),
        Deleted::Marked(obj) | Deleted::Unchanged(obj) => json_response(StatusCode::ACCEPTED, &obj),
    })
}

/// `DELETE` on a collection, as upstream's `DeleteCollection` handler and
/// `Store.DeleteCollection` do it: list what the selectors match (a
/// `limit` deletes one page), delete each item as a single delete would
/// (pods gracefully; one already gone is skipped), and answer the list as
/// it was before the deletes. The first failure ends it with its error.
async fn delete_collection(
    state: &ApiState,
    user: &skep_user::UserInfo,
    info: &ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !info.verbs.contains(&"deletecollection") || !req.subresource.is_empty() {
        return Err(ApiError::method_not_allowed());
    }
    let mut list = list_options(info, req, params)?;
    let (options, dry_run) = DeleteOptions::from_request(params, body)?;
    let (items, meta) = state.objects.list(info, &req.namespace, &list).await?;
    let one_page = list.limit > 0;
    let mut all = items;
    let mut next = meta.continue_token.clone();
    while let Some(token) = next.filter(|_| !one_page) {
        list.continue_token = Some(token);
        let (items, page) = state.objects.list(info, &req.namespace, &list).await?;
        all.extend(items);
        next = page.continue_token;
    }
    for item in &all {
        let name = object::name(item);
        let one = ResourceRequest {
            verb: Verb::Delete,
            namespace: object::namespace(item).to_owned(),
            name: name.to_owned(),
            ..req.clone()
        };
        node_restriction::admit(
            &state.objects,
            user,
            info,
            &one,
            Operation::Delete,
            None,
            None,
        )
        .await?;
        match state
            .objects
            .delete(info, object::namespace(item), name, &options, dry_run)
            .await
        {
            Ok(_) => {}
            Err(err) if err.reason == StatusReason::NotFound => {}
            Err(err) => {
                tracing::debug!(?err, %name, "delete in a collection delete failed");
                return Err(err);
            }
        }
    }
    tracing::debug!(deleted = all.len(), dry_run, "collection deleted");
    Ok(json_response(
        StatusCode::OK,
        &object::wrap_list(info, all, &meta),
    ))
}

/// How long an idle watch waits before sending a bookmark.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

async fn watch(
    state: &ApiState,
    info: &'static ResourceInfo,
    req: &ResourceRequest,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // Metadata-only watches (client-go's metadata informers) get each
    // event's object as PartialObjectMetadata.
    let partial = match negotiation::output(headers) {
        Output::PartialObjectMetadata(v) | Output::PartialObjectMetadataList(v) => Some(v),
        Output::Object | Output::Table => None,
    };
    let filter = filter(info, req, params)?;
    let bookmarks = params.flag("allowWatchBookmarks");
    // Upstream waits `timeoutSeconds` (a negative one ends the watch at once).
    let timeout = params
        .int64("timeoutSeconds")?
        .filter(|t| *t != 0)
        .map(|t| Duration::from_secs(u64::try_from(t).unwrap_or(0)));
    let from: Option<u64> = match params.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let events = state
        .objects
        .watch(info, &req.namespace, Some(filter), from)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(stream_watch(info, events, bookmarks, partial, timeout, tx));
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

/// Writes a watch's events as JSON lines until the client goes, the
/// timeout passes, or the watch ends (a `410 Gone` ends it with an ERROR
/// event, as kube-apiserver does); an idle watch gets bookmarks if asked.
async fn stream_watch(
    info: &'static ResourceInfo,
    mut events: ObjectWatch,
    bookmarks: bool,
    partial: Option<String>,
    timeout: Option<Duration>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let next = tokio::time::timeout(BOOKMARK_INTERVAL, events.next());
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                Ok(n) => n,
                Err(_) => return,
            },
            None => next.await,
        };
        let (line, last) = match next {
            // (`bookmark` is the whole event: wrapping it again made kubectl
            // drop the watch at every bookmark.)
            Err(_) if bookmarks => {
                let mut event = object::bookmark(info, events.revision());
                if let Some(api_version) = &partial {
                    event["object"] =
                        object::partial_object_metadata(&event["object"], api_version);
                }
                (event, false)
            }
            Err(_) => continue,
            Ok(None) => return,
            Ok(Some(Err(err))) => (
                object::watch_event(WatchEventType::Error, err.to_status()),
                true,
            ),
            Ok(Some(Ok((kind, obj)))) => {
                let obj = match &partial {
                    Some(api_version) => object::partial_object_metadata(&obj, api_version),
                    None => obj,
                };
                (object::watch_event(kind, obj), false)
            }
        };
        if send_line(&tx, &line).await.is_err() || last {
            return;
        }
    }
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
