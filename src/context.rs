//! Everything a command needs to talk to the cluster, resolved once from flags and environment:
//! the kube client and namespace as helm would pick them, the detected helm, and the release lock
//! a mutating command holds while it runs.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::GlobalArgs;
use crate::cluster::Cluster;
use crate::error::Operation;
use crate::helm::{self, HelmRunner, Target};
use crate::lock::{Holder, LockGuard};
use crate::names::ReleaseName;
use crate::signals;

pub struct Ctx {
    pub global: GlobalArgs,
    pub namespace: String,
    pub client: Client,
    pub helm: HelmRunner,
    cluster: Cluster,
}

impl Ctx {
    /// Finds helm, loads the kubeconfig, checks the API server answers, and detects helm's version.
    pub async fn connect(global: &GlobalArgs) -> Result<Ctx> {
        let helm_path = helm::locate(global.helm.as_deref())?;
        let config = kube_config(global).await?;
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).context("creating the Kubernetes client")?;
        let target = Target {
            namespace: namespace.clone(),
            kube_context: global.kube_context.clone(),
            kubeconfig: global.kubeconfig.clone(),
        };
        // Independent: ask the API server and helm at the same time.
        let (reachable, helm) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(15), client.apiserver_version()),
            HelmRunner::detect(helm_path, target, global.verbose)
        );
        match reachable {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Err(anyhow!(err)).with_context(|| format!("cannot reach the Kubernetes API server at {server}; check --kube-context / KUBECONFIG"))
            }
            Err(_) => return Err(anyhow!("no answer within 15s from the Kubernetes API server at {server}; check --kube-context / KUBECONFIG")),
        }
        let helm = helm?;
        Ok(Ctx {
            global: global.clone(),
            cluster: Cluster::new(client.clone(), namespace.clone()),
            namespace,
            client,
            helm,
        })
    }

    pub fn cluster(&self) -> Cluster {
        self.cluster.clone()
    }

    /// The outermost context of a command's error: which command, release and namespace.
    pub fn operation(&self, op: &'static str, release: &ReleaseName) -> Operation {
        Operation {
            op,
            release: release.to_string(),
            namespace: self.namespace.clone(),
        }
    }

    /// Takes the release lock for a mutating command, held until [`HeldLock::finish`]. A dry run
    /// only plans, so it takes no lock (and leaves no trace on the cluster).
    pub async fn lock(
        &self,
        release: &ReleaseName,
        operation: &'static str,
        dry_run: bool,
    ) -> Result<HeldLock<'_>> {
        let guard = if dry_run {
            None
        } else {
            let holder = Holder {
                operation: operation.to_string(),
            };
            let guard = LockGuard::acquire(
                self.client.clone(),
                &self.namespace,
                release,
                holder,
                self.global.wait_for_lock,
            )
            .await
            .map_err(|err| self.namespace_hint(err))?;
            Some(guard)
        };
        Ok(HeldLock {
            ctx: self,
            guard,
            release: release.clone(),
            operation,
        })
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

/// The release lock as a command holds it.
pub struct HeldLock<'a> {
    ctx: &'a Ctx,
    guard: Option<LockGuard>,
    release: ReleaseName,
    operation: &'static str,
}

impl HeldLock<'_> {
    /// Releases the lock after the command's `result`. When a signal stopped the command, says
    /// what state helm left the release in, keeping the error's kind (a refusal stays a refusal).
    pub async fn finish<T>(self, result: Result<T>) -> Result<T> {
        if let Some(guard) = self.guard {
            guard.release().await;
        }
        let Some(sig) = signals::received().filter(|_| result.is_err()) else {
            return result;
        };
        let release = &self.release;
        let state = match self.ctx.helm.status(release).await {
            Ok(Some(status)) => format!("revision {} is {}", status.version, status.info.status),
            Ok(None) => "the release does not exist".into(),
            Err(e) => format!("its state could not be read: {e}"),
        };
        result.map_err(|err| {
            err.context(format!(
                "{} of {release} stopped by {}; release {release} was left as: {state}",
                self.operation,
                signals::name(sig)
            ))
        })
    }
}

async fn kube_config(global: &GlobalArgs) -> Result<Config> {
    let options = KubeConfigOptions {
        context: global.kube_context.clone(),
        cluster: None,
        user: None,
    };
    if let Some(path) = &global.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        return Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()));
    }
    if let Some(name) = &global.kube_context {
        return Config::from_kubeconfig(&options).await.with_context(|| {
            format!("kube context '{name}' could not be loaded from the kubeconfig ($KUBECONFIG or ~/.kube/config)")
        });
    }
    Config::infer().await.context("no Kubernetes configuration found: set KUBECONFIG, pass --kubeconfig, or run inside a cluster")
}
