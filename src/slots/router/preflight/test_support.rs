//! What the preflight's unit tests share: a slot release as `helm create` renders it, the router's
//! render, and a `Case` that runs the whole preflight over them with one thing changed.

use super::{analyze, check_router, Analysis, Checks, LivePod, Renders, Scopes, Wanted};
use crate::error::Refusal;
use crate::slots::router::manifest::{parse, Rendered};
use crate::slots::router::values::{AppSettings, SlotRecord};

const NS: &str = "shop";

/// A slot release as `helm create myapp` renders it (service, deployment, serviceaccount).
pub(super) fn helm_create(release: &str) -> String {
    format!(
        "
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {release}-myapp}}
---
apiVersion: v1
kind: Service
metadata: {{name: {release}-myapp}}
spec:
  type: ClusterIP
  ports: [{{port: 80, targetPort: http, protocol: TCP, name: http}}]
  selector: {{app.kubernetes.io/name: myapp, app.kubernetes.io/instance: {release}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {release}-myapp}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app.kubernetes.io/name: myapp, app.kubernetes.io/instance: {release}}}}}
  template:
    metadata:
      labels: {{helm.sh/chart: myapp-0.1.0, app.kubernetes.io/name: myapp, app.kubernetes.io/instance: {release}}}
    spec:
      serviceAccountName: {release}-myapp
      containers:
        - name: myapp
          image: nginx:v2
          ports: [{{name: http, containerPort: 80, protocol: TCP}}]
"
    )
}

pub(super) fn rendered(release: &str, manifest: &str) -> Rendered {
    Rendered {
        release: release.into(),
        objects: parse(manifest).unwrap(),
        hooks: Vec::new(),
    }
}

pub(super) fn router() -> Rendered {
    rendered(
        "web",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web-stage}\n",
    )
}

pub(super) struct Case {
    /// The slot release's manifest, which `slot` changes step by step.
    manifest: String,
    pub(super) slot: Rendered,
    pub(super) other: Rendered,
    pub(super) router: Rendered,
    pub(super) app: AppSettings,
    pub(super) wanted: Wanted,
    pub(super) replicas: Option<u64>,
    pub(super) scopes: Scopes,
    pub(super) recorded: Option<SlotRecord>,
    pub(super) install: bool,
    pub(super) first: bool,
    pub(super) live_pods: Vec<LivePod>,
}

impl Case {
    pub(super) fn new() -> Case {
        Case {
            manifest: helm_create("web-green"),
            slot: rendered("web-green", &helm_create("web-green")),
            other: rendered(
                "web-blue",
                &helm_create("web-blue").replace("nginx:v2", "nginx:v1"),
            ),
            router: router(),
            app: AppSettings::default(),
            wanted: Wanted {
                tag: Some("v2".into()),
                ..Wanted::default()
            },
            replicas: None,
            scopes: Scopes::builtin(),
            recorded: None,
            install: false,
            first: false,
            live_pods: Vec::new(),
        }
    }

    /// The slot release with its manifest changed by `f` (changes add up; hooks stay).
    pub(super) fn slot(mut self, f: impl Fn(String) -> String) -> Case {
        self.manifest = f(std::mem::take(&mut self.manifest));
        let hooks = std::mem::take(&mut self.slot.hooks);
        self.slot = rendered("web-green", &self.manifest);
        self.slot.hooks = hooks;
        self
    }

    pub(super) fn run(&self) -> Result<Analysis, Refusal> {
        let renders = Renders {
            slot: &self.slot,
            other: &self.other,
        };
        let checks = Checks {
            release: "web",
            namespace: NS,
            app: &self.app,
            wanted: &self.wanted,
            replicas: self.replicas,
            scopes: &self.scopes,
            recorded: self.recorded.as_ref(),
            install: self.install,
            first: self.first,
            live_pods: &self.live_pods,
        };
        let analysis = analyze(&renders, &checks)?;
        check_router(&self.router, &renders, &checks)?;
        Ok(analysis)
    }

    pub(super) fn refusal(&self) -> Refusal {
        self.run().expect_err("a refusal")
    }
}

pub(super) fn add(doc: &str) -> impl Fn(String) -> String + '_ {
    move |m| format!("{m}---\n{doc}\n")
}
