//! `hpcc-sim`: the Azure simulator on its own (`hpc-cache-operator simulate` runs the same thing).

use clap::Parser;

#[derive(Parser)]
#[command(name = "hpcc-sim", version, about = "Local Azure simulator (ARM, Key Vault, Entra) on loopback")]
struct Cli {
    #[command(flatten)]
    args: hpcc_sim::SimulateArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HPCC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    hpcc_sim::run_cli(Cli::parse().args).await
}
