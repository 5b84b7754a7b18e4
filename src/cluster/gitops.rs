//! The marks a GitOps controller leaves on the objects it manages, read from a release's Services,
//! so bgslot can say who owns a release and refuse to change it behind their back.

use k8s_openapi::api::core::v1::Service;

pub const FLUX_NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";
pub const FLUX_NAMESPACE_LABEL: &str = "helm.toolkit.fluxcd.io/namespace";
pub const ARGOCD_TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "tool", rename_all = "kebab-case")]
pub enum GitOpsMarks {
    /// Flux's helm-controller labels every object of a HelmRelease with its name and namespace
    /// (and keeps a helm release of its own).
    Flux { namespace: String, name: String },
    /// Argo CD's annotation tracking (`argocd.argoproj.io/tracking-id: APP:GROUP/KIND:NS/NAME`).
    /// Argo CD renders charts without a helm release.
    ArgoCd { application: String },
}

impl GitOpsMarks {
    /// The marks on one Service, if any.
    pub fn of(svc: &Service) -> Option<GitOpsMarks> {
        let labels = svc.metadata.labels.as_ref();
        if let Some(name) = labels.and_then(|l| l.get(FLUX_NAME_LABEL)) {
            let namespace = labels
                .and_then(|l| l.get(FLUX_NAMESPACE_LABEL))
                .cloned()
                .unwrap_or_default();
            return Some(GitOpsMarks::Flux {
                namespace,
                name: name.clone(),
            });
        }
        let tracking = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ARGOCD_TRACKING_ANNOTATION))?;
        let application = tracking.split(':').next().unwrap_or(tracking);
        Some(GitOpsMarks::ArgoCd {
            application: application.to_string(),
        })
    }

    /// The owner as `status` names it.
    pub fn owner(&self) -> String {
        match self {
            GitOpsMarks::Flux { namespace, name } => format!("Flux HelmRelease {namespace}/{name}"),
            GitOpsMarks::ArgoCd { application } => format!("Argo CD Application {application}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(meta: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": meta})).unwrap()
    }

    #[test]
    fn flux_labels_and_argo_cd_annotations_name_the_owner() {
        let flux = service(
            json!({"labels": {FLUX_NAME_LABEL: "web", FLUX_NAMESPACE_LABEL: "flux-system"}}),
        );
        assert_eq!(
            GitOpsMarks::of(&flux).unwrap().owner(),
            "Flux HelmRelease flux-system/web"
        );
        let argo = service(
            json!({"annotations": {ARGOCD_TRACKING_ANNOTATION: "shop-web:/Service:shop/web"}}),
        );
        assert_eq!(
            GitOpsMarks::of(&argo),
            Some(GitOpsMarks::ArgoCd {
                application: "shop-web".into()
            })
        );
        assert_eq!(GitOpsMarks::of(&service(json!({"name": "web"}))), None);
    }
}
