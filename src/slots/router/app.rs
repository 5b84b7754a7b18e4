//! How the router deploys the team's chart, as its first `deploy --app-chart` recorded it and
//! later deploys change it: the chart and its version, the value paths bgslot sets, the Services
//! it routes, the workers that follow production, and the risks accepted by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::workers::Handover;

/// A risk of running a chart twice side by side, which deploy refuses unless it is accepted by
/// name (`--accept NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    /// Cluster-scoped objects (a ClusterRole, a CRD, a Namespace...): both slots render one.
    ClusterScoped,
    /// StatefulSets and PersistentVolumeClaims: state each slot would keep apart, or share.
    Stateful,
    /// CronJobs and Jobs that are not hooks: each slot would run them.
    Jobs,
    /// DaemonSets: one pod per node per slot.
    Daemonset,
    /// pre-delete and post-delete hooks: they run when `clean` uninstalls the old slot.
    DeleteHooks,
    /// Services of type LoadBalancer: each slot gets its own public address.
    LoadBalancer,
    /// Hook Jobs the upgrade path of the chart runs and a slot's install does not (a migration
    /// marked only `pre-upgrade`).
    SkippedHooks,
}

impl Risk {
    pub const ALL: [Risk; 7] = [
        Risk::ClusterScoped,
        Risk::Stateful,
        Risk::Jobs,
        Risk::Daemonset,
        Risk::DeleteHooks,
        Risk::LoadBalancer,
        Risk::SkippedHooks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::ClusterScoped => "cluster-scoped",
            Risk::Stateful => "stateful",
            Risk::Jobs => "jobs",
            Risk::Daemonset => "daemonset",
            Risk::DeleteHooks => "delete-hooks",
            Risk::LoadBalancer => "load-balancer",
            Risk::SkippedHooks => "skipped-hooks",
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Risk {
    type Err = String;

    fn from_str(text: &str) -> Result<Risk, String> {
        Risk::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "'{text}' is not a risk bgslot knows: use one of {}",
                    Risk::ALL.map(Risk::as_str).join(", ")
                )
            })
    }
}

impl Serialize for Risk {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Risk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Risk, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A Service of the slot release routed as a pair of its own (`REL-ROUTE`, `REL-ROUTE-stage`),
/// beside the main one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSetting {
    /// Its name, `{release}` standing for the slot release.
    pub service: String,
    /// The route's name: `REL-ROUTE` names its production Service.
    pub route: String,
}

/// The chart the slots are releases of and how bgslot sets a version in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppSettings {
    /// A local chart's absolute path, or `repo/name` or `oci://...` as given to `--app-chart`.
    pub chart: String,
    /// `--app-chart-version`, else the version the first deploy of a reference resolved; empty
    /// for a local chart.
    pub version: String,
    pub tag_key: String,
    pub repository_key: String,
    pub digest_key: String,
    /// Where the chart takes its replica count; empty: bgslot scales the Deployments itself.
    pub replicas_key: String,
    /// The Service of the main route, `{release}` standing for the slot release; empty: found.
    pub service: String,
    /// Further Services, each routed as a pair of its own.
    pub routes: Vec<RouteSetting>,
    /// The Deployments of the slot release that pull work (`{release}` as above): they run in
    /// production only.
    pub workers: Vec<String>,
    /// The pods a worker runs in the stage slot.
    pub worker_stage_replicas: u64,
    /// How workers change hands at a swap.
    pub handover: Handover,
    pub accept: Vec<Risk>,
}

impl Default for AppSettings {
    fn default() -> AppSettings {
        AppSettings {
            chart: String::new(),
            version: String::new(),
            tag_key: "image.tag".into(),
            repository_key: String::new(),
            digest_key: String::new(),
            replicas_key: "replicaCount".into(),
            service: String::new(),
            routes: Vec::new(),
            workers: Vec::new(),
            worker_stage_replicas: 0,
            handover: Handover::Overlap,
            accept: Vec::new(),
        }
    }
}

/// `{release}` in a name pattern, as the slot release `release`.
pub fn named_in(pattern: &str, release: &str) -> String {
    pattern.replace("{release}", release)
}

/// A route's name from its Service's pattern: what follows `{release}-` (`{release}-stream` is
/// `stream`), else the whole name.
pub fn route_of(pattern: &str) -> String {
    pattern
        .strip_prefix("{release}-")
        .unwrap_or(pattern)
        .replace("{release}", "")
        .trim_matches('-')
        .to_string()
}

impl AppSettings {
    /// The chart is a directory (recorded absolute), not `repo/name` or `oci://...`: it has no
    /// version to pin.
    pub fn is_local(&self) -> bool {
        self.chart.is_empty()
            || self.chart.starts_with('/')
            || self.chart.starts_with('.')
            || std::path::Path::new(&self.chart).exists()
    }

    /// The main route's Service in the slot release `release`, when one is set.
    pub fn service_in(&self, release: &str) -> Option<String> {
        (!self.service.is_empty()).then(|| named_in(&self.service, release))
    }

    /// The chart as a person reads it: `./web` or `bitnami/nginx 18.1.0`.
    pub fn chart_ref(&self) -> String {
        if self.version.is_empty() {
            self.chart.clone()
        } else {
            format!("{} {}", self.chart, self.version)
        }
    }
}

/// One `--service NAME[=ROUTE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceArg {
    pub service: String,
    pub route: Option<String>,
}

/// What a deploy's flags say of the app settings: each one given replaces what the router
/// recorded (`None`: keep it); the router's own values (`--router-values`, `--router-set`) go
/// with its write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppChanges {
    pub chart: Option<String>,
    pub version: Option<String>,
    pub tag_key: Option<String>,
    pub repository_key: Option<String>,
    pub digest_key: Option<String>,
    pub replicas_key: Option<String>,
    /// The Services to route, the main one first.
    pub services: Option<Vec<ServiceArg>>,
    pub workers: Option<Vec<String>>,
    pub worker_stage_replicas: Option<u64>,
    pub handover: Option<Handover>,
    /// The risks accepted from now on (empty: none again).
    pub accept: Option<Vec<Risk>>,
    pub router_values: Vec<std::path::PathBuf>,
    pub router_set: Vec<crate::names::SetArg>,
    /// Start the slot release from the chart's defaults and this deploy's values alone.
    pub reset_values: bool,
}

impl AppChanges {
    /// Whether any flag of a router was given.
    pub fn any(&self) -> bool {
        self != &AppChanges::default()
    }

    /// The settings a deploy uses: these changes over what the router recorded (or the defaults).
    pub fn settings(&self, recorded: Option<&AppSettings>) -> AppSettings {
        let mut app = recorded.cloned().unwrap_or_default();
        if let Some(chart) = &self.chart {
            if chart != &app.chart {
                // Another chart: a version recorded for the old one does not apply, nor do the
                // risks its renders had (accepted again by name if the new one has them).
                if self.version.is_none() {
                    app.version = String::new();
                }
                app.accept = Vec::new();
            }
            app.chart = chart.clone();
        }
        let set = |field: &mut String, change: &Option<String>| {
            if let Some(value) = change {
                *field = value.clone();
            }
        };
        set(&mut app.version, &self.version);
        set(&mut app.tag_key, &self.tag_key);
        set(&mut app.repository_key, &self.repository_key);
        set(&mut app.digest_key, &self.digest_key);
        set(&mut app.replicas_key, &self.replicas_key);
        if let Some(services) = &self.services {
            app.service = services
                .first()
                .map(|s| s.service.clone())
                .unwrap_or_default();
            app.routes = services
                .iter()
                .skip(1)
                .map(|s| RouteSetting {
                    service: s.service.clone(),
                    route: s.route.clone().unwrap_or_else(|| route_of(&s.service)),
                })
                .collect();
        }
        if let Some(workers) = &self.workers {
            app.workers = workers.clone();
        }
        if let Some(n) = self.worker_stage_replicas {
            app.worker_stage_replicas = n;
        }
        if let Some(handover) = self.handover {
            app.handover = handover;
        }
        if let Some(accept) = &self.accept {
            let mut accept = accept.clone();
            accept.sort();
            accept.dedup();
            app.accept = accept;
        }
        app
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risks_parse_by_name_and_say_which_exist() {
        for risk in Risk::ALL {
            assert_eq!(risk.as_str().parse::<Risk>(), Ok(risk));
        }
        let err = "pvc".parse::<Risk>().unwrap_err();
        assert!(
            err.contains("cluster-scoped, stateful, jobs, daemonset, delete-hooks, load-balancer, skipped-hooks"),
            "{err}"
        );
    }

    #[test]
    fn services_after_the_first_are_routes_named_after_them() {
        let changes = AppChanges {
            services: Some(vec![
                ServiceArg {
                    service: "{release}-web".into(),
                    route: None,
                },
                ServiceArg {
                    service: "{release}-streaming".into(),
                    route: None,
                },
                ServiceArg {
                    service: "{release}-admin-api".into(),
                    route: Some("admin".into()),
                },
            ]),
            workers: Some(vec!["{release}-sidekiq".into()]),
            handover: Some(Handover::StopFirst),
            ..AppChanges::default()
        };
        let app = changes.settings(None);
        assert_eq!(app.service, "{release}-web");
        assert_eq!(
            app.routes,
            [
                RouteSetting {
                    service: "{release}-streaming".into(),
                    route: "streaming".into()
                },
                RouteSetting {
                    service: "{release}-admin-api".into(),
                    route: "admin".into()
                },
            ]
        );
        assert_eq!((app.workers.len(), app.handover), (1, Handover::StopFirst));
        assert_eq!(
            named_in("{release}-sidekiq", "web-green"),
            "web-green-sidekiq"
        );
        assert_eq!(route_of("metrics"), "metrics");
        // What a flag does not name stays as recorded.
        assert_eq!(AppChanges::default().settings(Some(&app)), app);
    }

    #[test]
    fn flags_change_what_the_router_recorded_and_nothing_else() {
        let recorded = AppSettings {
            chart: "bitnami/nginx".into(),
            version: "18.1.0".into(),
            digest_key: "image.digest".into(),
            accept: vec![Risk::Jobs],
            ..AppSettings::default()
        };
        assert_eq!(AppChanges::default().settings(Some(&recorded)), recorded);
        let upgrade = AppChanges {
            version: Some("18.2.0".into()),
            accept: Some(vec![Risk::Stateful, Risk::Jobs, Risk::Stateful]),
            ..AppChanges::default()
        };
        let app = upgrade.settings(Some(&recorded));
        assert_eq!(
            (app.chart.as_str(), app.version.as_str()),
            ("bitnami/nginx", "18.2.0")
        );
        assert_eq!(app.accept, [Risk::Stateful, Risk::Jobs]);
        let other = AppChanges {
            chart: Some("./charts/web".into()),
            accept: Some(Vec::new()),
            ..AppChanges::default()
        };
        let app = other.settings(Some(&recorded));
        assert_eq!(
            (app.chart.as_str(), app.version.as_str()),
            ("./charts/web", "")
        );
        assert!(app.accept.is_empty());
        assert_eq!(app.digest_key, "image.digest");
        let fresh = AppChanges {
            chart: Some("./myapp".into()),
            ..AppChanges::default()
        }
        .settings(None);
        assert_eq!(
            (fresh.tag_key.as_str(), fresh.replicas_key.as_str()),
            ("image.tag", "replicaCount")
        );
        assert!(other.any() && !AppChanges::default().any());
    }
}
