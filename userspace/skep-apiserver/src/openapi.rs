//! The `OpenAPI` v3 documents kubectl asks for. kubectl checks there whether
//! the server validates fields itself (`?fieldValidation=Strict`, a query
//! parameter of each resource's PATCH operation, found by its
//! `x-kubernetes-group-version-kind` extension); when it does, kubectl sends
//! objects unvalidated and lets the server reject unknown fields. Schemas are
//! not served yet: kubectl falls back to its compiled-in types for them.

use serde_json::{Map, Value, json};
use skep_api::{ResourceInfo, registry};

/// `/openapi/v3`: one entry per served group version.
#[must_use]
pub fn root() -> Value {
    let mut paths = Map::new();
    for gv in group_versions() {
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/{api/v1 | apis/<group>/<version>}`, or `None` if not served.
#[must_use]
pub fn group_version(gv: &str) -> Option<Value> {
    let resources: Vec<&ResourceInfo> = registry::resources()
        .iter()
        .copied()
        .filter(|info| gv_path(info) == gv)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for info in resources {
        let collection = if info.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}", info.plural)
        } else {
            format!("/{gv}/{}", info.plural)
        };
        let gvk = json!({"group": info.group, "version": info.version, "kind": info.kind});
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
        let params = json!([
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation")
        ]);
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "patch": {
                    "operationId": format!("patch{}", info.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": params,
                },
                "put": {
                    "operationId": format!("replace{}", info.kind),
                    "x-kubernetes-action": "put",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": params,
                },
            }),
        );
        paths.insert(
            collection,
            json!({
                "post": {
                    "operationId": format!("create{}", info.kind),
                    "x-kubernetes-action": "post",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": params,
                },
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (skep)", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

fn gv_path(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        format!("api/{}", info.version)
    } else {
        format!("apis/{}/{}", info.group, info.version)
    }
}

fn group_versions() -> Vec<String> {
    let mut gvs: Vec<String> = registry::resources().iter().copied().map(gv_path).collect();
    gvs.sort();
    gvs.dedup();
    gvs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_group_version_has_a_document_with_field_validation() {
        let root = root();
        let paths = root["paths"].as_object().expect("paths");
        assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
        let doc = group_version("apis/apps/v1").expect("apps/v1");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        let params = patch["parameters"].as_array().expect("parameters");
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        assert!(group_version("apis/nope/v1").is_none());
    }
}
