//! End-to-end: recurrent classifiers on sequence tasks, and the character model: training,
//! reloading, generating, and bad input.

mod common;

use std::fs;

use common::{assert_clean_failure, dl, last_json};

#[test]
fn a_tiny_lstm_learns_tiny_palindromes_over_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = dl(&[
        "rnn",
        "--task",
        "palindrome",
        "--length",
        "4",
        "--hidden",
        "32",
        "--input-dim",
        "16",
        "--batch-size",
        "64",
        "--lr",
        "0.01",
        "--steps",
        "300",
        "--early-stop",
        "10",
        "--seeds",
        "2",
        "--out",
        run.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = last_json(&out);
    assert_eq!(s["test_accuracies"].as_array().unwrap().len(), 2);
    let mean = s["test_accuracy_mean"].as_f64().unwrap();
    assert!(mean > 0.95, "mean test accuracy {mean}");
    assert!(s["test_accuracy_std"].as_f64().unwrap() >= 0.0);
    // Each seed lists the test sequences it got wrong (up to 10): as many as its accuracy says.
    let tested = 10.0 * 64.0;
    for (mistakes, accuracy) in s["test_mistakes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(s["test_accuracies"].as_array().unwrap())
    {
        let wrong = ((1.0 - accuracy.as_f64().unwrap()) * tested).round() as usize;
        let mistakes = mistakes.as_array().unwrap();
        assert_eq!(mistakes.len(), wrong.min(10), "{mistakes:?}");
        for m in mistakes {
            let m = m.as_str().unwrap();
            assert!(m.starts_with(['0', '1']) && m.contains("(label "), "{m}");
        }
    }
    for steps in s["steps_per_seed"].as_array().unwrap() {
        assert!(steps.as_u64().unwrap() < 300, "early stopping ends training: {steps}");
    }
    for seed in [42, 43] {
        let metrics = fs::read_to_string(run.join(format!("seed-{seed}/metrics.jsonl"))).unwrap();
        let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        assert_eq!(last["train_accuracy"], 1.0);
        assert!(last["test_accuracy"].is_number());
    }
    assert_eq!(&fs::read(run.join("curves.png")).unwrap()[1..4], b"PNG");
}

/// The manual engine's LSTM and peephole LSTM learn the same tiny task, write their
/// checkpoints, and give the same curve for the same seed.
#[test]
fn the_manual_engine_learns_tiny_palindromes_reproducibly() {
    let tmp = tempfile::tempdir().unwrap();
    let train = |model: &str, run: &std::path::Path| {
        dl(&[
            "rnn",
            "--engine",
            "manual",
            "--model",
            model,
            "--length",
            "4",
            "--hidden",
            "32",
            "--input-dim",
            "16",
            "--batch-size",
            "64",
            "--lr",
            "0.01",
            "--steps",
            "300",
            "--early-stop",
            "10",
            "--seeds",
            "1",
            "--out",
            run.to_str().unwrap(),
            "--json",
        ])
    };
    for model in ["lstm", "peephole"] {
        let run = tmp.path().join(model);
        let out = train(model, &run);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s = last_json(&out);
        assert_eq!(s["engine"], "manual");
        let accuracy = s["test_accuracy_mean"].as_f64().unwrap();
        assert!(accuracy > 0.95, "{model}: test accuracy {accuracy}");
        assert!(
            s["steps_per_seed"][0].as_u64().unwrap() < 300,
            "early stopping ends training"
        );
        assert!(run.join("seed-42/checkpoint.safetensors").is_file());
        let again = tmp.path().join(format!("{model}-again"));
        assert!(train(model, &again).status.success());
        assert_eq!(
            fs::read_to_string(run.join("seed-42/metrics.jsonl")).unwrap(),
            fs::read_to_string(again.join("seed-42/metrics.jsonl")).unwrap(),
            "{model}: the same seed gives the same curve"
        );
    }
    assert_clean_failure(
        &dl(&["rnn", "--engine", "manual", "--model", "gru"]),
        "--engine manual runs --model lstm and --model peephole",
    );
}

#[test]
fn every_model_runs_on_every_task() {
    let tmp = tempfile::tempdir().unwrap();
    for model in ["lstm", "peephole", "gru", "bilstm"] {
        for task in ["palindrome", "baum-sweet", "random-comb"] {
            let run = tmp.path().join(format!("{model}-{task}"));
            let out = dl(&[
                "rnn",
                "--task",
                task,
                "--model",
                model,
                "--length",
                "3",
                "--hidden",
                "8",
                "--input-dim",
                "4",
                "--batch-size",
                "8",
                "--steps",
                "2",
                "--seeds",
                "1",
                "--test-batches",
                "1",
                "--out",
                run.to_str().unwrap(),
                "--json",
            ]);
            assert!(
                out.status.success(),
                "{model} on {task}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(last_json(&out)["model"], model);
        }
    }
    assert_clean_failure(&dl(&["rnn", "--length", "1"]), "--length must be at least 2");
}

/// Trains a small character model on `text` for a few steps into `run`.
fn train_text(text: &std::path::Path, run: &std::path::Path, steps: &str) -> std::process::Output {
    train_text_on("burn", text, run, steps)
}

/// [`train_text`] on `engine`.
fn train_text_on(engine: &str, text: &std::path::Path, run: &std::path::Path, steps: &str) -> std::process::Output {
    dl(&[
        "textgen",
        "--engine",
        engine,
        "--text",
        text.to_str().unwrap(),
        "--seq-length",
        "8",
        "--batch-size",
        "16",
        "--hidden",
        "32",
        "--embedding",
        "8",
        "--steps",
        steps,
        "--eval-every",
        "10",
        "--sample-every",
        "10",
        "--out",
        run.to_str().unwrap(),
        "--json",
    ])
}

#[test]
fn a_text_model_trains_reloads_and_generates_the_same_text_for_a_seed() {
    for engine in ["burn", "manual"] {
        text_model_round_trip(engine);
    }
}

fn text_model_round_trip(engine: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("text.txt");
    fs::write(
        &text,
        "\u{feff}the cat sat on the mat. the dog sat on the log. ".repeat(40),
    )
    .unwrap();
    let run = tmp.path().join("run");
    let out = train_text_on(engine, &text, &run, "30");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = last_json(&out);
    assert_eq!(s["engine"], engine);
    assert!(s["train_accuracy"].as_f64().unwrap() > 0.3, "{engine}: {s}");
    assert!(s["valid_bits_per_char"].as_f64().unwrap() > 0.0);
    assert!(s["wall_s"].as_f64().unwrap() > 0.0);
    let samples = fs::read_to_string(run.join("samples.txt")).unwrap();
    assert_eq!(samples.matches("== step").count(), 3, "samples after steps 10, 20, 30");
    assert_eq!(samples.lines().filter(|l| l.starts_with("T=")).count(), 3 * 12);

    let generate = |seed: &str| {
        let out = dl(&[
            "generate",
            run.to_str().unwrap(),
            "--prompt",
            "the ",
            "--length",
            "40",
            "--seed",
            seed,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let a = generate("7");
    assert!(a.starts_with("the "));
    assert_eq!(a.trim_end().chars().count(), 44);
    assert_eq!(a, generate("7"), "the same seed gives the same text");
    let greedy = |t: &str| {
        String::from_utf8(
            dl(&[
                "generate",
                run.to_str().unwrap(),
                "--prompt",
                "the",
                "--temperature",
                t,
                "--seed",
                "1",
            ])
            .stdout,
        )
        .unwrap()
    };
    assert_eq!(greedy("0"), greedy("0"));

    assert_clean_failure(
        &dl(&["generate", run.to_str().unwrap(), "--prompt", "The Cat"]),
        "'T' is not in the model's vocabulary",
    );
    assert_clean_failure(
        &dl(&["generate", tmp.path().join("none").to_str().unwrap()]),
        "cannot resume from",
    );
    if engine == "manual" {
        // Stopped after 20 steps and resumed to 30, the run repeats the uninterrupted one
        // (weights, RMSprop averages, batch order and dropout masks all continue).
        let part = tmp.path().join("part");
        assert!(train_text_on(engine, &text, &part, "20").status.success());
        let resumed = dl(&["textgen", "--resume", part.to_str().unwrap(), "--steps", "30", "--json"]);
        assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
        assert_eq!(
            fs::read_to_string(part.join("metrics.jsonl")).unwrap(),
            fs::read_to_string(run.join("metrics.jsonl")).unwrap()
        );
    }
}

#[test]
fn bad_texts_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let empty = tmp.path().join("empty.txt");
    fs::write(&empty, "").unwrap();
    assert_clean_failure(&train_text(&empty, &run, "1"), "the text is empty");
    let latin1 = tmp.path().join("latin1.txt");
    fs::write(&latin1, b"caf\xe9 ".repeat(20)).unwrap();
    assert_clean_failure(&train_text(&latin1, &run, "1"), "not UTF-8");
    let short = tmp.path().join("short.txt");
    fs::write(&short, "tiny").unwrap();
    assert_clean_failure(&train_text(&short, &run, "1"), "shorter than --seq-length 8 + 2");
    assert_clean_failure(&train_text(&tmp.path().join("missing.txt"), &run, "1"), "missing.txt");
}
