use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cellplane::cli::main(cellplane::cli::Cli::parse())
}
