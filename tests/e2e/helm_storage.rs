//! The direct read of helm's release storage (`bgslot::helm::storage`) against real helms on the
//! local control plane: for every state a release can be in, with the Secret and the ConfigMap
//! driver, it agrees field by field with what `helm status`, `helm history` and `helm get values`
//! print; where it cannot read, it says why (and the API is not touched for an unknown driver).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use bgslot::helm::storage::{self, Driver, ReadError, Record, Storage, Unreadable};
use bgslot::helm::{Revision, Status};
use bgslot::values::coalesce;
use common::cli::Env;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::{json, Value};

with_both_helms!(
    deployed_superseded_and_rolled_back,
    failed_install_and_upgrade,
    pending_install,
    pending_upgrade,
    pending_rollback,
    uninstalled_with_kept_history,
    schema_non_ascii_and_large_values,
    unsupported_driver_forbidden_and_api_failure,
);

const DRIVERS: [Driver; 2] = [Driver::Secrets, Driver::ConfigMaps];

fn driver_env(driver: Driver) -> &'static str {
    match driver {
        Driver::Secrets => "secret",
        Driver::ConfigMaps => "configmap",
    }
}

/// A small chart: a ConfigMap of `greeting` (so large values stay out of the manifest), an
/// invalid object when `broken`, a Deployment of image tag `tag` when `deployment`.
fn chart(dir: &Path, name: &str, version: &str, schema: bool) -> PathBuf {
    let chart = dir.join(format!("{name}-{version}"));
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"app-{version}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        chart.join("values.yaml"),
        "greeting: hello\nbroken: false\ndeployment: false\ntag: v1\nreplicas: 1\nnested:\n  a: 1\n  b: [x, y]\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/objects.yaml"),
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}
data:
  greeting: {{ .Values.greeting | quote }}
{{- if .Values.broken }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: Not_A_Valid_Name
{{- end }}
{{- if .Values.fail }}
{{ fail "asked to fail" }}
{{- end }}
{{- if .Values.deployment }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      containers:
        - name: app
          image: "example.com/app:{{ .Values.tag }}"
          ports:
            - containerPort: 8080
{{- end }}
"#,
    )
    .unwrap();
    if schema {
        std::fs::write(
            chart.join("values.schema.json"),
            json!({
                "type": "object",
                "required": ["greeting"],
                "properties": {
                    "greeting": {"type": "string"},
                    "replicas": {"type": "integer", "minimum": 1},
                    "blob": {"type": "string"}
                }
            })
            .to_string(),
        )
        .unwrap();
    }
    chart
}

/// One release in a test namespace, written by helm with one driver.
struct Case<'a> {
    env: &'a Env,
    /// The helm that writes and prints (the Env's, unless another is given).
    helm: common::Helm,
    driver: Driver,
    release: String,
}

impl<'a> Case<'a> {
    fn new(env: &'a Env, driver: Driver, name: &str) -> Case<'a> {
        Case {
            env,
            helm: env.helm.clone(),
            driver,
            release: format!("{name}-{}", driver_env(driver)),
        }
    }

    fn with_helm(mut self, helm: common::Helm) -> Self {
        self.helm = helm;
        self
    }

    fn storage(&self) -> Storage {
        Storage::detect(Some(driver_env(self.driver))).unwrap()
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.helm.command();
        cmd.env("HELM_DRIVER", driver_env(self.driver))
            .args(args)
            .args(["-n", &self.env.ns]);
        cmd
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run helm")
    }

    /// Runs helm; panics with its stderr when it fails.
    fn helm(&self, args: &[&str]) -> String {
        self.helm_env(&[], args)
    }

    fn helm_env(&self, envs: &[(&str, &str)], args: &[&str]) -> String {
        let out = self
            .command(args)
            .envs(envs.iter().copied())
            .output()
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm{} {args:?} ({:?}) failed: {}",
            self.helm.major,
            self.driver,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn helm_json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let text = self.helm(&args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_flag(&self) -> &'static str {
        // Helm 4 made --wait a strategy; `watcher` is what a bare Helm 3 --wait means.
        if self.helm.major >= 4 {
            "--wait=watcher"
        } else {
            "--wait"
        }
    }

    async fn latest(&self) -> Option<Record> {
        self.storage()
            .latest(&self.env.client, &self.env.ns, &self.release)
            .await
            .unwrap_or_else(|e| panic!("{:?} {}: {e:?}", self.driver, self.release))
    }

    /// The helm labels of every record of the release: (version, status).
    async fn labels(&self) -> Vec<(String, String)> {
        let params = ListParams::default().labels(&storage::selector(&self.release));
        let metas: Vec<_> = match self.driver {
            Driver::Secrets => Api::<Secret>::namespaced(self.env.client.clone(), &self.env.ns)
                .list(&params)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|o| o.metadata)
                .collect(),
            Driver::ConfigMaps => {
                Api::<ConfigMap>::namespaced(self.env.client.clone(), &self.env.ns)
                    .list(&params)
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .map(|o| o.metadata)
                    .collect()
            }
        };
        metas
            .into_iter()
            .map(|m| {
                let l = m.labels.unwrap_or_default();
                (l["version"].clone(), l["status"].clone())
            })
            .collect()
    }

    /// Every record's release JSON, as helm stored it, by revision.
    async fn raw_records(&self) -> Vec<(u64, Value)> {
        let params = ListParams::default().labels(&storage::selector(&self.release));
        let payloads: Vec<Vec<u8>> = match self.driver {
            Driver::Secrets => Api::<Secret>::namespaced(self.env.client.clone(), &self.env.ns)
                .list(&params)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|s| s.data.unwrap()["release"].0.clone())
                .collect(),
            Driver::ConfigMaps => {
                Api::<ConfigMap>::namespaced(self.env.client.clone(), &self.env.ns)
                    .list(&params)
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .map(|c| c.data.unwrap()["release"].clone().into_bytes())
                    .collect()
            }
        };
        let mut records: Vec<(u64, Value)> = payloads
            .iter()
            .map(|p| {
                let json: Value = serde_json::from_slice(&storage::unpack(p).unwrap()).unwrap();
                (json["version"].as_u64().unwrap(), json)
            })
            .collect();
        records.sort_by_key(|(v, _)| *v);
        records
    }

    /// Polls until helm's newest record has `status` (helm is then working on it).
    async fn await_status(&self, status: &str) {
        let what = format!("{} is {status}", self.release);
        common::eventually(&what, || async {
            self.labels()
                .await
                .iter()
                .max_by_key(|(v, _)| v.parse::<u64>().unwrap_or(0))
                .is_some_and(|(_, s)| s == status)
        })
        .await;
    }

    /// Kills a helm that waits on a never-ready Deployment once it has marked the release
    /// `status`: helm cannot record an outcome, so the release stays pending.
    async fn kill_while(&self, mut helm: Child, status: &str) {
        self.await_status(status).await;
        helm.kill().unwrap();
        helm.wait().unwrap();
        assert_eq!(
            self.latest().await.unwrap().info.status,
            status,
            "{}",
            self.release
        );
    }

    /// The direct read agrees with helm's own commands, field by field; returns the record.
    async fn agree(&self) -> Record {
        let ctx = format!("helm{} {:?} {}", self.helm.major, self.driver, self.release);
        let record = self
            .latest()
            .await
            .unwrap_or_else(|| panic!("{ctx}: no record"));

        // helm status -o json: revision, status, description, last_deployed, user values...
        let raw = self.helm_json(&["status", &self.release]);
        let status: Status = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(record.status(), status, "{ctx}: status");
        let direct_status = self
            .storage()
            .status(&self.env.client, &self.env.ns, &self.release)
            .await
            .unwrap();
        assert_eq!(direct_status.as_ref(), Some(&status), "{ctx}");
        // ...and the rest of what it prints that the record holds.
        assert_eq!(record.name, raw["name"].as_str().unwrap(), "{ctx}");
        assert_eq!(
            record.namespace,
            raw["namespace"].as_str().unwrap(),
            "{ctx}"
        );
        for (field, time) in [
            ("first_deployed", &record.info.first_deployed),
            ("last_deployed", &record.info.last_deployed),
            ("deleted", &record.info.deleted),
        ] {
            // Helm 3 prints a zero time as "", Helm 4 leaves it out.
            let printed = raw["info"][field].as_str().unwrap_or_default();
            let direct = time.as_ref().map(|t| t.to_string()).unwrap_or_default();
            assert_eq!(direct, printed, "{ctx}: info.{field}");
        }

        // helm history -o json: every revision, chart and app version included.
        for max in [50, 2] {
            let max_arg = max.to_string();
            let printed: Vec<Revision> = serde_json::from_value(self.helm_json(&[
                "history",
                &self.release,
                "--max",
                &max_arg,
            ]))
            .unwrap();
            let direct = self
                .storage()
                .history(&self.env.client, &self.env.ns, &self.release, max)
                .await
                .unwrap();
            assert_eq!(direct, printed, "{ctx}: history --max {max}");
            assert_eq!(direct.last(), Some(&record.revision()), "{ctx}");
        }

        // helm get values (user values; `null` when none) and --all (over the chart's defaults).
        let user = self.helm_json(&["get", "values", &self.release]);
        let user = if user.is_null() { json!({}) } else { user };
        assert_same(&record.user_values(), &user, &format!("{ctx}: user values"));
        let all = self.helm_json(&["get", "values", &self.release, "--all"]);
        let defaults = record.chart_values().cloned().unwrap_or(json!({}));
        // bgslot's coalesce drops every null; helm keeps a null whose key its defaults lack
        // (after --reuse-values the record's defaults are the previous computed values, which
        // lost that key): compare without nulls.
        assert_same(
            &coalesce(&defaults, &record.user_values()),
            &without_nulls(&all),
            &format!("{ctx}: computed values"),
        );
        record
    }
}

/// Asserts `a == b`, naming the paths that differ (values may hold a megabyte of text).
#[track_caller]
fn assert_same(a: &Value, b: &Value, ctx: &str) {
    fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let (l, r) = (
                        x.get(key).unwrap_or(&Value::Null),
                        y.get(key).unwrap_or(&Value::Null),
                    );
                    if x.contains_key(key) != y.contains_key(key) {
                        out.push(format!(
                            "{path}.{key}: present {} vs {}",
                            x.contains_key(key),
                            y.contains_key(key)
                        ));
                    } else {
                        diff(l, r, &format!("{path}.{key}"), out);
                    }
                }
            }
            _ if a != b => {
                let short = |v: &Value| v.to_string().chars().take(120).collect::<String>();
                out.push(format!("{path}: {} vs {}", short(a), short(b)));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    diff(a, b, "", &mut out);
    assert!(
        out.is_empty(),
        "{ctx}: direct read vs helm differ at {out:#?}"
    );
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

async fn deployed_superseded_and_rolled_back(major: u32) {
    let env = Env::new(major, "st-states").await;
    let dir = tempfile::tempdir().unwrap();
    let v1 = chart(dir.path(), "store", "1.0.0", false);
    let v2 = chart(dir.path(), "store", "1.1.0", false);
    for driver in DRIVERS {
        let case = Case::new(&env, driver, "web");
        let r = &case.release;
        case.helm(&["install", r, v1.to_str().unwrap()]);
        let record = case.agree().await;
        assert_eq!(
            (record.version, record.info.status.as_str()),
            (1, "deployed")
        );

        // Helm records times in the zone it runs in, and prints that zone back.
        case.helm_env(
            &[("TZ", "Asia/Kolkata")],
            &["upgrade", r, v1.to_str().unwrap(), "--set", "replicas=2"],
        );
        let record = case.agree().await;
        let updated = record.revision().updated;
        assert!(updated.ends_with("+05:30"), "{updated}");
        case.helm(&[
            "upgrade",
            r,
            v2.to_str().unwrap(),
            "--reuse-values",
            "--set-string",
            "tag=v3",
            "--description",
            "bgslot deploy green v3",
        ]);
        let record = case.agree().await;
        assert_eq!(record.chart_name(), "store-1.1.0");
        assert_eq!(record.app_version(), "app-1.1.0");
        assert_eq!(record.info.description, "bgslot deploy green v3");

        case.helm(&["rollback", r, "1"]);
        let record = case.agree().await;
        assert_eq!(
            (
                record.version,
                record.info.status.as_str(),
                record.chart_name()
            ),
            (4, "deployed", "store-1.0.0".to_string())
        );
        assert_eq!(record.info.description, "Rollback to 1");
        let statuses: Vec<String> = case
            .storage()
            .history(&env.client, &env.ns, r, 50)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(
            statuses,
            ["superseded", "superseded", "superseded", "deployed"]
        );
    }
    env.done().await;
}

async fn failed_install_and_upgrade(major: u32) {
    let env = Env::new(major, "st-failed").await;
    let dir = tempfile::tempdir().unwrap();
    let c = chart(dir.path(), "store", "1.0.0", false);
    let c = c.to_str().unwrap();
    for driver in DRIVERS {
        // An object the API server rejects: helm records a failed install.
        let case = Case::new(&env, driver, "bad");
        let out = case.output(&["install", &case.release, c, "--set", "broken=true"]);
        assert!(!out.status.success());
        let record = case.agree().await;
        assert_eq!((record.version, record.info.status.as_str()), (1, "failed"));

        let case = Case::new(&env, driver, "web");
        let r = &case.release;
        case.helm(&["install", r, c]);
        // A template `fail` stops helm before it writes a record: the release stays as it was.
        let out = case.output(&["upgrade", r, c, "--set", "fail=true"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("asked to fail"));
        assert_eq!(case.latest().await.unwrap().version, 1);
        // An invalid object fails the upgrade after helm recorded it.
        let out = case.output(&["upgrade", r, c, "--set", "broken=true"]);
        assert!(!out.status.success());
        let record = case.agree().await;
        assert_eq!((record.version, record.info.status.as_str()), (2, "failed"));
        assert!(
            record.info.description.contains("Not_A_Valid_Name"),
            "{}",
            record.info.description
        );
    }
    env.done().await;
}

async fn pending_install(major: u32) {
    let env = Env::new(major, "st-pinstall").await;
    let dir = tempfile::tempdir().unwrap();
    let c = chart(dir.path(), "store", "1.0.0", false);
    for driver in DRIVERS {
        let case = Case::new(&env, driver, "web");
        let helm = case.spawn(&[
            "install",
            &case.release,
            c.to_str().unwrap(),
            case.wait_flag(),
            "--timeout",
            "5m",
            "--set",
            "deployment=true",
            "--set-string",
            "tag=never-ready",
        ]);
        case.kill_while(helm, "pending-install").await;
        let record = case.agree().await;
        assert_eq!(record.version, 1);
    }
    env.done().await;
}

async fn pending_upgrade(major: u32) {
    let env = Env::new(major, "st-pupgrade").await;
    let dir = tempfile::tempdir().unwrap();
    let c = chart(dir.path(), "store", "1.0.0", false);
    for driver in DRIVERS {
        let case = Case::new(&env, driver, "web");
        let r = &case.release;
        case.helm(&["install", r, c.to_str().unwrap()]);
        let helm = case.spawn(&[
            "upgrade",
            r,
            c.to_str().unwrap(),
            "--reuse-values",
            case.wait_flag(),
            "--timeout",
            "5m",
            "--set",
            "deployment=true",
            "--set-string",
            "tag=never-ready",
        ]);
        case.kill_while(helm, "pending-upgrade").await;
        let record = case.agree().await;
        assert_eq!(record.version, 2);
    }
    env.done().await;
}

async fn pending_rollback(major: u32) {
    let env = Env::new(major, "st-prollback").await;
    let dir = tempfile::tempdir().unwrap();
    let c = chart(dir.path(), "store", "1.0.0", false);
    let c = c.to_str().unwrap();
    for driver in DRIVERS {
        let case = Case::new(&env, driver, "web");
        let r = &case.release;
        // Revision 1 never becomes ready: rolling back to it with --wait waits forever.
        case.helm(&[
            "install",
            r,
            c,
            "--set",
            "deployment=true",
            "--set-string",
            "tag=never-ready",
        ]);
        case.helm(&["upgrade", r, c, "--reuse-values", "--set-string", "tag=v2"]);
        let helm = case.spawn(&["rollback", r, "1", case.wait_flag(), "--timeout", "5m"]);
        case.kill_while(helm, "pending-rollback").await;
        let record = case.agree().await;
        assert_eq!(record.version, 3);
    }
    env.done().await;
}

async fn uninstalled_with_kept_history(major: u32) {
    let env = Env::new(major, "st-uninstalled").await;
    let dir = tempfile::tempdir().unwrap();
    let c = chart(dir.path(), "store", "1.0.0", false);
    let c = c.to_str().unwrap();
    for driver in DRIVERS {
        let case = Case::new(&env, driver, "web");
        let r = &case.release;
        case.helm(&["install", r, c]);
        case.helm(&["upgrade", r, c, "--set", "greeting=again"]);
        case.helm(&["uninstall", r, "--keep-history"]);
        // helm status shows the uninstalled revision (exit 0), as the latest record is.
        let record = case.agree().await;
        assert_eq!(
            (record.version, record.info.status.as_str()),
            (2, "uninstalled")
        );
        assert_eq!(record.info.description, "Uninstallation complete");
        assert!(record.info.deleted.is_some());

        // Without kept history nothing is left: helm says not found, the direct read None.
        let case = Case::new(&env, driver, "gone");
        case.helm(&["install", &case.release, c]);
        case.helm(&["uninstall", &case.release]);
        assert!(case.latest().await.is_none());
        let history = case
            .storage()
            .history(&env.client, &env.ns, &case.release, 50)
            .await
            .unwrap();
        assert!(history.is_empty());
        let out = case.output(&["status", &case.release, "-o", "json"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("release: not found"));
    }
    env.done().await;
}

/// Incompressible text of `len` characters (base64 of pseudo-random bytes).
fn random_text(len: usize) -> String {
    use base64::Engine;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..len * 3 / 4 + 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let mut text = base64::engine::general_purpose::STANDARD.encode(bytes);
    text.truncate(len);
    text
}

async fn schema_non_ascii_and_large_values(major: u32) {
    let env = Env::new(major, "st-values").await;
    let dir = tempfile::tempdir().unwrap();
    let c = chart(dir.path(), "schemed", "2.0.0", true);
    let c = c.to_str().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "greeting: \"grüß dich, 日本 🚀\"\nnested:\n  a: null\n  c: ü\nlist: [1, \"two\", 3.5, \"🦀\"]\nratio: 0.25\n",
    )
    .unwrap();
    let large = dir.path().join("large.yaml");
    std::fs::write(&large, format!("blob: {}\n", random_text(990_000))).unwrap();
    for driver in DRIVERS {
        let case = Case::new(&env, driver, "web");
        let r = &case.release;
        // The schema rejects a bad value before any record is written.
        let out = case.output(&["install", r, c, "--set", "replicas=0"]);
        assert!(!out.status.success());
        assert!(case.latest().await.is_none());

        // --set keeps an integer beyond 2^53 exact in the record; helm prints it rounded.
        case.helm(&[
            "install",
            r,
            c,
            "-f",
            values.to_str().unwrap(),
            "--set",
            "big=12345678901234567",
        ]);
        let record = case.agree().await;
        assert_eq!(record.user_values()["greeting"], "grüß dich, 日本 🚀");
        assert_eq!(record.user_values()["big"], json!(12345678901234568u64));
        let raw = case.raw_records().await;
        assert!(
            raw[0].1["config"].to_string().contains("12345678901234567"),
            "the record keeps the exact integer: {}",
            raw[0].1["config"]
        );
        assert!(
            !raw[0].1["chart"]["schema"].is_null(),
            "the record carries the schema"
        );

        // A record near the 1 MiB object limit.
        case.helm(&[
            "upgrade",
            r,
            c,
            "--reuse-values",
            "-f",
            large.to_str().unwrap(),
        ]);
        let record = case.agree().await;
        assert_eq!(record.version, 2);
        assert_eq!(
            record.user_values()["blob"].as_str().unwrap().len(),
            990_000
        );
        let size = record_size(&case, 2).await;
        assert!(
            (950_000..1_048_576).contains(&size),
            "record size {size} is near the 1 MiB limit"
        );
        println!(
            "helm{major} {driver:?}: large record {size} bytes (limit 1048576); payload of 990000 random base64 characters"
        );
    }
    env.done().await;
}

/// The bytes of `data.release` of revision `version` (the Secret's after the API's base64).
async fn record_size(case: &Case<'_>, version: u64) -> usize {
    let name = storage::record_name(&case.release, version);
    match case.driver {
        Driver::Secrets => Api::<Secret>::namespaced(case.env.client.clone(), &case.env.ns)
            .get(&name)
            .await
            .unwrap()
            .data
            .unwrap()["release"]
            .0
            .len(),
        Driver::ConfigMaps => Api::<ConfigMap>::namespaced(case.env.client.clone(), &case.env.ns)
            .get(&name)
            .await
            .unwrap()
            .data
            .unwrap()["release"]
            .len(),
    }
}

async fn client_for(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn unsupported_driver_forbidden_and_api_failure(major: u32) {
    // sql, memory and unknown drivers are refused before any client exists.
    for name in ["sql", "memory", "etcd", "Secret"] {
        match Storage::detect(Some(name)) {
            Err(Unreadable::UnsupportedDriver(d)) => assert_eq!(d, name),
            other => panic!("HELM_DRIVER={name}: {other:?}"),
        }
    }

    let env = Env::new(major, "st-forbidden").await;
    let dir = tempfile::tempdir().unwrap();
    let c = chart(dir.path(), "store", "1.0.0", false);
    for driver in DRIVERS {
        let case = Case::new(&env, driver, "web");
        case.helm(&["install", &case.release, c.to_str().unwrap()]);
    }
    let kubeconfig =
        PathBuf::from(common::rbac::service_account(&env, dir.path(), &["secrets"]).await);
    let limited = client_for(&kubeconfig).await;

    // No access to Secrets: the reason to fall back, naming what is missing.
    let secrets = Storage::detect(None).unwrap();
    for err in [
        secrets
            .latest(&limited, &env.ns, "web-secret")
            .await
            .unwrap_err(),
        secrets
            .history(&limited, &env.ns, "web-secret", 50)
            .await
            .unwrap_err(),
    ] {
        match err.fallback_reason() {
            Some(Unreadable::Forbidden {
                resource,
                namespace,
                ..
            }) => assert_eq!(
                (*resource, namespace.as_str()),
                ("secrets", env.ns.as_str())
            ),
            _ => panic!("expected forbidden: {err:?}"),
        }
        println!("helm{major}: fallback reason: {err}");
    }
    // The helm CLI as the same user fails too, with its own message.
    let out = env
        .helm
        .command()
        .args(["status", "web-secret", "-n", &env.ns, "-o", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Role still covers configmaps: the configmap driver's records read fine.
    let configmaps = Storage::detect(Some("configmap")).unwrap();
    let record = configmaps
        .latest(&limited, &env.ns, "web-configmap")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.info.status, "deployed");

    // An API that does not answer is an error, not a reason to run helm instead.
    let mut config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    config.connect_timeout = Some(Duration::from_secs(2));
    let dead = Client::try_from(config).unwrap();
    let err = secrets
        .latest(&dead, &env.ns, "web-secret")
        .await
        .unwrap_err();
    assert!(matches!(err, ReadError::Api { .. }), "{err:?}");
    assert!(err.fallback_reason().is_none());
    env.done().await;
}

/// A release written by Helm 3 and upgraded by Helm 4 reads correctly, and what each wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm3_release_upgraded_by_helm4() {
    let env3 = Env::new(3, "st-mixed").await;
    let helm4 = common::helm(4);
    let dir = tempfile::tempdir().unwrap();
    let c = chart(dir.path(), "store", "1.0.0", false);
    let c = c.to_str().unwrap();
    for driver in DRIVERS {
        let case3 = Case::new(&env3, driver, "web");
        let r = &case3.release;
        case3.helm(&["install", r, c, "--set", "greeting=from helm 3"]);
        case3.agree().await;
        let written_by_3 = case3.raw_records().await.remove(0).1;
        let case4 = Case::new(&env3, driver, "web").with_helm(helm4.clone());
        case4.helm(&["upgrade", r, c, "--reuse-values", "--set", "replicas=3"]);

        // Both helms print what the direct read gives.
        let record = case3.agree().await;
        assert_eq!(
            (record.version, record.info.status.as_str()),
            (2, "deployed")
        );
        assert_eq!(record.user_values()["greeting"], "from helm 3");
        assert_eq!(record.user_values()["replicas"], 3);
        case4.agree().await;

        // The record shapes: the decoded JSON keys each helm wrote.
        let raw = case3.raw_records().await;
        let (k3, k4) = (keys(&written_by_3, ""), keys(&raw[1].1, ""));
        let only3: Vec<_> = k3.difference(&k4).collect();
        let only4: Vec<_> = k4.difference(&k3).collect();
        println!("{driver:?}: keys only Helm 3 wrote: {only3:?}; only Helm 4 wrote: {only4:?}");
        let known = [
            "info.deleted",
            "apply_method",
            "chart.modtime",
            "chart.schemamodtime",
        ];
        for key in only3.iter().chain(only4.iter()) {
            assert!(known.contains(&key.as_str()), "unexpected difference {key}");
        }
        // Helm 4 rewrote revision 1 when it superseded it: in its own shape.
        let rewritten = keys(&raw[0].1, "");
        println!(
            "{driver:?}: revision 1 as Helm 4 rewrote it, keys gone: {:?}, keys new: {:?}; apply_method of the Helm 4 upgrade: {}",
            k3.difference(&rewritten).collect::<Vec<_>>(),
            rewritten.difference(&k3).collect::<Vec<_>>(),
            raw[1].1["apply_method"]
        );
    }
    env3.done().await;
}

/// Key paths of a release JSON, not descending into values or file lists.
fn keys(value: &Value, prefix: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    if let Value::Object(map) = value {
        for (k, v) in map {
            let path = format!("{prefix}{k}");
            if !matches!(
                k.as_str(),
                "config" | "values" | "templates" | "files" | "hooks"
            ) {
                out.extend(keys(v, &format!("{path}.")));
            }
            out.insert(path);
        }
    }
    out
}
