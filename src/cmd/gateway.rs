//! `meridian gateway`: the data plane, fed either by an agent (`--agent URL --gateway NS/NAME`,
//! ConfigDiscovery with ACK/NACK) or, standalone, by a directory of Gateway API YAML
//! (`--config-dir DIR`), which it re-reads when files change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};

use super::process::{raise_fd_limit, wait_for_signal, write_ready_file};
use meridian_gateway::{GatewayHandle, GatewayOptions};
use meridian_proto::model::ObjectKey;
use tracing::{info, warn};

/// Arguments of `meridian gateway`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent's ConfigDiscovery endpoint (`http://host:port`).
    #[arg(
        long,
        conflicts_with = "config_dir",
        required_unless_present = "config_dir"
    )]
    agent: Option<String>,
    /// Standalone mode: serve the Gateway API objects in this directory (no hub, no agent).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// The Gateway served (`namespace/name`); required with `--agent`, and with `--config-dir`
    /// when the directory holds several Gateways.
    #[arg(long)]
    gateway: Option<String>,
    /// Instance name reported to the agent (default: the admin address).
    #[arg(long)]
    instance: Option<String>,
    /// Admin address (`/ready`, `/healthz`, `/metrics`, `/config`).
    #[arg(long, default_value = "127.0.0.1:0")]
    admin: SocketAddr,
    /// Write `{"admin": ADDR, "pid": N, ...}` here once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// How long in-flight requests may take to finish when a port drains (shutdown, a port
    /// removed or its client validation changed) before their connections are closed, in
    /// milliseconds.
    #[arg(long, default_value_t = 10_000)]
    drain_timeout_ms: u64,
    /// Standalone mode: how often to check the directory for changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// CA certificate(s) (PEM) of the agent's ConfigDiscovery TLS; turns on TLS (the agent URL
    /// becomes https://).
    #[arg(long, value_name = "FILE", requires = "agent")]
    agent_ca: Option<PathBuf>,
    /// This gateway's client certificate (PEM), for agents that require one.
    #[arg(long, value_name = "FILE", requires_all = ["agent_tls_key", "agent_ca"])]
    agent_tls_cert: Option<PathBuf>,
    /// The private key of --agent-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["agent_tls_cert", "agent_ca"])]
    agent_tls_key: Option<PathBuf>,
    /// Verify the agent's certificate against this name instead of the URL's host.
    #[arg(long, value_name = "NAME", requires = "agent_ca")]
    agent_server_name: Option<String>,
    /// Most downstream connections held at once, over all ports; more are closed at once
    /// (counted in `gateway_connections_refused`). 0 derives it from the file-descriptor
    /// limit, keeping descriptors in reserve for the admin server, backends and reloads.
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// How long a new plain-HTTP connection may take to send its first byte, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    first_byte_timeout_ms: u64,
    /// How long a connection may stay with no request in flight (an HTTP/2 connection with no
    /// open stream) before it is closed, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    idle_timeout_ms: u64,
    /// How long to wait for a backend's response head when the route sets no timeout of its
    /// own, counted from the request body's last progress, in milliseconds; then the client
    /// gets 504 (408 when the gateway was waiting on the client's body). GRPCRoutes are
    /// exempt. 0 waits forever.
    #[arg(long, default_value_t = 60_000)]
    upstream_response_timeout_ms: u64,
    /// How long a write to an HTTP client may stay blocked because the client reads nothing,
    /// in milliseconds; then the connection is closed. 0 waits forever.
    #[arg(long, default_value_t = 60_000)]
    send_timeout_ms: u64,
    /// How long a client may send nothing more of a request body before the request fails
    /// with 408, in milliseconds. 0 waits forever.
    #[arg(long, default_value_t = 60_000)]
    client_body_timeout_ms: u64,
}

/// The agent URL and, with `--agent-ca`, the TLS settings for it (files read now, so that a
/// missing or malformed file stops the gateway at start with its name).
fn agent_tls(
    args: &Args,
    agent: &str,
) -> anyhow::Result<(String, Option<tonic::transport::ClientTlsConfig>)> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let Some(ca) = &args.agent_ca else {
        if agent.starts_with("https://") {
            bail!("an https:// agent URL needs the agent's CA (--agent-ca)");
        }
        return Ok((agent.to_string(), None));
    };
    let read = |path: &PathBuf, what: &str| -> anyhow::Result<Vec<u8>> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if !String::from_utf8_lossy(&bytes).contains(what) {
            bail!("{}: no PEM {}", path.display(), what.trim_matches('-'));
        }
        Ok(bytes)
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(
        ca,
        "-----BEGIN CERTIFICATE-----",
    )?));
    if let (Some(cert), Some(key)) = (&args.agent_tls_cert, &args.agent_tls_key) {
        tls = tls.identity(Identity::from_pem(
            read(cert, "-----BEGIN CERTIFICATE-----")?,
            read(key, "PRIVATE KEY-----")?,
        ));
    }
    if let Some(name) = &args.agent_server_name {
        tls = tls.domain_name(name.clone());
    }
    let agent = match agent.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None if agent.starts_with("https://") => agent.to_string(),
        None => format!("https://{agent}"),
    };
    Ok((agent, Some(tls)))
}

/// Runs `meridian gateway` until SIGINT/SIGTERM, then drains.
pub async fn run(args: Args) -> anyhow::Result<()> {
    raise_fd_limit();
    let mut options = GatewayOptions::new(args.admin, args.instance.clone().unwrap_or_default());
    options.drain_timeout = Duration::from_millis(args.drain_timeout_ms);
    options.max_connections = args.max_connections;
    options.first_byte_timeout = Duration::from_millis(args.first_byte_timeout_ms.max(1));
    options.idle_timeout = Duration::from_millis(args.idle_timeout_ms.max(1));
    options.upstream_response_timeout = match args.upstream_response_timeout_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    options.send_timeout = match args.send_timeout_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    options.client_body_timeout = match args.client_body_timeout_ms {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let mut registry = meridian_gateway::Registry::default();
    registry.register(
        "meridian_log_dropped_lines",
        "Log lines dropped because the log output (stderr) was not read fast enough",
        super::logging::DroppedLinesMetric,
    );
    let handle = meridian_gateway::spawn(options, registry).await?;
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(|| handle.admin_addr().to_string());

    match (&args.agent, &args.config_dir) {
        (Some(agent), None) => {
            let Some(gateway) = &args.gateway else {
                bail!("--gateway NS/NAME is required with --agent");
            };
            let gateway: ObjectKey = gateway.parse().context("--gateway")?;
            let (agent, tls) = agent_tls(&args, agent)?;
            write_ready(&args, &handle)?;
            let subscription = tokio::spawn(meridian_gateway::run_agent_subscription(
                handle.clone(),
                agent,
                gateway,
                instance,
                tls,
            ));
            wait_for_signal().await?;
            subscription.abort();
        }
        (None, Some(dir)) => {
            let gateway = match &args.gateway {
                Some(g) => Some(g.parse::<ObjectKey>().context("--gateway")?),
                None => None,
            };
            let mut watcher = DirWatcher::new(dir.clone(), gateway);
            watcher.reload(&handle).await;
            write_ready(&args, &handle)?;
            let poll = Duration::from_millis(args.poll_ms.max(50));
            let signal = wait_for_signal();
            tokio::pin!(signal);
            loop {
                tokio::select! {
                    signal = &mut signal => {
                        signal?;
                        break;
                    }
                    () = tokio::time::sleep(poll) => {
                        if watcher.poll() {
                            watcher.reload(&handle).await;
                        }
                    }
                }
            }
        }
        _ => bail!("give exactly one of --agent or --config-dir"),
    }
    info!("shutting down: draining connections");
    handle.shutdown().await;
    Ok(())
}

fn write_ready(args: &Args, handle: &GatewayHandle) -> anyhow::Result<()> {
    let listeners: Vec<String> = handle
        .bound_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    if let Some(path) = &args.ready_file {
        write_ready_file(
            path,
            &serde_json::json!({
                "admin": handle.admin_addr().to_string(),
                "pid": std::process::id(),
                "listeners": listeners,
                "version": handle.config_version(),
            }),
        )?;
    }
    info!(admin = %handle.admin_addr(), ?listeners, version = handle.config_version(), "ready");
    Ok(())
}

/// Standalone mode's file source: re-reads the directory when a file's name, size or mtime
/// changes, programs the chosen Gateway with `meridian_gwapi::program`, and applies it.
///
/// A file is the unit of change, as in the agent's directory source: a file with a fatal
/// problem (bad YAML, an object validation drops) keeps its last good content while every
/// other file's changes apply, so one tenant's broken route never freezes another's routes or
/// endpoint updates. A file that never parsed cleanly contributes its valid documents (there
/// is nothing older to keep). Problems that keep their object (a listener with an unsupported
/// protocol, an invalid route rule) do not hold the file back: they become status conditions
/// (`UnsupportedProtocol`, `PartiallyInvalid`). Problems are logged each time the directory
/// is read.
///
/// **A change is read once it is stable:** the directory's fingerprint (each file's name,
/// size and mtime) must differ from the one last read and be the same at two consecutive
/// polls, so a writer has one poll interval to finish a file before any prefix of it is
/// parsed (a prefix that parses, say a route without its `rules`, would otherwise be
/// served until the next poll). A change is live within two polls. Replacing files by rename
/// is still the way to make a change atomic.
struct DirWatcher {
    dir: PathBuf,
    gateway: Option<ObjectKey>,
    /// The fingerprint at the last read.
    fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
    /// The fingerprint at the previous poll.
    last_poll: Vec<(PathBuf, u64, Option<SystemTime>)>,
    /// Each file's content in use: its last clean parse, else its valid documents.
    files: BTreeMap<PathBuf, FileContent>,
    version: u64,
    /// The parentRefs naming no Gateway of the directory, as last logged.
    missing_parents: BTreeSet<MissingParent>,
}

/// A route's parentRef naming a Gateway the directory does not hold (a typo, most likely: in
/// standalone mode the directory is the only source of Gateways).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MissingParent {
    /// `HTTPRoute`, `GRPCRoute` or `TLSRoute`.
    kind: &'static str,
    /// The route.
    route: ObjectKey,
    /// The Gateway it names.
    parent: ObjectKey,
}

/// What one file contributes.
struct FileContent {
    objects: Vec<meridian_gwapi::Object>,
    /// Whether `objects` is a clean parse (a later parse with problems keeps it).
    clean: bool,
}

impl DirWatcher {
    fn new(dir: PathBuf, gateway: Option<ObjectKey>) -> Self {
        Self {
            dir,
            gateway,
            fingerprint: Vec::new(),
            last_poll: Vec::new(),
            files: BTreeMap::new(),
            version: 0,
            missing_parents: BTreeSet::new(),
        }
    }

    /// Logs, once per change, every route parentRef that names no Gateway of the directory;
    /// returns the ones logged now.
    fn log_missing_parents(&mut self, objects: &meridian_gwapi::ObjectSet) -> Vec<MissingParent> {
        let missing = missing_parents(objects);
        let new: Vec<MissingParent> = missing.difference(&self.missing_parents).cloned().collect();
        for entry in &new {
            warn!(
                kind = entry.kind,
                route = %entry.route,
                parent_ref = %entry.parent,
                "route not attached: its parentRef names a Gateway that is not in the config directory (NoMatchingParent)"
            );
        }
        self.missing_parents = missing;
        new
    }

    fn scan(&self) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
        meridian_gwapi::config_files(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
                let modified = meta.and_then(|m| m.modified().ok());
                (path, size, modified)
            })
            .collect()
    }

    /// Looks at the directory once; true when it changed since the last read and has stayed
    /// the same since the previous poll (see the type's doc).
    fn poll(&mut self) -> bool {
        let scan = self.scan();
        let ready = scan != self.fingerprint && scan == self.last_poll;
        self.last_poll = scan;
        ready
    }

    /// Reads every file again and returns the objects in use, in file order; `None` when the
    /// directory cannot be listed (a transient error must not remove everything).
    fn read_files(&mut self) -> Option<Vec<meridian_gwapi::Object>> {
        let paths = match meridian_gwapi::config_files(&self.dir) {
            Ok(paths) => paths,
            Err(error) => {
                warn!(dir = %self.dir.display(), %error, "cannot read the config directory; keeping the last good config");
                return None;
            }
        };
        self.files.retain(|path, _| paths.contains(path));
        for path in paths {
            let (objects, problems) = meridian_gwapi::load_file(&path);
            // Problems that kept their object (a listener with an unsupported protocol, an
            // invalid rule) become status conditions; only a fatal one holds the file back.
            let fatal = problems.iter().any(|p| p.fatal);
            for problem in problems.iter().filter(|p| !p.fatal) {
                warn!(%problem, "invalid configuration (applied without it; see the status conditions)");
            }
            if !fatal {
                self.files.insert(
                    path,
                    FileContent {
                        objects,
                        clean: true,
                    },
                );
                continue;
            }
            for problem in problems.iter().filter(|p| p.fatal) {
                warn!(%problem, "invalid configuration");
            }
            match self.files.get(&path) {
                Some(kept) if kept.clean => {
                    warn!(file = %path.display(), "keeping the file's last good content");
                }
                _ => {
                    self.files.insert(
                        path,
                        FileContent {
                            objects,
                            clean: false,
                        },
                    );
                }
            }
        }
        Some(
            self.files
                .values()
                .flat_map(|file| file.objects.iter().cloned())
                .collect(),
        )
    }

    async fn reload(&mut self, handle: &GatewayHandle) {
        self.fingerprint = self.scan();
        self.last_poll = self.fingerprint.clone();
        let Some(objects) = self.read_files() else {
            return;
        };
        let (objects, problems) = meridian_gwapi::ObjectSet::from_objects(objects);
        for problem in &problems {
            warn!(%problem, "invalid configuration");
        }
        self.log_missing_parents(&objects);
        let gateways = meridian_gwapi::gateways(&objects);
        let gateway = match (&self.gateway, gateways.as_slice()) {
            (Some(chosen), _) => chosen.clone(),
            (None, [only]) => only.clone(),
            (None, []) => {
                warn!(dir = %self.dir.display(), "no Gateway in the directory");
                return;
            }
            (None, many) => {
                let names: Vec<String> = many.iter().map(ToString::to_string).collect();
                warn!(
                    ?names,
                    "several Gateways in the directory; choose one with --gateway"
                );
                return;
            }
        };
        let programmed = meridian_gwapi::program(&objects, &[], &gateway);
        log_status(&programmed.status);
        self.version += 1;
        let mut config = programmed.config;
        config.version = self.version;
        match handle.apply(config).await {
            Ok(()) => info!(version = self.version, %gateway, "applied the directory's config"),
            Err(error) => warn!(%error, "config rejected; keeping the last good config"),
        }
    }
}

/// Every route parentRef (to a Gateway) that names no Gateway of `objects`.
fn missing_parents(objects: &meridian_gwapi::ObjectSet) -> BTreeSet<MissingParent> {
    let gateways: BTreeSet<ObjectKey> = objects
        .gateways
        .iter()
        .map(|g| ObjectKey {
            namespace: g
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            name: g.metadata.name.clone(),
        })
        .collect();
    let routes = objects
        .http_routes
        .iter()
        .map(|r| ("HTTPRoute", &r.route.key, &r.route.parent_refs))
        .chain(
            objects
                .grpc_routes
                .iter()
                .map(|r| ("GRPCRoute", &r.route.key, &r.route.parent_refs)),
        )
        .chain(
            objects
                .tls_routes
                .iter()
                .map(|r| ("TLSRoute", &r.route.key, &r.route.parent_refs)),
        );
    let mut missing = BTreeSet::new();
    for (kind, route, parent_refs) in routes {
        for parent in parent_refs {
            if parent.group != "gateway.networking.k8s.io" || parent.kind != "Gateway" {
                continue;
            }
            let parent = ObjectKey {
                namespace: parent.namespace.clone(),
                name: parent.name.clone(),
            };
            if !gateways.contains(&parent) {
                missing.insert(MissingParent {
                    kind,
                    route: route.clone(),
                    parent,
                });
            }
        }
    }
    missing
}

/// Logs every unhealthy condition (a False `Accepted`/`ResolvedRefs`/`Programmed`, a True
/// `Conflicted`/`PartiallyInvalid`) so a standalone user sees why a route, listener or
/// BackendTLSPolicy is not served, with the reason the Gateway API names.
fn log_status(status: &meridian_gwapi::status::GatewayStatus) {
    use meridian_gwapi::status::{Condition, ConditionStatus, ConditionType};
    let bad = |c: &Condition| match c.type_ {
        ConditionType::Conflicted
        | ConditionType::PartiallyInvalid
        | ConditionType::InsecureFrontendValidationMode => c.status == ConditionStatus::True,
        _ => c.status == ConditionStatus::False,
    };
    for c in status.conditions.iter().filter(|c| bad(c)) {
        warn!(gateway = ?status.gateway, condition = ?c.type_, reason = ?c.reason, message = %c.message, "Gateway condition");
    }
    for listener in &status.listeners {
        for c in listener.conditions.iter().filter(|c| bad(c)) {
            warn!(listener = %listener.name, condition = ?c.type_, reason = ?c.reason, message = %c.message, "listener condition");
        }
    }
    for route in &status.routes {
        for parent in &route.parents {
            for c in parent.conditions.iter().filter(|c| bad(c)) {
                warn!(route = %route.key, kind = ?route.kind, condition = ?c.type_, reason = ?c.reason, message = %c.message, "route condition");
            }
        }
    }
    for policy in &status.policies {
        for c in policy.conditions.iter().filter(|c| bad(c)) {
            warn!(policy = %policy.key, condition = ?c.type_, reason = ?c.reason, message = %c.message, "BackendTLSPolicy condition");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: meridian\n  listeners:\n  - {name: web, port: 8080, protocol: HTTP}\n";

    fn listeners(objects: &[meridian_gwapi::Object]) -> Vec<String> {
        objects
            .iter()
            .filter_map(|o| match &o.resource {
                meridian_gwapi::Resource::Gateway(g) => Some(&g.spec.listeners),
                _ => None,
            })
            .flatten()
            .map(|l| l.name.clone())
            .collect()
    }

    #[test]
    fn a_parent_ref_naming_no_gateway_is_logged_once_per_change() {
        let dir = tempfile::tempdir().unwrap();
        let route = |name: &str, parents: &str| {
            format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: {parents}\n"
            )
        };
        let mut watcher = DirWatcher::new(dir.path().to_path_buf(), None);
        let mut check = |text: String| {
            let (objects, _) = meridian_gwapi::parse_documents(&text, "x.yaml");
            let (set, _) = meridian_gwapi::ObjectSet::from_objects(objects);
            watcher
                .log_missing_parents(&set)
                .iter()
                .map(|m| format!("{} {} -> {}", m.kind, m.route, m.parent))
                .collect::<Vec<_>>()
        };
        let typo = format!(
            "{GATEWAY}{}{}",
            route("ok", "[{name: gw}]"),
            route(
                "typo",
                "[{name: gw}, {name: gw-typo}, {name: gw, namespace: other}]"
            )
        );
        assert_eq!(
            check(typo.clone()),
            [
                "HTTPRoute default/typo -> default/gw-typo",
                "HTTPRoute default/typo -> other/gw"
            ]
        );
        // Unchanged: not logged again.
        assert!(check(typo).is_empty());
        // Fixed, then broken again: logged again.
        assert!(check(format!("{GATEWAY}{}", route("typo", "[{name: gw}]"))).is_empty());
        assert_eq!(
            check(format!("{GATEWAY}{}", route("typo", "[{name: gw-typo}]"))),
            ["HTTPRoute default/typo -> default/gw-typo"]
        );
    }

    #[test]
    fn a_change_is_read_once_it_stayed_the_same_for_a_poll() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.yaml");
        std::fs::write(&file, GATEWAY).unwrap();
        let mut watcher = DirWatcher::new(dir.path().to_path_buf(), None);
        // What `reload` does at start.
        watcher.fingerprint = watcher.scan();
        watcher.last_poll = watcher.fingerprint.clone();
        assert!(!watcher.poll(), "nothing changed");

        // A writer has written a prefix that parses (a Gateway without its second
        // listener): not read at the poll that first sees it...
        let full = format!("{GATEWAY}  - {{name: web2, port: 8081, protocol: HTTP}}\n");
        std::fs::write(&file, &full[..GATEWAY.len() - 1]).unwrap();
        assert!(!watcher.poll(), "a change seen once is not read");
        // ...and the writer finishes within the poll interval: still changing, not read.
        std::fs::write(&file, &full).unwrap();
        assert!(!watcher.poll(), "changed again since the last poll");
        // Unchanged for one poll: read, whole.
        assert!(watcher.poll(), "stable over two polls");
        watcher.fingerprint = watcher.scan();
        assert_eq!(listeners(&watcher.read_files().unwrap()), ["web", "web2"]);
        assert!(!watcher.poll());

        // A new file too: read at the second poll that sees it.
        std::fs::write(dir.path().join("new.yaml"), "").unwrap();
        assert!(!watcher.poll());
        assert!(watcher.poll());
    }

    #[test]
    fn problems_that_keep_their_object_do_not_hold_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.yaml");
        std::fs::write(&file, GATEWAY).unwrap();
        let mut watcher = DirWatcher::new(dir.path().to_path_buf(), None);
        assert_eq!(listeners(&watcher.read_files().unwrap()), ["web"]);

        // A TCP listener (UnsupportedProtocol, a listener condition) and a new HTTP one: the
        // edit applies, the HTTP listener with it.
        std::fs::write(
            &file,
            format!(
                "{GATEWAY}  - {{name: db, port: 5432, protocol: TCP}}\n  - {{name: web2, port: 8081, protocol: HTTP}}\n"
            ),
        )
        .unwrap();
        assert_eq!(
            listeners(&watcher.read_files().unwrap()),
            ["web", "db", "web2"]
        );

        // A fatal problem (no gatewayClassName) keeps the last good content.
        std::fs::write(&file, GATEWAY.replace("meridian", "''")).unwrap();
        assert_eq!(
            listeners(&watcher.read_files().unwrap()),
            ["web", "db", "web2"]
        );
    }
}
