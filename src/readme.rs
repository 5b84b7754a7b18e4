//! The README's examples, pinned. Each report and error text the README quotes from a run of
//! `scripts/readme-examples` is rebuilt here from the same release (the run's values, slots,
//! revisions and times) by the code that prints it, and must appear in the README verbatim: a
//! change to a report or a refusal fails here until the README shows it (run the script again
//! and paste its output), and so does an edit to a pinned example. After a new run, the run's
//! own figures here (times, revisions, a pid) follow it.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::chart::{embedded_id, ChartSource};
use crate::cluster::{CronJobState, Observed, SlotState, WorkerState};
use crate::commands::clean::{self, CleanReport, CleanRequest};
use crate::commands::history::{HistoryEntry, HistoryReport};
use crate::commands::recover::RecoverReport;
use crate::commands::release::{ReleaseReport, Step};
use crate::commands::status::StatusReport;
use crate::commands::swap::report::{CronJobMove, Promotion, WorkerCount, WorkerMove};
use crate::commands::swap::{self, SwapKind, SwapReport, SwapRequest};
use crate::commands::version::VersionReport;
use crate::commands::{Header, Report};
use crate::error::{LockHeld, LockLost, Operation};
use crate::fixtures::{observation, ready, rev, service};
use crate::helm::Revision;
use crate::observe::Observation;
use crate::output::ErrorReport;
use crate::record::Recorded;
use crate::slots::bundled;
use crate::vocab::{Mode, Op, PerSlot, Role, Slot};
use crate::workers::{Handover, Worker, Workloads};

const README: &str = include_str!("../README.md");

/// Fails unless the README quotes `text` whole.
#[track_caller]
fn quoted(text: &str) {
    assert!(
        README.contains(text),
        "the README does not quote this text (run scripts/readme-examples and paste its output):\n{text}"
    );
}

/// A command line and what it printed, as the README shows them: `command` may go on with the
/// progress lines before the report.
#[track_caller]
fn quoted_run(command: &str, report: &dyn Report) {
    quoted(&format!("$ bgslot {command}\n{report}"));
}

/// An error as the README shows it: the text bgslot prints, then the exit code.
#[track_caller]
fn quoted_error(err: anyhow::Error) {
    let report = ErrorReport::new(&err);
    quoted(&format!("{report}(exit {})\n", report.exit_code));
}

fn failed(op: Op, release: &str, err: impl Into<anyhow::Error>) -> anyhow::Error {
    err.into().context(Operation {
        op,
        release: release.into(),
        namespace: "shop".into(),
    })
}

fn at(time: &str) -> Timestamp {
    time.parse().unwrap()
}

fn revision(n: u64, status: &str, recorded: Recorded, updated: &str) -> Revision {
    Revision {
        chart: embedded_id(),
        ..rev(n, status, &recorded.to_string(), updated)
    }
}

/// The release `web` (or `shop`) of the run, in namespace `shop`: ghcr.io/acme/NAME, production in
/// `production` running `prod_tag`, the other slot running `stage_tag` (`None`: disabled), `pods`
/// pods each.
fn release(
    name: &str,
    production: Slot,
    prod_tag: &str,
    stage_tag: Option<&str>,
    pods: i32,
    history: Vec<Revision>,
) -> Observation {
    let mut values = crate::fixtures::values(production, true);
    for slot in Slot::ALL {
        let v = values.slots.get_mut(slot);
        v.repository = format!("ghcr.io/acme/{name}");
        v.replicas = Some(pods as u64);
        v.tag = match slot == production {
            true => prod_tag.into(),
            false => stage_tag.unwrap_or("v0").into(),
        };
        v.enabled = slot == production || stage_tag.is_some();
    }
    let stage = production.other();
    let cluster = Observed {
        slots: PerSlot::new(|slot| match slot == stage && stage_tag.is_none() {
            true => SlotState::default(),
            false => ready(pods),
        }),
        services: vec![
            service(name, Role::Production, production, pods as usize),
            service(
                &format!("{name}-stage"),
                Role::Stage,
                stage,
                if stage_tag.is_some() {
                    pods as usize
                } else {
                    0
                },
            ),
        ],
        ..Observed::default()
    };
    let mut seen = observation(values, cluster, history);
    seen.release = name.parse().unwrap();
    seen
}

fn header(op: Op, release: &str, revision: u64, production: Slot, next: &str) -> Header {
    Header::new(op, release, "shop")
        .revision(revision)
        .production(production)
        .next(next)
}

fn moved(
    op: Op,
    release: &str,
    revision: u64,
    from: Slot,
    to: Slot,
    tags: (&str, &str),
    pods: usize,
) -> SwapReport {
    SwapReport {
        header: header(
            op,
            release,
            revision,
            to,
            &format!("bgslot clean {release}   (or: bgslot rollback {release})"),
        ),
        mode: Mode::Bundled,
        from,
        to,
        image: format!("ghcr.io/acme/{release}:{}", tags.1),
        previous_image: format!("ghcr.io/acme/{release}:{}", tags.0),
        service: release.into(),
        ready_endpoints: pods,
        url: format!("http://{release}.shop.svc.cluster.local:80/"),
        promoted: None,
        workers: vec![],
        cron_jobs: vec![],
        slot_release: None,
        previous_release: None,
    }
}

/// v6 in blue (production), v7 staged in green: the release after its first deploy.
fn staged_v7() -> Observation {
    let history = vec![
        revision(
            1,
            "superseded",
            Recorded::Install {
                slot: Slot::Blue,
                version: "v6".into(),
            },
            "2026-12-06T18:17:13Z",
        ),
        revision(
            2,
            "deployed",
            Recorded::Deploy {
                slot: Slot::Green,
                version: "v7".into(),
            },
            "2026-12-06T18:17:14Z",
        ),
    ];
    release("web", Slot::Blue, "v6", Some("v7"), 3, history)
}

fn request(kind: SwapKind, expect_tag: Option<&str>) -> SwapRequest {
    SwapRequest {
        kind,
        expect_tag: expect_tag.map(str::to_string),
        force: false,
    }
}

#[test]
fn status() {
    let mut seen = staged_v7();
    let now = at("2026-12-06T18:17:16Z");
    seen.cluster.slots.blue.created = Some(at("2026-12-06T18:17:13Z"));
    seen.cluster.slots.green.created = Some(at("2026-12-06T18:17:15Z"));
    quoted_run(
        "status web",
        &StatusReport::new(&bundled::seen(seen), None, "v4.1.4".into(), now),
    );
}

#[test]
fn swap_and_its_refusal() {
    quoted_run(
        "swap web --expect-tag v7\nswap web: production blue -> green",
        &moved(Op::Swap, "web", 3, Slot::Blue, Slot::Green, ("v6", "v7"), 3),
    );
    let chart = ChartSource::resolve(None).unwrap();
    // Swapped: green serves v7, blue still runs v6.
    let history = vec![revision(
        3,
        "deployed",
        Recorded::Swap {
            from: Slot::Blue,
            to: Slot::Green,
        },
        "2026-12-06T18:17:15Z",
    )];
    let seen = release("web", Slot::Green, "v7", Some("v6"), 3, history);
    let refusal = swap::decide(
        &bundled::seen(seen),
        &request(SwapKind::Swap, Some("v9")),
        &chart,
    )
    .unwrap_err();
    quoted(&format!(
        "$ bgslot swap web --expect-tag v9\n{}",
        ErrorReport::new(&failed(Op::Swap, "web", refusal))
    ));
}

#[test]
fn rollback_and_after_clean() {
    quoted_run(
        "rollback web\nrollback web: production green -> blue",
        &moved(
            Op::Rollback,
            "web",
            4,
            Slot::Green,
            Slot::Blue,
            ("v7", "v6"),
            3,
        ),
    );
    let history = vec![
        revision(
            2,
            "superseded",
            Recorded::Deploy {
                slot: Slot::Green,
                version: "v7".into(),
            },
            "2026-12-06T18:17:14Z",
        ),
        revision(
            3,
            "superseded",
            Recorded::Swap {
                from: Slot::Blue,
                to: Slot::Green,
            },
            "2026-12-06T18:17:15Z",
        ),
        revision(
            4,
            "superseded",
            Recorded::Rollback {
                from: Slot::Green,
                to: Slot::Blue,
            },
            "2026-12-06T18:17:16Z",
        ),
        revision(
            5,
            "superseded",
            Recorded::Swap {
                from: Slot::Blue,
                to: Slot::Green,
            },
            "2026-12-06T18:17:16Z",
        ),
        revision(
            6,
            "deployed",
            Recorded::Clean { slot: Slot::Blue },
            "2026-12-06T18:17:19Z",
        ),
    ];
    let cleaned = release("web", Slot::Green, "v7", None, 3, history);
    let chart = ChartSource::resolve(None).unwrap();
    let refusal = swap::decide(
        &bundled::seen(cleaned),
        &request(SwapKind::Rollback, None),
        &chart,
    )
    .unwrap_err();
    quoted(&format!(
        "$ bgslot rollback web          # after clean\n{}",
        ErrorReport::new(&failed(Op::Rollback, "web", refusal))
    ));
}

#[test]
fn clean_waits_for_the_drain_delay_then_cleans() {
    let history = vec![
        revision(
            4,
            "superseded",
            Recorded::Rollback {
                from: Slot::Green,
                to: Slot::Blue,
            },
            "2026-12-06T18:17:16Z",
        ),
        revision(
            5,
            "deployed",
            Recorded::Swap {
                from: Slot::Blue,
                to: Slot::Green,
            },
            "2026-12-06T18:17:16.4Z",
        ),
    ];
    let swapped = release("web", Slot::Green, "v7", Some("v6"), 3, history);
    let chart = ChartSource::resolve(None).unwrap();
    let request = CleanRequest {
        min_age: Duration::from_secs(30),
        force: false,
        over_gitops: false,
    };
    let refusal = clean::decide(
        &bundled::seen(swapped),
        at("2026-12-06T18:17:16.9Z"),
        &request,
        &chart,
    )
    .unwrap_err();
    quoted(&format!(
        "$ bgslot clean web\n{}",
        ErrorReport::new(&failed(Op::Clean, "web", refusal))
    ));
    let cleaned = CleanReport {
        header: header(
            Op::Clean,
            "web",
            6,
            Slot::Green,
            "bgslot deploy web --tag NEW_TAG",
        ),
        mode: Mode::Bundled,
        slot: Slot::Blue,
        changed: true,
        image: "ghcr.io/acme/web:v6".into(),
        stopped_pods: 3,
        stop_ms: 5_012,
        slot_release: None,
    };
    quoted(&format!("{cleaned}"));
}

#[test]
fn a_failed_revision_is_refused_then_recovered() {
    let history = vec![
        revision(
            12,
            "superseded",
            Recorded::Clean { slot: Slot::Green },
            "2026-12-06T18:18:30Z",
        ),
        Revision {
            description: "Upgrade \"web\" failed: context canceled".into(),
            ..revision(
                13,
                "failed",
                Recorded::Deploy {
                    slot: Slot::Green,
                    version: "v11-never-ready".into(),
                },
                "2026-12-06T18:18:31Z",
            )
        },
    ];
    let failed_deploy = release("web", Slot::Blue, "v10-slow-start", None, 3, history);
    let chart = ChartSource::resolve(None).unwrap();
    let refusal = swap::decide(
        &bundled::seen(failed_deploy),
        &request(SwapKind::Swap, None),
        &chart,
    )
    .unwrap_err();
    quoted(&format!(
        "$ bgslot swap web\n{}",
        ErrorReport::new(&failed(Op::Swap, "web", refusal))
    ));
    let recovered = RecoverReport {
        header: header(Op::Recover, "web", 14, Slot::Blue, "bgslot status web"),
        mode: Mode::Bundled,
        changed: true,
        status: "deployed".into(),
        from_revision: Some(13),
        to_revision: Some(12),
        recovered: vec![crate::commands::recover::Recovered {
            release: "web".into(),
            status: "failed".into(),
            from_revision: 13,
            action: "rollback",
            to_revision: Some(12),
        }],
        settled: Vec::new(),
        production_ready: Some(3),
        production_desired: Some(3),
    };
    quoted(&format!(
        "recover web: revision 13 is failed; rolling back to revision 12\n{recovered}"
    ));
}

#[test]
fn swap_as_json() {
    let report = SwapReport {
        header: header(
            Op::Swap,
            "web",
            9,
            Slot::Blue,
            "bgslot clean web   (or: bgslot rollback web)",
        ),
        ..moved(Op::Swap, "web", 9, Slot::Green, Slot::Blue, ("v7", "v8"), 3)
    };
    quoted(&format!(
        "$ bgslot swap web -o json\nswap web: production green -> blue\n{}\n",
        report.json(true).unwrap()
    ));
}

#[test]
fn the_lock_held_and_lost() {
    let held = LockHeld {
        lease: "bgslot-lock-web".into(),
        namespace: "shop".into(),
        holder: "unknown@vm pid 25300 (deploy)".into(),
        since: "2026-12-06T18:17:44.670866Z".into(),
    };
    quoted(&format!(
        "$ bgslot swap web      # while another bgslot deploys\n{}",
        ErrorReport::new(&failed(Op::Swap, "web", held))
    ));
    let lost = LockLost {
        lease: "bgslot-lock-web".into(),
        namespace: "shop".into(),
        holder: Some("alice@ci pid 7 (swap)".into()),
        done: vec!["`bgslot deploy green v10-slow-start` (helm upgrade of web)".into()],
        not_done: "`bgslot swap blue->green` (helm upgrade of web)".into(),
    };
    let err = anyhow::Error::new(lost).context("bgslot swap blue->green of web in namespace shop");
    quoted_error(failed(Op::Release, "web", err));
}

#[test]
fn release_with_verification_and_clean() {
    let swapped = moved(
        Op::Swap,
        "web",
        16,
        Slot::Blue,
        Slot::Green,
        ("v10-slow-start", "v12"),
        3,
    );
    let cleaned = CleanReport {
        header: header(
            Op::Clean,
            "web",
            17,
            Slot::Green,
            "bgslot deploy web --tag NEW_TAG",
        ),
        mode: Mode::Bundled,
        slot: Slot::Blue,
        changed: true,
        image: "ghcr.io/acme/web:v10-slow-start".into(),
        stopped_pods: 3,
        stop_ms: 5_000,
        slot_release: None,
    };
    let deployed = crate::commands::deploy::report::DeployReport {
        header: header(
            Op::Deploy,
            "web",
            15,
            Slot::Blue,
            "bgslot swap web --expect-tag v12",
        ),
        mode: Mode::Bundled,
        slot: Slot::Green,
        role: Role::Stage,
        image: "ghcr.io/acme/web:v12".into(),
        ready: 3,
        desired: 3,
        service: Some("web-stage".into()),
        url: "http://web-stage.shop.svc.cluster.local:80/".into(),
        preview: false,
        workers: vec![],
        slot_release: None,
        slot_revision: None,
        chart: None,
        accepted: vec![],
        hooks: None,
        version: "v12".into(),
    };
    let report = ReleaseReport {
        header: Header {
            operation: Op::Release,
            ..cleaned.header.clone()
        },
        mode: Mode::Bundled,
        image: swapped.image.clone(),
        verified: vec![Role::Stage, Role::Production],
        steps: vec![
            Step::Deploy(deployed),
            Step::Swap(swapped),
            Step::Clean(cleaned),
        ],
    };
    quoted(&format!("{report}"));
}

#[test]
fn history() {
    let times = [
        (
            2,
            "18:17:14",
            Recorded::Deploy {
                slot: Slot::Green,
                version: "v7".into(),
            },
        ),
        (
            3,
            "18:17:15",
            Recorded::Swap {
                from: Slot::Blue,
                to: Slot::Green,
            },
        ),
        (
            4,
            "18:17:16",
            Recorded::Rollback {
                from: Slot::Green,
                to: Slot::Blue,
            },
        ),
        (
            5,
            "18:17:16",
            Recorded::Swap {
                from: Slot::Blue,
                to: Slot::Green,
            },
        ),
        (6, "18:17:19", Recorded::Clean { slot: Slot::Blue }),
        (
            7,
            "18:17:24",
            Recorded::Deploy {
                slot: Slot::Blue,
                version: "v8-never-ready".into(),
            },
        ),
        (
            8,
            "18:17:40",
            Recorded::Deploy {
                slot: Slot::Blue,
                version: "v8".into(),
            },
        ),
        (
            9,
            "18:17:44",
            Recorded::Swap {
                from: Slot::Green,
                to: Slot::Blue,
            },
        ),
        (
            10,
            "18:17:44",
            Recorded::Deploy {
                slot: Slot::Green,
                version: "v9-slow-start".into(),
            },
        ),
        (
            11,
            "18:18:15",
            Recorded::Deploy {
                slot: Slot::Green,
                version: "v10-slow-start".into(),
            },
        ),
    ];
    let revisions = times
        .into_iter()
        .map(|(n, time, recorded)| {
            let status = if n == 11 { "deployed" } else { "superseded" };
            HistoryEntry::from(revision(
                n,
                status,
                recorded,
                &format!("2026-12-06T{time}.5Z"),
            ))
        })
        .collect();
    let report = HistoryReport {
        release: "web".into(),
        namespace: "shop".into(),
        mode: Mode::Bundled,
        revision: 11,
        revisions,
    };
    quoted_run("history web", &report);
}

/// `shop`: a worker `consumer` (2 replicas) and a CronJob `nightly-report`, v1 in blue, v2 staged
/// in green.
fn shop() -> Observation {
    let history = vec![
        revision(
            1,
            "superseded",
            Recorded::Install {
                slot: Slot::Blue,
                version: "v1".into(),
            },
            "2026-12-06T18:19:00Z",
        ),
        revision(
            2,
            "deployed",
            Recorded::Deploy {
                slot: Slot::Green,
                version: "v2".into(),
            },
            "2026-12-06T18:19:02Z",
        ),
    ];
    let mut seen = release("shop", Slot::Blue, "v1", Some("v2"), 2, history);
    seen.values.workloads = Workloads {
        workers: vec![Worker {
            name: "consumer".into(),
            handover: Handover::Overlap,
            replicas: PerSlot { blue: 2, green: 2 },
            stage_replicas: PerSlot { blue: 0, green: 0 },
            autoscaled: PerSlot {
                blue: false,
                green: false,
            },
        }],
        cron_jobs: vec!["nightly-report".into()],
        held: Default::default(),
    };
    let worker = |slot: Slot, n: i32| WorkerState {
        name: "consumer".into(),
        slot,
        requires: Vec::new(),
        pods: String::new(),
        state: SlotState {
            deployment: Some(format!("shop-{slot}-consumer")),
            ..ready(n)
        },
    };
    seen.cluster.workers = vec![worker(Slot::Blue, 2), worker(Slot::Green, 0)];
    let cron_job = |slot: Slot, suspended: bool| CronJobState {
        name: "nightly-report".into(),
        slot,
        cron_job: format!("shop-{slot}-nightly-report"),
        schedule: "0 3 * * *".into(),
        suspended,
        last_schedule: None,
    };
    seen.cluster.cron_jobs = vec![cron_job(Slot::Blue, false), cron_job(Slot::Green, true)];
    seen
}

#[test]
fn workers_follow_production() {
    let mut seen = shop();
    seen.cluster.slots.blue.created = Some(at("2026-12-06T18:19:00.5Z"));
    seen.cluster.slots.green.created = Some(at("2026-12-06T18:19:01.5Z"));
    let status = StatusReport::new(
        &bundled::seen(seen),
        None,
        "v4.1.4".into(),
        at("2026-12-06T18:19:02.9Z"),
    );
    quoted_run("status shop", &status);
    let count = |slot: Slot, ready: i32, desired: i32| WorkerCount {
        slot,
        ready,
        desired,
    };
    let swapped = SwapReport {
        workers: vec![WorkerMove {
            name: "consumer".into(),
            handover: Handover::Overlap,
            production: count(Slot::Green, 2, 2),
            stage: count(Slot::Blue, 0, 0),
            gap_ms: None,
        }],
        cron_jobs: vec![CronJobMove {
            name: "nightly-report".into(),
            runs_in: Some(Slot::Green),
        }],
        ..moved(
            Op::Swap,
            "shop",
            3,
            Slot::Blue,
            Slot::Green,
            ("v1", "v2"),
            2,
        )
    };
    quoted(&format!("{swapped}"));
    let promoted = SwapReport {
        promoted: Some(Promotion { from: 1, to: 2 }),
        workers: vec![WorkerMove {
            production: count(Slot::Blue, 2, 2),
            stage: count(Slot::Green, 0, 0),
            ..swapped.workers[0].clone()
        }],
        cron_jobs: vec![CronJobMove {
            name: "nightly-report".into(),
            runs_in: Some(Slot::Blue),
        }],
        ..moved(
            Op::Swap,
            "shop",
            6,
            Slot::Green,
            Slot::Blue,
            ("v2", "v3"),
            2,
        )
    };
    quoted(&format!("{promoted}"));
}

#[test]
fn version() {
    quoted_run("version", &VersionReport::current());
}

#[test]
fn several_clusters_a_bad_targets_file_and_a_mix() {
    // The usage error of a targets file, read as bgslot reads it.
    let bad = "namespace: shop\ntargets:\n  - name: eu\n    context: prod-eu\n  - name: us\n    contxt: prod-us\n";
    let err = crate::fleet::targets::parse_file("bad-targets.yaml", bad).unwrap_err();
    quoted_error(anyhow::Error::new(err));

    // The report of a run that left eu on the new version (its API server went away) and us
    // swapped back, as the printer shows the run's error.
    use crate::fleet::decide::{Moved, Phase, Standing};
    use crate::fleet::report::{across, TargetRow};
    let unreachable = "swapping back failed: listing the workers of web in namespace shop: ServiceError: client error (Connect): client error (Connect): tcp connect error: Connection refused (os error 111)";
    let failed_check = "verify command `smoke-test` exited with exit status: 1 against production";
    let fix = "bgslot rollback web --kube-context prod-eu -n shop";
    let mut eu = TargetRow::new(
        "eu",
        "prod-eu",
        "shop",
        &Standing {
            phase: Phase::SwapBack,
            moved: Some(Moved::Swap),
            error: Some(unreachable.into()),
            ..Standing::new(Some((Slot::Blue, "v8".into())))
        },
    );
    eu.command = Some(fix.into());
    let us = TargetRow::new(
        "us",
        "prod-us",
        "shop",
        &Standing {
            phase: Phase::SwapBack,
            swapped_back: true,
            error: Some(failed_check.into()),
            ..Standing::new(Some((Slot::Green, "v7".into())))
        },
    );
    let mixed = across(
        crate::error::ExitStatus::Mixed,
        "release web across 2 targets failed: verification against production failed on us; the targets are left on different versions: eu serves v8, us serves v7".into(),
        vec![format!("us: {failed_check}"), format!("eu: {unreachable}")],
        Some(format!("end the mix on eu: `{fix}`")),
        "20261207T110930Z-789e",
        vec![eu, us],
    );
    quoted_error(anyhow::Error::new(mixed));
}
