//! End-to-end: the burn engine's MLP (BatchNorm, LayerNorm) and both engines' residual CNN on generated
//! CIFAR-10 fixtures: they learn, and a resumed run continues where it stopped.

mod common;

use common::{assert_clean_failure, dl, last_json, learnable_cifar, losses};

#[test]
fn burn_mlps_with_batch_and_layer_norm_learn() {
    let tmp = tempfile::tempdir().unwrap();
    let data = learnable_cifar(&tmp.path().join("data"), 40, 100);
    for (norm, optimizer, lr) in [("batch", "sgd", "0.01"), ("layer", "adam", "0.001")] {
        let run = tmp.path().join(norm);
        let out = dl(&[
            "mlp",
            "--engine",
            "burn",
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
            "60",
            "--eval-every",
            "30",
            "--batch-size",
            "40",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary = last_json(&out);
        assert_eq!(summary["engine"], "burn");
        assert_eq!(summary["norm"], norm);
        let accuracy = summary["test_accuracy"].as_f64().unwrap();
        assert!(
            accuracy > 0.6,
            "--norm {norm}: test accuracy {accuracy} is not well above chance (0.1)"
        );
        assert!(run.join("checkpoint.safetensors").is_file());
    }
}

/// Both engines' CNN learn a generated fixture, and a run stopped at step 10 and resumed
/// to 20 writes the losses of an uninterrupted one.
#[test]
fn the_cnn_learns_and_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = learnable_cifar(&tmp.path().join("data"), 16, 40);
    let d = data.to_str().unwrap();
    for engine in ["burn", "manual"] {
        let common = [
            "--engine",
            engine,
            "--batch-size",
            "8",
            "--lr",
            "0.001",
            "--eval-every",
            "10",
            "--data",
            d,
            "--json",
        ];

        let whole = tmp.path().join(format!("{engine}-whole"));
        let mut args = vec!["cnn", "--steps", "20", "--out", whole.to_str().unwrap()];
        args.extend(common);
        let out = dl(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary = last_json(&out);
        assert_eq!(summary["experiment"], "cnn");
        assert_eq!(summary["engine"], engine);
        let accuracy = summary["test_accuracy"].as_f64().unwrap();
        assert!(
            accuracy > 0.3,
            "{engine}: test accuracy {accuracy} is not well above chance (0.1)"
        );

        // Stop after 10 steps (checkpoint: weights, BatchNorm statistics and Adam state),
        // then resume to 20.
        let part = tmp.path().join(format!("{engine}-part"));
        let mut args = vec!["cnn", "--steps", "10", "--out", part.to_str().unwrap()];
        args.extend(common);
        assert!(dl(&args).status.success());
        let out = dl(&[
            "cnn",
            "--resume",
            part.to_str().unwrap(),
            "--steps",
            "20",
            "--data",
            d,
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(last_json(&out)["engine"], engine);
        let (a, b) = (losses(&whole), losses(&part));
        assert_eq!(a.len(), 20);
        assert_eq!(b.len(), 20);
        for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
            assert_eq!(sa, sb);
            assert!(
                (la - lb).abs() <= 1e-4 * la.abs().max(1.0),
                "{engine} step {sa}: loss {la} uninterrupted, {lb} resumed"
            );
        }
    }
}

#[test]
fn a_missing_gpu_or_bad_flags_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = learnable_cifar(&tmp.path().join("data"), 4, 4);
    let d = data.to_str().unwrap();
    if !cfg!(feature = "gpu") {
        assert_clean_failure(
            &dl(&["cnn", "--device", "wgpu", "--data", d]),
            "rebuild with `--features gpu`",
        );
    }
    assert_clean_failure(
        &dl(&["cnn", "--batch-size", "1", "--data", d]),
        "--batch-size must be at least 2",
    );
    for experiment in ["mlp", "cnn"] {
        assert_clean_failure(
            &dl(&[experiment, "--engine", "manual", "--device", "wgpu", "--data", d]),
            "the manual engine runs on the CPU",
        );
    }
    let run = tmp.path().join("mlp");
    assert!(
        dl(&[
            "mlp",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--data",
            d,
            "--out",
            run.to_str().unwrap()
        ])
        .status
        .success()
    );
    assert_clean_failure(
        &dl(&["cnn", "--resume", run.to_str().unwrap(), "--data", d]),
        "holds a mlp model of the manual engine, not a cnn",
    );
}
