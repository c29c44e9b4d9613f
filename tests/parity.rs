//! PyTorch parity: every case in `tests/fixtures/` (written by `scripts/gen_fixtures.py`, truth
//! computed by PyTorch in float64) run through the library on every kernel tier this machine has,
//! and through `recur run`. Every element of `output`, `h_n` and `c_n` must be within 1e-4 of
//! PyTorch's (SPEC §4), and NaN exactly where PyTorch's is NaN.
//!
//! `RECUR_FIXTURES=DIR` runs the same checks on another directory of cases, such as random ones
//! from `scripts/gen_fixtures.py --random N --out DIR`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use recur::load::InputFile;
use recur::{Isa, LoadOptions, Mode, Model, Outputs};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// The contract: absolute difference to PyTorch's float64 result, on every element.
const TOLERANCE: f64 = 1e-4;

/// At most this many mismatches are listed per case and tensor.
const MAX_LISTED: usize = 5;

/// One fixture directory and its `case.json`.
struct Case {
    name: String,
    dir: PathBuf,
    prefix: String,
    mode: Option<String>,
    batch_first: bool,
    description: String,
}

impl Case {
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            prefix: self.prefix.clone(),
            mode: self.mode.as_deref().map(|m| {
                Mode::from_name(m).unwrap_or_else(|| panic!("{}: unknown mode {m}", self.name))
            }),
            batch_first: self.batch_first,
        }
    }
}

/// A tensor read from a safetensors file, widened to f64.
struct Expected {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// `tests/fixtures`, or the directory named by `RECUR_FIXTURES` (cases of the same layout made
/// with `scripts/gen_fixtures.py --random N --out DIR`).
fn fixtures_dir() -> PathBuf {
    match std::env::var_os("RECUR_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("fixtures"),
    }
}

/// Every case directory, sorted by name.
fn cases() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .map(|e| e.expect("readable fixtures dir").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let cases: Vec<Case> = dirs
        .into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(dir.join("case.json"))
                .unwrap_or_else(|e| panic!("{name}: case.json: {e}"));
            let spec: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: case.json: {e}"));
            Case {
                prefix: spec["prefix"].as_str().unwrap_or("").to_string(),
                mode: spec["mode"].as_str().map(str::to_string),
                batch_first: spec["batch_first"].as_bool().unwrap_or(false),
                description: spec["description"].as_str().unwrap_or("").to_string(),
                name,
                dir,
            }
        })
        .collect();
    // Guards against a missing or emptied fixtures directory passing silently.
    let minimum = if std::env::var_os("RECUR_FIXTURES").is_some() {
        1
    } else {
        50
    };
    assert!(
        cases.len() >= minimum,
        "only {} fixture cases found in {}",
        cases.len(),
        fixtures_dir().display()
    );
    cases
}

/// Reads the tensors of a safetensors file (F64, F32 or I64) as f64.
fn read_tensors(path: &Path) -> BTreeMap<String, Expected> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: not safetensors: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let raw = view.data();
            let data: Vec<f64> = match view.dtype() {
                Dtype::F64 => raw
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                    .collect(),
                Dtype::I64 => raw
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{}: {name} has dtype {other:?}", path.display()),
            };
            let shape = view.shape().to_vec();
            let dtype = view.dtype();
            (name, Expected { dtype, shape, data })
        })
        .collect()
}

/// `flat` as a multi-dimensional index into `shape`.
fn index_of(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (i, &n) in shape.iter().enumerate().rev() {
        index[i] = rest % n.max(1);
        rest /= n.max(1);
    }
    index
}

/// Compares one tensor; appends a description of every problem to `failures` and returns the
/// largest finite |got - expected|.
fn compare(
    what: &str,
    tensor: &str,
    got_shape: &[usize],
    got: impl ExactSizeIterator<Item = f64>,
    expected: &Expected,
    failures: &mut Vec<String>,
) -> f64 {
    if got_shape != expected.shape.as_slice() {
        failures.push(format!(
            "{what}: {tensor} has shape {got_shape:?}, expected {:?}",
            expected.shape
        ));
        return 0.0;
    }
    assert_eq!(got.len(), expected.data.len(), "{what}: {tensor} length");
    let mut worst = 0.0f64;
    let mut listed = 0;
    let mut bad = 0;
    for (i, (g, &e)) in got.zip(&expected.data).enumerate() {
        let ok = if e.is_nan() {
            g.is_nan()
        } else if e.is_infinite() {
            g == e
        } else {
            let diff = (g - e).abs();
            if diff.is_finite() {
                worst = worst.max(diff);
            }
            diff <= TOLERANCE // false for NaN or inf `g`
        };
        if !ok {
            bad += 1;
            if listed < MAX_LISTED {
                listed += 1;
                failures.push(format!(
                    "{what}: {tensor}{:?} = {g:e}, expected {e:e} (|diff| {:.3e} > {TOLERANCE:e})",
                    index_of(i, got_shape),
                    (g - e).abs()
                ));
            }
        }
    }
    if bad > listed {
        failures.push(format!(
            "{what}: {tensor}: {} more mismatching elements",
            bad - listed
        ));
    }
    worst
}

/// Compares `output`, `h_n`, `c_n` of an engine run with the case's expected file.
fn compare_outputs(
    what: &str,
    got: &BTreeMap<String, (Vec<usize>, Vec<f64>)>,
    expected: &BTreeMap<String, Expected>,
    failures: &mut Vec<String>,
) -> f64 {
    let mut worst = 0.0f64;
    let names: std::collections::BTreeSet<&String> = expected.keys().chain(got.keys()).collect();
    for name in names {
        match (got.get(name), expected.get(name)) {
            (Some((shape, data)), Some(e)) => {
                let w = compare(what, name, shape, data.iter().copied(), e, failures);
                worst = worst.max(w);
            }
            (None, Some(_)) => failures.push(format!("{what}: {name} is missing")),
            (Some(_), None) => failures.push(format!("{what}: unexpected tensor {name}")),
            (None, None) => unreachable!(),
        }
    }
    worst
}

fn outputs_as_map(out: &Outputs) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let mut map = BTreeMap::new();
    let mut put = |name: &str, t: &recur::Tensor| {
        let data = t.data.iter().map(|&v| f64::from(v)).collect();
        map.insert(name.to_string(), (t.shape.clone(), data));
    };
    put("output", &out.output);
    put("h_n", &out.h_n);
    if let Some(c_n) = &out.c_n {
        put("c_n", c_n);
    }
    map
}

fn report(failures: &[String], summary: &str) {
    if !failures.is_empty() {
        let mut msg = format!("{} parity failures:\n", failures.len());
        for f in failures {
            let _ = writeln!(msg, "  {f}");
        }
        panic!("{msg}{summary}");
    }
    println!("{summary}");
}

#[test]
fn library_matches_pytorch_on_every_tier() {
    let cases = cases();
    let (tiers, skipped): (Vec<Isa>, Vec<Isa>) =
        Isa::ALL.iter().copied().partition(|isa| isa.is_available());
    for isa in &skipped {
        println!(
            "skipped kernel tier {} (not available on this CPU)",
            isa.name()
        );
    }
    let mut failures = Vec::new();
    let mut summary = String::new();
    for &isa in &tiers {
        let mut worst = (0.0f64, String::new());
        for case in &cases {
            let what = format!("{} [{}] ({})", case.name, isa.name(), case.description);
            let mut model =
                match Model::load(case.dir.join("model.safetensors"), &case.load_options()) {
                    Ok(m) => m,
                    Err(e) => {
                        failures.push(format!("{what}: load failed: {e}"));
                        continue;
                    }
                };
            model.set_isa(isa).expect("an available tier");
            assert_eq!(
                model.isa(),
                isa,
                "{what}: the forced tier is the one in use"
            );
            let input = InputFile::read(case.dir.join("input.safetensors"))
                .unwrap_or_else(|e| panic!("{what}: input: {e}"));
            let out = match model.forward(&input.forward_input()) {
                Ok(out) => out,
                Err(e) => {
                    failures.push(format!("{what}: forward failed: {e}"));
                    continue;
                }
            };
            let expected = read_tensors(&case.dir.join("expected.safetensors"));
            let w = compare_outputs(&what, &outputs_as_map(&out), &expected, &mut failures);
            if w >= worst.0 {
                worst = (w, case.name.clone());
            }
        }
        let _ = writeln!(
            summary,
            "tier {}: {} cases, worst |recur - pytorch| = {:.3e} ({})",
            isa.name(),
            cases.len(),
            worst.0,
            worst.1
        );
    }
    report(&failures, &summary);
}

#[test]
fn cli_run_matches_pytorch() {
    let cases = cases();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    let mut worst = (0.0f64, String::new());
    for (k, case) in cases.iter().enumerate() {
        let what = format!("{} [recur run] ({})", case.name, case.description);
        let out_path = tmp.path().join(format!("{}.safetensors", case.name));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_recur"));
        cmd.arg("run")
            .arg("--model")
            .arg(case.dir.join("model.safetensors"))
            .arg("--input")
            .arg(case.dir.join("input.safetensors"))
            .arg("--output")
            .arg(&out_path);
        if !case.prefix.is_empty() {
            cmd.args(["--prefix", &case.prefix]);
        }
        if let Some(mode) = &case.mode {
            cmd.args(["--mode", mode]);
        }
        if case.batch_first {
            cmd.arg("--batch-first");
        }
        // Alternate thread counts: results must not depend on them.
        if k % 2 == 1 {
            cmd.args(["--threads", "1"]);
        }
        let run = cmd.output().expect("recur runs");
        if !run.status.success() {
            failures.push(format!(
                "{what}: exit status {}: {}",
                run.status,
                String::from_utf8_lossy(&run.stderr).trim()
            ));
            continue;
        }
        let written = read_tensors(&out_path);
        for (name, t) in &written {
            if t.dtype != Dtype::F32 {
                failures.push(format!(
                    "{what}: {name} written as {:?}, expected F32",
                    t.dtype
                ));
            }
        }
        let got: BTreeMap<String, (Vec<usize>, Vec<f64>)> = written
            .into_iter()
            .map(|(name, t)| (name, (t.shape, t.data)))
            .collect();
        let expected = read_tensors(&case.dir.join("expected.safetensors"));
        let w = compare_outputs(&what, &got, &expected, &mut failures);
        if w >= worst.0 {
            worst = (w, case.name.clone());
        }
    }
    let summary = format!(
        "recur run: {} cases, worst |recur - pytorch| = {:.3e} ({})",
        cases.len(),
        worst.0,
        worst.1
    );
    report(&failures, &summary);
}

/// The bundled demo (`assets/demo/`, written by `scripts/train_demo.py`): the LSTM selected by
/// prefix out of the classifier's state_dict, and the linear head on its last layer's `h_n`,
/// against PyTorch's float64 outputs and logits.
#[test]
fn demo_matches_pytorch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("demo");
    let spec: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("demo.json")).expect("demo.json"))
            .expect("demo.json parses");
    let prefix = spec["prefix"].as_str().expect("demo.json prefix");
    let head = spec["head"].as_str().expect("demo.json head");
    let options = LoadOptions {
        prefix: prefix.to_string(),
        ..LoadOptions::default()
    };
    let model = Model::load(dir.join("model.safetensors"), &options).expect("demo model loads");
    // Read `input` directly (any float dtype), as the demo runner does.
    let inputs = read_tensors(&dir.join("input.safetensors"));
    let x = &inputs["input"];
    let x = recur::Tensor::new(x.shape.clone(), x.data.iter().map(|&v| v as f32).collect())
        .expect("input tensor");
    let out = model
        .forward(&recur::ForwardInput::new(x.view()))
        .expect("demo forward");
    let mut expected = read_tensors(&dir.join("expected.safetensors"));
    let expected_logits = expected.remove("logits").expect("expected logits");
    let mut failures = Vec::new();
    let mut worst = compare_outputs("demo", &outputs_as_map(&out), &expected, &mut failures);

    // logits = head.weight @ h_n[-1] + head.bias, in f64 from the engine's f32 h_n.
    let weights = read_tensors(&dir.join("model.safetensors"));
    let (w, b) = (
        &weights[&format!("{head}weight")],
        &weights[&format!("{head}bias")],
    );
    let (classes, hidden) = (w.shape[0], w.shape[1]);
    let (layers, batch) = (out.h_n.shape[0], out.h_n.shape[1]);
    let last = &out.h_n.data[(layers - 1) * batch * hidden..];
    let logits: Vec<f64> = (0..batch)
        .flat_map(|n| {
            let h = &last[n * hidden..][..hidden];
            (0..classes).map(move |c| {
                let row = &w.data[c * hidden..][..hidden];
                b.data[c]
                    + row
                        .iter()
                        .zip(h)
                        .map(|(&w, &h)| w * f64::from(h))
                        .sum::<f64>()
            })
        })
        .collect();
    worst = worst.max(compare(
        "demo",
        "logits",
        &[batch, classes],
        logits.into_iter(),
        &expected_logits,
        &mut failures,
    ));
    report(
        &failures,
        &format!("demo: worst |recur - pytorch| = {worst:.3e}"),
    );
}
