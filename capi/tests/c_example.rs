//! Builds `examples/c/stream.c` with the system C compiler against the library this test run
//! built (shared and static), runs it on the demo model, and checks what it prints against the
//! same computation through the Rust API.

use std::path::{Path, PathBuf};
use std::process::Command;

use recur::{ForwardInput, LoadOptions, Model, Tensor};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The directory holding `librecur_capi.{so,a}`: the profile directory of this test executable
/// (`target/<profile>/deps/c_example-*` → `target/<profile>`), or `deps` itself.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps.parent().unwrap(), deps] {
        if dir.join(shared_name()).exists() && dir.join("librecur_capi.a").exists() {
            return dir.to_path_buf();
        }
    }
    panic!(
        "librecur_capi ({} and .a) not found next to {}",
        shared_name(),
        exe.display()
    );
}

fn shared_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "librecur_capi.dylib"
    } else {
        "librecur_capi.so"
    }
}

fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What the C program must print for the numbers, computed through the Rust API.
fn expected_numbers(model_path: &Path) -> (String, String) {
    let opts = LoadOptions {
        prefix: "lstm.".into(),
        ..LoadOptions::default()
    };
    let model = Model::load(model_path, &opts).unwrap();
    let (l, n) = (50, 2);
    let x: Vec<f32> = (0..l * n)
        .map(|i| ((i * 7) % 23) as f32 / 11.5 - 1.0)
        .collect();
    let x = Tensor::new(vec![l, n, 1], x).unwrap();
    let out = model.forward(&ForwardInput::new(x.view())).unwrap();
    let fmt = |v: &[f32]| {
        v[..3]
            .iter()
            .map(|&f| c_g9(f))
            .collect::<Vec<_>>()
            .join(" ")
    };
    (
        format!("output[0][0][0..3]: {}", fmt(&out.output.data)),
        format!("h_n[0][0][0..3]: {}", fmt(&out.h_n.data)),
    )
}

/// C's `%.9g` of a float (promoted to double), for the values this test prints.
fn c_g9(f: f32) -> String {
    let v = f as f64;
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    let s = if (-4..9).contains(&exp) {
        let decimals = (8 - exp).max(0) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{v:.8e}");
        let (mant, e) = s.split_once('e').unwrap();
        let mant = mant.trim_end_matches('0').trim_end_matches('.');
        let e: i32 = e.parse().unwrap();
        format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    };
    s
}

#[test]
fn c_example_builds_and_runs() {
    let root = workspace_root();
    let lib = library_dir();
    let src = root.join("examples/c/stream.c");
    let include = root.join("include");
    let model = root.join("assets/demo/model.safetensors");
    let tmp = std::env::temp_dir().join(format!("recur-c-example-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (want_out, want_h) = expected_numbers(&model);

    let shared = tmp.join("stream_shared");
    run(Command::new(compiler())
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"])
        .arg(&src)
        .arg("-I")
        .arg(&include)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lrecur_capi", "-o"])
        .arg(&shared));
    let stat = tmp.join("stream_static");
    run(Command::new(compiler())
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"])
        .arg(&src)
        .arg("-I")
        .arg(&include)
        .arg(lib.join("librecur_capi.a"))
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&stat));

    for exe in [&shared, &stat] {
        let out = run(Command::new(exe).arg(&model).arg("lstm."));
        eprintln!("{}:\n{out}", exe.display());
        let lines: Vec<&str> = out.lines().collect();
        let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
        assert_eq!(lines[0], format!("recur {}", env!("CARGO_PKG_VERSION")));
        assert!(
            lines[1].starts_with("expected error: ")
                && lines[1].contains("no/such/model.safetensors"),
            "{}",
            lines[1]
        );
        assert!(lines.contains(
            &"config: mode=LSTM input_size=1 hidden_size=32 num_layers=2 proj_size=0 \
              bidirectional=0 batch_first=0"
        ));
        assert!(has("isa: "));
        assert!(lines.contains(&want_out.as_str()), "want {want_out:?}");
        assert!(lines.contains(&want_h.as_str()), "want {want_h:?}");
        assert!(lines.contains(&"first pass: chunked == one-shot, bit for bit: yes"));
        assert!(lines.contains(&"after reset: chunked == one-shot, bit for bit: yes"));
        let errors: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("expected error: "))
            .collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[1].contains("output holds 3199 floats, expected 3200"),
            "{}",
            errors[1]
        );
        assert!(errors[2].contains("at least one stream"), "{}", errors[2]);
        assert!(
            errors[3].contains("output holds 1 floats, expected 64"),
            "{}",
            errors[3]
        );
        assert_eq!(lines.last(), Some(&"ok"));
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn g9_formatting() {
    assert_eq!(c_g9(0.5), "0.5");
    assert_eq!(c_g9(-0.123_456_79), "-0.123456791");
    assert_eq!(c_g9(1e-5), "9.99999975e-06");
    assert_eq!(c_g9(12.0), "12");
}
