//! `dl download cifar10`: fetch, verify and unpack the official binary archive.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use data::download::{CIFAR10_MD5, CIFAR10_URL, DownloadOutcome, download_cifar10};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// Datasets `dl download` knows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Dataset {
    Cifar10,
}

/// Arguments of `dl download`.
#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// The dataset to fetch.
    #[arg(value_enum)]
    pub dataset: Dataset,
    /// Folder to unpack into (the dataset lands in DIR/cifar-10-batches-bin).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CIFAR10_DIR)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Where the archive comes from (overridable for mirrors and tests).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct SourceArgs {
    /// Archive URL.
    #[arg(long, env = "DL_CIFAR10_URL", default_value = CIFAR10_URL)]
    pub url: String,
    /// Expected MD5 of the archive.
    #[arg(long, env = "DL_CIFAR10_MD5", default_value = CIFAR10_MD5)]
    pub md5: String,
}

/// Where experiments look for CIFAR-10 unless told otherwise.
pub const DEFAULT_CIFAR10_DIR: &str = "data/cifar10";

/// Fetches the archive into `dir` with a progress bar.
pub fn fetch(dir: &Path, source: &SourceArgs) -> Result<PathBuf> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("download [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template"),
    );
    let mut progress = |done: u64, total: Option<u64>| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
    };
    let outcome = download_cifar10(dir, &source.url, &source.md5, &mut progress);
    bar.finish_and_clear();
    match outcome.with_context(|| format!("cannot fetch CIFAR-10 into {}", dir.display()))? {
        DownloadOutcome::AlreadyPresent(d) => {
            eprintln!("CIFAR-10 is already in {}", d.display());
            Ok(d)
        }
        DownloadOutcome::Fetched { dir, bytes } => {
            eprintln!("fetched {bytes} bytes, MD5 verified, unpacked to {}", dir.display());
            Ok(dir)
        }
    }
}

/// `dl download`
pub fn run(args: &DownloadArgs) -> Result<()> {
    match args.dataset {
        Dataset::Cifar10 => {
            let dir = fetch(&args.dir, &args.source)?;
            println!("{}", dir.display());
            Ok(())
        }
    }
}
