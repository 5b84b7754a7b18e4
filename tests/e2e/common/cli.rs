//! Running the bgslot binary in a test namespace and checking what it left behind.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::Value;

use super::Helm;

/// What one bgslot run returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The helm commands bgslot ran, by subcommand (`-v` prints each as `+ HELM ARGS`).
    pub fn helm_commands(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("+ "))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }

    /// Asserts that bgslot exited 0.
    #[track_caller]
    pub fn must_succeed(self) -> Run {
        assert_eq!(self.code, 0, "bgslot failed: {self:?}");
        self
    }

    /// Asserts that bgslot exited with `code`.
    #[track_caller]
    pub fn must_exit(self, code: i32) -> Run {
        assert_eq!(self.code, code, "expected exit {code}: {self:?}");
        self
    }

    /// Asserts that `text` is on stdout or stderr.
    #[track_caller]
    pub fn must_say(self, text: &str) -> Run {
        assert!(
            self.stderr.contains(text) || self.stdout.contains(text),
            "expected '{text}' in output: {self:?}"
        );
        self
    }
}

/// The parts of a release that a refused command must leave alone.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// The latest revision number (helm prunes old revisions, so counting them would lie).
    pub revision: u64,
    pub latest_status: String,
    pub selectors: BTreeMap<String, String>,
    pub deployments: BTreeMap<String, (i64, String)>,
}

/// A test's namespace and helm; the namespace is deleted when the `Env` is dropped, also when
/// the test panics.
pub struct Env {
    pub helm: Helm,
    pub ns: String,
    pub client: Client,
    /// Another kubeconfig than KUBECONFIG's (another cluster or user), for bgslot and helm alike.
    pub kubeconfig: Option<String>,
    /// The kubeconfig that made the namespace and deletes it (another user may lack the right).
    admin_kubeconfig: Option<String>,
}

impl Drop for Env {
    fn drop(&mut self) {
        super::delete_namespace_blocking(&self.ns, self.admin_kubeconfig.as_deref());
    }
}

impl Env {
    pub async fn new(major: u32, prefix: &str) -> Env {
        let client = super::client().await;
        let ns = super::namespace(&client, &format!("{prefix}-h{major}")).await;
        Env {
            helm: super::helm(major),
            ns,
            client,
            kubeconfig: None,
            admin_kubeconfig: None,
        }
    }

    /// A fresh namespace on the cluster of `kubeconfig` (not KUBECONFIG's), reached by `client`.
    pub async fn on_cluster(major: u32, prefix: &str, client: Client, kubeconfig: &str) -> Env {
        let ns = super::namespace(&client, &format!("{prefix}-h{major}")).await;
        Env {
            helm: super::helm(major),
            ns,
            client,
            kubeconfig: Some(kubeconfig.to_string()),
            admin_kubeconfig: Some(kubeconfig.to_string()),
        }
    }

    /// A namespace of the same name on another cluster (reached by `client`, named by
    /// `kubeconfig`), with this test's helm; deleted when dropped.
    pub async fn same_namespace_on(&self, client: Client, kubeconfig: &str) -> Env {
        super::create_namespace(&client, &self.ns).await;
        Env {
            helm: self.helm.clone(),
            ns: self.ns.clone(),
            client,
            kubeconfig: Some(kubeconfig.to_string()),
            admin_kubeconfig: Some(kubeconfig.to_string()),
        }
    }

    /// The same namespace, with bgslot and helm running as the user of `kubeconfig`.
    pub fn with_user(mut self, kubeconfig: String) -> Env {
        self.kubeconfig = Some(kubeconfig);
        self
    }

    /// The bgslot command for this namespace and helm, not yet started.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bgslot"));
        let helm_cmd = self.helm.command();
        for (k, v) in helm_cmd.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        if let Some(kubeconfig) = &self.kubeconfig {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        cmd.env("HELM_BIN", &self.helm.path)
            .env("HELM_NAMESPACE", &self.ns)
            .env("NO_COLOR", "1");
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    pub async fn bgslot(&self, args: &[&str]) -> Run {
        self.bgslot_env(args, &[]).await
    }

    pub async fn bgslot_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Run::from(cmd.output().await.expect("run bgslot"))
    }

    /// Installs release `name` of a minimal chart that is not bgslot's, with `values` as its
    /// values.yaml; the chart lives in `dir`.
    pub fn install_foreign(&self, dir: &std::path::Path, name: &str, values: &str) {
        let chart = dir.join(name);
        std::fs::create_dir_all(chart.join("templates")).unwrap();
        std::fs::write(
            chart.join("Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\n"),
        )
        .unwrap();
        std::fs::write(chart.join("values.yaml"), values).unwrap();
        std::fs::write(
            chart.join("templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  values: {{ toJson .Values | quote }}\n",
        )
        .unwrap();
        self.helm
            .run(&["install", name, chart.to_str().unwrap(), "-n", &self.ns]);
    }

    pub fn helm_json(&self, args: &[&str]) -> Value {
        let mut full = args.to_vec();
        full.extend(["-n", &self.ns, "-o", "json"]);
        if let Some(kubeconfig) = &self.kubeconfig {
            full.extend(["--kubeconfig", kubeconfig]);
        }
        serde_json::from_str(&self.helm.run(&full)).expect("helm prints JSON")
    }

    pub async fn fingerprint(&self, release: &str) -> Fingerprint {
        let history = self.helm_json(&["history", release]);
        let history = history.as_array().unwrap();
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        let selectors = services
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|s| {
                let slot = s
                    .spec
                    .unwrap()
                    .selector
                    .unwrap_or_default()
                    .get("bgslot/slot")
                    .cloned()
                    .unwrap_or_default();
                (s.metadata.name.unwrap(), slot)
            })
            .collect();
        let deployments = self
            .deployments()
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|d| {
                let image = d.spec.unwrap().template.spec.unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap_or_default();
                (
                    d.metadata.name.unwrap(),
                    (d.metadata.generation.unwrap_or(0), image),
                )
            })
            .collect();
        Fingerprint {
            revision: history
                .last()
                .map(|r| r["revision"].as_u64().unwrap())
                .unwrap_or(0),
            latest_status: history
                .last()
                .map(|r| r["status"].as_str().unwrap().to_string())
                .unwrap_or_default(),
            selectors,
            deployments,
        }
    }

    /// A deploy to green has finished its helm write (revision 2 deployed) and now waits on the
    /// slot: the moment to interrupt it without touching helm.
    pub async fn is_waiting_on_green(&self) -> bool {
        let fp = self.fingerprint("web").await;
        fp.deployments.contains_key("web-green")
            && fp.revision == 2
            && fp.latest_status == "deployed"
    }

    /// Takes the release lock of `release` as another bgslot would, for an hour, and returns the
    /// Lease as created.
    pub async fn hold_lock(&self, release: &str, holder: &str) -> Lease {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("bgslot-lock-{release}")},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600,
                     "acquireTime": now, "renewTime": now}
        }))
        .unwrap();
        leases
            .create(&kube::api::PostParams::default(), &lease)
            .await
            .unwrap()
    }

    /// The API of `kind` in group `group`, in the most stable version the server serves it in
    /// (policy/v1beta1 PDBs and batch/v1beta1 CronJobs on 1.20, v1 on a current cluster; on 1.20
    /// batch's preferred version, v1, has Jobs only), and that version.
    pub async fn api_of(&self, group: &str, kind: &str) -> (Api<kube::api::DynamicObject>, String) {
        let api_group = kube::discovery::group(&self.client, group)
            .await
            .unwrap_or_else(|e| panic!("discovery of {group}: {e}"));
        let (resource, _) = api_group
            .resources_by_stability()
            .into_iter()
            .find(|(r, _)| r.kind == kind)
            .unwrap_or_else(|| panic!("{group} serves no {kind}"));
        let api_version = resource.api_version.clone();
        (
            Api::namespaced_with(self.client.clone(), &self.ns, &resource),
            api_version,
        )
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The slot of every ready endpoint of `service`.
    pub async fn endpoint_slots(&self, service: &str) -> Vec<String> {
        let eps: Api<Endpoints> = Api::namespaced(self.client.clone(), &self.ns);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        let pod_slot: BTreeMap<String, String> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| {
                Some((
                    p.metadata.name?,
                    p.metadata.labels?.get("bgslot/slot")?.clone(),
                ))
            })
            .collect();
        let Some(ep) = eps.get_opt(service).await.unwrap() else {
            return vec![];
        };
        let mut slots: Vec<String> = ep
            .subsets
            .unwrap_or_default()
            .into_iter()
            .flat_map(|s| s.addresses.unwrap_or_default())
            .map(|a| {
                a.target_ref
                    .and_then(|r| r.name)
                    .and_then(|n| pod_slot.get(&n).cloned())
                    .unwrap_or_else(|| "?".into())
            })
            .collect();
        slots.sort();
        slots
    }

    /// Polls until `service`'s ready endpoints are exactly `count` pods of `slot`.
    pub async fn await_endpoints(&self, service: &str, slot: &str, count: usize) {
        let want = vec![slot.to_string(); count];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let seen = self.endpoint_slots(service).await;
            if seen == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service}: endpoints {seen:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The end of a test that passed: the namespace goes (as it would on drop).
    pub async fn done(self) {
        drop(self);
    }
}
