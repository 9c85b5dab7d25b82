//! `meridian ctl` whose standard output is closed early (`meridian ctl status | head -1`) ends
//! quietly: no panic, no error text, exit code 0.

use std::process::Stdio;
use std::time::Duration;

use meridian_tests::hub::{HubCluster, HubOptions};

use crate::meridian_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_with_a_closed_stdout_exits_quietly() {
    let options = HubOptions {
        nodes: 1,
        ..HubOptions::default()
    };
    let cluster = HubCluster::start(meridian_bin(), options).await;
    cluster.leader(&[1], Duration::from_secs(20)).await;
    let hub = format!("http://{}", cluster.admin(1));

    // A table, plain lines and JSON: every way ctl prints.
    for command in [
        &["status"][..],
        &["clusters"][..],
        &["-o", "json", "status"][..],
    ] {
        let mut child = tokio::process::Command::new(meridian_bin())
            .args(["ctl", "--hub", &hub])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meridian ctl");
        // Close the pipe's only reader before ctl has its answer from the hub to print.
        drop(child.stdout.take());
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("ctl finished")
            .expect("ctl output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "ctl {command:?} complained about its closed stdout:\n{stderr}"
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "ctl {command:?} with a closed stdout; stderr:\n{stderr}"
        );
    }
}
