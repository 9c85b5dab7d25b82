//! Child processes of `meridian dev`: start, wait for readiness, restart after a crash, stop.
//!
//! Every component runs as its own OS process of the same binary, as it would in production,
//! so killing one (`kill -9 <pid>` from `dev.json`) shows what a real failure does.
//! Children die with `meridian dev` even when it cannot stop them (`kill -9`, a crash): on Linux
//! each asks the kernel for SIGTERM when its parent dies (see [`die_with_parent`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, watch};

/// One supervised component.
pub struct Component {
    /// Short name (`hub-1`, `us-east-gateway`).
    pub name: String,
    args: Vec<String>,
    ready_file: PathBuf,
    log_file: PathBuf,
    state: Mutex<ComponentState>,
    /// The current pid (0 while not running).
    pid: AtomicU32,
}

struct ComponentState {
    child: Option<Child>,
}

/// Starts components and restarts them when they die.
pub struct Supervisor {
    exe: PathBuf,
    run_dir: PathBuf,
    log_dir: PathBuf,
    restart_after: Option<Duration>,
    components: Mutex<Vec<Arc<Component>>>,
    stopping: watch::Sender<bool>,
    /// Bumped whenever a component's pid changes, so `dev.json` can be rewritten.
    changes: watch::Sender<u64>,
}

// === impl Supervisor ===

impl Supervisor {
    /// A supervisor that starts `exe`, keeping ready files in `run_dir` and logs in `log_dir`.
    /// `restart_after` is the delay before a crashed component is started again (like a kubelet
    /// restarting a pod); `None` never restarts.
    pub fn new(
        exe: PathBuf,
        run_dir: PathBuf,
        log_dir: PathBuf,
        restart_after: Option<Duration>,
    ) -> Arc<Self> {
        let (stopping, _) = watch::channel(false);
        let (changes, _) = watch::channel(0);
        Arc::new(Self {
            changes,
            exe,
            run_dir,
            log_dir,
            restart_after,
            components: Mutex::new(Vec::new()),
            stopping,
        })
    }

    /// Starts `meridian <args> --ready-file ...`, waits until it is ready and returns the
    /// component and its ready-file JSON.
    pub async fn start(
        self: &Arc<Self>,
        name: &str,
        args: Vec<String>,
        timeout: Duration,
    ) -> anyhow::Result<(Arc<Component>, serde_json::Value)> {
        let component = Arc::new(Component {
            name: name.to_string(),
            args,
            ready_file: self.run_dir.join(format!("{name}.ready.json")),
            log_file: self.log_dir.join(format!("{name}.log")),
            state: Mutex::new(ComponentState { child: None }),
            pid: AtomicU32::new(0),
        });
        let ready = self.spawn_and_wait(&component, timeout).await?;
        self.components.lock().await.push(component.clone());
        let supervisor = self.clone();
        let watched = component.clone();
        tokio::spawn(async move { supervisor.watch_component(watched).await });
        Ok((component, ready))
    }

    /// Stops every component: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop_all(&self, grace: Duration) {
        let _ = self.stopping.send(true);
        let components = self.components.lock().await.clone();
        for component in components.iter().rev() {
            let state = component.state.lock().await;
            if let Some(pid) = state.child.as_ref().and_then(Child::id) {
                terminate(pid);
            }
        }
        let deadline = Instant::now() + grace;
        for component in components.iter().rev() {
            let mut state = component.state.lock().await;
            if let Some(child) = state.child.as_mut() {
                let left = deadline.saturating_duration_since(Instant::now());
                if tokio::time::timeout(left, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
            state.child = None;
        }
    }

    /// A receiver that changes whenever any component's pid changes.
    pub fn pid_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn set_pid(&self, component: &Component, pid: u32) {
        component.pid.store(pid, Ordering::Relaxed);
        self.changes.send_modify(|generation| *generation += 1);
    }

    async fn spawn_and_wait(
        &self,
        component: &Component,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let _ = std::fs::remove_file(&component.ready_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&component.log_file)
            .with_context(|| format!("open {}", component.log_file.display()))?;
        let mut args = component.args.clone();
        args.push("--ready-file".into());
        args.push(component.ready_file.display().to_string());
        let mut command = Command::new(&self.exe);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("start {}", component.name))?;
        let pid = child.id().unwrap_or(0);
        component.state.lock().await.child = Some(child);
        let ready = wait_ready(component, timeout).await?;
        self.set_pid(component, pid);
        Ok(ready)
    }

    async fn watch_component(self: Arc<Self>, component: Arc<Component>) {
        let mut stopping = self.stopping.subscribe();
        loop {
            // Poll rather than hold the lock across `wait()`, so `stop_all` can signal the child.
            let status = loop {
                if *stopping.borrow() {
                    return;
                }
                {
                    let mut state = component.state.lock().await;
                    match state.child.as_mut().map(Child::try_wait) {
                        Some(Ok(Some(status))) => {
                            state.child = None;
                            break status.to_string();
                        }
                        Some(Err(error)) => {
                            state.child = None;
                            break error.to_string();
                        }
                        Some(Ok(None)) => {}
                        None => return,
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stopping.changed() => {}
                }
            };
            self.set_pid(&component, 0);
            let Some(delay) = self.restart_after else {
                tracing::warn!(component = %component.name, %status, "component exited; not restarting (--restart-after 0)");
                return;
            };
            tracing::warn!(component = %component.name, %status, restart_in = ?delay, "component exited");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopping.changed() => return,
            }
            match self
                .spawn_and_wait(&component, Duration::from_secs(30))
                .await
            {
                Ok(_) => tracing::info!(component = %component.name, "component restarted"),
                Err(error) => {
                    tracing::error!(component = %component.name, %error, "restart failed");
                    return;
                }
            }
        }
    }
}

// === impl Component ===

impl Component {
    /// The current pid, 0 while it is not running.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Its log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }
}

async fn wait_ready(component: &Component, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        if let Ok(text) = tokio::fs::read_to_string(&component.ready_file).await
            && let Ok(value) = serde_json::from_str(&text)
        {
            return Ok(value);
        }
        {
            let mut state = component.state.lock().await;
            if let Some(Ok(Some(status))) = state.child.as_mut().map(Child::try_wait) {
                state.child = None;
                bail!(
                    "{} exited with {status} before it was ready; see {}",
                    component.name,
                    component.log_file.display()
                );
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "{} was not ready after {timeout:?}; see {}",
                component.name,
                component.log_file.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Makes the child started by `command` receive SIGTERM when this process dies, however it dies
/// (`kill -9` included), so no component outlives `meridian dev`. SIGTERM, not SIGKILL: each
/// component shuts down as on Ctrl-C.
///
/// Caveats: the kernel sends the signal when the *thread* that spawned the child exits, not
/// only the process. Components are spawned from the main thread (`block_on`) and from tokio
/// worker threads, which all live until the runtime shuts down after `stop_all`; nothing here
/// uses `block_in_place`, which would retire a worker thread early. Linux only; elsewhere
/// children outlive a killed parent.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
    let parent = getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe operations are allowed. It makes two raw syscalls through rustix
    // (prctl(PR_SET_PDEATHSIG) and getppid), allocates nothing, takes no lock and touches no
    // state shared with other threads; its only capture is a `Pid` (an integer), and its
    // error is built from an errno without allocating.
    unsafe {
        command.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::TERM))?;
            // The parent may have died between fork and the prctl: then no signal will ever
            // come (the child was already reparented), so fail the exec, which ends the child.
            if getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Sends SIGTERM so the component shuts down gracefully.
fn terminate(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Some(pid) = rustix::process::Pid::from_raw(raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}
