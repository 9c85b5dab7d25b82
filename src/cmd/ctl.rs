//! `meridian ctl`: a CLI over the hub's admin API. Human tables by default, `-o json` for the
//! API's own JSON.
//!
//! Everything goes to standard output through [`out!`] and [`outln!`], never `print!`: a reader
//! that stops early (`meridian ctl clusters | head -1`) ends ctl quietly with exit code 0
//! instead of a panic.

mod manifest;
mod table;

use std::fmt;
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use self::manifest::Resource;
use self::table::Table;

/// Like `print!`, but returns an `anyhow::Result` instead of panicking when the write fails; a
/// closed standard output is [`StdoutClosed`], which [`run`] turns into a quiet exit.
macro_rules! out {
    ($($arg:tt)*) => {
        write_stdout(format_args!($($arg)*))
    };
}

/// Like `println!`; see [`out!`].
macro_rules! outln {
    () => {
        out!("\n")
    };
    ($($arg:tt)*) => {
        out!("{}\n", format_args!($($arg)*))
    };
}

/// Arguments of `meridian ctl`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The admin API of any hub node (writes are forwarded to the leader).
    #[arg(
        long,
        env = "MERIDIAN_HUB",
        default_value = "http://127.0.0.1:4001",
        global = true
    )]
    hub: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// Who you are, for the audit log (sent as X-Meridian-Actor; a named token's name comes
    /// first).
    #[arg(long, env = "MERIDIAN_ACTOR", global = true)]
    actor: Option<String>,
    /// Bearer token for a hub started with --admin-token-file.
    #[arg(long, env = "MERIDIAN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an https:// hub (instead of the system's roots).
    #[arg(long, env = "MERIDIAN_CA", global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Read this node's applied state without a linearizable barrier (works without quorum).
    #[arg(long, global = true)]
    stale: bool,
    #[command(subcommand)]
    command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Aligned columns.
    Table,
    /// The admin API's JSON.
    Json,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Node, Raft and cluster health status.
    Status,
    /// List clusters with their health.
    Clusters,
    /// List hostname policies.
    Hostnames,
    /// List shared HTTPRoutes.
    Routes,
    /// List static DNS record sets.
    Records,
    /// List distributed TLS certificates (names and expiry; never keys).
    Certificates,
    /// Show one object as JSON: `cluster NAME`, `hostname FQDN`, `route NAMESPACE/NAME`,
    /// `certificate NAMESPACE/NAME` or `records NAME/TYPE`.
    Get {
        /// cluster, hostname or route.
        kind: String,
        /// Its name.
        name: String,
    },
    /// Create or update the objects in YAML files (Cluster, HostnamePolicy, DnsRecordSet,
    /// HTTPRoute, and `kubernetes.io/tls` Secrets).
    Apply {
        /// Files with one or more YAML documents; `-` reads standard input.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete objects: `delete -f FILE`, or `delete cluster NAME` / `hostname FQDN` /
    /// `route NAMESPACE/NAME` / `certificate NAMESPACE/NAME` / `records NAME/TYPE`.
    Delete {
        /// Delete what these files describe.
        #[arg(short = 'f', long = "file")]
        files: Vec<PathBuf>,
        /// cluster, hostname, route, certificate or records (without -f).
        kind: Option<String>,
        /// Its name (without -f).
        name: Option<String>,
        /// Delete a certificate even though listeners serve it (they stop serving HTTPS).
        #[arg(long)]
        force: bool,
    },
    /// Stop giving a cluster new DNS answers (it keeps its routes).
    Drain {
        /// The cluster.
        cluster: String,
    },
    /// Undo `drain`.
    Undrain {
        /// The cluster.
        cluster: String,
    },
    /// Answer a hostname only with one of its clusters while it is healthy.
    Pin {
        /// The hostname.
        fqdn: String,
        /// The cluster.
        cluster: String,
    },
    /// Undo `pin`.
    Unpin {
        /// The hostname.
        fqdn: String,
    },
    /// DNS tools.
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// Hub membership.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// The audit log: who changed what, when.
    Audit {
        /// How many of the latest entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, clap::Subcommand)]
enum DnsCommand {
    /// The answer a client would get, and why.
    Explain {
        /// The query name.
        name: String,
        /// The query type.
        #[arg(long = "type", short = 't', default_value = "A")]
        qtype: String,
        /// The client (or ECS subnet) address; defaults to yours as the hub sees it.
        #[arg(long)]
        client: Option<String>,
    },
    /// The DS records to publish in the parent zone.
    Ds {
        /// The zone.
        zone: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum MembersCommand {
    /// List the hub nodes.
    List,
    /// Add a node (started with `meridian hub --join`).
    Add {
        /// Its id.
        id: u64,
        /// Its gRPC address.
        addr: String,
    },
    /// Remove a node.
    Remove {
        /// Its id.
        id: u64,
    },
}

/// Standard output's reader went away (`EPIPE`), as when `meridian ctl ... | head -1` has read
/// what it wanted. Not a failure of ctl: nobody is left to read the rest.
#[derive(Debug)]
struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes to standard output (the backend of [`out!`]).
fn write_stdout(text: fmt::Arguments<'_>) -> anyhow::Result<()> {
    match std::io::stdout().lock().write_fmt(text) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(error) => Err(anyhow::Error::new(error).context("writing to standard output")),
    }
}

/// Runs `meridian ctl`. A closed standard output ends it successfully, without a message, like
/// `cat` or `git log` with SIGPIPE (only the exit code differs: 0, not 141).
pub async fn run(args: Args) -> anyhow::Result<()> {
    match run_command(&args).await {
        Err(error) if error.chain().any(|cause| cause.is::<StdoutClosed>()) => Ok(()),
        outcome => outcome,
    }
}

async fn run_command(args: &Args) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match &args.command {
        Command::Status => status(&client, args.output).await,
        Command::Clusters => clusters(&client, args.output).await,
        Command::Hostnames => hostnames(&client, args.output).await,
        Command::Routes => routes(&client, args.output).await,
        Command::Records => records(&client, args.output).await,
        Command::Certificates => certificates(&client, args.output).await,
        Command::Get { kind, name } => {
            let path = object_path(kind, name)?;
            print_json(&client.get(&path).await?)
        }
        Command::Apply { files } => apply(&client, files, args.output).await,
        Command::Delete {
            files,
            kind,
            name,
            force,
        } => {
            delete(
                &client,
                files,
                kind.as_deref(),
                name.as_deref(),
                *force,
                args.output,
            )
            .await
        }
        Command::Drain { cluster } => {
            let answer = client
                .post(&format!("/v1/clusters/{cluster}/drain"), &json!({}))
                .await?;
            report_change(args.output, &answer, &format!("cluster/{cluster} drained"))
        }
        Command::Undrain { cluster } => {
            let answer = client
                .post(&format!("/v1/clusters/{cluster}/undrain"), &json!({}))
                .await?;
            report_change(
                args.output,
                &answer,
                &format!("cluster/{cluster} undrained"),
            )
        }
        Command::Pin { fqdn, cluster } => {
            let answer = client
                .post(
                    &format!("/v1/hostnames/{fqdn}/pin"),
                    &json!({ "cluster": cluster }),
                )
                .await?;
            report_change(
                args.output,
                &answer,
                &format!("hostname/{fqdn} pinned to {cluster}"),
            )
        }
        Command::Unpin { fqdn } => {
            let answer = client
                .post(&format!("/v1/hostnames/{fqdn}/unpin"), &json!({}))
                .await?;
            report_change(args.output, &answer, &format!("hostname/{fqdn} unpinned"))
        }
        Command::Dns { command } => dns(&client, command, args.output).await,
        Command::Members { command } => members(&client, command, args.output).await,
        Command::Audit { limit } => audit(&client, *limit, args.output).await,
    }
}

// === the HTTP client ===

struct Client {
    http: reqwest::Client,
    base: String,
    actor: Option<String>,
    token: Option<String>,
    stale: bool,
}

impl Client {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let base = args.hub.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = &args.ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca {}: not PEM certificates", ca.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            actor: args.actor.clone(),
            token: args.token.clone().filter(|t| !t.trim().is_empty()),
            stale: args.stale,
        })
    }

    fn url(&self, path: &str, read: bool) -> String {
        if read && self.stale {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{}{path}{sep}stale=true", self.base)
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let request = match &self.actor {
            Some(actor) => request.header("x-meridian-actor", actor),
            None => request,
        };
        let request = match &self.token {
            Some(token) => request.bearer_auth(token.trim()),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach the hub at {}", self.base))?;
        let status = response.status();
        // A stale read says how stale on stderr, so the output itself stays parseable.
        if response
            .headers()
            .get("x-meridian-read")
            .is_some_and(|v| v == "stale")
        {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string()
            };
            warn_stale(
                &header("x-meridian-applied-index"),
                &header("x-meridian-leader-contact-age-seconds"),
            );
        }
        let text = response
            .text()
            .await
            .with_context(|| format!("{what}: reading the answer"))?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .or_else(|_| Ok(Value::String(text.trim().to_string())));
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
            return Err(anyhow!(
                "{what}: {status}: {message} (give a token with --token or MERIDIAN_TOKEN)"
            ));
        }
        Err(anyhow!("{what}: {status}: {message}"))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(self.url(path, true)), &format!("GET {path}"))
            .await
    }

    async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(
            self.http.put(self.url(path, false)).json(body),
            &format!("PUT {path}"),
        )
        .await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(
            self.http.post(self.url(path, false)).json(body),
            &format!("POST {path}"),
        )
        .await
    }

    async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(
            self.http.delete(self.url(path, false)),
            &format!("DELETE {path}"),
        )
        .await
    }
}

/// The note a `--stale` read prints on stderr.
#[allow(clippy::print_stderr)]
fn warn_stale(applied: &str, age: &str) {
    let age = match age {
        "none" => "never heard from a leader".to_string(),
        age => format!("last heard from a leader {age}s ago"),
    };
    eprintln!("note: stale read: this node's state at applied index {applied}, {age}");
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    )
}

fn report_change(output: Output, answer: &Value, text: &str) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(answer)?,
        Output::Table => {
            let unchanged = answer.get("changed") == Some(&Value::Bool(false));
            outln!("{text}{}", if unchanged { " (unchanged)" } else { "" })?;
            for warning in answer
                .get("warnings")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                eprintln!("warning: {warning}");
            }
        }
    }
    Ok(())
}

fn object_path(kind: &str, name: &str) -> anyhow::Result<String> {
    Ok(match kind {
        "cluster" | "clusters" => format!("/v1/clusters/{name}"),
        "hostname" | "hostnames" => format!("/v1/hostnames/{name}"),
        "route" | "routes" => {
            let (namespace, name) = name
                .split_once('/')
                .with_context(|| format!("route {name:?}: expected NAMESPACE/NAME"))?;
            format!("/v1/routes/{namespace}/{name}")
        }
        "record" | "records" => {
            let (owner, rtype) = name
                .rsplit_once('/')
                .with_context(|| format!("records {name:?}: expected NAME/TYPE"))?;
            format!("/v1/records/{owner}/{}", rtype.to_ascii_uppercase())
        }
        "certificate" | "certificates" | "cert" => {
            let (namespace, name) = name
                .split_once('/')
                .with_context(|| format!("certificate {name:?}: expected NAMESPACE/NAME"))?;
            format!("/v1/certificates/{namespace}/{name}")
        }
        other => bail!(
            "unknown kind {other:?}: expected cluster, hostname, route, certificate or records"
        ),
    })
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn list_of(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn items(value: &Value, key: &str) -> Vec<Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// "12s ago" for a Unix-milliseconds time (empty for 0).
fn age(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return String::new();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let secs = now.saturating_sub(unix_ms) / 1000;
    match secs {
        0..120 => format!("{secs}s ago"),
        120..7200 => format!("{}m ago", secs / 60),
        7200..172_800 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

// === commands ===

fn cluster_table(clusters: &[Value]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "REGION",
        "HEALTH",
        "SINCE",
        "DRAINED",
        "ADDRESSES",
        "REPORTED",
        "NOT SERVING",
        "ROUTES",
        "REASON",
    ]);
    for cluster in clusters {
        let health = cluster.get("health").cloned().unwrap_or(Value::Null);
        table.row(vec![
            str_of(cluster, "name").to_string(),
            str_of(cluster, "region").to_string(),
            str_of(&health, "verdict").to_string(),
            age(health
                .get("since_unix_ms")
                .and_then(Value::as_u64)
                .unwrap_or(0)),
            if cluster.get("drained") == Some(&Value::Bool(true)) {
                "yes".into()
            } else {
                "no".into()
            },
            list_of(cluster, "addresses"),
            list_of(cluster, "reported_addresses"),
            not_serving(cluster),
            // Shared routes accepted there, of all (`ctl get cluster NAME` lists the others).
            match cluster.get("routes") {
                Some(routes) => format!("{}/{}", routes["accepted"], routes["total"]),
                None => String::new(),
            },
            reason(cluster, &health),
        ]);
    }
    table
}

/// Why the cluster is where it is: the verdict's reason, and for each hostname it cannot
/// serve, that hostname's reason (a healthy cluster's verdict says nothing about those).
fn reason(cluster: &Value, health: &Value) -> String {
    let mut parts = vec![str_of(health, "reason").to_string()];
    if let Some(hostnames) = cluster.get("hostnames").and_then(Value::as_object) {
        for (fqdn, h) in hostnames {
            if h.get("serving") == Some(&Value::Bool(false)) {
                parts.push(format!("{fqdn}: {}", str_of(h, "reason")));
            }
        }
    }
    parts.retain(|p| !p.is_empty());
    parts.join("; ")
}

/// The hostnames a cluster cannot serve (no ready backend), comma-separated.
fn not_serving(cluster: &Value) -> String {
    cluster
        .get("hostnames")
        .and_then(Value::as_object)
        .map(|hostnames| {
            hostnames
                .iter()
                .filter(|(_, h)| h.get("serving") == Some(&Value::Bool(false)))
                .map(|(fqdn, _)| fqdn.clone())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

async fn certificates(client: &Client, output: Output) -> anyhow::Result<()> {
    let answer = client.get("/v1/certificates").await?;
    if output == Output::Json {
        print_json(&answer)?;
        return Ok(());
    }
    let mut table = Table::new(&["NAMESPACE/NAME", "DNS NAMES", "NOT AFTER", "EXPIRED"]);
    for cert in items(&answer, "items") {
        table.row(vec![
            format!("{}/{}", str_of(&cert, "namespace"), str_of(&cert, "name")),
            list_of(&cert, "dns_names"),
            str_of(&cert, "not_after").to_string(),
            if cert.get("expired") == Some(&Value::Bool(true)) {
                "yes".into()
            } else {
                "no".into()
            },
        ]);
    }
    out!("{table}")?;
    Ok(())
}

async fn status(client: &Client, output: Output) -> anyhow::Result<()> {
    let status = client.get("/v1/status").await?;
    if output == Output::Json {
        print_json(&status)?;
        return Ok(());
    }
    let leader = match status.get("leader_addr").and_then(Value::as_str) {
        Some(addr) => format!("{} ({addr})", status["leader_id"]),
        None => "none known".to_string(),
    };
    outln!(
        "node:      {} ({})",
        status["node_id"],
        str_of(&status, "role")
    )?;
    outln!("term:      {}", status["term"])?;
    outln!("leader:    {leader}")?;
    outln!(
        "index:     applied {} / committed {}",
        status["applied_index"],
        status["commit_index"]
    )?;
    if let Some(age) = status
        .get("leader_contact_age_seconds")
        .and_then(Value::as_f64)
    {
        outln!("staleness: leader heard from {age:.2}s ago")?;
    }
    let members: Vec<String> = items(&status, "members")
        .iter()
        .map(|m| format!("{}={}", m["id"], str_of(m, "addr")))
        .collect();
    outln!("members:   {}", members.join(", "))?;
    let learners: Vec<String> = items(&status, "learners")
        .iter()
        .map(|m| format!("{}={}", m["id"], str_of(m, "addr")))
        .collect();
    if !learners.is_empty() {
        outln!("learners:  {}", learners.join(", "))?;
    }
    outln!()?;
    out!("{}", cluster_table(&items(&status, "clusters")))?;
    Ok(())
}

async fn clusters(client: &Client, output: Output) -> anyhow::Result<()> {
    let answer = client.get("/v1/clusters").await?;
    match output {
        Output::Json => print_json(&answer)?,
        Output::Table => out!("{}", cluster_table(&items(&answer, "items")))?,
    }
    Ok(())
}

async fn hostnames(client: &Client, output: Output) -> anyhow::Result<()> {
    let answer = client.get("/v1/hostnames").await?;
    if output == Output::Json {
        print_json(&answer)?;
        return Ok(());
    }
    let mut table = Table::new(&["FQDN", "TTL", "TARGETS", "GEO", "ANSWERS", "PINNED"]);
    for hostname in items(&answer, "items") {
        let targets: Vec<String> = items(&hostname, "targets")
            .iter()
            .map(|t| format!("{}:{}", str_of(t, "cluster"), t["weight"]))
            .collect();
        let routing = hostname.get("routing").cloned().unwrap_or(Value::Null);
        table.row(vec![
            str_of(&hostname, "fqdn").to_string(),
            hostname["ttl"].to_string(),
            targets.join(","),
            routing["geo"].to_string(),
            routing["max_answers"].to_string(),
            routing
                .get("pinned")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ]);
    }
    out!("{table}")?;
    Ok(())
}

async fn routes(client: &Client, output: Output) -> anyhow::Result<()> {
    // The table shows one word per cluster: no need for every condition of every route.
    let path = match output {
        Output::Json => "/v1/routes",
        Output::Table => "/v1/routes?status=summary",
    };
    let answer = client.get(path).await?;
    if output == Output::Json {
        print_json(&answer)?;
        return Ok(());
    }
    let mut table = Table::new(&["NAMESPACE", "NAME", "HOSTNAMES", "RULES", "CLUSTERS"]);
    for route in items(&answer, "items") {
        let metadata = route.get("metadata").cloned().unwrap_or(Value::Null);
        let spec = route.get("spec").cloned().unwrap_or(Value::Null);
        // Each cluster's one-word state (`Accepted`, `Degraded(BackendNotFound)`,
        // `Propagating`, ...); `ctl get route NS/NAME` shows the conditions behind it.
        let all = items(&route["status"], "clusters");
        let word = |c: &Value| {
            let state = str_of(c, "state");
            match (state, str_of(c, "reason")) {
                ("Degraded" | "NotAccepted", reason) if !reason.is_empty() => {
                    format!("{}={state}({reason})", str_of(c, "cluster"))
                }
                _ => format!("{}={state}", str_of(c, "cluster")),
            }
        };
        // With many clusters, a count of the accepted ones and the others by name.
        let clusters: Vec<String> = if all.len() > 4 {
            let accepted = all
                .iter()
                .filter(|c| str_of(c, "state") == "Accepted")
                .count();
            std::iter::once(format!("{accepted}/{} Accepted", all.len()))
                .chain(
                    all.iter()
                        .filter(|c| str_of(c, "state") != "Accepted")
                        .map(word),
                )
                .collect()
        } else {
            all.iter().map(word).collect()
        };
        table.row(vec![
            str_of(&metadata, "namespace").to_string(),
            str_of(&metadata, "name").to_string(),
            list_of(&spec, "hostnames"),
            items(&spec, "rules").len().to_string(),
            clusters.join(" "),
        ]);
    }
    out!("{table}")?;
    Ok(())
}

async fn records(client: &Client, output: Output) -> anyhow::Result<()> {
    let answer = client.get("/v1/records").await?;
    if output == Output::Json {
        print_json(&answer)?;
        return Ok(());
    }
    let mut table = Table::new(&["NAME", "TYPE", "TTL", "VALUES"]);
    for set in items(&answer, "items") {
        let values: Vec<String> = items(&set, "values")
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        table.row(vec![
            str_of(&set, "name").to_string(),
            str_of(&set, "type").to_string(),
            set["ttl"].to_string(),
            values.join(" | "),
        ]);
    }
    out!("{table}")?;
    Ok(())
}

fn read_manifests(files: &[PathBuf]) -> anyhow::Result<Vec<Resource>> {
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let (text, source) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            (text, "<stdin>".to_string())
        } else {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            (text, file.display().to_string())
        };
        match manifest::parse(&text, &source) {
            Ok(parsed) => resources.extend(parsed),
            Err(found) => problems.extend(found),
        }
    }
    if !problems.is_empty() {
        bail!("nothing applied:\n  {}", problems.join("\n  "));
    }
    if resources.is_empty() {
        // As kubectl: an empty file is more likely a mistake (a wrong path, a failed
        // generator) than a request to do nothing.
        bail!("no objects in the input: nothing to do");
    }
    // Clusters before the hostnames that name them, routes last; stable within a kind.
    resources.sort_by_key(|r| r.kind);
    Ok(resources)
}

async fn apply(client: &Client, files: &[PathBuf], output: Output) -> anyhow::Result<()> {
    let resources = read_manifests(files)?;
    let mut answers = Vec::new();
    for (done, resource) in resources.iter().enumerate() {
        match client.put(&resource.path, &resource.body).await {
            Ok(answer) => {
                if output == Output::Table {
                    outln!("{} configured", resource.label())?;
                }
                answers.push(answer);
            }
            Err(err) => {
                return Err(err.context(format!(
                    "{} ({}) was refused; {done} of {} objects were applied before it",
                    resource.label(),
                    resource.source,
                    resources.len()
                )));
            }
        }
    }
    if output == Output::Json {
        print_json(&Value::Array(answers))?;
    }
    Ok(())
}

async fn delete(
    client: &Client,
    files: &[PathBuf],
    kind: Option<&str>,
    name: Option<&str>,
    force: bool,
    output: Output,
) -> anyhow::Result<()> {
    let paths: Vec<(String, String)> = if files.is_empty() {
        let (Some(kind), Some(name)) = (kind, name) else {
            bail!(
                "give -f FILE, or a kind (cluster, hostname, route, certificate, records) and a name"
            );
        };
        vec![(object_path(kind, name)?, format!("{kind}/{name}"))]
    } else {
        // Routes first, then records and hostnames, then the clusters they name.
        read_manifests(files)?
            .into_iter()
            .rev()
            .map(|r| (r.path.clone(), r.label()))
            .collect()
    };
    // Only certificates refuse a delete that `--force` overrides.
    if force
        && !paths
            .iter()
            .any(|(path, _)| path.starts_with("/v1/certificates/"))
    {
        bail!("--force applies to certificates only (a certificate listeners serve)");
    }
    for (mut path, label) in paths {
        if force && path.starts_with("/v1/certificates/") {
            path.push_str("?force=true");
        }
        let answer = client.delete(&path).await?;
        report_change(output, &answer, &format!("{label} deleted"))?;
    }
    Ok(())
}

async fn dns(client: &Client, command: &DnsCommand, output: Output) -> anyhow::Result<()> {
    match command {
        DnsCommand::Explain {
            name,
            qtype,
            client: address,
        } => {
            let mut path = format!("/v1/dns/explain?name={name}&type={qtype}");
            if let Some(address) = address {
                path.push_str(&format!("&client={address}"));
            }
            let answer = client.get(&path).await?;
            // The explanation is a tree of reasons; JSON reads best in both modes.
            let _ = output;
            print_json(&answer)?;
        }
        DnsCommand::Ds { zone } => {
            let answer = client.get(&format!("/v1/dns/ds/{zone}")).await?;
            match output {
                Output::Json => print_json(&answer)?,
                Output::Table => {
                    for record in items(&answer, "ds") {
                        outln!("{}", record.as_str().unwrap_or_default())?;
                    }
                }
            }
        }
    }
    Ok(())
}

async fn members(client: &Client, command: &MembersCommand, output: Output) -> anyhow::Result<()> {
    let answer = match command {
        MembersCommand::List => {
            let answer = client.get("/v1/members").await?;
            if output == Output::Table {
                let mut table = Table::new(&["ID", "ADDRESS", "ROLE"]);
                for member in items(&answer, "members") {
                    table.row(vec![
                        member["id"].to_string(),
                        str_of(&member, "addr").to_string(),
                        if member["leader"] == Value::Bool(true) {
                            "voter (leader)".into()
                        } else {
                            "voter".into()
                        },
                    ]);
                }
                // A learner is a node being added: it receives the log but does not vote yet.
                for learner in items(&answer, "learners") {
                    table.row(vec![
                        learner["id"].to_string(),
                        str_of(&learner, "addr").to_string(),
                        "learner".into(),
                    ]);
                }
                out!("{table}")?;
                return Ok(());
            }
            answer
        }
        MembersCommand::Add { id, addr } => {
            let answer = client
                .post("/v1/members", &json!({ "id": id, "addr": addr }))
                .await?;
            if output == Output::Table {
                outln!("node {id} ({addr}) added")?;
                return Ok(());
            }
            answer
        }
        MembersCommand::Remove { id } => {
            let answer = client.delete(&format!("/v1/members/{id}")).await?;
            if output == Output::Table {
                outln!("node {id} removed")?;
                return Ok(());
            }
            answer
        }
    };
    print_json(&answer)?;
    Ok(())
}

async fn audit(client: &Client, limit: usize, output: Output) -> anyhow::Result<()> {
    let answer = client.get(&format!("/v1/audit?limit={limit}")).await?;
    if output == Output::Json {
        print_json(&answer)?;
        return Ok(());
    }
    let mut table = Table::new(&["INDEX", "WHEN", "ACTOR", "ACTION", "RESULT"]);
    for entry in items(&answer, "entries") {
        table.row(vec![
            entry["index"].to_string(),
            age(entry["unix_ms"].as_u64().unwrap_or(0)),
            str_of(&entry, "actor").to_string(),
            str_of(&entry, "action").to_string(),
            str_of(&entry, "result").to_string(),
        ]);
    }
    out!("{table}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use clap::Parser;
    use meridian_hub::raft::Role;
    use meridian_hub::{Hub, HubConfig, HubHandle};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_reason_column_says_why_a_healthy_cluster_does_not_serve_a_hostname() {
        let cluster = serde_json::json!({
            "hostnames": {
                "app.demo.meridian.test": {"serving": true, "reason": "2 of 2 ready"},
                "shop.demo.meridian.test": {"serving": false, "reason": "Service demo/x not found"},
            }
        });
        let health =
            serde_json::json!({"verdict": "healthy", "reason": "2 consecutive good reports"});
        assert_eq!(
            reason(&cluster, &health),
            "2 consecutive good reports; shop.demo.meridian.test: Service demo/x not found"
        );
    }

    #[test]
    fn an_empty_manifest_is_an_error_not_a_silent_success() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "# nothing yet\n").unwrap();
        let err = read_manifests(&[empty]).unwrap_err().to_string();
        assert!(err.contains("no objects"), "{err}");
    }

    async fn ctl(hub: &HubHandle, argv: &[&str]) -> anyhow::Result<()> {
        let url = format!("http://{}", hub.admin_addr());
        let cli = Cli::try_parse_from(
            ["ctl", "--hub", url.as_str()]
                .into_iter()
                .chain(argv.iter().copied()),
        )?;
        run(cli.args).await
    }

    async fn start_hub(dir: &std::path::Path) -> HubHandle {
        start_hub_with(dir, None).await
    }

    async fn start_hub_with(
        dir: &std::path::Path,
        token_file: Option<std::path::PathBuf>,
    ) -> HubHandle {
        start_hub_configured(dir, |config| config.admin_auth.token_file = token_file).await
    }

    async fn start_hub_configured(
        dir: &std::path::Path,
        tweak: impl FnOnce(&mut HubConfig),
    ) -> HubHandle {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = HubConfig::new(1, dir);
        tweak(&mut config);
        config.grpc_listen = "127.0.0.1:0".parse().unwrap();
        config.admin_listen = "127.0.0.1:0".parse().unwrap();
        config.dns.listen = "127.0.0.1:0".parse().unwrap();
        config.dns.zones = vec![
            serde_json::from_value(json!({
                "origin": "demo.meridian.test",
                "nameservers": [{"name": "ns1.demo.meridian.test", "addresses": ["127.0.0.1"]}],
            }))
            .unwrap(),
        ];
        let hub = Hub::spawn(config).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.raft().status().borrow().role != Role::Leader {
            assert!(Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hub
    }

    const MANIFESTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  hostnames: [app.demo.meridian.test]
  rules:
    - backendRefs: [{name: echo, port: 8080}]
---
apiVersion: meridian.dev/v1alpha1
kind: HostnamePolicy
metadata: {name: app.demo.meridian.test}
spec:
  ttl: 15
  targets: [{cluster: us-east, weight: 2}, {cluster: eu-west}]
---
apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata: {name: us-east}
spec: {region: us, addresses: [127.0.1.1]}
---
apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata: {name: eu-west}
spec: {region: eu, addresses: [127.0.1.2]}
---
apiVersion: meridian.dev/v1alpha1
kind: DnsRecordSet
metadata: {name: www.demo.meridian.test}
spec: {type: CNAME, values: [app.demo.meridian.test]}
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apply_and_delete_manifests_against_a_real_hub() {
        let dir = tempfile::tempdir().unwrap();
        let hub = start_hub(&dir.path().join("hub")).await;
        let file = dir.path().join("all.yaml");
        std::fs::write(&file, MANIFESTS).unwrap();
        let file = file.display().to_string();

        // Dependency order is the tool's job: the hostname comes before its clusters in the
        // file but is applied after them.
        ctl(&hub, &["apply", "-f", &file]).await.unwrap();
        let client = Client {
            http: reqwest::Client::new(),
            base: format!("http://{}", hub.admin_addr()),
            actor: None,
            token: None,
            stale: false,
        };
        let clusters = client.get("/v1/clusters").await.unwrap();
        assert_eq!(items(&clusters, "items").len(), 2);
        let policy = client
            .get("/v1/hostnames/app.demo.meridian.test")
            .await
            .unwrap();
        assert_eq!(policy["ttl"], 15);
        assert_eq!(policy["targets"][0]["weight"], 2);
        let route = client.get("/v1/routes/shop/web").await.unwrap();
        assert_eq!(route["spec"]["hostnames"][0], "app.demo.meridian.test");
        let cname = client
            .get("/v1/records/www.demo.meridian.test/CNAME")
            .await
            .unwrap();
        assert_eq!(cname["values"][0], "app.demo.meridian.test");

        // Every read command works in both output formats.
        for command in [
            "status",
            "clusters",
            "hostnames",
            "routes",
            "records",
            "audit",
        ] {
            ctl(&hub, &[command]).await.unwrap();
            ctl(&hub, &["-o", "json", command]).await.unwrap();
        }
        ctl(&hub, &["members", "list"]).await.unwrap();
        ctl(&hub, &["drain", "eu-west"]).await.unwrap();
        assert_eq!(
            client.get("/v1/clusters/eu-west").await.unwrap()["drained"],
            true
        );
        ctl(
            &hub,
            &[
                "--actor",
                "alice",
                "pin",
                "app.demo.meridian.test",
                "us-east",
            ],
        )
        .await
        .unwrap();
        let audit = client.get("/v1/audit").await.unwrap();
        assert!(
            items(&audit, "entries")
                .iter()
                .any(|e| e["actor"] == "alice" && e["action"].as_str().unwrap().starts_with("pin")),
            "{audit}"
        );

        // The server's refusal, with its field, reaches the user.
        let err = ctl(&hub, &["pin", "app.demo.meridian.test", "nope"])
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("routing.pinned"), "{err:#}");

        // A file with a bad document applies nothing.
        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "apiVersion: meridian.dev/v1alpha1\nkind: Cluster\nmetadata: {name: ap-south}\nspec: {region: ap}\n---\nkind: Gateway\n",
        )
        .unwrap();
        let err = ctl(&hub, &["apply", "-f", &bad.display().to_string()])
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("doc 2: apiVersion: required"),
            "{err:#}"
        );
        assert!(client.get("/v1/clusters/ap-south").await.is_err());

        // Delete -f removes everything, routes and hostnames before their clusters.
        ctl(&hub, &["delete", "-f", &file]).await.unwrap();
        let clusters = client.get("/v1/clusters").await.unwrap();
        assert!(items(&clusters, "items").is_empty());
        assert!(items(&client.get("/v1/records").await.unwrap(), "items").is_empty());
        hub.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_and_tls_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "alice alice-secret-token-0123456789\n").unwrap();
        let hub = start_hub_with(&dir.path().join("hub"), Some(tokens)).await;

        // Without a token the hub refuses, and ctl says how to give one.
        let err = ctl(&hub, &["status"]).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("401") && text.contains("--token"), "{text}");
        let err = ctl(&hub, &["--token", "wrong-token-wrong-token", "status"])
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid bearer token"),
            "{err:#}"
        );
        let token = ["--token", "alice-secret-token-0123456789"];

        // A kubernetes.io/tls Secret is applied as a certificate; GET never shows the key.
        let certified =
            rcgen::generate_simple_self_signed(vec!["*.demo.meridian.test".to_string()]).unwrap();
        let key_pem = certified.signing_key.serialize_pem();
        let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: demo-tls, namespace: meridian-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&certified.cert.pem()),
            indent(&key_pem)
        );
        let file = dir.path().join("tls.yaml");
        std::fs::write(&file, secret).unwrap();
        let file = file.display().to_string();
        ctl(&hub, &[token[0], token[1], "apply", "-f", &file])
            .await
            .unwrap();
        for command in ["certificates", "clusters", "status"] {
            ctl(&hub, &[token[0], token[1], command]).await.unwrap();
        }
        let client = Client {
            http: reqwest::Client::new(),
            base: format!("http://{}", hub.admin_addr()),
            actor: None,
            token: Some(token[1].to_string()),
            stale: false,
        };
        let cert = client
            .get("/v1/certificates/meridian-system/demo-tls")
            .await
            .unwrap();
        assert_eq!(cert["dns_names"][0], "*.demo.meridian.test");
        let secret_line = key_pem.lines().nth(1).unwrap();
        let list = client.get("/v1/certificates").await.unwrap();
        assert!(!cert.to_string().contains(secret_line));
        assert!(!list.to_string().contains(secret_line));
        // The token's name is the audit actor.
        let audit = client.get("/v1/audit").await.unwrap();
        assert!(
            items(&audit, "entries")
                .iter()
                .any(|e| e["actor"] == "alice"
                    && e["action"] == "put certificate meridian-system/demo-tls"),
            "{audit}"
        );
        ctl(&hub, &[token[0], token[1], "delete", "-f", &file])
            .await
            .unwrap();
        assert!(items(&client.get("/v1/certificates").await.unwrap(), "items").is_empty());
        hub.shutdown().await;
    }

    fn indent(pem: &str) -> String {
        pem.lines().map(|l| format!("    {l}\n")).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_admin_api_with_a_trusted_ca() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = dir.path().join("admin.pem");
        let key = dir.path().join("admin.key");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let (cert_path, key_path) = (cert.clone(), key.clone());
        let hub = start_hub_configured(&dir.path().join("hub"), move |config| {
            config.admin_tls = Some(meridian_hub::config::AdminTlsConfig {
                cert: cert_path,
                key: key_path,
            });
        })
        .await;
        let url = format!("https://{}", hub.admin_addr());
        let ca = cert.display().to_string();
        let ctl_https = |argv: Vec<&str>| {
            let argv: Vec<String> = ["ctl", "--hub", url.as_str()]
                .into_iter()
                .chain(argv)
                .map(str::to_string)
                .collect();
            async move { run(Cli::try_parse_from(argv)?.args).await }
        };
        ctl_https(vec!["--ca", &ca, "status"]).await.unwrap();
        ctl_https(vec!["--ca", &ca, "-o", "json", "clusters"])
            .await
            .unwrap();
        // Without trusting the certificate, or over plain HTTP, nothing gets through.
        assert!(ctl_https(vec!["status"]).await.is_err());
        let plain = format!("http://{}", hub.admin_addr());
        let cli = Cli::try_parse_from(["ctl", "--hub", plain.as_str(), "status"]).unwrap();
        assert!(run(cli.args).await.is_err());
        hub.shutdown().await;
    }
}
