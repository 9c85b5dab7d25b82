//! `meridian`: the single binary users run.
//!
//! Subcommands: `hub` (a control-plane node), `agent` (one per cluster), `gateway` (the data
//! plane), `dev` (everything on one machine), `ctl` (a CLI over the admin API) and `echo` (a
//! demo and test backend). This package is the only one that uses `anyhow` and prints.

mod cmd;

use clap::{Parser, Subcommand};

/// Multi-cluster global traffic manager.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one hub node (Raft member, GeoDNS, admin API, agent API).
    Hub(cmd::hub::Args),
    /// Run a cluster agent (watches a config directory, probes, streams health to the hub).
    Agent(cmd::agent::Args),
    /// Run a gateway (data plane), fed by an agent or by a config directory.
    Gateway(cmd::gateway::Args),
    /// Start a 3-node hub, two clusters and demo backends on this machine.
    Dev(cmd::dev::Args),
    /// Inspect and change a running hub through its admin API.
    Ctl(cmd::ctl::Args),
    /// Run an echo backend that answers with JSON describing the request.
    Echo(cmd::echo::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Declared before the runtime so it drops after it: the log is flushed last.
    let _log = cmd::init_process();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The message and its causes, one line: a user's mistake (a bad flag value, a
            // refused directory) is not a crash, so no backtrace even with RUST_BACKTRACE set.
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::spawn(cmd::logging::report_dropped_lines());
        if matches!(
            cli.command,
            Command::Hub(_) | Command::Agent(_) | Command::Gateway(_)
        ) {
            tokio::spawn(cmd::memory::trim_periodically());
        }
        match cli.command {
            Command::Hub(args) => cmd::hub::run(args).await,
            Command::Agent(args) => cmd::agent::run(args).await,
            Command::Gateway(args) => cmd::gateway::run(args).await,
            Command::Dev(args) => cmd::dev::run(args).await,
            Command::Ctl(args) => cmd::ctl::run(args).await,
            Command::Echo(args) => cmd::echo::run(args).await,
        }
    })
}
