//! `recur bench`: the JSON lines of SPEC §3 for suite cases and custom shapes, and clear errors.

mod common;

use std::process::Command;

use common::{assert_error, assert_success};

fn recur(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(args)
        .output()
        .unwrap()
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn suite_case_prints_one_json_line_with_every_field() {
    let out = recur(&[
        "bench",
        "--case",
        "rnn_tiny_b1",
        "--threads",
        "1",
        "--json",
        "--seconds",
        "0.05",
    ]);
    assert_success(&out, "recur bench");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    let r = &lines[0];
    assert_eq!(r["name"], "rnn_tiny_b1");
    assert_eq!(r["threads"], 1);
    let (median, min) = (
        r["median_ms"].as_f64().unwrap(),
        r["min_ms"].as_f64().unwrap(),
    );
    assert!(min > 0.0 && min <= median, "min {min} median {median}");
    assert!(r["gflops"].as_f64().unwrap() > 0.0);
    let isa = r["isa"].as_str().unwrap();
    assert!(
        recur::Isa::from_name(isa).is_some_and(|i| i.is_available()),
        "isa {isa}"
    );
}

#[test]
fn custom_shape_and_forced_tier() {
    let out = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args([
            "bench",
            "--mode",
            "GRU",
            "--input-size",
            "5",
            "--hidden-size",
            "17",
            "--num-layers",
            "2",
        ])
        .args([
            "--bidirectional",
            "--batch",
            "3",
            "--seq-len",
            "7",
            "--json",
            "--seconds",
            "0.02",
        ])
        .env("RECUR_ISA", "portable")
        .output()
        .unwrap();
    assert_success(&out, "recur bench");
    let r = &json_lines(&out)[0];
    assert_eq!(r["isa"], "portable");
    assert_eq!(r["name"], "custom_gru_i5_h17_l2_bi_b3_s7");
}

#[test]
fn bad_bench_arguments_are_clear_errors() {
    for (args, words) in [
        (&["bench", "--case", "nope"][..], "no suite case named"),
        (
            &["bench", "--mode", "GRU", "--hidden-size", "0"][..],
            "hidden_size",
        ),
        (
            &[
                "bench",
                "--mode",
                "LSTM",
                "--hidden-size",
                "1000000",
                "--batch",
                "100000",
            ][..],
            "too large",
        ),
        (
            &["bench", "--mode", "GRU", "--proj-size", "4"][..],
            "proj_size",
        ),
        (
            &["bench", "--case", "rnn_tiny_b1", "--seconds", "0"][..],
            "--seconds",
        ),
    ] {
        assert_error(&recur(args), &[words]);
    }
}
