//! `meridian dev` as a test fixture: starts it in a temporary state directory and reads `dev.json`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::process::{Proc, ProcSpec};

/// A running `meridian dev`.
pub struct DevEnv {
    /// The `meridian dev` process (its children die with it: it stops them on SIGTERM, and
    /// `Drop` sends SIGTERM first).
    pub proc: Proc,
    /// `dev.json`.
    pub json: serde_json::Value,
    /// The state directory (kept alive for the test's duration).
    pub dir: tempfile::TempDir,
}

/// One cluster of `dev.json`.
#[derive(Clone, Debug)]
pub struct DevCluster {
    /// Cluster name.
    pub name: String,
    /// Client subnet of its region.
    pub client_subnet: String,
    /// Gateway listener address.
    pub gateway: SocketAddr,
    /// Gateway process id.
    pub gateway_pid: u32,
    /// Agent process id.
    pub agent_pid: u32,
    /// The agent's admin URL (`/metrics`, `/status`).
    pub agent_admin: String,
    /// Echo backend process ids.
    pub backend_pids: Vec<u32>,
}

impl DevEnv {
    /// Starts `meridian dev` with `extra` arguments and waits until it is serving.
    pub fn start(bin: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let mut args = vec!["dev", "--state-dir", state.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let spec = ProcSpec::new("dev", bin, dir.path(), &args);
        let (proc, ready) = Proc::start_ready(spec, Duration::from_secs(120));
        let dev_json = ready["dev_json"]
            .as_str()
            .expect("ready file names dev.json");
        let json = read_json(Path::new(dev_json));
        Self { proc, json, dir }
    }

    /// Re-reads `dev.json` (pids change when dev restarts a component).
    pub fn reload(&mut self) {
        let path = self.dir.path().join("state").join("dev.json");
        self.json = read_json(&path);
    }

    /// The first hub node's DNS address.
    pub fn dns(&self) -> SocketAddr {
        self.json["dns"]
            .as_str()
            .expect("dns")
            .parse()
            .expect("dns addr")
    }

    /// The first hub node's admin URL.
    pub fn admin(&self) -> String {
        self.json["admin"].as_str().expect("admin").to_string()
    }

    /// The demo hostname.
    pub fn hostname(&self) -> String {
        self.json["hostname"]
            .as_str()
            .expect("hostname")
            .to_string()
    }

    /// Hub nodes as (id, pid, admin URL).
    pub fn hubs(&self) -> Vec<(u64, u32, String)> {
        self.json["hubs"]
            .as_array()
            .expect("hubs")
            .iter()
            .map(|h| {
                (
                    h["id"].as_u64().expect("id"),
                    h["pid"].as_u64().expect("pid") as u32,
                    h["admin"].as_str().expect("admin").to_string(),
                )
            })
            .collect()
    }

    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> DevCluster {
        let c = self.json["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name} in dev.json"));
        DevCluster {
            name: name.to_string(),
            client_subnet: c["client_subnet"].as_str().expect("subnet").to_string(),
            gateway: c["gateway"]
                .as_str()
                .expect("gateway")
                .parse()
                .expect("addr"),
            gateway_pid: c["gateway_pid"].as_u64().expect("pid") as u32,
            agent_pid: c["agent_pid"].as_u64().expect("agent pid") as u32,
            agent_admin: c["agent_admin"].as_str().expect("agent admin").to_string(),
            backend_pids: c["backends"]
                .as_array()
                .expect("backends")
                .iter()
                .map(|b| b["pid"].as_u64().expect("backend pid") as u32)
                .collect(),
        }
    }
}

impl Drop for DevEnv {
    fn drop(&mut self) {
        // Graceful: dev stops its children on SIGTERM; Proc's Drop then kills it if needed.
        self.proc.terminate(Duration::from_secs(10));
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}
