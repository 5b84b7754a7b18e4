//! The change feed `status --watch` redraws on: one tick whenever anything `status` shows may have
//! changed (the release's Services, endpoints, pods, Deployments, migration Jobs, or its helm
//! records: a new revision).

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;

use super::services::changes_of;
use super::ticks;
use crate::cluster::labels::{helm_records_selector, release_selector};
use crate::cluster::Cluster;

pub fn release_changes(
    cluster: &Cluster,
    release: &str,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let of_release = watcher::Config::default().labels(&release_selector(release));
    // helm keeps a release's revisions in Secrets labelled owner=helm,name=RELEASE.
    let helm_records = watcher::Config::default().labels(&helm_records_selector(release));
    futures::stream::select_all([
        changes_of(cluster, release).boxed(),
        ticks(cluster.api::<Deployment>(), of_release.clone()),
        ticks(cluster.api::<Job>(), of_release),
        ticks(cluster.api::<Secret>(), helm_records),
    ])
}
