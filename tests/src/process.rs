//! Child processes of the `meridian` binary that are killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to start.
#[derive(Clone, Debug)]
pub struct ProcSpec {
    /// Name used for log files and messages (`hub-1`, `us-east-gateway`).
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Where stdout/stderr go (`<dir>/<name>.log`) and the ready file lives.
    pub dir: PathBuf,
    /// Extra environment variables (name, value).
    pub env: Vec<(String, String)>,
}

/// A running child. `Drop` kills it (SIGKILL) and reaps it.
pub struct Proc {
    spec: ProcSpec,
    child: Option<Child>,
}

impl ProcSpec {
    /// A spec for `program` with the given args.
    pub fn new(name: &str, program: impl Into<PathBuf>, dir: &Path, args: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: dir.to_path_buf(),
            env: Vec::new(),
        }
    }

    /// With the environment variable `name` set to `value`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Where this process writes its ready file (pass it with `--ready-file`).
    pub fn ready_file(&self) -> PathBuf {
        self.dir.join(format!("{}.ready.json", self.name))
    }

    /// Its combined log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }
}

impl Proc {
    /// Starts the process with `--ready-file` appended, and waits up to `timeout` for the ready
    /// file; returns the process and the ready file's JSON.
    pub fn start_ready(spec: ProcSpec, timeout: Duration) -> (Self, serde_json::Value) {
        let ready = spec.ready_file();
        let _ = std::fs::remove_file(&ready);
        let mut spec = spec;
        spec.args.push("--ready-file".into());
        spec.args.push(ready.display().to_string());
        let mut proc = Self::start(spec);
        let value = proc.wait_ready_file(&ready, timeout);
        (proc, value)
    }

    /// Starts the process without waiting for anything.
    pub fn start(spec: ProcSpec) -> Self {
        std::fs::create_dir_all(&spec.dir).expect("create process dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log_file())
            .expect("open log");
        let child = Command::new(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(
                "MERIDIAN_LOG",
                std::env::var("MERIDIAN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", spec.program.display()));
        Self {
            spec,
            child: Some(child),
        }
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The spec it was started with.
    pub fn spec(&self) -> &ProcSpec {
        &self.spec
    }

    /// Waits for `path` to hold valid JSON, failing early (with the log tail) if the process exits.
    pub fn wait_ready_file(&mut self, path: &Path, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && let Ok(value) = serde_json::from_str(&text)
            {
                return value;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited with {status} before it was ready; log:\n{}",
                    self.spec.name,
                    self.log_tail(60)
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "{} not ready after {timeout:?}; log:\n{}",
                    self.spec.name,
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the process log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log_file(), lines)
    }

    /// Sends SIGKILL and reaps the process (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a graceful exit; returns whether it exited
    /// successfully. Kills it if it does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        signal(child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the same command again (after a kill), waiting for its ready file.
    pub fn restart_ready(&mut self, timeout: Duration) -> serde_json::Value {
        self.kill();
        let spec = self.spec.clone();
        let ready = spec.ready_file();
        let _ = std::fs::remove_file(&ready);
        let mut fresh = Self::start(spec);
        let value = fresh.wait_ready_file(&ready, timeout);
        self.child = fresh.child.take();
        value
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log tail ---\n{}", self.spec.name, self.log_tail(30));
        }
        self.kill();
    }
}

/// Sends a signal by name with the `kill` utility (keeps the harness free of libc bindings).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// The last `lines` lines of a file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts `meridian echo` (binary `bin`) called `name` on a free loopback port, logging into
/// `dir`; returns the process and the address it listens on.
pub fn start_echo(bin: &str, dir: &Path, name: &str) -> (Proc, std::net::SocketAddr) {
    let (proc, ready) = Proc::start_ready(
        ProcSpec::new(
            name,
            bin,
            dir,
            &["echo", "--listen", "127.0.0.1:0", "--name", name],
        ),
        Duration::from_secs(20),
    );
    let addr = ready["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name}'s ready file names no address: {ready}"));
    (proc, addr)
}
