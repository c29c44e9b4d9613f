//! `include/recur.h` matches the library: every exported function and constant of
//! `capi/src/lib.rs` is declared in the header and nothing else is; the shared library exports
//! exactly those functions (checked with `nm` where it is installed); and, where `cbindgen` is
//! installed, regenerating the header gives the committed file byte for byte.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The identifier that starts `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Names of the `extern "C"` functions and the `RECUR_*` constants the Rust source exports.
fn rust_exports() -> (BTreeSet<String>, BTreeSet<String>) {
    let src = read("capi/src/lib.rs");
    let lines: Vec<&str> = src.lines().collect();
    let mut fns = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(at) = line.find("extern \"C\" fn ") {
            assert!(
                lines[..i]
                    .iter()
                    .rev()
                    .take(3)
                    .any(|l| l.trim() == "#[no_mangle]"),
                "{line}: an extern \"C\" fn without #[no_mangle]"
            );
            fns.insert(ident(&line[at + "extern \"C\" fn ".len()..]).to_string());
        }
    }
    let consts = src
        .lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .map(|l| ident(l).to_string())
        .collect();
    (fns, consts)
}

/// Names of the functions and `#define`s the header declares.
fn header_decls() -> (BTreeSet<String>, BTreeSet<String>) {
    let h = read("include/recur.h");
    let mut fns = BTreeSet::new();
    for line in h.lines() {
        if line.trim_start().starts_with("//") || line.trim_start().starts_with('*') {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("recur_") {
            let name = ident(&rest[at..]);
            if rest[at + name.len()..].starts_with('(') {
                fns.insert(name.to_string());
            }
            rest = &rest[at + name.len()..];
        }
    }
    let defines = h
        .lines()
        .filter_map(|l| l.strip_prefix("#define "))
        .map(ident)
        .filter(|n| *n != "RECUR_H")
        .map(str::to_string)
        .collect();
    (fns, defines)
}

#[test]
fn header_declares_exactly_the_exports() {
    let (fns, consts) = rust_exports();
    let (h_fns, h_defines) = header_decls();
    assert!(fns.len() >= 13, "found only {fns:?}");
    assert_eq!(fns, h_fns, "functions: capi/src/lib.rs vs include/recur.h");
    assert_eq!(
        consts, h_defines,
        "constants: capi/src/lib.rs vs include/recur.h"
    );
}

#[test]
fn shared_library_exports_the_functions() {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let lib = [deps.parent().unwrap(), deps]
        .iter()
        .map(|d| d.join("librecur_capi.so"))
        .find(|p| p.exists());
    let Some((lib, out)) = lib.and_then(|lib| {
        let out = Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(&lib)
            .output()
            .ok()?;
        Some((lib, out))
    }) else {
        eprintln!("note: nm or librecur_capi.so not available; export check skipped");
        return;
    };
    assert!(out.status.success(), "nm {}: {out:?}", lib.display());
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("recur_"))
        .map(str::to_string)
        .collect();
    assert_eq!(exported, rust_exports().0, "symbols of {}", lib.display());
}

#[test]
fn header_is_cbindgens_output() {
    let out = std::env::temp_dir().join(format!("recur-h-{}.h", std::process::id()));
    let run = Command::new("cbindgen")
        .current_dir(root())
        .args([
            "--config",
            "capi/cbindgen.toml",
            "--crate",
            "recur-capi",
            "--output",
        ])
        .arg(&out)
        .output();
    match run {
        Err(_) => eprintln!(
            "note: cbindgen is not installed; regeneration check skipped (the declaration \
             check above still runs)"
        ),
        Ok(r) => {
            assert!(
                r.status.success(),
                "cbindgen: {}",
                String::from_utf8_lossy(&r.stderr)
            );
            let fresh = std::fs::read_to_string(&out).unwrap();
            std::fs::remove_file(&out).ok();
            assert!(
                fresh == read("include/recur.h"),
                "include/recur.h is stale: regenerate it with \
                 `cbindgen --config capi/cbindgen.toml --crate recur-capi --output include/recur.h`"
            );
        }
    }
}
