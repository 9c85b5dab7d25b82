//! `meridian hub`: one hub node (Raft member, GeoDNS, admin API, agent API).
//!
//! Configuration comes from `--config FILE` (YAML, see `meridian_hub::HubConfig`), with flags
//! overriding or replacing it, so tests and `meridian dev` need no file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::process::{raise_fd_limit, wait_for_signal, write_ready_file};
use meridian_hub::config::{AdminTlsConfig, DEFAULT_PEER_IDENTITY, GrpcTlsConfig};
use meridian_hub::dns::{NameserverConfig, ZoneConfig};
use meridian_hub::raft::PeerAddr;
use meridian_hub::{Hub, HubConfig};

/// Arguments of `meridian hub`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML configuration file; flags below override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's Raft id (non-zero). Required without --config.
    #[arg(long, value_name = "N")]
    id: Option<u64>,
    /// Data directory (Raft log and snapshots). Required without --config.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (agents, Raft peers). Port 0 picks one (single node only).
    #[arg(long, value_name = "ADDR")]
    grpc: Option<SocketAddr>,
    /// gRPC address other nodes and agents use, when it differs from --grpc: `IP:PORT` or
    /// `DNS-NAME:PORT` (a StatefulSet pod's stable name; resolved on every connect).
    #[arg(long, value_name = "ADDR")]
    advertise: Option<PeerAddr>,
    /// Admin API listen address.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// DNS listen address (UDP and TCP).
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// Initial Raft members of a new group: `1=ADDR,2=ADDR,3=ADDR` (gRPC addresses, `IP:PORT` or
    /// `DNS-NAME:PORT`), the same on every node. Without it (and without --join) the node is a
    /// group of one.
    #[arg(long, value_name = "ID=ADDR,...")]
    peers: Option<String>,
    /// Start without members and wait to be added (`meridian ctl members add ID ADDR`).
    #[arg(long)]
    join: bool,
    /// An authoritative zone (repeatable).
    #[arg(long = "zone", value_name = "ORIGIN")]
    zones: Vec<String>,
    /// A name server of every --zone zone: `NAME=IP` (repeatable).
    #[arg(long = "nameserver", value_name = "NAME=IP")]
    nameservers: Vec<String>,
    /// Sign the --zone zones with DNSSEC (the leader generates and commits the keys).
    #[arg(long)]
    dnssec: bool,
    /// Client network → region override: `203.0.113.0/24=us` (repeatable).
    #[arg(long = "geo-cidr", value_name = "CIDR=REGION")]
    geo_cidrs: Vec<String>,
    /// A MaxMind-format (GeoIP2/GeoLite2 Country or City) database.
    #[arg(long, value_name = "FILE")]
    geo_mmdb: Option<PathBuf>,
    /// Expected interval of agents' health reports, in milliseconds.
    #[arg(long, value_name = "MS")]
    report_interval_ms: Option<u64>,
    /// Reports missed before a cluster is unhealthy.
    #[arg(long, value_name = "N")]
    missed_reports: Option<u32>,
    /// Raft tuning (boxed: it keeps the subcommand enum small).
    #[command(flatten)]
    raft: Box<RaftArgs>,
    /// Authentication and TLS (boxed: it keeps the subcommand enum small).
    #[command(flatten)]
    security: Box<SecurityArgs>,
    /// Once serving, write `{"admin":..,"grpc":..,"dns":..,"pid":..,"node_id":..}` here
    /// (atomically: a temporary file renamed into place).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

/// The Raft tuning flags of `meridian hub` (each overrides the file's `raft.*` value).
#[derive(Debug, clap::Args)]
struct RaftArgs {
    /// Raft tick interval in milliseconds (default 50); election and heartbeat timeouts are
    /// counted in ticks.
    #[arg(long, value_name = "MS")]
    raft_tick_ms: Option<u64>,
    /// Ticks without a leader before a follower campaigns (default 10; raft randomizes the
    /// timeout between this and twice this).
    #[arg(long, value_name = "N")]
    raft_election_ticks: Option<usize>,
    /// Ticks between leader heartbeats (default 2; must be below --raft-election-ticks).
    #[arg(long, value_name = "N")]
    raft_heartbeat_ticks: Option<usize>,
    /// Applied entries between snapshots (default 10000); the log is compacted at each.
    #[arg(long, value_name = "N")]
    snapshot_threshold: Option<u64>,
    /// How long a write or linearizable read waits for the group, in milliseconds (default
    /// 10000).
    #[arg(long, value_name = "MS")]
    raft_request_timeout_ms: Option<u64>,
    /// Source IP of connections to other hub nodes. Default: the --grpc IP when it is a
    /// specific address (not 0.0.0.0 or ::), else chosen by the OS.
    #[arg(long, value_name = "IP")]
    raft_outbound_ip: Option<std::net::IpAddr>,
}

/// The authentication and TLS flags of `meridian hub`.
#[derive(Debug, clap::Args)]
struct SecurityArgs {
    /// Admin API bearer tokens: one per line, `TOKEN` or `NAME TOKEN` (NAME is the audit
    /// actor). Without it the admin API is open and may only listen on loopback.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Allow an admin API without tokens on a non-loopback address (anyone who reaches it can
    /// change everything).
    #[arg(long)]
    insecure_admin: bool,
    /// Allow gRPC (Raft peers, agents) without TLS on a non-loopback address (anyone who
    /// reaches it can send Raft messages and report as any cluster).
    #[arg(long)]
    insecure_grpc: bool,
    /// This node's TLS certificate chain (PEM) for gRPC: served to agents and peers and
    /// presented to peers. With --tls-key and --tls-ca it turns on mutual TLS.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that agents' and peers' client certificates must chain to.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// The identity (DNS SAN or CN) hub nodes' certificates carry; hub-to-hub calls require it
    /// and peers verify each other against it. Must contain a dot.
    #[arg(long, value_name = "NAME")]
    tls_peer_name: Option<String>,
    /// Serve the admin API over HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "admin_tls_key")]
    admin_tls_cert: Option<PathBuf>,
    /// The private key of --admin-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "admin_tls_cert")]
    admin_tls_key: Option<PathBuf>,
}

/// Runs `meridian hub` until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    // Agents, peers, admin clients and DNS over TCP all take descriptors.
    raise_fd_limit();
    if let Some(path) = &args.ready_file {
        // A stale file from an earlier run must not look like this run being ready.
        let _ = std::fs::remove_file(path);
    }
    let hub = Hub::spawn(config).await.context("starting the hub")?;
    if let Some(path) = &args.ready_file {
        let ready = serde_json::json!({
            "admin": hub.admin_addr().to_string(),
            "grpc": hub.grpc_addr().to_string(),
            "dns": hub.dns_addr().to_string(),
            "pid": std::process::id(),
            "node_id": hub.node_id(),
        });
        write_ready_file(path, &ready)?;
    }
    let fault = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            None
        }
        fault = hub.failed() => Some(fault),
    };
    if let Some(fault) = &fault {
        // Serving on would answer DNS and agents from a frozen (or empty) state forever.
        tracing::error!(
            node = hub.node_id(),
            error = %fault,
            remedy = %fault.remedy(),
            "the raft node stopped; exiting"
        );
    } else {
        tracing::info!("shutting down");
    }
    hub.shutdown().await;
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    match fault {
        Some(fault) => bail!("the raft node stopped: {fault}\nremedy: {}", fault.remedy()),
        None => Ok(()),
    }
}

/// The node configuration: the file's (if any) with the flags applied.
fn build_config(args: &Args) -> anyhow::Result<HubConfig> {
    let mut config = match &args.config {
        Some(path) => HubConfig::from_file(path)?,
        None => {
            let (Some(id), Some(data_dir)) = (args.id, &args.data_dir) else {
                bail!("--id and --data-dir are required without --config");
            };
            HubConfig::new(id, data_dir)
        }
    };
    if let Some(id) = args.id {
        config.node_id = id;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(addr) = args.grpc {
        config.grpc_listen = addr;
    }
    if let Some(addr) = &args.advertise {
        config.grpc_advertise = Some(addr.clone());
    }
    if let Some(addr) = args.admin {
        config.admin_listen = addr;
    }
    if let Some(addr) = args.dns {
        config.dns.listen = addr;
    }
    if let Some(peers) = &args.peers {
        config.members = parse_peers(peers)?;
    }
    if args.join {
        config.join = true;
        config.members.clear();
    }
    let mut nameservers: Vec<NameserverConfig> = Vec::new();
    for spec in &args.nameservers {
        let (name, ip) = spec
            .split_once('=')
            .with_context(|| format!("--nameserver {spec:?}: expected NAME=IP"))?;
        let ip = ip
            .parse()
            .with_context(|| format!("--nameserver {spec:?}: {ip:?} is not an IP address"))?;
        nameservers.push(NameserverConfig {
            name: name.to_string(),
            addresses: vec![ip],
        });
    }
    if nameservers.is_empty() && !args.zones.is_empty() {
        // Without --nameserver, this node is the zones' only name server (`ns1.<zone>`), at
        // its DNS address.
        let ip = config.dns.listen.ip();
        if ip.is_unspecified() {
            bail!("--nameserver NAME=IP is required when --dns listens on {ip}");
        }
        nameservers.push(NameserverConfig {
            name: String::new(),
            addresses: vec![ip],
        });
    }
    for origin in &args.zones {
        let origin = origin.trim_end_matches('.').to_ascii_lowercase();
        let nameservers: Vec<NameserverConfig> = nameservers
            .iter()
            .map(|ns| NameserverConfig {
                name: if ns.name.is_empty() {
                    format!("ns1.{origin}")
                } else {
                    ns.name.clone()
                },
                addresses: ns.addresses.clone(),
            })
            .collect();
        if let Some(zone) = config.dns.zones.iter_mut().find(|z| z.origin == origin) {
            zone.dnssec |= args.dnssec;
            if !nameservers.is_empty() {
                zone.nameservers = nameservers.clone();
            }
            continue;
        }
        // Start from the file format's defaults so both ways of configuring agree.
        let mut zone: ZoneConfig = serde_json::from_value(serde_json::json!({ "origin": origin }))
            .context("building a zone config")?;
        zone.dnssec = args.dnssec;
        zone.nameservers = nameservers.clone();
        config.dns.zones.push(zone);
    }
    for spec in &args.geo_cidrs {
        let (cidr, region) = spec
            .split_once('=')
            .with_context(|| format!("--geo-cidr {spec:?}: expected CIDR=REGION"))?;
        config
            .dns
            .geo
            .networks
            .insert(cidr.to_string(), region.to_string());
    }
    if let Some(mmdb) = &args.geo_mmdb {
        config.dns.geo.mmdb = Some(mmdb.clone());
    }
    if let Some(ms) = args.report_interval_ms {
        config.health.report_interval_ms = ms;
    }
    if let Some(n) = args.missed_reports {
        config.health.missed_reports = n;
    }
    let raft = &args.raft;
    if let Some(ms) = raft.raft_tick_ms {
        config.raft.tick_ms = Some(ms);
    }
    if let Some(ticks) = raft.raft_election_ticks {
        config.raft.election_ticks = Some(ticks);
    }
    if let Some(ticks) = raft.raft_heartbeat_ticks {
        config.raft.heartbeat_ticks = Some(ticks);
    }
    if let Some(threshold) = raft.snapshot_threshold {
        config.raft.snapshot_threshold = Some(threshold);
    }
    if let Some(ms) = raft.raft_request_timeout_ms {
        config.raft.request_timeout_ms = Some(ms);
    }
    if let Some(ip) = raft.raft_outbound_ip {
        config.raft.outbound_source_ip = Some(ip);
    }
    if let Some(file) = &args.security.admin_token_file {
        config.admin_auth.token_file = Some(file.clone());
    }
    if args.security.insecure_grpc {
        config.grpc_insecure = true;
    }
    if args.security.insecure_admin {
        config.admin_auth.insecure = true;
    }
    if let (Some(cert), Some(key), Some(ca)) = (
        &args.security.tls_cert,
        &args.security.tls_key,
        &args.security.tls_ca,
    ) {
        config.grpc_tls = Some(GrpcTlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            peer_identity: DEFAULT_PEER_IDENTITY.to_string(),
        });
    }
    if let (Some(cert), Some(key)) = (&args.security.admin_tls_cert, &args.security.admin_tls_key) {
        config.admin_tls = Some(AdminTlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if let Some(name) = &args.security.tls_peer_name {
        let Some(tls) = config.grpc_tls.as_mut() else {
            bail!(
                "--tls-peer-name needs TLS (--tls-cert, --tls-key and --tls-ca, or grpc_tls in --config)"
            );
        };
        tls.peer_identity = name.clone();
    }
    config.validate()?;
    // After the flags: a config file may leave gRPC TLS or --insecure-grpc to them.
    config.check_grpc_exposure(config.grpc_listen)?;
    Ok(config)
}

/// Parses `1=127.0.0.1:7001,2=hub-1.peers:7001`.
fn parse_peers(spec: &str) -> anyhow::Result<std::collections::BTreeMap<u64, PeerAddr>> {
    let mut members = std::collections::BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("--peers: {part:?} is not ID=ADDR"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("--peers: {id:?} is not a node id"))?;
        let addr: PeerAddr = addr
            .parse()
            .map_err(|e| anyhow::anyhow!("--peers: node {id}: {e}"))?;
        if members.insert(id, addr).is_some() {
            bail!("--peers: node {id} is listed twice");
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config(argv: &[&str]) -> anyhow::Result<HubConfig> {
        let cli = Cli::try_parse_from(std::iter::once("hub").chain(argv.iter().copied()))?;
        build_config(&cli.args)
    }

    #[test]
    fn flags_build_a_three_node_config() {
        let config = config(&[
            "--id",
            "2",
            "--data-dir",
            "/tmp/h2",
            "--grpc",
            "127.0.0.1:7002",
            "--admin",
            "127.0.0.1:4002",
            "--dns",
            "127.0.0.1:5302",
            "--peers",
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
            "--zone",
            "Demo.Meridian.Test.",
            "--dnssec",
            "--geo-cidr",
            "203.0.113.0/24=us",
            "--nameserver",
            "ns1.demo.meridian.test=127.0.0.1",
        ])
        .unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.members.len(), 3);
        assert_eq!(config.dns.listen, "127.0.0.1:5302".parse().unwrap());
        assert_eq!(config.dns.zones[0].origin, "demo.meridian.test");
        assert!(config.dns.zones[0].dnssec);
        assert_eq!(config.dns.zones[0].nameservers.len(), 1);
        assert_eq!(config.dns.geo.networks["203.0.113.0/24"], "us");
    }

    #[test]
    fn security_flags_fill_the_config() {
        let built = config(&[
            "--id",
            "1",
            "--data-dir",
            "/tmp/h1",
            "--admin",
            "0.0.0.0:4001",
            "--admin-token-file",
            "/etc/meridian/tokens",
            "--tls-cert",
            "hub.pem",
            "--tls-key",
            "hub.key",
            "--tls-ca",
            "ca.pem",
            "--tls-peer-name",
            "hubs.example.com",
        ])
        .unwrap();
        let tls = built.grpc_tls.unwrap();
        assert_eq!(tls.ca, PathBuf::from("ca.pem"));
        assert_eq!(tls.peer_identity, "hubs.example.com");
        assert_eq!(
            built.admin_auth.token_file,
            Some(PathBuf::from("/etc/meridian/tokens"))
        );
        // Without tokens a public admin address needs --insecure-admin.
        let err = config(&["--id", "1", "--data-dir", "/x", "--admin", "0.0.0.0:4001"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--insecure-admin"), "{err}");
        assert!(
            config(&[
                "--id",
                "1",
                "--data-dir",
                "/x",
                "--admin",
                "0.0.0.0:4001",
                "--insecure-admin"
            ])
            .is_ok()
        );
        // Without TLS a public gRPC address needs --insecure-grpc.
        let public_grpc = ["--id", "1", "--data-dir", "/x", "--grpc", "0.0.0.0:7001"];
        let err = config(&[&public_grpc[..], &["--advertise", "10.0.0.1:7001"]].concat())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--insecure-grpc"), "{err}");
        assert!(
            config(
                &[
                    &public_grpc[..],
                    &["--advertise", "10.0.0.1:7001", "--insecure-grpc"]
                ]
                .concat()
            )
            .is_ok()
        );
        // TLS flags come together.
        assert!(config(&["--id", "1", "--data-dir", "/x", "--tls-cert", "a.pem"]).is_err());
        let err = config(&["--id", "1", "--data-dir", "/x", "--tls-peer-name", "a.b"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs TLS"), "{err}");
    }

    #[test]
    fn raft_flags_reach_the_raft_config() {
        let built = config(&[
            "--id",
            "1",
            "--data-dir",
            "/tmp/h1",
            "--grpc",
            "127.0.0.11:7001",
            "--raft-tick-ms",
            "20",
            "--raft-election-ticks",
            "15",
            "--raft-heartbeat-ticks",
            "3",
            "--snapshot-threshold",
            "64",
            "--raft-request-timeout-ms",
            "2500",
        ])
        .unwrap();
        let raft = built.raft_config("127.0.0.11:7001".parse().unwrap());
        assert_eq!(raft.tick_interval, std::time::Duration::from_millis(20));
        assert_eq!(raft.election_ticks, 15);
        assert_eq!(raft.heartbeat_ticks, 3);
        assert_eq!(raft.snapshot_threshold, 64);
        assert_eq!(raft.request_timeout, std::time::Duration::from_millis(2500));
        // The outbound source IP follows a specific --grpc IP unless given.
        assert_eq!(raft.outbound_source_ip, Some("127.0.0.11".parse().unwrap()));
        let built = config(&[
            "--id",
            "1",
            "--data-dir",
            "/tmp/h1",
            "--grpc",
            "127.0.0.11:7001",
            "--raft-outbound-ip",
            "127.0.0.12",
        ])
        .unwrap();
        let raft = built.raft_config("127.0.0.11:7001".parse().unwrap());
        assert_eq!(raft.outbound_source_ip, Some("127.0.0.12".parse().unwrap()));
        // Election timeouts must exceed the heartbeat interval, whichever side is defaulted.
        let err = config(&[
            "--id",
            "1",
            "--data-dir",
            "/x",
            "--raft-election-ticks",
            "2",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("raft.election_ticks"), "{err}");
        let err = config(&["--id", "1", "--data-dir", "/x", "--snapshot-threshold", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("raft.snapshot_threshold"), "{err}");
    }

    #[test]
    fn bad_flags_are_explained() {
        let err = config(&["--id", "1"]).unwrap_err().to_string();
        assert!(err.contains("--data-dir"), "{err}");
        let err = config(&["--id", "1", "--data-dir", "/x", "--peers", "1=nowhere"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"nowhere\"") && err.contains("no port"),
            "{err}"
        );
        let err = config(&["--id", "1", "--data-dir", "/x", "--peers", "2=127.0.0.1:1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("members"), "{err}");
    }
}
