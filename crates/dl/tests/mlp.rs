//! End-to-end: `dl mlp` on generated CIFAR-10 fixtures.

mod common;

use std::fs;

use common::{assert_clean_failure, dl, last_json, learnable_cifar, losses};
use data::RECORD_BYTES;

fn train(data: &str, out: &str, seed: &str) -> std::process::Output {
    dl(&[
        "mlp",
        "--data",
        data,
        "--out",
        out,
        "--steps",
        "120",
        "--eval-every",
        "40",
        "--batch-size",
        "50",
        "--seed",
        seed,
        "--json",
    ])
}

#[test]
fn learns_a_learnable_fixture_and_writes_the_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = learnable_cifar(&tmp.path().join("data"), 60, 100);
    let run = tmp.path().join("run");
    let out = train(data.to_str().unwrap(), run.to_str().unwrap(), "3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = last_json(&out);
    assert_eq!(summary["experiment"], "mlp");
    assert_eq!(summary["engine"], "manual");
    assert_eq!(summary["steps"], 120);
    let accuracy = summary["test_accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.6,
        "test accuracy {accuracy} is not well above chance (0.1)"
    );
    assert!(summary["best_test_accuracy"].as_f64().unwrap() >= accuracy);
    for key in ["wall_s", "peak_rss_mb"] {
        assert!(summary[key].as_f64().unwrap() > 0.0, "{key}");
    }
    let metrics = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 120);
    let evals = metrics.lines().filter(|l| l.contains("test_accuracy")).count();
    assert_eq!(evals, 3, "evaluations after steps 40, 80, 120");
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"]["hidden"], serde_json::json!([100]));
    assert_eq!(&fs::read(run.join("curves.png")).unwrap()[1..4], b"PNG");
    assert!(fs::metadata(run.join("checkpoint.safetensors")).unwrap().len() > 3072 * 100 * 4);
}

#[test]
fn the_same_seed_gives_the_same_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = learnable_cifar(&tmp.path().join("data"), 20, 40);
    let d = data.to_str().unwrap();
    let runs: Vec<String> = ["a", "b", "c"]
        .iter()
        .zip(["5", "5", "6"])
        .map(|(name, seed)| {
            let run = tmp.path().join(name);
            let out = train(d, run.to_str().unwrap(), seed);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            fs::read_to_string(run.join("metrics.jsonl")).unwrap()
        })
        .collect();
    assert_eq!(runs[0], runs[1], "same seed, same curve");
    assert_ne!(runs[0], runs[2], "another seed, another curve");
}

#[test]
fn bad_input_gives_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let out = dl(&["mlp", "--data", missing.to_str().unwrap()]);
    assert_clean_failure(&out, "dl download cifar10");

    let data = learnable_cifar(&tmp.path().join("data"), 4, 4);
    let d = data.to_str().unwrap();
    let root = data.join("cifar-10-batches-bin");

    for (flags, needle) in [
        (&["--lr=-1"][..], "--lr must be a positive number"),
        (&["--lr", "NaN"][..], "--lr must be a positive number"),
        (&["--batch-size", "0"][..], "--batch-size must be at least 1"),
        (&["--batch-size", "21"][..], "larger than the training set (20 images)"),
        (&["--hidden", "100,0"][..], "--hidden widths must be positive"),
        (&["--steps", "0"][..], "--steps must be at least 1"),
    ] {
        let run = tmp.path().join("r");
        let mut args = vec!["mlp", "--data", d, "--out", run.to_str().unwrap()];
        args.extend_from_slice(flags);
        assert_clean_failure(&dl(&args), needle);
    }

    let batch = root.join("data_batch_2.bin");
    let good = fs::read(&batch).unwrap();
    fs::write(&batch, &good[..good.len() - 100]).unwrap();
    assert_clean_failure(&dl(&["mlp", "--data", d]), "is not a multiple of 3073");

    let mut bad_label = good.clone();
    bad_label[RECORD_BYTES * 2] = 11;
    fs::write(&batch, &bad_label).unwrap();
    assert_clean_failure(&dl(&["mlp", "--data", d]), "record 2 has label byte 11");

    fs::write(&batch, &good).unwrap();
    fs::remove_file(root.join("test_batch.bin")).unwrap();
    assert_clean_failure(&dl(&["mlp", "--data", d]), "test_batch.bin is missing");
}

#[test]
fn resume_continues_exactly_where_the_run_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = learnable_cifar(&tmp.path().join("data"), 20, 40);
    let d = data.to_str().unwrap();
    let whole = tmp.path().join("whole");
    let out = train(d, whole.to_str().unwrap(), "9");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Stop after 100 steps (last checkpoint at step 100), then resume to 120.
    let part = tmp.path().join("part");
    let out = dl(&[
        "mlp",
        "--data",
        d,
        "--out",
        part.to_str().unwrap(),
        "--steps",
        "100",
        "--eval-every",
        "40",
        "--batch-size",
        "50",
        "--seed",
        "9",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = dl(&[
        "mlp",
        "--resume",
        part.to_str().unwrap(),
        "--data",
        d,
        "--steps",
        "120",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_json(&out)["steps"], 120);
    // The same losses step by step; the resumed run also holds the evaluation after its
    // first run's last step (100).
    let a = losses(&whole);
    assert_eq!(a.len(), 120);
    assert_eq!(a, losses(&part), "a resumed run's curve is the uninterrupted run's");

    let out = dl(&["mlp", "--resume", part.to_str().unwrap(), "--data", d]);
    assert_clean_failure(&out, "already trained 120 steps");
    let out = dl(&["mlp", "--resume", tmp.path().join("nothing").to_str().unwrap()]);
    assert_clean_failure(&out, "cannot resume");
}

/// The manual engine's MLP with BatchNorm (SGD) and LayerNorm (Adam) learns, and with
/// BatchNorm and Adam a resumed run repeats the uninterrupted one (weights, running
/// statistics and Adam's moments all come back from the checkpoint).
#[test]
fn manual_mlps_with_norms_learn_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = learnable_cifar(&tmp.path().join("data"), 40, 100);
    let d = data.to_str().unwrap();
    let run = |out: &std::path::Path, norm: &str, optimizer: &str, lr: &str, steps: &str| {
        dl(&[
            "mlp",
            "--engine",
            "manual",
            "--hidden",
            "64,64",
            "--activation",
            "relu",
            "--norm",
            norm,
            "--optimizer",
            optimizer,
            "--lr",
            lr,
            "--steps",
            steps,
            "--eval-every",
            "30",
            "--batch-size",
            "40",
            "--data",
            d,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
    };
    for (norm, optimizer, lr) in [("batch", "sgd", "0.01"), ("layer", "adam", "0.001")] {
        let out = run(&tmp.path().join(norm), norm, optimizer, lr, "60");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary = last_json(&out);
        assert_eq!(summary["engine"], "manual");
        let accuracy = summary["test_accuracy"].as_f64().unwrap();
        assert!(accuracy > 0.6, "--norm {norm}: test accuracy {accuracy}");
    }
    let whole = tmp.path().join("whole");
    assert!(run(&whole, "batch", "adam", "0.001", "60").status.success());
    let part = tmp.path().join("part");
    assert!(run(&part, "batch", "adam", "0.001", "30").status.success());
    let out = dl(&["mlp", "--resume", part.to_str().unwrap(), "--data", d, "--steps", "60"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        fs::read_to_string(whole.join("metrics.jsonl")).unwrap(),
        fs::read_to_string(part.join("metrics.jsonl")).unwrap(),
        "a resumed run's curve (losses and test accuracies) is the uninterrupted run's"
    );
}
