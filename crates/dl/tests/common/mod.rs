//! Fixtures for the end-to-end tests: small, learnable CIFAR-10 folders in the official
//! binary layout, and a way to run the built `dl` program.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use data::IMAGE_BYTES;

/// Writes a CIFAR-10 folder whose classes are easy to tell apart: each class has its own
/// random prototype image and every example is its prototype plus noise. `per_file` records
/// in each of the five training files, `test` test records.
pub fn learnable_cifar(dir: &Path, per_file: usize, test: usize) -> PathBuf {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        // xorshift64*: deterministic and dependency-free.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    };
    let prototypes: Vec<Vec<u8>> = (0..10)
        .map(|_| (0..IMAGE_BYTES).map(|_| (next() % 256) as u8).collect())
        .collect();
    data::write_fixture(dir, per_file, test, |i| {
        let label = (i * 7 + i / 3) % 10;
        let pixels = prototypes[label]
            .iter()
            .map(|&p| (p as i32 + (next() % 81) as i32 - 40).clamp(0, 255) as u8)
            .collect();
        (pixels, label as u8)
    })
    .expect("fixture written");
    dir.to_path_buf()
}

/// Runs `dl` with `args`.
pub fn dl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dl"))
        .args(args)
        .env_remove("DL_CIFAR10")
        .env_remove("DL_CIFAR10_URL")
        .env_remove("DL_CIFAR10_MD5")
        .output()
        .expect("dl runs")
}

/// The last stdout line of a `--json` run, parsed.
pub fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no stdout; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// Asserts that `dl` failed with one clear error line containing `needle`, and no panic.
pub fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "dl panicked: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line: {stderr}");
    assert!(
        errors[0].contains(needle),
        "error line {:?} lacks {needle:?}",
        errors[0]
    );
}

/// `(step, training loss)` of every line of a run folder's `metrics.jsonl`.
pub fn losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["train_loss"].as_f64().unwrap())
        })
        .collect()
}
