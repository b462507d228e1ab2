//! The `asymvalley` command line: `demo` (the main job), `theory` (the theorems' numbers) and
//! `probe` (the asymmetric-valley detector on a TorchScript model).
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "asymvalley",
    version,
    about = "Weight averaging and asymmetric valleys on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train on the embedded digits data with SGD + SWA and report SGD vs SWA (the main job).
    Demo(asymvalley_cli::commands::demo::DemoArgs),
    /// Closed forms and SGD simulations for synthetic asymmetric valleys.
    Theory(asymvalley_cli::commands::theory::TheoryArgs),
    /// Probe a TorchScript model's loss landscape for asymmetric directions.
    Probe(Box<asymvalley_cli::commands::probe::ProbeArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Demo(args) => asymvalley_cli::commands::demo::run(args),
        Command::Theory(args) => asymvalley_cli::commands::theory::run(args),
        Command::Probe(args) => asymvalley_cli::commands::probe::run(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asymvalley: error: {e}");
            ExitCode::FAILURE
        }
    }
}
