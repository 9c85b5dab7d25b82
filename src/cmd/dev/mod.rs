//! `meridian dev`: a 3-node hub, two simulated clusters and demo backends on one machine.
//!
//! Every component is its own OS process of this binary, started in dependency order:
//! hubs → (cluster and hostname registered through the admin API) → echo backends → agents →
//! gateways → the shared route. `dev.json` in the state directory says where everything is,
//! and a short guide with `dig` and `curl` commands is printed. Ctrl-C or SIGTERM stops all.
//! One run per state directory (`lock.rs`); children die with the run, even after `kill -9`
//! (`supervisor.rs`).

mod cluster;
mod lock;
mod ports;
mod supervisor;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use cluster::{DevCluster, GATEWAY_NAME, GATEWAY_NAMESPACE, TLS_SECRET};
use supervisor::{Component, Supervisor};

/// The demo zone.
const ZONE: &str = "demo.meridian.test";
/// The demo hostname, served by both clusters.
const HOSTNAME: &str = "app.demo.meridian.test";

/// Arguments of `meridian dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where hub data, cluster configs, logs and `dev.json` go. Wiped at start: each run is fresh.
    /// Locked while a run uses it: a second run in the same directory refuses to start. A
    /// non-empty directory that is not one of dev's own is refused, never wiped.
    #[arg(long, default_value = "./.meridian-dev")]
    state_dir: PathBuf,
    /// Number of hub nodes (3 or 5 for a real quorum; 1 for the smallest setup).
    #[arg(long, default_value_t = 3)]
    hubs: u8,
    /// Seconds before a component that died is started again, as a kubelet would restart a pod
    /// (0: never restart).
    #[arg(long, default_value_t = 10)]
    restart_after: u64,
    /// Write `{"dev_json": PATH, "pid": PID}` here once everything is up (for tests and scripts).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// Where a hub node listens.
struct HubNode {
    id: u8,
    grpc: SocketAddr,
    admin: SocketAddr,
    dns: SocketAddr,
    component: Arc<Component>,
}

/// A running simulated cluster.
struct RunningCluster {
    spec: DevCluster,
    gateway: SocketAddr,
    gateway_https: SocketAddr,
    gateway_admin: String,
    gateway_component: Arc<Component>,
    agent_component: Arc<Component>,
    agent_admin: String,
    backends: Vec<(String, SocketAddr, Arc<Component>)>,
}

/// Runs `meridian dev` until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.hubs == 0 || args.hubs.is_multiple_of(2) {
        bail!(
            "--hubs must be odd (1, 3 or 5): {} nodes survive no more node failures than {}, \
             and a quorum of them is harder to keep",
            args.hubs,
            args.hubs.saturating_sub(1)
        );
    }
    // Each run clears its state directory: never one that holds anything else.
    check_state_dir_is_ours(&args.state_dir)?;
    // Before anything in the directory changes: another run may be using it. Held until this
    // function returns, after the children are stopped.
    let _lock = lock::lock_state_dir(&args.state_dir)?;
    let state_dir = prepare_state_dir(&args.state_dir)?;
    let exe = std::env::current_exe().context("locate the meridian binary")?;
    let restart_after = (args.restart_after > 0).then(|| Duration::from_secs(args.restart_after));
    let supervisor = Supervisor::new(
        exe,
        state_dir.join("run"),
        state_dir.join("logs"),
        restart_after,
    );

    let started = Instant::now();
    let outcome = tokio::select! {
        result = start_everything(&supervisor, &state_dir, args.hubs) => result,
        _ = shutdown_signal() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    let (hubs, clusters) = match outcome {
        Ok(running) => running,
        Err(error) => {
            supervisor.stop_all(Duration::from_secs(5)).await;
            return Err(error.context(format!(
                "meridian dev failed to start; logs are in {}",
                state_dir.join("logs").display()
            )));
        }
    };

    let dev_json = state_dir.join("dev.json");
    write_dev_json(&dev_json, &state_dir, &hubs, &clusters)?;
    print_guide(&state_dir, &hubs, &clusters, started.elapsed());
    if let Some(ready) = &args.ready_file {
        super::process::write_atomically(
            ready,
            &json!({"dev_json": dev_json, "pid": std::process::id()}).to_string(),
        )?;
    }

    // Keep dev.json's pids true when a component is restarted.
    let mut pid_changes = supervisor.pid_changes();
    loop {
        tokio::select! {
            _ = shutdown_signal() => break,
            _ = pid_changes.changed() => {
                if let Err(error) = write_dev_json(&dev_json, &state_dir, &hubs, &clusters) {
                    tracing::warn!(%error, "could not update dev.json");
                }
            }
        }
    }
    eprintln!("stopping meridian dev ...");
    supervisor.stop_all(Duration::from_secs(5)).await;
    // Its pids and addresses are gone: a script must not find them (logs and data stay).
    let _ = std::fs::remove_file(&dev_json);
    Ok(())
}

async fn start_everything(
    supervisor: &Arc<Supervisor>,
    state_dir: &Path,
    n_hubs: u8,
) -> anyhow::Result<(Vec<HubNode>, Vec<RunningCluster>)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let hubs = start_hubs(supervisor, state_dir, n_hubs).await?;
    let admin = format!("http://{}", hubs[0].admin);
    wait_for_leader(&http, &admin).await?;

    let specs = cluster::clusters();
    for spec in &specs {
        put_json(
            &http,
            &format!("{admin}/v1/clusters/{}", spec.name),
            &json!({"region": spec.region, "addresses": [spec.gateway_ip.to_string()]}),
        )
        .await?;
    }
    let targets: Vec<_> = specs
        .iter()
        .map(|s| json!({"cluster": s.name, "weight": 1}))
        .collect();
    put_json(
        &http,
        &format!("{admin}/v1/hostnames/{HOSTNAME}"),
        &json!({"ttl": 5, "targets": targets}),
    )
    .await?;
    // The HTTPS listeners' certificate, distributed by the hub like in production (a
    // self-signed one for the demo zone; its PEM is kept for `curl --cacert`).
    let certified = rcgen::generate_simple_self_signed(vec![format!("*.{ZONE}"), ZONE.to_string()])
        .context("generating the demo certificate")?;
    let tls_dir = state_dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    std::fs::write(tls_dir.join("demo-tls.crt"), certified.cert.pem())?;
    put_json(
        &http,
        &format!("{admin}/v1/certificates/{GATEWAY_NAMESPACE}/{TLS_SECRET}"),
        &json!({
            "cert_chain_pem": certified.cert.pem(),
            "private_key_pem": certified.signing_key.serialize_pem(),
        }),
    )
    .await?;

    let hub_grpc: Vec<String> = hubs.iter().map(|h| format!("http://{}", h.grpc)).collect();
    let mut clusters = Vec::new();
    for (index, spec) in specs.into_iter().enumerate() {
        // Each agent starts on a different hub node (as production agents should list them
        // in different orders), so the sessions spread over the group.
        let mut order = hub_grpc.clone();
        let first = index % order.len().max(1);
        order.rotate_left(first);
        clusters.push(start_cluster(supervisor, state_dir, spec, &order).await?);
    }
    put_json(
        &http,
        &format!("{admin}/v1/routes/demo/app"),
        &cluster::shared_route(HOSTNAME),
    )
    .await?;
    wait_until_serving(&http, &hubs[0], &clusters).await?;
    Ok((hubs, clusters))
}

async fn start_hubs(
    supervisor: &Arc<Supervisor>,
    state_dir: &Path,
    n_hubs: u8,
) -> anyhow::Result<Vec<HubNode>> {
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let ports = ports::free_ports(localhost, 3 * usize::from(n_hubs))?;
    let addr = |i: usize| SocketAddr::new(localhost, ports[i]);
    let planned: Vec<_> = (1..=n_hubs)
        .map(|id| {
            let base = 3 * usize::from(id - 1);
            (id, addr(base), addr(base + 1), addr(base + 2))
        })
        .collect();
    let peers = planned
        .iter()
        .map(|(id, grpc, _, _)| format!("{id}={grpc}"))
        .collect::<Vec<_>>()
        .join(",");
    let nameservers = planned.clone();
    // Start every node before waiting for any: a node is ready only once it can serve, and the
    // first needs a quorum of the others to elect a leader.
    let mut starts = Vec::new();
    for (id, grpc, admin, dns) in planned {
        let mut args: Vec<String> = vec![
            "hub".into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            state_dir.join(format!("hub-{id}")).display().to_string(),
            "--grpc".into(),
            grpc.to_string(),
            "--admin".into(),
            admin.to_string(),
            "--dns".into(),
            dns.to_string(),
            "--peers".into(),
            peers.clone(),
            "--zone".into(),
            ZONE.into(),
        ];
        // Every node serves the same NS set: one name server per hub node.
        for (ns_id, _, _, ns_dns) in &nameservers {
            args.push("--nameserver".into());
            args.push(format!("ns{ns_id}.{ZONE}={}", ns_dns.ip()));
        }
        for spec in cluster::clusters() {
            args.push("--geo-cidr".into());
            args.push(format!("{}={}", spec.client_subnet, spec.region));
        }
        let supervisor = supervisor.clone();
        starts.push(tokio::spawn(async move {
            let name = format!("hub-{id}");
            let (component, _) = supervisor
                .start(&name, args, Duration::from_secs(60))
                .await?;
            Ok::<_, anyhow::Error>(HubNode {
                id,
                grpc,
                admin,
                dns,
                component,
            })
        }));
    }
    let mut hubs = Vec::new();
    for start in starts {
        hubs.push(start.await??);
    }
    Ok(hubs)
}

async fn start_cluster(
    supervisor: &Arc<Supervisor>,
    state_dir: &Path,
    spec: DevCluster,
    hub_grpc: &[String],
) -> anyhow::Result<RunningCluster> {
    let dir = state_dir.join("clusters").join(spec.name);
    // Every address is chosen here, once: a component the supervisor restarts comes back
    // where the config files, the other components and dev.json expect it (port 0 would give
    // it a new port at each start).
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let local = ports::free_ports(localhost, 4)?;
    let (agent_grpc_port, agent_admin_port) = (local[2], local[3]);
    let mut backends = Vec::new();
    for n in 1..=2 {
        let name = format!("{}-echo-{n}", spec.name);
        let (component, ready) = supervisor
            .start(
                &name,
                vec![
                    "echo".into(),
                    "--listen".into(),
                    SocketAddr::new(localhost, local[n - 1]).to_string(),
                    "--name".into(),
                    name.clone(),
                ],
                Duration::from_secs(20),
            )
            .await?;
        let addr = ready_addr(&ready, &["listen", "addr", "http"])
            .with_context(|| format!("{name} ready file has no address: {ready}"))?;
        backends.push((name, addr, component));
    }
    let ports = ports::free_ports(spec.gateway_ip, 3)?;
    let (gateway_port, https_port, gateway_admin_port) = (ports[0], ports[1], ports[2]);
    let addrs: Vec<SocketAddr> = backends.iter().map(|(_, addr, _)| *addr).collect();
    cluster::write_config(
        &dir.join("config"),
        &spec,
        gateway_port,
        https_port,
        ZONE,
        &addrs,
    )?;

    let agent_name = format!("{}-agent", spec.name);
    let (agent_component, agent_ready) = supervisor
        .start(
            &agent_name,
            vec![
                "agent".into(),
                "--cluster".into(),
                spec.name.into(),
                "--config-dir".into(),
                dir.join("config").display().to_string(),
                "--hub".into(),
                hub_grpc.join(","),
                "--listen".into(),
                SocketAddr::new(localhost, agent_grpc_port).to_string(),
                "--admin".into(),
                SocketAddr::new(localhost, agent_admin_port).to_string(),
                "--state-dir".into(),
                dir.join("agent").display().to_string(),
            ],
            Duration::from_secs(30),
        )
        .await?;
    let agent_grpc = ready_addr(&agent_ready, &["grpc", "listen"])
        .with_context(|| format!("{agent_name} ready file has no grpc address: {agent_ready}"))?;
    let agent_admin = ready_addr(&agent_ready, &["admin"])
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();

    let gateway_name = format!("{}-gateway", spec.name);
    let (gateway_component, gateway_ready) = supervisor
        .start(
            &gateway_name,
            vec![
                "gateway".into(),
                "--agent".into(),
                format!("http://{agent_grpc}"),
                "--gateway".into(),
                format!("{GATEWAY_NAMESPACE}/{GATEWAY_NAME}"),
                "--instance".into(),
                format!("{}-gateway-1", spec.name),
                "--admin".into(),
                SocketAddr::new(spec.gateway_ip, gateway_admin_port).to_string(),
            ],
            Duration::from_secs(30),
        )
        .await?;
    let gateway_admin = ready_addr(&gateway_ready, &["admin"])
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    Ok(RunningCluster {
        gateway: SocketAddr::new(spec.gateway_ip, gateway_port),
        gateway_https: SocketAddr::new(spec.gateway_ip, https_port),
        spec,
        gateway_admin,
        gateway_component,
        agent_component,
        agent_admin,
        backends,
    })
}

/// Waits until the whole path works: DNS answers each region's subnet with its own cluster and
/// each gateway serves the shared route from its own backends.
async fn wait_until_serving(
    http: &reqwest::Client,
    hub: &HubNode,
    clusters: &[RunningCluster],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for cluster in clusters {
        let url = format!("http://{}/", cluster.gateway);
        loop {
            let served = http
                .get(&url)
                .header("host", HOSTNAME)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if served.is_some() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "gateway {} never served {HOSTNAME}; see {}",
                    cluster.gateway,
                    cluster.gateway_component.log_file().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // DNS: the status API tells when every cluster is healthy; the answers follow from that.
    let status_url = format!("http://{}/v1/status", hub.admin);
    loop {
        let healthy = match http.get(&status_url).send().await {
            Ok(response) => response
                .json::<serde_json::Value>()
                .await
                .map(|status| all_clusters_healthy(&status, clusters.len()))
                .unwrap_or(false),
            Err(_) => false,
        };
        if healthy {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "clusters did not become healthy within 60s; see {}",
                hub.component.log_file().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The DNS server recompiles its answers from that state a moment later: ready means each
    // region's clients already get their own cluster, as the served snapshot shows.
    for cluster in clusters {
        let client = cluster
            .spec
            .client_subnet
            .split('/')
            .next()
            .and_then(|network| network.parse::<std::net::Ipv4Addr>().ok())
            .map(|network| std::net::Ipv4Addr::from(u32::from(network) + 1))
            .context("the demo client subnet is an IPv4 network")?;
        let url = format!(
            "http://{}/v1/dns/explain?name={HOSTNAME}&type=A&client={client}",
            hub.admin
        );
        let gateway_ip = cluster.spec.gateway_ip.to_string();
        loop {
            let answered = match http.get(&url).send().await {
                Ok(response) => response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|explained| explained.get("answers").cloned())
                    .and_then(|answers| answers.as_array().cloned())
                    .is_some_and(|answers| {
                        answers
                            .iter()
                            .filter_map(|a| a.as_str())
                            .any(|a| a.ends_with(&gateway_ip))
                    }),
                Err(_) => false,
            };
            if answered {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "DNS did not answer {} clients with their own cluster within 60s; see {}",
                    cluster.spec.region,
                    hub.component.log_file().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// True when `GET /v1/status` lists `n` clusters, all with a healthy committed verdict and
/// committed as serving the demo hostname (so DNS answers each region with its own cluster).
fn all_clusters_healthy(status: &serde_json::Value, n: usize) -> bool {
    let Some(clusters) = status.get("clusters").and_then(|c| c.as_array()) else {
        return false;
    };
    clusters.len() == n
        && clusters.iter().all(|c| {
            c.pointer("/health/verdict").and_then(|v| v.as_str()) == Some("healthy")
                && c.get("hostnames")
                    .and_then(|h| h.get(HOSTNAME))
                    .and_then(|h| h.get("serving"))
                    .and_then(|s| s.as_bool())
                    == Some(true)
        })
}

async fn wait_for_leader(http: &reqwest::Client, admin: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = match http.get(format!("{admin}/v1/status")).send().await {
            Ok(response) => response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|status| status.get("leader_id").and_then(|v| v.as_u64()))
                .unwrap_or(0),
            Err(_) => 0,
        };
        if leader != 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the hub elected no leader within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PUTs JSON, retrying while the hub is between leaders.
async fn put_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let error = match http.put(url).json(body).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                bail!("PUT {url} was refused ({status}): {text}");
            }
            Ok(response) => format!("{}", response.status()),
            Err(error) => error.to_string(),
        };
        if Instant::now() > deadline {
            bail!("PUT {url} failed: {error}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads the first of `keys` that holds a socket address in a ready file.
fn ready_addr(ready: &serde_json::Value, keys: &[&str]) -> Option<SocketAddr> {
    keys.iter()
        .filter_map(|key| ready.get(*key).and_then(|v| v.as_str()))
        .find_map(|text| text.trim_start_matches("http://").parse().ok())
}

/// Marks a directory as `meridian dev`'s state directory (it clears it at every start). A name
/// no other tool uses, and unlike the default state directory's own (`.meridian-dev`), so a
/// directory that merely contains a state directory is not taken for one.
const STATE_MARKER: &str = "meridian-dev-state.txt";

/// Refuses a state directory that holds files `meridian dev` did not put there: it clears
/// the directory at every start, and `--state-dir .` in a checkout or `--state-dir ~` must not
/// cost anyone their files. A directory that does not exist yet, an empty one, and one with
/// the marker file (or, from runs before the marker, the lock file next to `clusters/`) are
/// fine.
fn check_state_dir_is_ours(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("read the state directory {}", dir.display()));
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("read the state directory {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file
            && (name == STATE_MARKER || (name == lock::LOCK_FILE && dir.join("clusters").is_dir()))
        {
            return Ok(());
        }
        names.push(name);
    }
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let more = if names.len() > 5 { ", ..." } else { "" };
    bail!(
        "{} is not empty ({shown}{more}) and is not a meridian dev state directory; meridian dev \
         clears its state directory at every start, so give it a new or empty one (--state-dir)",
        dir.display()
    )
}

/// Empties `dir` (which holds the lock) except for the lock file and the marker, and creates
/// its layout.
fn prepare_state_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    // Each run starts fresh: ports are chosen anew, and old Raft membership would name
    // addresses nobody listens on any more. The lock file stays: removing it would let a third
    // run lock a new file while this one still runs.
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("read the state directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read the state directory {}", dir.display()))?;
        if entry.file_name() == lock::LOCK_FILE || entry.file_name() == STATE_MARKER {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("clear {} from the state directory", path.display()))?;
    }
    std::fs::write(
        dir.join(STATE_MARKER),
        "meridian dev's state directory: cleared at every start of meridian dev\n",
    )
    .with_context(|| format!("mark {} as meridian dev's", dir.display()))?;
    for sub in ["run", "logs", "clusters"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("create {}", dir.join(sub).display()))?;
    }
    Ok(std::fs::canonicalize(dir)?)
}

fn write_dev_json(
    path: &Path,
    state_dir: &Path,
    hubs: &[HubNode],
    clusters: &[RunningCluster],
) -> anyhow::Result<()> {
    let doc = json!({
        "dns": hubs[0].dns.to_string(),
        "admin": format!("http://{}", hubs[0].admin),
        "zone": ZONE,
        "hostname": HOSTNAME,
        "tls": {
            "secret": format!("{GATEWAY_NAMESPACE}/{TLS_SECRET}"),
            "certificate": state_dir.join("tls").join("demo-tls.crt"),
        },
        "hubs": hubs.iter().map(|h| json!({
            "id": h.id,
            "pid": h.component.pid(),
            "admin": format!("http://{}", h.admin),
            "grpc": format!("http://{}", h.grpc),
            "dns": h.dns.to_string(),
        })).collect::<Vec<_>>(),
        "clusters": clusters.iter().map(|c| json!({
            "name": c.spec.name,
            "region": c.spec.region,
            "client_subnet": c.spec.client_subnet,
            "gateway": c.gateway.to_string(),
            "gateway_https": c.gateway_https.to_string(),
            "gateway_pid": c.gateway_component.pid(),
            "gateway_admin": c.gateway_admin,
            "agent_pid": c.agent_component.pid(),
            "agent_admin": c.agent_admin,
            "backends": c.backends.iter().map(|(name, addr, component)| json!({
                "name": name, "addr": addr.to_string(), "pid": component.pid(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    super::process::write_atomically(path, &serde_json::to_string_pretty(&doc)?)
}

#[allow(clippy::print_stdout)]
fn print_guide(state_dir: &Path, hubs: &[HubNode], clusters: &[RunningCluster], took: Duration) {
    let dns = hubs[0].dns;
    let admin = hubs[0].admin;
    println!();
    println!(
        "Meridian dev is up in {:.1}s: {} hub nodes, {} clusters.",
        took.as_secs_f64(),
        hubs.len(),
        clusters.len()
    );
    println!("State, logs and dev.json: {}", state_dir.display());
    println!();
    println!("Ask the GeoDNS which cluster a client in each region gets:");
    for c in clusters {
        println!(
            "  dig @{} -p {} {HOSTNAME} A +subnet={}    # {} client -> {} ({})",
            dns.ip(),
            dns.port(),
            c.spec.client_subnet,
            c.spec.region,
            c.gateway.ip(),
            c.spec.name
        );
    }
    println!();
    println!("Call the app through each cluster's gateway, over HTTP and HTTPS (the certificate");
    println!("is distributed by the hub):");
    let certificate = state_dir.join("tls").join("demo-tls.crt");
    for c in clusters {
        println!("  curl -H 'Host: {HOSTNAME}' http://{}/", c.gateway);
        println!(
            "  curl --cacert {} --resolve {HOSTNAME}:{}:{} https://{HOSTNAME}:{}/",
            certificate.display(),
            c.gateway_https.port(),
            c.gateway_https.ip(),
            c.gateway_https.port()
        );
    }
    if let Some(eu) = clusters.iter().find(|c| c.spec.name == "eu-west") {
        println!();
        println!("Fail a cluster over: kill its gateway and ask DNS again within a few seconds:");
        println!(
            "  kill -9 {}   # eu-west gateway (dev restarts it after a while, like a kubelet)",
            eu.gateway_component.pid()
        );
        println!(
            "  dig @{} -p {} {HOSTNAME} A +subnet={} +short",
            dns.ip(),
            dns.port(),
            eu.spec.client_subnet
        );
    }
    println!();
    // The running binary's own path: after `cargo run -- dev`, `meridian` is not on PATH.
    let meridian = std::env::current_exe()
        .ok()
        .map_or_else(|| "meridian".to_string(), |p| p.display().to_string());
    println!("Inspect the hub:");
    println!("  {meridian} ctl --hub http://{admin} status");
    println!("  {meridian} ctl --hub http://{admin} clusters");
    println!(
        "  {meridian} ctl --hub http://{admin} routes   # how each cluster programmed each global route"
    );
    println!("  curl http://{admin}/v1/status");
    println!();
    println!("Press Ctrl-C to stop everything.");
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
