//! The change feed `status --watch` redraws on: one tick whenever anything `status` shows may have
//! changed (the release's Services, endpoints, pods, Deployments, migration Jobs, or its helm
//! records: a new revision).

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use super::services::changes_of;
use super::ticks;
use crate::cluster::labels::{release_selector, slot_pods_selector};
use crate::cluster::Cluster;
use crate::cluster::PodSlots;
use crate::helm::storage::{self, Driver, Storage};

pub fn release_changes(
    cluster: &Cluster,
    release: &str,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let of_release = watcher::Config::default().labels(&release_selector(release));
    futures::stream::select_all([
        changes_of(
            cluster,
            release,
            &PodSlots::Labelled(slot_pods_selector(release)),
        )
        .boxed(),
        ticks(cluster.api::<Deployment>(), of_release.clone()),
        ticks(cluster.api::<Job>(), of_release),
        record_changes(cluster, &storage::selector(release)),
    ])
}

/// A tick at every change of the helm records `selector` picks, where `HELM_DRIVER` keeps them
/// (Secrets or ConfigMaps, as the direct read finds them), watched as metadata only: a record's
/// payload can be near 1 MiB and a tick needs none of it. With a driver whose records are not
/// in the API (sql, memory), nothing to watch.
pub fn record_changes(cluster: &Cluster, selector: &str) -> BoxStream<'static, ()> {
    let config = watcher::Config::default().labels(selector);
    match Storage::from_env() {
        Ok(Storage {
            driver: Driver::Secrets,
        }) => ticks(cluster.api::<PartialObjectMeta<Secret>>(), config),
        Ok(Storage {
            driver: Driver::ConfigMaps,
        }) => ticks(cluster.api::<PartialObjectMeta<ConfigMap>>(), config),
        Err(_) => futures::stream::pending().boxed(),
    }
}
