//! Command-line parsing (clap) and dispatch; every command lives in its own file.

mod data;
mod demo;
mod evaluate;
mod info;
mod logprob;
mod progress;
mod sample;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Normalizing flows for collider events: train on Monte-Carlo events, generate new ones fast,
/// and check how close they are.
#[derive(Parser, Debug)]
#[command(name = "hepflow", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a flow on a table of events.
    Train(Box<train::TrainArgs>),
    /// Generate events from a trained model.
    Sample(sample::SampleArgs),
    /// Log-density of each event of a file under a model (original units).
    LogProb(logprob::LogProbArgs),
    /// Describe a trained model.
    Info(info::InfoArgs),
    /// Compare generated events with reference (MC) events: metrics, plots and an HTML report.
    Evaluate(evaluate::EvaluateArgs),
    /// Train, sample and evaluate on the bundled HIGGS sample (signal and background).
    Demo(demo::DemoArgs),
}

/// Parses the command line and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    // An unknown HEPFLOW_SIMD value is a mistake worth reporting, not silently ignoring.
    hepflow::engine::simd::requested_from_env()?;
    match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Sample(a) => sample::run(a),
        Command::LogProb(a) => logprob::run(a),
        Command::Info(a) => info::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Demo(a) => demo::run(a),
    }
}

/// Turns the first Ctrl-C / SIGTERM into a stop request (training ends after the current step,
/// keeping the last complete checkpoint; sampling leaves no partial file); a second one exits at
/// once.
pub fn stop_on_signals() {
    hepflow::interrupt::clear_stop();
    let _ = ctrlc::set_handler(|| {
        if hepflow::interrupt::stop_requested() {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping at the next safe point (press Ctrl-C again to abort)");
        hepflow::interrupt::request_stop();
    });
}

/// Builds the global thread pool (`None` = all cores).
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .ok();
    }
    Ok(())
}
