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

use std::collections::BTreeMap;

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
            history.push(&record);
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
    write_atomic_with(path, |tmp| fs::write(tmp, bytes))
}

/// Like [`write_atomic`], for a writer that streams the file itself: `write` creates the
/// temporary file it is given, which is then synced and renamed over `path`.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, path)
    });
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

/// Named evaluation figures (`test_accuracy`, `valid_bits_per_char`, …).
pub type Evaluation = BTreeMap<String, f64>;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricRecord {
    pub step: usize,
    pub train_loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    /// The evaluation after this step, if there was one.
    #[serde(flatten)]
    pub eval: Evaluation,
}

/// What one training step measured.
#[derive(Debug, Clone, Copy)]
pub struct StepMetrics {
    pub loss: f64,
    /// Accuracy on the step's own batch, where the experiment tracks it.
    pub accuracy: Option<f64>,
}

impl From<burn_models::train::StepOutput> for StepMetrics {
    fn from(out: burn_models::train::StepOutput) -> Self {
        StepMetrics {
            loss: out.loss as f64,
            accuracy: Some(out.correct as f64 / out.count as f64),
        }
    }
}

impl From<f64> for StepMetrics {
    fn from(loss: f64) -> Self {
        StepMetrics { loss, accuracy: None }
    }
}

/// What the shared loop needs from an experiment.
pub trait Trainer {
    /// Runs optimisation step `step` (1-based).
    fn train_step(&mut self, step: usize) -> Result<StepMetrics>;
    /// Figures on held-out data.
    fn evaluate(&mut self) -> Result<Evaluation>;
    /// Work an experiment does after some steps (text samples), in the run folder `dir`.
    fn after_step(&mut self, _step: usize, _dir: &Path) -> Result<()> {
        Ok(())
    }
    /// Saves what is needed to continue or reuse the model into `dir` (atomically).
    fn save_checkpoint(&mut self, dir: &Path, step: usize) -> Result<()>;
    /// Loads the checkpoint in `dir` and puts the data pipeline where it was; returns the
    /// step the checkpoint was taken after.
    fn restore_checkpoint(&mut self, dir: &Path) -> Result<usize>;
}

/// How long to train and how often to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Steps at most.
    pub steps: usize,
    pub eval_every: usize,
    /// Stop early once the training accuracy has been 1.0 for this many steps in a row.
    pub early_stop: Option<usize>,
}

impl Schedule {
    /// A fixed number of steps with evaluations every `eval_every`.
    pub fn new(steps: usize, eval_every: usize) -> Self {
        Schedule {
            steps,
            eval_every,
            early_stop: None,
        }
    }

    /// Checks the flags the schedule came from.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            bail!("--steps must be at least 1");
        }
        if self.eval_every == 0 {
            bail!("--eval-every must be at least 1");
        }
        if self.early_stop == Some(0) {
            bail!("the early-stopping window must be at least 1 step");
        }
        Ok(())
    }

    /// Evaluations follow steps `eval_every`, `2·eval_every`, … and the last step.
    pub fn evaluates_after(&self, step: usize) -> bool {
        step.is_multiple_of(self.eval_every) || step == self.steps
    }

    /// Whether the training accuracies so far call for stopping.
    fn stops_early(&self, history: &History) -> bool {
        match self.early_stop {
            Some(window) => {
                history.train_accuracies.len() >= window
                    && history
                        .train_accuracies
                        .iter()
                        .rev()
                        .take(window)
                        .all(|&(_, a)| a >= 1.0)
            }
            None => false,
        }
    }
}

/// Losses and accuracies of a run.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// `(step, training loss)` for every step.
    pub losses: Vec<(usize, f64)>,
    /// `(step, accuracy on the step's batch)` where tracked.
    pub train_accuracies: Vec<(usize, f64)>,
    /// `(step, figures)` of every evaluation.
    pub evals: Vec<(usize, Evaluation)>,
}

impl History {
    fn push(&mut self, record: &MetricRecord) {
        self.losses.push((record.step, record.train_loss));
        if let Some(a) = record.train_accuracy {
            self.train_accuracies.push((record.step, a));
        }
        if !record.eval.is_empty() {
            self.evals.push((record.step, record.eval.clone()));
        }
    }

    /// The steps run.
    pub fn steps(&self) -> usize {
        self.losses.last().map_or(0, |l| l.0)
    }

    /// `(step, value)` of an evaluation figure.
    pub fn eval_series(&self, name: &str) -> Vec<(usize, f64)> {
        self.evals
            .iter()
            .filter_map(|(s, e)| e.get(name).map(|&v| (*s, v)))
            .collect()
    }

    /// The figure of the last evaluation.
    pub fn final_eval(&self, name: &str) -> Option<f64> {
        self.eval_series(name).last().map(|p| p.1)
    }

    /// Accuracy of the last evaluation.
    pub fn final_accuracy(&self) -> f64 {
        self.final_eval("test_accuracy").unwrap_or(f64::NAN)
    }

    /// Best accuracy of any evaluation, and its step.
    pub fn best_accuracy(&self) -> (usize, f64) {
        self.eval_series("test_accuracy")
            .into_iter()
            .fold(
                (0, f64::NAN),
                |best, a| if best.1.is_nan() || a.1 > best.1 { a } else { best },
            )
    }

    /// The curves to draw: test accuracy where evaluations measured it, else the training
    /// accuracy per step; with the panel's name.
    pub fn series(&self, label: &str) -> (Series, &'static str) {
        let test = self.eval_series("test_accuracy");
        let (accuracies, name) = if test.is_empty() {
            (self.train_accuracies.clone(), "training accuracy")
        } else {
            (test, "test accuracy")
        };
        let series = Series {
            label: label.to_owned(),
            losses: self.losses.clone(),
            accuracies,
        };
        (series, name)
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
/// `schedule.steps` (or until early stopping), evaluation and checkpoint on the schedule, one
/// metrics line per step, a progress bar, and `curves.png` at the end.
pub fn run_training(
    trainer: &mut dyn Trainer,
    schedule: Schedule,
    run: &mut RunFolder,
    title: &str,
    mut history: History,
) -> Result<History> {
    let first = history.steps() + 1;
    let bar = progress_bar(schedule.steps as u64, title);
    bar.set_position(first as u64 - 1);
    let mut last_eval = history.evals.last().map(|e| e.1.clone()).unwrap_or_default();
    for step in first..=schedule.steps {
        let metrics = trainer.train_step(step)?;
        if !metrics.loss.is_finite() {
            bar.abandon();
            bail!(
                "training diverged at step {step} (loss {}); try a smaller --lr",
                metrics.loss
            );
        }
        let mut record = MetricRecord {
            step,
            train_loss: metrics.loss,
            train_accuracy: metrics.accuracy,
            eval: Evaluation::new(),
        };
        history.push(&record);
        let stop = schedule.stops_early(&history);
        if schedule.evaluates_after(step) || stop {
            record.eval = trainer.evaluate()?;
            history.evals.push((step, record.eval.clone()));
            last_eval = record.eval.clone();
            trainer.save_checkpoint(run.dir(), step)?;
        }
        trainer.after_step(step, run.dir())?;
        let evaluated = !record.eval.is_empty();
        run.log(&record)?;
        if evaluated {
            // The metrics on disk reach the checkpoint just written, for --resume after a
            // crash, and for anyone watching the run.
            run.flush()?;
        }
        bar.set_position(step as u64);
        let mut message = format!("loss {:.4}", metrics.loss);
        if let Some(a) = metrics.accuracy {
            message += &format!("  acc {a:.3}");
        }
        for (name, value) in &last_eval {
            message += &format!("  {} {value:.4}", name.replace('_', " "));
        }
        bar.set_message(message);
        if stop {
            break;
        }
    }
    bar.finish_and_clear();
    run.flush()?;
    let (series, panel) = history.series(title);
    if let Err(e) = draw_curves(&run.path("curves.png"), title, panel, &[series]) {
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
}

/// Trains an experiment start to finish: restores the checkpoint and reopens the run folder
/// on resume (or creates a new folder), writes `config.json` and trains on the schedule.
/// Returns the run folder and the history.
pub fn train_experiment(
    exp: &Experiment<'_>,
    config: &impl Serialize,
    trainer: &mut dyn Trainer,
) -> Result<(RunFolder, History)> {
    let (mut run, history) = match exp.resume {
        Some(dir) => {
            let step = trainer.restore_checkpoint(dir)?;
            if step >= exp.schedule.steps {
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
    Ok((run, history))
}

/// The fields every summary starts with.
pub fn summary(exp: &Experiment<'_>, run: &RunFolder, history: &History, clock: &Stopwatch) -> serde_json::Value {
    serde_json::json!({
        "experiment": exp.name,
        "engine": exp.engine,
        "steps": history.steps(),
        "final_train_loss": history.losses.last().map(|l| l.1),
        "wall_s": clock.seconds(),
        "peak_rss_mb": peak_rss_mb(),
        "run_dir": run.dir(),
    })
}

/// Adds `extra`'s fields to the summary object `summary`.
pub fn extend(summary: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(summary), serde_json::Value::Object(extra)) = (summary.as_object_mut(), extra) {
        summary.extend(extra);
    }
}

/// Runs a CIFAR-10 classification experiment start to finish and reports its summary (with
/// `extra`'s fields added). `clock` started with the command.
pub fn run_experiment(
    exp: &Experiment<'_>,
    config: &impl Serialize,
    trainer: &mut dyn Trainer,
    extra: serde_json::Value,
    clock: &Stopwatch,
    json: bool,
) -> Result<History> {
    let (run, history) = train_experiment(exp, config, trainer)?;
    let (best_step, best) = history.best_accuracy();
    let mut summary = summary(exp, &run, &history, clock);
    extend(
        &mut summary,
        serde_json::json!({
            "test_accuracy": history.final_accuracy(),
            "best_test_accuracy": best,
            "best_step": best_step,
        }),
    );
    extend(&mut summary, extra);
    let human = format!(
        "{} ({} engine): test accuracy {:.4} after {} steps (best {best:.4} at step {best_step}), {:.1} s; run folder {}",
        exp.name,
        exp.engine,
        history.final_accuracy(),
        history.steps(),
        clock.seconds(),
        run.dir().display()
    );
    report(&human, &summary, json);
    Ok(history)
}

/// An experiment's arguments that `--resume RUN` can restore from the run's `config.json`.
pub trait ResumableArgs: serde::de::DeserializeOwned + Clone {
    /// The experiment's name, for messages.
    const EXPERIMENT: &'static str;
    /// The run folder given with `--resume`.
    fn resume_dir(&self) -> Option<&Path>;
    /// Takes from the command line `cli` what may change on resume (at least `--steps` and
    /// `--json`, see [`adopt_run_flags`]).
    fn adopt(&mut self, cli: &Self, dir: &Path);
}

/// The arguments to run with: the command line's, or on `--resume` the saved ones with what
/// may change taken from the command line.
pub fn resolve_args<A: ResumableArgs>(cli: &A) -> Result<A> {
    match cli.resume_dir() {
        Some(dir) => {
            let mut saved: A = saved_config(dir, A::EXPERIMENT)?;
            saved.adopt(cli, dir);
            Ok(saved)
        }
        None => Ok(cli.clone()),
    }
}

/// What every resumed run takes from the command line: `--steps` (when given) and `--json`;
/// it writes into the run folder it resumes.
pub fn adopt_run_flags(
    (steps, run, resume): (&mut Option<usize>, &mut RunArgs, &mut Option<PathBuf>),
    (cli_steps, cli_run): (Option<usize>, &RunArgs),
    dir: &Path,
) {
    *resume = Some(dir.to_path_buf());
    run.json = cli_run.json;
    run.out = Some(dir.to_path_buf());
    if cli_steps.is_some() {
        *steps = cli_steps;
    }
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
        let s = Schedule::new(250, 100);
        let evals: Vec<usize> = (1..=250).filter(|&i| s.evaluates_after(i)).collect();
        assert_eq!(evals, [100, 200, 250]);
    }

    fn record(step: usize, loss: f64, accuracy: Option<f64>, test: Option<f64>) -> MetricRecord {
        MetricRecord {
            step,
            train_loss: loss,
            train_accuracy: accuracy,
            eval: test
                .map(|a| Evaluation::from([("test_accuracy".to_owned(), a)]))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn history_best_final_and_early_stopping() {
        let mut h = History::default();
        for (step, test) in [(1, 0.2), (2, 0.5), (3, 0.4)] {
            h.push(&record(step, 1.0, Some(1.0), Some(test)));
        }
        assert_eq!(h.best_accuracy(), (2, 0.5));
        assert_eq!(h.final_accuracy(), 0.4);
        let stop = Schedule {
            early_stop: Some(3),
            ..Schedule::new(100, 10)
        };
        assert!(stop.stops_early(&h));
        h.push(&record(4, 1.0, Some(0.9), None));
        assert!(!stop.stops_early(&h), "the window must be all 1.0");
        assert!(!Schedule::new(100, 10).stops_early(&h));
    }

    #[test]
    fn reopening_keeps_metrics_up_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = RunFolder::create(Some(dir.path()), "t").unwrap();
        for step in 1..=5 {
            let test = (step % 2 == 0).then_some(step as f64 / 10.0);
            run.log(&record(step, 1.0 / step as f64, None, test)).unwrap();
        }
        run.flush().unwrap();
        drop(run);
        let (mut run, history) = RunFolder::reopen(dir.path(), 4).unwrap();
        assert_eq!(history.losses.len(), 4);
        assert_eq!(history.eval_series("test_accuracy"), [(2, 0.2), (4, 0.4)]);
        run.log(&record(5, 9.0, None, None)).unwrap();
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
