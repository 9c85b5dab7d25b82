//! `meridian echo`: the echo backend (JSON describing each request; steerable delays, statuses,
//! failures, response headers; WebSocket echo; HTTP/1.1 and h2c, or HTTPS with `--tls-cert` and
//! `--tls-key`, requiring client certificates with `--client-ca`). The server itself is
//! `meridian_gateway::echo`; see its docs for the request controls.

use std::net::SocketAddr;
use std::path::PathBuf;

use meridian_gateway::echo::{EchoOptions, EchoTls, spawn_echo};
use tracing::info;

/// Arguments of `meridian echo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; see the ready file).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Name reported in every answer (`backend` and `pod`).
    #[arg(long)]
    name: String,
    /// Namespace reported in every answer.
    #[arg(long)]
    namespace: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (needs `--tls-key`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require clients (with HTTPS) to present a certificate that chains to one of the PEM CA
    /// certificates in this file; answers report it under `tls.peerCertificates`.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Write `{"listen": ADDR, "pid": N}` here once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// Runs `meridian echo` until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(EchoTls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: args.client_ca.as_ref().map(read).transpose()?,
        }),
        _ => None,
    };
    let handle = spawn_echo(EchoOptions {
        listen: args.listen,
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        tls,
    })
    .await
    .map_err(|e| anyhow::anyhow!("starting the echo backend on {}: {e}", args.listen))?;
    let addr = handle.addr();
    if let Some(path) = &args.ready_file {
        super::process::write_ready_file(
            path,
            &serde_json::json!({"listen": addr.to_string(), "pid": std::process::id()}),
        )?;
    }
    info!(listen = %addr, name = %args.name, "ready");
    super::process::wait_for_signal().await?;
    handle.stop();
    Ok(())
}
