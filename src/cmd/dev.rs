//! `meridian dev`.

/// Arguments of `meridian dev`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `meridian dev`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("meridian dev is not built yet")
}
