//! A release's records as bgslot reads them: directly from helm's own storage through the
//! Kubernetes API (`storage`) where helm keeps them there, else with the helm CLI (`helm status`,
//! `helm history`), saying once at `-v` why. Read only: helm remains the only writer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use kube::Client;
use serde_json::Value;

use super::argv;
use super::json::Revision;
use super::runner::HelmRunner;
use super::storage::{HelmRecord, ReadError, Storage, Unreadable};
use crate::events::{Event, Events};

/// The latest revision of a release and what a command needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// As `helm history` lists it (`chart` is empty when read through `helm status`, which does
    /// not name it).
    pub revision: Revision,
    /// The values the user gave (`{}` when none).
    pub user_values: Value,
    /// The chart's values as the record stores them (what helm coalesces the user values over
    /// for `helm get values --all`); `None` when read through the CLI.
    pub defaults: Option<Value>,
}

/// Reads the records of releases in one namespace.
#[derive(Clone)]
pub struct Records {
    client: Client,
    namespace: String,
    storage: Result<Storage, Arc<Unreadable>>,
    helm: HelmRunner,
    events: Arc<dyn Events>,
    fell_back: Arc<AtomicBool>,
}

impl Records {
    /// Reads through the driver `HELM_DRIVER` names (helm passes its environment to plugins, so
    /// this is the user's helm's driver).
    pub fn new(
        client: Client,
        namespace: String,
        helm: HelmRunner,
        events: Arc<dyn Events>,
    ) -> Records {
        Records {
            client,
            namespace,
            storage: Storage::from_env().map_err(Arc::new),
            helm,
            events,
            fell_back: Default::default(),
        }
    }

    /// The storage to read directly, unless a read already found it unreadable.
    fn storage(&self) -> Option<Storage> {
        match &self.storage {
            Ok(storage) if !self.fell_back.load(Ordering::Relaxed) => Some(*storage),
            Ok(_) => None,
            Err(why) => {
                self.note(why);
                None
            }
        }
    }

    /// From now on reads go through helm; said once, at `-v`.
    fn note(&self, why: &Unreadable) {
        if !self.fell_back.swap(true, Ordering::Relaxed) && self.helm.verbose {
            self.events.event(Event::Command(&format!(
                "reading release records with helm instead: {why}"
            )));
        }
    }

    /// `Err` for a real error; `Ok` to go on with helm (noted).
    fn fall_back(&self, err: ReadError) -> Result<()> {
        match err.fallback_reason() {
            Some(why) => {
                self.note(why);
                Ok(())
            }
            None => Err(err.into()),
        }
    }

    /// The latest revision of `release` (also `uninstalled`, as `helm status` shows it when the
    /// history was kept); `None` when there is no such release.
    pub async fn latest(&self, release: &str) -> Result<Option<Latest>> {
        if let Some(storage) = self.storage() {
            match storage.latest(&self.client, &self.namespace, release).await {
                Ok(record) => {
                    return Ok(record.map(|r| Latest {
                        revision: r.revision(),
                        user_values: r.user_values(),
                        defaults: r.chart_values().cloned(),
                    }))
                }
                Err(err) => self.fall_back(err)?,
            }
        }
        Ok(self.helm.status(release).await?.map(|status| Latest {
            revision: status.revision(String::new()),
            user_values: status
                .config
                .clone()
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| Value::Object(Default::default())),
            defaults: None,
        }))
    }

    /// The latest revision of each of `releases` that exists, from its records' labels alone (no
    /// payload); through `helm history`, one per release, where the records cannot be read.
    pub async fn latest_labels(&self, releases: &[&str]) -> Result<BTreeMap<String, HelmRecord>> {
        if let Some(storage) = self.storage() {
            match storage
                .latest_labels(&self.client, &self.namespace, releases)
                .await
            {
                Ok(found) => return Ok(found),
                Err(err) => self.fall_back(err)?,
            }
        }
        let mut found = BTreeMap::new();
        for release in releases {
            let history = self.helm.history(release).await?.unwrap_or_default();
            if let Some(record) = HelmRecord::of_history(&history) {
                found.insert(release.to_string(), record);
            }
        }
        Ok(found)
    }

    /// The history of `release`, oldest first (at most the newest [`argv::HISTORY_MAX`]); `None` when
    /// there is no such release.
    pub async fn history(&self, release: &str) -> Result<Option<Vec<Revision>>> {
        if let Some(storage) = self.storage() {
            match storage
                .history(&self.client, &self.namespace, release, argv::HISTORY_MAX)
                .await
            {
                Ok(history) => return Ok(Some(history).filter(|h| !h.is_empty())),
                Err(err) => self.fall_back(err)?,
            }
        }
        Ok(self.helm.history(release).await?.filter(|h| !h.is_empty()))
    }
}
