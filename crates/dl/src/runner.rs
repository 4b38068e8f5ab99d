//! What every experiment shares: the run folder (config, metrics, curves, checkpoints), the
//! one training-loop shape with its evaluation schedule and progress bar, and the summary.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::plot::{Series, draw_curves};

/// Where a run writes and how it reports.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RunArgs {
    /// Run folder (default: runs/<experiment>-<timestamp>/).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// End with one JSON summary line on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A run's folder: `config.json`, `metrics.jsonl`, `curves.png` and checkpoints.
pub struct RunFolder {
    dir: PathBuf,
    metrics: BufWriter<File>,
}

impl RunFolder {
    /// Creates `out`, or `runs/<experiment>-<timestamp>` when `out` is `None`.
    pub fn create(out: Option<&Path>, experiment: &str) -> Result<Self> {
        let dir = match out {
            Some(dir) => dir.to_path_buf(),
            None => {
                let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
                let base = PathBuf::from("runs").join(format!("{experiment}-{stamp}"));
                // Two runs started within the same second get distinct folders.
                (1..)
                    .map(|i| {
                        if i == 1 {
                            base.clone()
                        } else {
                            PathBuf::from(format!("{}-{i}", base.display()))
                        }
                    })
                    .find(|d| !d.exists())
                    .expect("an unused folder name")
            }
        };
        fs::create_dir_all(&dir).with_context(|| format!("cannot create run folder {}", dir.display()))?;
        let metrics_path = dir.join("metrics.jsonl");
        let metrics =
            File::create(&metrics_path).with_context(|| format!("cannot create {}", metrics_path.display()))?;
        Ok(RunFolder {
            dir,
            metrics: BufWriter::new(metrics),
        })
    }

    /// Reopens the run in `dir` to continue it after `step`: `metrics.jsonl` keeps its lines
    /// up to that step (later ones belong to steps that will be run again) and is appended
    /// to; returns the history those lines hold.
    pub fn reopen(dir: &Path, step: usize) -> Result<(Self, History)> {
        let metrics_path = dir.join("metrics.jsonl");
        let text =
            fs::read_to_string(&metrics_path).with_context(|| format!("cannot read {}", metrics_path.display()))?;
        let mut kept = String::new();
        let mut history = History::default();
        for (n, line) in text.lines().enumerate() {
            let record: MetricRecord = serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a metrics record", metrics_path.display(), n + 1))?;
            if record.step > step {
                break;
            }
            history.losses.push((record.step, record.train_loss));
            if let Some(a) = record.test_accuracy {
                history.accuracies.push((record.step, a));
            }
            kept.push_str(line);
            kept.push('\n');
        }
        write_atomic(&metrics_path, kept.as_bytes())?;
        let metrics = fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("cannot append to {}", metrics_path.display()))?;
        let folder = RunFolder {
            dir: dir.to_path_buf(),
            metrics: BufWriter::new(metrics),
        };
        Ok((folder, history))
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `config.json`.
    pub fn write_config(&self, config: &impl Serialize) -> Result<()> {
        write_atomic(&self.path("config.json"), &serde_json::to_vec_pretty(config)?)
    }

    /// Appends one line to `metrics.jsonl`.
    pub fn log(&mut self, record: &impl Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.metrics, record)?;
        self.metrics.write_all(b"\n")?;
        Ok(())
    }

    /// Flushes `metrics.jsonl`.
    pub fn flush(&mut self) -> Result<()> {
        self.metrics.flush().context("cannot write metrics.jsonl")
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// crash never leaves a half-written file where a complete one was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricRecord {
    pub step: usize,
    pub train_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
}

/// What the shared loop needs from an experiment.
pub trait Trainer {
    /// Runs optimisation step `step` (1-based) and returns its training loss.
    fn train_step(&mut self, step: usize) -> Result<f64>;
    /// Accuracy on the whole test set.
    fn evaluate(&mut self) -> Result<f64>;
    /// Saves what is needed to continue or reuse the model into `dir` (atomically).
    fn save_checkpoint(&mut self, dir: &Path, step: usize) -> Result<()>;
    /// Loads the checkpoint in `dir` and puts the data pipeline where it was; returns the
    /// step the checkpoint was taken after.
    fn restore_checkpoint(&mut self, dir: &Path) -> Result<usize>;
}

/// How long to train and how often to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub steps: usize,
    pub eval_every: usize,
}

impl Schedule {
    /// Checks the flags the schedule came from.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            bail!("--steps must be at least 1");
        }
        if self.eval_every == 0 {
            bail!("--eval-every must be at least 1");
        }
        Ok(())
    }

    /// Evaluations follow steps `eval_every`, `2·eval_every`, … and the last step.
    pub fn evaluates_after(&self, step: usize) -> bool {
        step.is_multiple_of(self.eval_every) || step == self.steps
    }
}

/// Losses and accuracies of a run.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// `(step, training loss)` for every step.
    pub losses: Vec<(usize, f64)>,
    /// `(step, test accuracy)` for every evaluation.
    pub accuracies: Vec<(usize, f64)>,
}

impl History {
    /// Accuracy of the last evaluation.
    pub fn final_accuracy(&self) -> f64 {
        self.accuracies.last().map_or(f64::NAN, |a| a.1)
    }

    /// Best accuracy of any evaluation, and its step.
    pub fn best_accuracy(&self) -> (usize, f64) {
        self.accuracies.iter().copied().fold(
            (0, f64::NAN),
            |best, a| {
                if best.1.is_nan() || a.1 > best.1 { a } else { best }
            },
        )
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_prefix(prefix.to_owned());
    bar
}

/// The one training loop: steps after those in `history` (empty for a fresh run) up to
/// `schedule.steps`, evaluation and checkpoint on the schedule, one metrics line per step,
/// a progress bar, and `curves.png` at the end.
pub fn run_training(
    trainer: &mut dyn Trainer,
    schedule: Schedule,
    run: &mut RunFolder,
    title: &str,
    mut history: History,
) -> Result<History> {
    let first = history.losses.last().map_or(1, |l| l.0 + 1);
    let bar = progress_bar(schedule.steps as u64, title);
    bar.set_position(first as u64 - 1);
    let mut last_accuracy = history.accuracies.last().map(|a| a.1);
    for step in first..=schedule.steps {
        let loss = trainer.train_step(step)?;
        if !loss.is_finite() {
            bar.abandon();
            bail!("training diverged at step {step} (loss {loss}); try a smaller --lr");
        }
        history.losses.push((step, loss));
        let mut record = MetricRecord {
            step,
            train_loss: loss,
            test_accuracy: None,
        };
        if schedule.evaluates_after(step) {
            let accuracy = trainer.evaluate()?;
            history.accuracies.push((step, accuracy));
            record.test_accuracy = Some(accuracy);
            last_accuracy = Some(accuracy);
            trainer.save_checkpoint(run.dir(), step)?;
        }
        run.log(&record)?;
        bar.set_position(step as u64);
        bar.set_message(match last_accuracy {
            Some(a) => format!("loss {loss:.4}  test acc {a:.4}"),
            None => format!("loss {loss:.4}"),
        });
    }
    bar.finish_and_clear();
    run.flush()?;
    let series = Series {
        label: title.to_owned(),
        losses: history.losses.clone(),
        accuracies: history.accuracies.clone(),
    };
    if let Err(e) = draw_curves(&run.path("curves.png"), title, &[series]) {
        eprintln!("warning: could not draw curves.png: {e:#}");
    }
    Ok(history)
}

/// What [`run_experiment`] needs besides the trainer and the configuration.
pub struct Experiment<'a> {
    /// `mlp`, `cnn`, …: the run folder's prefix and the summary's `experiment`.
    pub name: &'a str,
    /// `manual` or `burn`.
    pub engine: &'a str,
    pub schedule: Schedule,
    /// Continue the run in this folder from its checkpoint.
    pub resume: Option<&'a Path>,
    /// Run folder of a new run (default `runs/<name>-<timestamp>`).
    pub out: Option<&'a Path>,
    /// End with the JSON summary line.
    pub json: bool,
}

/// Runs an experiment start to finish: restores the checkpoint and reopens the run folder
/// on resume (or creates a new folder), writes `config.json`, trains on the schedule, and
/// reports the summary (with `extra`'s fields added). `clock` started with the command.
pub fn run_experiment(
    exp: &Experiment<'_>,
    config: &impl Serialize,
    trainer: &mut dyn Trainer,
    extra: serde_json::Value,
    clock: &Stopwatch,
) -> Result<History> {
    let steps = exp.schedule.steps;
    let (mut run, history) = match exp.resume {
        Some(dir) => {
            let step = trainer.restore_checkpoint(dir)?;
            if step >= steps {
                bail!(
                    "{} already trained {step} steps; ask for more with --steps",
                    dir.display()
                );
            }
            RunFolder::reopen(dir, step)?
        }
        None => (RunFolder::create(exp.out, exp.name)?, History::default()),
    };
    run.write_config(config)?;
    let history = run_training(trainer, exp.schedule, &mut run, exp.name, history)?;
    let (best_step, best) = history.best_accuracy();
    let wall_s = clock.seconds();
    let mut summary = serde_json::json!({
        "experiment": exp.name,
        "engine": exp.engine,
        "steps": steps,
        "test_accuracy": history.final_accuracy(),
        "best_test_accuracy": best,
        "best_step": best_step,
        "final_train_loss": history.losses.last().map(|l| l.1),
        "wall_s": wall_s,
        "peak_rss_mb": peak_rss_mb(),
        "run_dir": run.dir(),
    });
    if let (Some(summary), serde_json::Value::Object(extra)) = (summary.as_object_mut(), extra) {
        summary.extend(extra);
    }
    let human = format!(
        "{} ({} engine): test accuracy {:.4} after {steps} steps (best {best:.4} at step {best_step}), {wall_s:.1} s; \
         run folder {}",
        exp.name,
        exp.engine,
        history.final_accuracy(),
        run.dir().display()
    );
    report(&human, &summary, exp.json);
    Ok(history)
}

/// The configuration saved in run folder `dir` by an earlier run of `experiment`.
pub fn saved_config<T: serde::de::DeserializeOwned>(dir: &Path, experiment: &str) -> Result<T> {
    let path = dir.join("config.json");
    let text = fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot resume from {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a {experiment} run's configuration: {e}", path.display()))
}

/// Peak resident memory of this process so far, in MB (Linux; `None` elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Wall-clock stopwatch for summaries.
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }
    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Prints the human summary, and with `json` the summary object as the last stdout line.
pub fn report(human: &str, summary: &serde_json::Value, json: bool) {
    if json {
        eprintln!("{human}");
        println!("{summary}");
    } else {
        println!("{human}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_evaluates_on_multiples_and_the_last_step() {
        let s = Schedule {
            steps: 250,
            eval_every: 100,
        };
        let evals: Vec<usize> = (1..=250).filter(|&i| s.evaluates_after(i)).collect();
        assert_eq!(evals, [100, 200, 250]);
    }

    #[test]
    fn history_best_and_final() {
        let h = History {
            losses: vec![],
            accuracies: vec![(1, 0.2), (2, 0.5), (3, 0.4)],
        };
        assert_eq!(h.best_accuracy(), (2, 0.5));
        assert_eq!(h.final_accuracy(), 0.4);
    }

    #[test]
    fn reopening_keeps_metrics_up_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = RunFolder::create(Some(dir.path()), "t").unwrap();
        for step in 1..=5 {
            let test_accuracy = (step % 2 == 0).then_some(step as f64 / 10.0);
            run.log(&MetricRecord {
                step,
                train_loss: 1.0 / step as f64,
                test_accuracy,
            })
            .unwrap();
        }
        run.flush().unwrap();
        drop(run);
        let (mut run, history) = RunFolder::reopen(dir.path(), 4).unwrap();
        assert_eq!(history.losses.len(), 4);
        assert_eq!(history.accuracies, [(2, 0.2), (4, 0.4)]);
        run.log(&MetricRecord {
            step: 5,
            train_loss: 9.0,
            test_accuracy: None,
        })
        .unwrap();
        run.flush().unwrap();
        let text = fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(text.lines().last().unwrap().contains("9.0"));
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file is left"
        );
    }
}
