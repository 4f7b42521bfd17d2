//! `master deploy`: bootstrap remote workers over SSH (placeholder until issue 5 lands).

/// Arguments of `master deploy`.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {}

/// Runs `master deploy`.
pub fn run(_args: DeployArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("master deploy is not available yet")
}
