//! Everything a command needs to talk to the cluster, resolved once from the settings: the chart
//! it writes with, the kube client and namespace as helm would pick them, the detected helm, the
//! release lock while a mutating command holds it, and the one door every write goes through
//! (which refuses once the lock was taken over, and remembers what was written).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::chart::ChartSource;
use crate::cluster::Cluster;
use crate::error::LockLost;
use crate::events::Events;
use crate::helm::{self, HelmError, HelmRunner, Records, ReleaseRecord, SlotWrite, Target, Write};
use crate::lock::{Holder, LockGuard};
use crate::names::ReleaseName;
use crate::record::RunStamp;
use crate::vocab::Op;

/// What the global flags and the environment say, as plain values.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespace asked for; `None`: the kube context's, else "default".
    pub namespace: Option<String>,
    pub kube_context: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    /// The helm binary asked for; `None`: `helm` on PATH.
    pub helm: Option<PathBuf>,
    /// Show every helm command run.
    pub verbose: bool,
    /// How long waits may take.
    pub timeout: Duration,
    /// Another chart than the embedded one.
    pub chart: Option<String>,
    /// Wait this long for a lock another bgslot holds instead of failing.
    pub wait_for_lock: Option<Duration>,
    /// The run across several clusters this connection is one target of: its ID goes into every
    /// helm description written, and with the target count into the release Lease's holder.
    pub run: Option<RunStamp>,
}

pub struct Ctx {
    pub settings: Settings,
    pub namespace: String,
    pub client: Client,
    pub helm: HelmRunner,
    /// A release's records: read from helm's storage directly, else through helm.
    pub records: Records,
    pub cluster: Cluster,
    /// The chart writes use, resolved before anything else happens.
    pub chart: ChartSource,
    pub events: Arc<dyn Events>,
    lock: tokio::sync::Mutex<Option<LockGuard>>,
    /// The writes made so far, as a person reads them.
    written: Mutex<Vec<String>>,
}

impl Ctx {
    /// Resolves the chart, finds helm, loads the kubeconfig, checks the API server answers, and
    /// detects helm's version. Every input is checked here, before any command can write.
    pub async fn connect(settings: &Settings, events: Arc<dyn Events>) -> Result<Ctx> {
        let chart = ChartSource::resolve(settings.chart.as_deref())?;
        let helm_path = helm::locate(settings.helm.as_deref())?;
        let helm_shown = match &settings.helm {
            Some(explicit) => explicit.display().to_string(),
            None => "helm".to_string(),
        };
        let config = kube_config(settings).await?;
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = kube_client(config).context("creating the Kubernetes client")?;
        let target = Target {
            namespace: namespace.clone(),
            kube_context: settings.kube_context.clone(),
            kubeconfig: settings.kubeconfig.clone(),
        };
        // Independent: ask the API server and helm at the same time.
        let (reachable, helm) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(15), client.apiserver_version()),
            HelmRunner::detect(
                helm_path,
                helm_shown,
                target,
                settings.verbose,
                events.clone()
            )
        );
        match reachable {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Err(anyhow!(err)).with_context(|| {
                    format!("cannot reach the Kubernetes API server at {server}; check --kube-context / KUBECONFIG")
                })
            }
            Err(_) => {
                return Err(anyhow!(
                    "no answer within 15s from the Kubernetes API server at {server}; check --kube-context / KUBECONFIG"
                ))
            }
        }
        let mut helm = helm?;
        helm.run_id = settings.run.as_ref().map(|r| r.id.clone());
        Ok(Ctx {
            settings: settings.clone(),
            cluster: Cluster::new(client.clone(), namespace.clone(), events.clone()),
            records: Records::new(
                client.clone(),
                namespace.clone(),
                helm.clone(),
                events.clone(),
            ),
            namespace,
            client,
            helm,
            chart,
            events,
            lock: tokio::sync::Mutex::new(None),
            written: Mutex::new(Vec::new()),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// Takes the release lock for `op`, held until [`Ctx::unlock`].
    pub async fn lock(&self, release: &ReleaseName, op: Op) -> Result<()> {
        let guard = LockGuard::acquire(
            self.client.clone(),
            &self.namespace,
            release,
            Holder {
                operation: op,
                run: self.settings.run.clone(),
            },
            self.settings.wait_for_lock,
            self.events.clone(),
        )
        .await
        .map_err(|err| self.namespace_hint(err))?;
        *self.lock.lock().await = Some(guard);
        Ok(())
    }

    /// Releases the lock, if held (only if it is still ours).
    pub async fn unlock(&self) {
        let guard = self.lock.lock().await.take();
        if let Some(guard) = guard {
            guard.release().await;
        }
    }

    /// The door before every write: once the release lock was taken over, the command stops
    /// here and says what it had written and what it had not.
    async fn before_write(&self, what: &str) -> Result<()> {
        let held = self.lock.lock().await;
        let Some(guard) = held.as_ref() else {
            return Ok(());
        };
        match guard.verify().await {
            Ok(()) => Ok(()),
            Err(lost) => {
                let (namespace, lease) = guard.lease();
                Err(LockLost {
                    lease,
                    namespace,
                    holder: lost.holder,
                    done: self.written(),
                    not_done: what.to_string(),
                }
                .into())
            }
        }
    }

    /// The writes made so far.
    pub fn written(&self) -> Vec<String> {
        self.written.lock().expect("journal").clone()
    }

    fn wrote(&self, what: String) {
        self.written.lock().expect("journal").push(what);
    }

    /// A helm write of `release` with this command's chart.
    pub async fn write(&self, release: &str, write: &Write) -> Result<()> {
        let reference = self.chart.reference()?;
        self.write_chart(release, &reference, write)
            .await
            .map_err(|err| HelmError::naming_chart(err, &reference, &self.chart.shown()))
    }

    /// A helm write of `release` with the chart `chart` (a path or reference helm takes).
    pub async fn write_chart(&self, release: &str, chart: &str, write: &Write) -> Result<()> {
        let what = format!(
            "`{}` (helm {} of {release})",
            write.description(),
            if write.install { "install" } else { "upgrade" }
        );
        self.before_write(&what).await?;
        self.helm.write(release, chart, write).await?;
        self.wrote(what);
        Ok(())
    }

    /// Installs or upgrades a slot release of a router (`helm upgrade --install`); returns the
    /// release as helm recorded it.
    pub async fn write_slot(&self, release: &str, write: &SlotWrite) -> Result<ReleaseRecord> {
        let what = format!(
            "`{}` (helm upgrade --install of {release})",
            write.description()
        );
        self.before_write(&what).await?;
        let written = self.helm.write_slot(release, write).await?;
        self.wrote(what);
        Ok(written)
    }

    /// Uninstalls a slot release of a router, keeping its helm history.
    pub async fn uninstall(&self, release: &str, description: &str) -> Result<()> {
        let what = format!("`{description}` (helm uninstall --keep-history of {release})");
        self.before_write(&what).await?;
        self.helm
            .uninstall(release, description, self.timeout())
            .await?;
        self.wrote(what);
        Ok(())
    }

    /// `helm rollback REL REV`.
    pub async fn rollback(&self, release: &str, revision: u64) -> Result<()> {
        let what = format!("`helm rollback {release} {revision}`");
        self.before_write(&what).await?;
        self.helm.rollback(release, revision).await?;
        self.wrote(what);
        Ok(())
    }

    /// Sizes a Deployment through the scale subresource.
    pub async fn scale(&self, deployment: &str, replicas: u64) -> Result<()> {
        let what = format!("scaling Deployment {deployment} to {replicas} replicas");
        self.before_write(&what).await?;
        self.cluster.scale_deployment(deployment, replicas).await?;
        self.wrote(what);
        Ok(())
    }

    /// Suspends a CronJob, or lets it run again.
    pub async fn suspend(&self, cron_job: &str, suspend: bool) -> Result<()> {
        let what = if suspend {
            format!("suspending CronJob {cron_job}")
        } else {
            format!("resuming CronJob {cron_job}")
        };
        self.before_write(&what).await?;
        self.cluster.suspend_cron_job(cron_job, suspend).await?;
        self.wrote(what);
        Ok(())
    }

    /// Deletes a Job and waits until it is gone.
    pub async fn delete_job(&self, job: &str) -> Result<()> {
        let what = format!("deleting Job {job}");
        self.before_write(&what).await?;
        self.cluster.delete_job(job, self.timeout()).await?;
        self.wrote(what);
        Ok(())
    }

    fn namespace_hint(&self, err: anyhow::Error) -> anyhow::Error {
        let missing = err.chain().any(|c| {
            matches!(c.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 404 && s.message.contains("namespaces"))
        });
        if missing {
            err.context(format!(
                "namespace {} does not exist: create it or pass the right -n/--namespace",
                self.namespace
            ))
        } else {
            err
        }
    }
}

/// The API client, built as kube builds it (timeouts, retries of 429/503/504, authentication,
/// impersonation headers) except for TCP_NODELAY: a request written right after the TLS
/// handshake's last record would otherwise wait for the server's delayed ACK (40 ms on Linux),
/// one such stall per new connection, and a command's reads open several at once.
pub fn kube_client(config: Config) -> Result<Client> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::retry::RetryPolicy;
    use kube::client::ConfigExt;
    use tower::retry::RetryLayer;
    use tower::ServiceBuilder;

    if config.proxy_url.is_some() {
        // kube's own client says which proxy protocols it supports.
        return Ok(Client::try_from(config)?);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace))
}

async fn kube_config(settings: &Settings) -> Result<Config> {
    let options = KubeConfigOptions {
        context: settings.kube_context.clone(),
        cluster: None,
        user: None,
    };
    if let Some(path) = &settings.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        return Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()));
    }
    if let Some(name) = &settings.kube_context {
        return Config::from_kubeconfig(&options).await.with_context(|| {
            format!("kube context '{name}' could not be loaded from the kubeconfig ($KUBECONFIG or ~/.kube/config)")
        });
    }
    Config::infer()
        .await
        .context("no Kubernetes configuration found: set KUBECONFIG, pass --kubeconfig, or run inside a cluster")
}
