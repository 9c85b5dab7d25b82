//! `meridian agent`.

/// Arguments of `meridian agent`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `meridian agent`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("meridian agent is not built yet")
}
