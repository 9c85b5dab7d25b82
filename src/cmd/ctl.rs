//! `meridian ctl`.

/// Arguments of `meridian ctl`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `meridian ctl`.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("meridian ctl is not built yet")
}
