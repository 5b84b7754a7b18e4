//! `bgslot status` of a router: the router revision; per slot its release, revision and helm
//! status, chart and app version, image, ready/desired and age; where each router Service routes;
//! drift between the router's record and the live Services and slot releases; accepted risks as
//! warnings; and the next command.

use std::fmt;

use anyhow::Result;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::MODE;
use crate::commands::standing::{Heading, Standing};
use crate::context::Ctx;
use crate::duration::human_age;
use crate::error::LockHeld;
use crate::observe::Observation;
use crate::router::live::{self, expected_selector, unrecorded};
use crate::router::observe::RouterSeen;
use crate::router::{AppSettings, Risk, RouterValues};
use crate::vocab::{Role, Slot};

/// The status of the router `seen`.
pub async fn report(
    ctx: &Ctx,
    seen: Observation,
    router: RouterValues,
    lock: Option<LockHeld>,
) -> Result<Report> {
    let rs = RouterSeen::read(ctx, seen, router).await?;
    Ok(Report::new(
        &rs,
        lock,
        ctx.helm.version.to_string(),
        Timestamp::now(),
    ))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// `revision` is the router's.
    #[serde(flatten)]
    pub heading: Heading,
    pub mode: &'static str,
    /// The chart the slots are releases of, and how bgslot sets a version in it.
    pub app: AppStatus,
    pub slots: Vec<SlotStatus>,
    pub services: Vec<ServiceStatus>,
    pub drift: Vec<String>,
    /// Accepted risks, and releases a deploy that did not finish left.
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub standing: Standing,
}

/// The router's app settings as reports spell keys.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AppStatus {
    pub chart: String,
    pub version: String,
    pub tag_key: String,
    pub repository_key: String,
    pub digest_key: String,
    pub replicas_key: String,
    pub service: String,
    pub accept: Vec<Risk>,
}

impl From<&AppSettings> for AppStatus {
    fn from(a: &AppSettings) -> AppStatus {
        AppStatus {
            chart: a.chart.clone(),
            version: a.version.clone(),
            tag_key: a.tag_key.clone(),
            repository_key: a.repository_key.clone(),
            digest_key: a.digest_key.clone(),
            replicas_key: a.replicas_key.clone(),
            service: a.service.clone(),
            accept: a.accept.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlotStatus {
    pub slot: Slot,
    pub role: Role,
    /// The slot release, `RELEASE-SLOT`.
    pub release: String,
    /// What the router records: "" (never deployed), `deployed` or `cleaned`.
    pub state: String,
    /// Its latest helm revision and status (`null` when helm has no such release).
    pub revision: Option<u64>,
    pub status: Option<String>,
    pub chart: String,
    pub app_version: String,
    pub tag: String,
    /// What the routed container runs (what the router recorded when nothing runs).
    pub image: String,
    pub ready: i32,
    pub available: i32,
    pub desired: i32,
    /// Every Deployment of the release rolled out, the routed ones with pods.
    pub fully_available: bool,
    pub age_seconds: Option<i64>,
    pub deployments: Vec<DeploymentStatus>,
    pub accepted: Vec<Risk>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub name: String,
    pub ready: i32,
    pub available: i32,
    pub desired: i32,
    /// The mirrored Service selects its pods.
    pub routed: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    /// `main`, or the `extraServices` key.
    pub service: String,
    pub role: Role,
    /// The slot its annotation says it routes to.
    pub routes_to: Option<Slot>,
    /// The slot whose recorded selector its live selector is, `none` for the empty one, `null`
    /// for a selector the router does not record.
    pub selects: Option<String>,
    pub ready_endpoints: usize,
    pub not_ready_endpoints: usize,
}

impl Report {
    pub fn new(
        rs: &RouterSeen,
        lock: Option<LockHeld>,
        helm_version: String,
        now: Timestamp,
    ) -> Report {
        let seen = &rs.seen;
        let release = rs.release().to_string();
        let latest = seen.latest();
        let production = rs.production();
        let slots = Slot::ALL
            .iter()
            .map(|&slot| {
                let record = rs.record(slot);
                let live = rs.live(slot);
                let routed: Vec<String> =
                    live.routed(record).iter().map(|d| d.name.clone()).collect();
                let totals = live.totals(record);
                SlotStatus {
                    slot,
                    role: Role::of(slot, production),
                    release: live.release.clone(),
                    state: record.state.as_str().to_string(),
                    revision: live.helm.as_ref().map(|h| h.revision),
                    status: live.helm.as_ref().map(|h| h.status.clone()),
                    chart: record.chart.clone(),
                    app_version: record.app_version.clone(),
                    tag: record.tag.clone(),
                    image: live
                        .running_image(record)
                        .unwrap_or_else(|| record.image.clone()),
                    ready: totals.ready,
                    available: totals.available,
                    desired: totals.desired,
                    fully_available: record.is_deployed() && live.available(record),
                    age_seconds: live
                        .created(record)
                        .map(|c| now.duration_since(c).as_secs().max(0)),
                    deployments: live
                        .deployments
                        .iter()
                        .map(|d| DeploymentStatus {
                            name: d.name.clone(),
                            ready: d.state.ready,
                            available: d.state.available,
                            desired: d.state.desired,
                            routed: routed.contains(&d.name),
                        })
                        .collect(),
                    accepted: record.accepted.clone(),
                }
            })
            .collect();
        let services = rs
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                service: s.key.clone(),
                role: s.role,
                routes_to: s.routes_to,
                selects: Slot::ALL
                    .into_iter()
                    .find(|&slot| {
                        rs.record(slot).is_deployed()
                            && s.selector == expected_selector(rs.record(slot))
                    })
                    .map(|slot| slot.to_string())
                    .or_else(|| {
                        (s.selector == expected_selector(&Default::default()))
                            .then(|| "none".to_string())
                    }),
                ready_endpoints: s.ready,
                not_ready_endpoints: s.not_ready,
            })
            .collect();
        let (service_drift, slot_drift) = rs.drift();
        let mut drift: Vec<String> = service_drift.into_iter().chain(slot_drift).collect();
        if seen.helm_major >= 4 {
            drift.extend(live::foreign_selector_owners(&rs.services));
        }
        let mut warnings = Vec::new();
        for slot in Slot::ALL {
            let record = rs.record(slot);
            if record.is_deployed() && !record.accepted.is_empty() {
                let names: Vec<&str> = record.accepted.iter().map(|r| r.as_str()).collect();
                warnings.push(format!(
                    "{slot} ({}) runs with accepted risks: {}",
                    record.release,
                    names.join(", ")
                ));
            }
            if unrecorded(record, rs.live(slot)) {
                warnings.push(format!(
                    "release {} exists in the {slot} slot, but the router does not route to it (a deploy that did not finish?)",
                    rs.live(slot).release
                ));
            }
        }
        Report {
            heading: Heading::of(seen, production, helm_version),
            mode: MODE,
            app: AppStatus::from(&rs.router.app),
            slots,
            services,
            drift,
            warnings,
            standing: Standing::of(seen, lock, || {
                live::next_step(&release, &rs.router, production, &rs.slots, latest)
            }),
        }
    }

    /// The same without ages, which move on by themselves (`--watch` redraws on a change of
    /// anything else).
    pub fn without_ages(mut self) -> Report {
        self.slots.iter_mut().for_each(|s| s.age_seconds = None);
        self
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.heading)?;
        writeln!(
            f,
            "router of {}{} (tag at {})\n",
            self.app.chart,
            if self.app.version.is_empty() {
                String::new()
            } else {
                format!(" {}", self.app.version)
            },
            self.app.tag_key
        )?;
        let mut rows = vec![[
            "SLOT".to_string(),
            "ROLE".into(),
            "RELEASE".into(),
            "REV".into(),
            "STATUS".into(),
            "CHART".into(),
            "IMAGE".into(),
            "READY".into(),
            "AGE".into(),
        ]];
        for s in &self.slots {
            let runs = s.state == "deployed";
            rows.push([
                s.slot.to_string(),
                s.role.as_str().into(),
                s.release.clone(),
                s.revision
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.status.clone().unwrap_or_else(|| "-".into()),
                if runs { s.chart.clone() } else { "-".into() },
                if runs {
                    s.image.clone()
                } else if s.state == "cleaned" {
                    "(cleaned)".into()
                } else {
                    "(empty)".into()
                },
                if runs {
                    format!("{}/{}", s.ready, s.desired)
                } else {
                    "-".into()
                },
                s.age_seconds
                    .filter(|_| runs)
                    .map(|a| human_age(std::time::Duration::from_secs(a.max(0) as u64)))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        f.write_str(&crate::term::table(&rows, "  "))?;
        writeln!(f)?;
        let width = self
            .services
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        for s in &self.services {
            writeln!(
                f,
                "  service {:<width$} -> {:<6} ({} ready endpoints)",
                s.name,
                s.selects.as_deref().unwrap_or("?"),
                s.ready_endpoints
            )?;
        }
        for line in &self.drift {
            write!(f, "\n  drift: {line}")?;
        }
        if !self.drift.is_empty() {
            writeln!(f)?;
        }
        for line in &self.warnings {
            write!(f, "\n  warning: {line}")?;
        }
        if !self.warnings.is_empty() {
            writeln!(f)?;
        }
        write!(f, "{}", self.standing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::live::tests::{live, routed, router};
    use crate::vocab::PerSlot;

    fn seen() -> RouterSeen {
        let mut r = router(true);
        r.slots.green.accepted = vec![Risk::Jobs];
        let obs = crate::fixtures::observation(
            crate::fixtures::values(Slot::Blue, true),
            crate::fixtures::observed(3, 3),
            vec![crate::fixtures::rev(
                2,
                "deployed",
                "bgslot deploy green v2",
                "t",
            )],
        );
        RouterSeen {
            services: vec![
                routed("web", Role::Production, Slot::Blue, &r, 3),
                routed("web-stage", Role::Stage, Slot::Green, &r, 3),
            ],
            slots: PerSlot {
                blue: live(Slot::Blue, "v1", 3),
                green: live(Slot::Green, "v2", 3),
            },
            seen: obs,
            router: r,
        }
    }

    #[test]
    fn status_names_each_slot_release_where_the_services_route_and_the_next_step() {
        let report = Report::new(&seen(), None, "v4.1.4".into(), Timestamp::now());
        assert_eq!(report.standing.next, "bgslot swap web --expect-tag v2");
        assert_eq!(report.services[1].selects.as_deref(), Some("green"));
        assert_eq!(report.slots[1].release, "web-green");
        assert_eq!(
            report.warnings,
            ["green (web-green) runs with accepted risks: jobs"]
        );
        let text = report.to_string();
        assert!(text.contains("router of  (tag at image.tag)"), "{text}");
        assert!(
            text.contains(
                "  green  stage       web-green  1    deployed  myapp-0.1.0  nginx:v2  3/3    -\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  service web-stage -> green  (3 ready endpoints)\n"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            (json["mode"].as_str(), json["slots"][0]["revision"].as_u64()),
            (Some("router"), Some(1))
        );
    }

    #[test]
    fn drift_and_an_empty_stage_show() {
        let mut rs = seen();
        rs.router.slots.green = Default::default();
        rs.services[1] = routed("web-stage", Role::Stage, Slot::Green, &rs.router, 0);
        rs.services[0].selector =
            std::collections::BTreeMap::from([("app".to_string(), "x".to_string())]);
        let report = Report::new(&rs, None, "v3.17.2".into(), Timestamp::now());
        assert_eq!(report.services[1].selects.as_deref(), Some("none"));
        assert_eq!(report.services[0].selects, None);
        assert!(
            report.drift[0].contains("Service web (production) selects {app=x}"),
            "{:?}",
            report.drift
        );
        assert!(
            report.warnings[0].contains(
                "release web-green exists in the green slot, but the router does not route to it"
            ),
            "{:?}",
            report.warnings
        );
        assert!(report.to_string().contains("(empty)"));
    }
}
