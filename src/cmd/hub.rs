//! `meridian hub`.

/// Arguments of `meridian hub`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `meridian hub`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("meridian hub is not built yet")
}
