//! `meridian echo`.

/// Arguments of `meridian echo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `meridian echo`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("meridian echo is not built yet")
}
