//! Everything a command needs to talk to the cluster, resolved once from flags and environment:
//! the kube client and namespace as helm would pick them, and the detected helm.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::GlobalArgs;
use crate::cluster::Cluster;
use crate::helm::{self, HelmRunner, Target};

pub struct Ctx {
    pub global: GlobalArgs,
    pub namespace: String,
    pub client: Client,
    pub helm: HelmRunner,
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
            namespace,
            client,
            helm,
        })
    }

    pub fn cluster(&self) -> Cluster {
        Cluster {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
        }
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
