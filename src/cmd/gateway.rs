//! `meridian gateway`.

/// Arguments of `meridian gateway`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `meridian gateway`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("meridian gateway is not built yet")
}
