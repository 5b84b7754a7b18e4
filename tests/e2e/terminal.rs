//! What a person at a terminal sees, on the real control plane with Helm 3 and Helm 4: a live
//! progress bar per slot (under a real pseudo-terminal, made by util-linux `script`), plain lines
//! in a log, and `status --watch` following a swap until interrupted, and redrawing at a new helm
//! revision that changes no object, where `HELM_DRIVER=configmap` keeps the records.

use crate::common;

use common::cli::{Env, Run};
use tokio::io::{AsyncBufReadExt, BufReader};

with_both_helms!(
    waiting_shows_a_bar_on_a_terminal_and_lines_in_a_log,
    status_watch_follows_a_swap,
    status_watch_sees_a_new_revision_in_configmap_records
);

/// Runs bgslot with `args` under a pseudo-terminal, after the words of `wrapper` (another
/// command that runs it); what the terminal showed is the stdout.
async fn on_terminal(env: &Env, wrapper: &[&str], args: &[&str]) -> Run {
    let line = wrapper
        .iter()
        .copied()
        .chain(std::iter::once(env!("CARGO_BIN_EXE_bgslot")))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = env.command(&[]);
    // `env.command` set up the environment; run `script` instead of bgslot, in it.
    let script = script
        .as_std_mut()
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect::<Vec<_>>();
    let out = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .envs(script)
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("util-linux script runs");
    Run::from(out)
}

async fn waiting_shows_a_bar_on_a_terminal_and_lines_in_a_log(major: u32) {
    let env = Env::new(major, "tty").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    let shown = on_terminal(&env, &[], &["deploy", "web", "--tag", "v2-slow-start"])
        .await
        .must_succeed();
    assert!(
        shown.stdout.contains("green  ▕") && shown.stdout.contains("▏ 2/2 ready"),
        "a bar: {shown:?}"
    );
    assert!(
        shown.stdout.contains("readiness probe failing"),
        "the reason is shown beside the bar: {shown:?}"
    );
    assert!(
        !shown.stdout.contains("green: 2/2 ready"),
        "no plain lines: {shown:?}"
    );

    // Not a terminal: one plain line per change, no drawing.
    env.bgslot(&["clean", "web", "--force"])
        .await
        .must_succeed();
    let logged = env
        .bgslot(&["deploy", "web", "--tag", "v3-slow-start"])
        .await
        .must_succeed()
        .must_say("green: 0/2 ready (readiness probe failing)")
        .must_say("green: 2/2 ready");
    assert!(!logged.stderr.contains('▕'), "{logged:?}");
    env.done().await;
}

/// Ctrl-C ends a watch, with exit 0.
async fn interrupted_ends_well(watch: &mut tokio::process::Child) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(watch.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), watch.wait())
        .await
        .expect("the watch ends at the signal")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The next document `status --watch -o json` printed.
async fn next_frame(
    frames: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> serde_json::Value {
    let line = tokio::time::timeout(std::time::Duration::from_secs(60), frames.next_line())
        .await
        .expect("a frame within 60s")
        .unwrap()
        .expect("the watch is still running");
    serde_json::from_str(&line).unwrap()
}

async fn status_watch_follows_a_swap(major: u32) {
    let env = Env::new(major, "watch").await;
    env.bgslot(&["deploy", "web", "--tag", "v1", "--replicas", "2"])
        .await
        .must_succeed();
    env.bgslot(&["deploy", "web", "--tag", "v2"])
        .await
        .must_succeed();

    let mut watch = env
        .command(&["status", "web", "--watch", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut frames = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = next_frame(&mut frames).await;
    assert_eq!(
        (
            first["production_slot"].as_str(),
            first["revision"].as_u64()
        ),
        (Some("blue"), Some(2))
    );

    env.bgslot(&["swap", "web", "--expect-tag", "v2"])
        .await
        .must_succeed();
    // The watch may show the swap's revision while helm still writes it (pending-upgrade,
    // "Preparing upgrade"), as helm's own record says, then as deployed.
    let mut frame = next_frame(&mut frames).await;
    while frame["revision"].as_u64() == Some(2) || frame["helm_status"] != "deployed" {
        frame = next_frame(&mut frames).await;
    }
    assert_eq!(
        (
            frame["production_slot"].as_str(),
            frame["description"].as_str()
        ),
        (Some("green"), Some("bgslot swap blue->green"))
    );

    interrupted_ends_well(&mut watch).await;

    // On a terminal the table is drawn in place (home, clear), until Ctrl-C.
    let shown = on_terminal(
        &env,
        &["timeout", "-s", "INT", "--preserve-status", "6"],
        &["status", "web", "--watch"],
    )
    .await
    .must_succeed();
    assert!(
        shown
            .stdout
            .contains("\x1b[H\x1b[2Jrelease web · namespace"),
        "drawn in place: {shown:?}"
    );
    assert!(
        shown.stdout.contains("service web       -> green"),
        "{shown:?}"
    );
    env.done().await;
}

/// A helm upgrade that changes no object writes only a record (with Helm 3; Helm 4's server-side
/// apply also touches the objects' managed fields): the watch redraws at it from the records
/// where helm keeps them (ConfigMaps here). Watching Secrets instead, the Helm 3 run waits in vain.
async fn status_watch_sees_a_new_revision_in_configmap_records(major: u32) {
    let env = Env::new(major, "watchcm").await;
    let configmaps = [("HELM_DRIVER", "configmap")];
    env.bgslot_env(
        &["deploy", "web", "--tag", "v1", "--replicas", "1"],
        &configmaps,
    )
    .await
    .must_succeed();
    let mut watch = env.command(&["status", "web", "--watch", "-o", "json"]);
    let mut watch = watch
        .env("HELM_DRIVER", "configmap")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut frames = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = next_frame(&mut frames).await;
    assert_eq!(first["revision"].as_u64(), Some(1), "{first}");
    // Every watch behind the feed has listed what it watches (their first ticks are over), so
    // a frame from here on is drawn for a change.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    let out = env
        .helm
        .command()
        .env("HELM_DRIVER", "configmap")
        .args([
            "upgrade",
            "web",
            common::chart_dir().to_str().unwrap(),
            "-n",
            &env.ns,
            "--reuse-values",
            "--description",
            "nothing changes",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut frame = next_frame(&mut frames).await;
    while frame["revision"].as_u64() == Some(1) || frame["helm_status"] != "deployed" {
        frame = next_frame(&mut frames).await;
    }
    assert_eq!(
        (frame["revision"].as_u64(), frame["description"].as_str()),
        (Some(2), Some("nothing changes"))
    );
    interrupted_ends_well(&mut watch).await;
    env.done().await;
}
