//! `meridian dev` as a process: a second run in the same state directory refuses and touches
//! nothing, and `kill -9` of a run takes its children with it and leaves no stale lock.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_tests::dev::DevEnv;
use meridian_tests::process::{Proc, ProcSpec};
use meridian_tests::wait::eventually;

use crate::meridian_bin;

/// The smallest `meridian dev`: one hub node, no restarts (a restart would hide a dead child).
const SMALL: [&str; 4] = ["--hubs", "1", "--restart-after", "0"];

/// Whether `pid` is a live process (a zombie waiting for its reaper counts as dead).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')', as comm may hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Every component pid `dev.json` lists: hubs, gateways, agents and echo backends.
fn child_pids(json: &serde_json::Value) -> Vec<u32> {
    let mut pids = Vec::new();
    for hub in json["hubs"].as_array().expect("hubs") {
        pids.push(hub["pid"].as_u64().expect("hub pid"));
    }
    for cluster in json["clusters"].as_array().expect("clusters") {
        pids.push(cluster["gateway_pid"].as_u64().expect("gateway pid"));
        pids.push(cluster["agent_pid"].as_u64().expect("agent pid"));
        for backend in cluster["backends"].as_array().expect("backends") {
            pids.push(backend["pid"].as_u64().expect("backend pid"));
        }
    }
    pids.into_iter().map(|pid| pid as u32).collect()
}

/// The entries of `dir` with their inode numbers: a wiped and recreated entry has a new one.
fn entries(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|entry| {
            let inode = entry.metadata().expect("metadata").ino();
            (entry.file_name().to_string_lossy().into_owned(), inode)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_dev_in_the_same_state_dir_refuses_and_touches_nothing() {
    meridian_tests::init_crypto();
    let env = DevEnv::start(meridian_bin(), &SMALL);
    let state = env.dir.path().join("state");
    let dev_json_before = std::fs::read(state.join("dev.json")).expect("dev.json");
    let entries_before = entries(&state);
    let pids = child_pids(&env.json);

    let mut second = Command::new(meridian_bin())
        .args(["dev", "--state-dir", state.to_str().expect("utf-8")])
        .args(SMALL)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second meridian dev");
    // "At once": well before a run could even start its hub.
    let started = Instant::now();
    while second.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > Duration::from_secs(5) {
            let _ = second.kill();
            let output = second.wait_with_output().expect("reap");
            panic!(
                "the second meridian dev was still running after 5 s; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = second.wait_with_output().expect("second dev output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the second run succeeded: {stderr}"
    );
    let canonical = std::fs::canonicalize(&state).expect("canonical state dir");
    let expected = format!(
        "meridian dev is already running in {} (pid {}); stop it first",
        canonical.display(),
        env.proc.pid()
    );
    assert!(stderr.contains(&expected), "stderr:\n{stderr}");

    // The first run's files and processes are as they were, and it still serves.
    assert_eq!(
        std::fs::read(state.join("dev.json")).expect("dev.json after"),
        dev_json_before,
        "dev.json was rewritten"
    );
    assert_eq!(
        entries(&state),
        entries_before,
        "the state directory was changed"
    );
    for pid in &pids {
        assert!(alive(*pid), "component {pid} of the first run died");
    }
    let status = reqwest::get(format!("{}/v1/status", env.admin()))
        .await
        .expect("the first run's hub answers");
    assert!(status.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_dev_takes_its_children_with_it_and_leaves_no_stale_lock() {
    let mut env = DevEnv::start(meridian_bin(), &SMALL);
    let pids = child_pids(&env.json);
    assert_eq!(pids.len(), 1 + 2 * 4, "dev.json lists every component");
    for pid in &pids {
        assert!(alive(*pid), "component {pid} is not running");
    }

    env.proc.kill();
    eventually("every component to exit", Duration::from_secs(10), || {
        let left: Vec<u32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
        async move {
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still running: {left:?}"))
            }
        }
    })
    .await;

    // The dead run's lock went with it: a new run in the same directory starts.
    let state = env.dir.path().join("state");
    let mut args = vec!["dev", "--state-dir", state.to_str().expect("utf-8")];
    args.extend_from_slice(&SMALL);
    let spec = ProcSpec::new("dev-again", meridian_bin(), env.dir.path(), &args);
    let (mut again, _ready) = Proc::start_ready(spec, Duration::from_secs(120));
    assert!(
        again.terminate(Duration::from_secs(15)),
        "the second run did not stop cleanly"
    );
}

#[test]
fn a_state_dir_holding_other_files_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.md"), "mine").expect("write");
    // Neither a state directory inside it (the default's name) nor a stray dev.json makes it
    // dev's own.
    std::fs::create_dir(dir.path().join(".meridian-dev")).expect("mkdir");
    std::fs::write(dir.path().join("dev.json"), "{}").expect("write");
    std::fs::create_dir(dir.path().join("precious")).expect("mkdir");
    std::fs::write(dir.path().join("precious").join("thesis.txt"), "mine too").expect("write");
    let before = entries(dir.path());
    let output = Command::new(meridian_bin())
        .args(["dev", "--state-dir", dir.path().to_str().expect("utf-8")])
        .args(SMALL)
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run meridian dev");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a meridian dev state directory") && stderr.contains("notes.md"),
        "{stderr}"
    );
    // Nothing added (not even the lock), nothing removed.
    assert_eq!(entries(dir.path()), before);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("precious").join("thesis.txt")).expect("kept"),
        "mine too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_names_the_running_binary_and_dev_json_goes_when_dev_stops() {
    let mut env = DevEnv::start(meridian_bin(), &SMALL);
    let dev_json = env.dir.path().join("state").join("dev.json");
    assert!(dev_json.exists());
    // After `cargo run -- dev`, `meridian` is not on PATH: the guide's ctl commands name the
    // binary that runs.
    let guide = std::fs::read_to_string(env.proc.spec().log_file()).expect("dev's output");
    let exe = std::fs::canonicalize(meridian_bin()).expect("binary path");
    assert!(
        guide.contains(&format!("{} ctl --hub http://", exe.display())),
        "{guide}"
    );
    assert!(
        env.proc.terminate(Duration::from_secs(20)),
        "dev did not stop"
    );
    assert!(!dev_json.exists(), "a stopped dev left dev.json behind");
}
