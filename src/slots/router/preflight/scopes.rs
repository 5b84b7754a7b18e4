//! Which kinds are cluster-scoped: one such object per cluster, so two slot releases cannot both
//! own it. Kubernetes' own kinds are tabled here; the API server is asked of the rest (a CRD's).

use std::collections::{BTreeMap, BTreeSet};

use crate::slots::router::manifest::Object;

/// Which kinds are cluster-scoped: Kubernetes' own, and what the API server said of others.
#[derive(Debug, Clone, Default)]
pub struct Scopes {
    /// (group, kind) -> namespaced.
    known: BTreeMap<(String, String), bool>,
}

/// Kubernetes' cluster-scoped kinds, by group.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("node.k8s.io", "RuntimeClass"),
    ("policy", "PodSecurityPolicy"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Kubernetes' own namespaced groups: a kind of these not in [`CLUSTER_SCOPED`] is namespaced.
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "rbac.authorization.k8s.io",
    "networking.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "node.k8s.io",
    "events.k8s.io",
    "certificates.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
];

impl Scopes {
    /// Kubernetes' own kinds.
    pub fn builtin() -> Scopes {
        let mut known = BTreeMap::new();
        for (group, kind) in CLUSTER_SCOPED {
            known.insert((group.to_string(), kind.to_string()), false);
        }
        Scopes { known }
    }

    fn lookup(&self, group: &str, kind: &str) -> Option<bool> {
        if let Some(namespaced) = self.known.get(&(group.to_string(), kind.to_string())) {
            return Some(*namespaced);
        }
        BUILTIN_GROUPS.contains(&group).then_some(true)
    }

    /// The API versions whose kinds' scope is unknown here (a CRD's): ask the API server.
    pub fn unknown<'a>(&self, objects: impl IntoIterator<Item = &'a Object>) -> BTreeSet<String> {
        objects
            .into_iter()
            .filter(|o| self.lookup(o.group(), &o.kind).is_none())
            .map(|o| o.api_version.clone())
            .collect()
    }

    /// What the API server said of a kind.
    pub fn learn(&mut self, group: &str, kind: &str, namespaced: bool) {
        self.known
            .insert((group.to_string(), kind.to_string()), namespaced);
    }

    pub fn is_cluster_scoped(&self, o: &Object) -> bool {
        self.lookup(o.group(), &o.kind) == Some(false)
    }
}
