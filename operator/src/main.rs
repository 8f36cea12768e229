use std::process::ExitCode;

use cellplane::cli::operator::{self as op, FleetArgs, RunArgs, SandboxArgs};
use clap::{Parser, Subcommand};

/// cellplane: the control plane of a cell-based managed service, as a Kubernetes operator.
#[derive(Parser)]
#[command(name = "cellplane", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against a cluster (kubeconfig or in-cluster).
    Run(RunArgs),
    /// Run the operator on an in-memory API server and a simulated cloud, apply DIR, watch.
    Sandbox(SandboxArgs),
    /// Print the CRDs as one YAML stream (`cellplane crds | kubectl apply -f -`).
    Crds,
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Cells and namespaces until all are Ready: seconds, reconciles/s, peak RSS.
    Fleet(FleetArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => op::run(args).await,
        Command::Sandbox(args) => op::sandbox(args).await,
        Command::Crds => op::crds(),
        Command::Bench(Bench::Fleet(args)) => op::bench_fleet(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cellplane: {e}");
            ExitCode::FAILURE
        }
    }
}
