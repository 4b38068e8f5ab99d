//! `dl`: one program for every experiment of the MLP/CNN/RNN practical.

mod bench;
mod burn_trainer;
mod checkpoint;
mod cifar;
mod cnn;
mod download;
mod manual_trainer;
mod mlp;
mod plot;
mod rnn;
mod runner;
mod textgen;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: burn allocates and frees a tensor per operation,
/// and glibc hands large blocks back to the kernel and faults them in again every time (a
/// quarter of the recurrent networks' step time went to page faults).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Train, evaluate and benchmark the practical's networks, without Python.
#[derive(Debug, Parser)]
#[command(name = "dl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the MLP on CIFAR-10 (the write-up's NumPy part).
    Mlp(mlp::MlpArgs),
    /// Train the pre-activation residual CNN on CIFAR-10 (the write-up's PyTorch CNN).
    Cnn(cnn::CnnArgs),
    /// Train recurrent classifiers on synthetic sequence tasks, once per seed.
    Rnn(rnn::RnnArgs),
    /// Train the character-level LSTM on a text (default: Grimms' Fairy Tales, embedded).
    Textgen(textgen::TextgenArgs),
    /// Continue a prompt with a trained `dl textgen` run.
    Generate(textgen::GenerateArgs),
    /// Time one training step of a model on synthetic batches.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Fetch a dataset.
    Download(download::DownloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || match &cli.command {
        Command::Mlp(args) => mlp::run(args),
        Command::Cnn(args) => cnn::run(args),
        Command::Rnn(args) => rnn::run(args),
        Command::Textgen(args) => textgen::run(args),
        Command::Generate(args) => textgen::run_generate(args),
        Command::Bench(command) => bench::run(command),
        Command::Download(args) => download::run(args),
    };
    // Run the whole command on a worker of the thread pool: every parallel section then
    // forks from a pool thread, which works on its own share instead of sleeping on a lock
    // until the workers are done (measured: about 2 % off the MLP step).
    let result = match rayon::ThreadPoolBuilder::new().build() {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
