//! Where objects live in the store: `/registry/<group>/<plural>/[<ns>/]<name>`,
//! with `core` for the legacy group (like etcd under kube-apiserver).

use skep_api::ResourceInfo;

/// The store key of an object.
pub fn key(info: &ResourceInfo, namespace: &str, name: &str) -> String {
    format!("{}{name}", prefix(info, namespace))
}

/// The store prefix of a collection (all namespaces when `namespace` is "").
pub fn prefix(info: &ResourceInfo, namespace: &str) -> String {
    let group = if info.group.is_empty() {
        "core"
    } else {
        info.group
    };
    if namespace.is_empty() || !info.namespaced {
        format!("/registry/{group}/{}/", info.plural)
    } else {
        format!("/registry/{group}/{}/{namespace}/", info.plural)
    }
}

#[cfg(test)]
mod tests {
    use skep_api::kinds;

    use super::*;

    #[test]
    fn keys_follow_group_plural_namespace_name() {
        let pods = &kinds::POD;
        assert_eq!(
            key(pods, "default", "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(prefix(pods, ""), "/registry/core/pods/");
        let deployments = &kinds::DEPLOYMENT;
        assert_eq!(
            key(deployments, "ns1", "d"),
            "/registry/apps/deployments/ns1/d"
        );
        let nodes = &kinds::NODE;
        assert_eq!(key(nodes, "", "n1"), "/registry/core/nodes/n1");
    }
}
