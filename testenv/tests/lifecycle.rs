//! `testenv run` must hand the command a working environment, pass its exit code on, and leave no
//! process or directory behind, or interrupted and failed CI runs would pile up control planes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cache_env() -> PathBuf {
    if let Some(dir) = std::env::var_os("BGSLOT_TESTENV_CACHE") {
        return PathBuf::from(dir).join("env");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache.join("bgslot-testenv/env")
}

/// Whether a live (non-zombie) process has `dir` on its command line.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let proc_dir = entry.path();
        let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(proc_dir.join("stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && cmdline.windows(needle.len()).any(|w| w == needle) {
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

#[test]
fn run_gives_a_working_cluster_passes_the_exit_code_on_and_cleans_up() {
    // This test starts a control plane of its own, so it needs the prepared binaries.
    assert!(
        cache_env().exists(),
        "no testenv cache ({}): run `testenv prepare` (scripts/test does) to test the environment's lifecycle",
        cache_env().display()
    );
    let out = std::env::temp_dir().join(format!("testenv-lifecycle-{}", std::process::id()));
    let script = format!(
        r#"set -e
echo "$BGSLOT_TESTENV_DIR" > {out}
test -s "$KUBECONFIG"
grep -q '^KUBECONFIG=' "$BGSLOT_TESTENV_DIR/env"
test "$(wc -l < "$BGSLOT_TESTENV_DIR/pids")" -eq 4
exit 5"#,
        out = out.display()
    );
    let status = Command::new(env!("CARGO_BIN_EXE_testenv"))
        .args(["run", "--", "sh", "-c", &script])
        .env_remove("BGSLOT_TESTENV_DIR")
        .status()
        .expect("running testenv");
    let dir = PathBuf::from(
        std::fs::read_to_string(&out)
            .expect("the command ran")
            .trim(),
    );
    let _ = std::fs::remove_file(&out);
    assert_eq!(status.code(), Some(5), "the command's exit code, passed on");
    assert!(!dir.exists(), "{} was not removed", dir.display());
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "still running: {left:#?}");
}
