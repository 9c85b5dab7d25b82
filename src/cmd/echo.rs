//! `meridian echo`: the echo backend (JSON describing each request; steerable delays, statuses,
//! failures, response headers; WebSocket echo; HTTP/1.1 and h2c). The server itself is
//! `meridian_gateway::echo`; see its docs for the request controls.

use std::net::SocketAddr;
use std::path::PathBuf;

use meridian_gateway::echo::{EchoOptions, spawn_echo};
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
    /// Write `{"listen": ADDR, "pid": N}` here once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// Runs `meridian echo` until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let handle = spawn_echo(EchoOptions {
        listen: args.listen,
        name: args.name.clone(),
        namespace: args.namespace.clone(),
    })
    .await
    .map_err(|e| anyhow::anyhow!("binding {}: {e}", args.listen))?;
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
