//! What every deploy decides before its kind plans the writes, as a pure function of what it
//! observed and what it was asked: the release's helm state, a GitOps owner, Services that drifted
//! from what bgslot wrote, a staged version that would be overwritten without `--replace`; then
//! where the version goes and what production serves now.

use crate::error::Refusal;
use crate::names::ReleaseName;
use crate::rules;
use crate::slots::{Basis, DeployRequest, Holds, Seen, SlotKind};
use crate::vocab::Slot;

/// The basis of a deploy of `release`: an install (blue as production) when it does not exist,
/// else the idle slot, or a refusal.
pub fn decide<'a, K: SlotKind>(
    release: &'a ReleaseName,
    namespace: &'a str,
    seen: Option<&Seen<K>>,
    request: &'a DeployRequest,
) -> Result<Basis<'a>, Refusal> {
    let Some(seen) = seen else {
        return Ok(Basis {
            release,
            namespace,
            slot: Slot::Blue,
            install: true,
            serving: None,
            request,
        });
    };
    rules::check_gitops(release, &seen.release.cluster, request.force)?;
    rules::check_helm_state(release, seen.history())?;
    rules::check_drift(K::drifted(), &seen.drift, request.force)?;
    let idle = seen.stage();
    let staged = seen.slot(idle);
    if staged.holds == Holds::Version && !request.replace {
        return Err(Refusal::new(
            format!(
                "the idle slot {idle} already runs a staged version ({}{}); deploying would replace it",
                staged.image,
                staged
                    .release
                    .as_ref()
                    .map(|r| format!(", release {r}"))
                    .unwrap_or_default()
            ),
            format!(
                "swap to it (`bgslot swap {release}`), remove it (`bgslot clean {release}`), or pass --replace to overwrite it"
            ),
        ));
    }
    // What production is meant to serve now (an HPA may have grown it past its values).
    let production = seen.slot(seen.production()).totals.desired;
    Ok(Basis {
        release,
        namespace,
        slot: idle,
        install: false,
        serving: (production > 0).then_some(production as u64),
        request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::slots::{bundled, router};
    use crate::vocab::Role;

    fn req(tag: &str) -> DeployRequest {
        DeployRequest::of(tag)
    }

    fn release() -> ReleaseName {
        "web".parse().unwrap()
    }

    fn chart(production: crate::vocab::Slot, green: bool, obs: crate::cluster::Observed) -> crate::slots::Seen<crate::slots::Bundled> {
        bundled::seen(observation(
            values(production, green),
            obs,
            vec![rev(1, "deployed", "bgslot install blue v1", "t")],
        ))
    }

    #[test]
    fn an_install_goes_to_blue_and_a_deploy_to_the_idle_slot_sized_like_production() {
        let name = release();
        let request = req("v2");
        let install = decide::<crate::slots::Bundled>(&name, "shop", None, &request).unwrap();
        assert_eq!((install.slot, install.install, install.serving), (Slot::Blue, true, None));
        let mut obs = observed(5, 0);
        obs.slots.blue.desired = 5;
        let basis = decide(&name, "shop", Some(&chart(Slot::Blue, false, obs)), &request).unwrap();
        assert_eq!((basis.slot, basis.install, basis.serving), (Slot::Green, false, Some(5)));
        let routed = router::fixtures::seen(Slot::Blue, false, &["bgslot install blue v1"]);
        let basis = decide(&name, "shop", Some(&routed), &request).unwrap();
        assert_eq!((basis.slot, basis.serving), (Slot::Green, Some(3)));
    }

    #[test]
    fn a_staged_version_is_replaced_only_when_asked() {
        let name = release();
        let request = req("v3");
        let err = decide(&name, "shop", Some(&chart(Slot::Blue, true, observed(3, 3))), &request).unwrap_err();
        assert!(err.reason.contains("already runs a staged version (web:v2)"), "{err:?}");
        let routed = router::fixtures::seen(Slot::Blue, true, &["bgslot install blue v1", "bgslot deploy green v2"]);
        let err = decide(&name, "shop", Some(&routed), &request).unwrap_err();
        assert!(
            err.reason.contains("the idle slot green already runs a staged version (nginx:v2, release web-green)"),
            "{err:?}"
        );
        let replace = DeployRequest {
            replace: true,
            ..req("v3")
        };
        assert_eq!(decide(&name, "shop", Some(&routed), &replace).unwrap().slot, Slot::Green);
    }

    #[test]
    fn drift_is_refused_unless_forced_and_a_pending_release_always() {
        let name = release();
        let mut obs = observed(3, 0);
        obs.services[0] = service("web", Role::Production, Slot::Green, 3);
        let drifted = chart(Slot::Blue, false, obs);
        let err = decide(&name, "shop", Some(&drifted), &req("v2")).unwrap_err();
        assert!(err.reason.contains("do not match the release values"), "{err:?}");
        let forced = DeployRequest {
            force: true,
            ..req("v2")
        };
        assert!(decide(&name, "shop", Some(&drifted), &forced).is_ok());
        let mut routed = router::fixtures::seen(Slot::Blue, false, &["bgslot install blue v1"]);
        routed.services[0].selector = std::collections::BTreeMap::from([("app".to_string(), "x".to_string())]);
        let routed = router::fixtures::again(routed);
        let err = decide(&name, "shop", Some(&routed), &req("v2")).unwrap_err();
        assert!(err.reason.contains("do not match its record"), "{err:?}");
        let mut pending = chart(Slot::Blue, false, observed(3, 0));
        pending.release.history.push(rev(2, "pending-upgrade", "", "t"));
        let err = decide(&name, "shop", Some(&pending), &req("v2")).unwrap_err();
        assert!(err.reason.contains("pending-upgrade"), "{err:?}");
    }
}
