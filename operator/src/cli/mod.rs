//! The `cellplane` command line.

mod api_writes;
mod bench;
mod console;
mod fleet;
pub mod operator;
mod release_bench;
pub mod rings;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cellplane", version, about = "Control plane operator for a cell-based managed service")]
pub struct Cli {
    /// Log filter (tracing env-filter syntax, e.g. `info` or `cellplane=debug,warn`).
    #[arg(long, global = true, env = "CELLPLANE_LOG", default_value = "info,sqlx=warn")]
    log_level: String,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against a cluster (kubeconfig or in-cluster).
    Run(operator::RunArgs),
    /// Run the operator on an in-memory API server and a simulated cloud, apply DIR, watch it
    /// converge (no cluster, no database needed).
    Sandbox(operator::SandboxArgs),
    /// Print the CustomResourceDefinitions (or write one file per kind into --dir).
    Crds {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Serve the web console alone; users sign in with their own Kubernetes tokens.
    Console(console::ConsoleCommand),
    /// Steer a DeploymentRing's rollout: approve, pause, resume, abort, retry.
    #[command(subcommand)]
    Rings(rings::RingsCommand),
    /// Show the rollout: every ring in order.
    #[command(subcommand)]
    Rollout(rings::RolloutCommand),
    /// Inspect and steer workflows in a journal.
    #[command(subcommand)]
    Workflows(workflows::WorkflowsCommand),
    /// Benchmarks that print their figures as one JSON line.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Where the workflow journal lives; shared by every command that reads or writes it.
#[derive(clap::Args, Clone, Debug)]
pub struct JournalArgs {
    /// `postgres://USER@HOST:PORT/DB` or `sqlite://PATH`.
    #[arg(long, env = "CELLPLANE_JOURNAL", default_value = "sqlite://cellplane.db")]
    pub journal: String,
    /// PostgreSQL schema holding the journal's tables.
    #[arg(long, env = "CELLPLANE_JOURNAL_SCHEMA", default_value = "cellplane")]
    pub journal_schema: String,
}

pub fn main(cli: Cli) -> ExitCode {
    // The sandbox prints a live progress table: its logs go to a file, not between the rows.
    let log_file = matches!(cli.command, Command::Sandbox(_))
        .then(|| std::env::temp_dir().join(format!("cellplane-sandbox-{}.log", std::process::id())));
    init_tracing(&cli.log_level, cli.log_format, log_file.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => operator::run(args).await.map_err(|e| e.to_string()),
            Command::Sandbox(args) => operator::sandbox(args).await.map_err(|e| e.to_string()),
            Command::Crds { dir } => crds(dir),
            Command::Console(command) => console::run(command).await,
            Command::Workflows(command) => workflows::run(command).await,
            Command::Rings(command) => rings::run_rings(command).await,
            Command::Rollout(command) => rings::run_rollout(command).await,
            Command::Bench(command) => bench::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (coloured only on a terminal), or to `file` when given and writable.
fn init_tracing(filter: &str, format: LogFormat, file: Option<&std::path::Path>) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let file = file.and_then(|path| match std::fs::File::create(path) {
        Ok(file) => {
            println!("logs: {}", path.display());
            Some(std::sync::Mutex::new(file))
        }
        Err(e) => {
            eprintln!("cannot write logs to {}: {e}; logging to stderr", path.display());
            None
        }
    });
    let ansi = file.is_none() && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match (format, file) {
        (LogFormat::Text, Some(file)) => builder.with_writer(file).init(),
        (LogFormat::Json, Some(file)) => builder.json().with_writer(file).init(),
        (LogFormat::Text, None) => builder.with_writer(std::io::stderr).init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).init(),
    }
}

fn crds(dir: Option<PathBuf>) -> Result<(), String> {
    let Some(dir) = dir else {
        print!("{}", crate::api::crds_yaml_stream().map_err(|e| e.to_string())?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, yaml) in crate::api::crds_yaml().map_err(|e| e.to_string())? {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Opens the journal, refusing to create an SQLite file that does not exist yet.
pub(crate) async fn open_journal(
    args: &JournalArgs,
    create: bool,
) -> Result<std::sync::Arc<dyn cellplane_workflows::journal::Journal>, String> {
    if let Some(path) = args.journal.strip_prefix("sqlite://")
        && !create
        && !std::path::Path::new(path).exists()
    {
        return Err(format!("no journal at {path} (check --journal or CELLPLANE_JOURNAL)"));
    }
    cellplane_workflows::journal::open(&args.journal, &args.journal_schema)
        .await
        .map_err(|e| format!("cannot open the journal at {}: {e}", redact(&args.journal)))
}

/// Hides a password in a database URL before it is printed.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_in_journal_urls_are_hidden() {
        assert_eq!(super::redact("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(super::redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(super::redact("sqlite:///var/lib/j.db"), "sqlite:///var/lib/j.db");
    }
}
