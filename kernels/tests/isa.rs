//! Tier selection: `RECUR_ISA` parsing, that a forced tier is the one that runs, and that a
//! tier's kernels refuse to run on a CPU without its instructions.

use recur_kernels::isa::IsaError;
use recur_kernels::step::emulated_avx512_kernels;
use recur_kernels::{kernels, kernels_for, Activation, Isa, Kernels, PackedMatrix};
use std::process::Command;

#[test]
fn names_round_trip_and_parse_leniently() {
    for isa in Isa::ALL {
        assert_eq!(Isa::from_name(isa.name()), Some(isa));
        assert_eq!(
            Isa::from_name(&format!("  {}\n", isa.name().to_uppercase())),
            Some(isa)
        );
        assert_eq!(isa.to_string(), isa.name());
    }
    for bad in ["", "sse", "avx", "avx512f", "neon", "avx2,fma", "portable2"] {
        assert_eq!(Isa::from_name(bad), None, "{bad:?}");
    }
}

#[test]
fn recur_isa_values() {
    assert_eq!(Isa::from_env(None), Ok(Isa::best()));
    assert_eq!(Isa::from_env(Some("")), Ok(Isa::best()));
    assert_eq!(Isa::from_env(Some("  ")), Ok(Isa::best()));
    assert_eq!(Isa::from_env(Some("portable")), Ok(Isa::Portable));
    let err = Isa::from_env(Some("avx9000")).unwrap_err();
    assert_eq!(err, IsaError::Unknown("avx9000".into()));
    let msg = err.to_string();
    assert!(
        msg.contains("avx9000") && msg.contains("portable, avx2 or avx512"),
        "{msg}"
    );
    for isa in Isa::ALL {
        let got = Isa::from_env(Some(isa.name()));
        if isa.is_available() {
            assert_eq!(got, Ok(isa));
        } else {
            eprintln!("{isa} is not available here: RECUR_ISA={isa} must be an error");
            assert_eq!(got, Err(IsaError::Unavailable(isa)));
            assert!(got.unwrap_err().to_string().contains(isa.name()));
        }
    }
    assert!(Isa::best().is_available());
    assert!(Isa::ALL
        .into_iter()
        .filter(|i| i.is_available())
        .all(|i| i <= Isa::best()));
}

#[test]
fn each_table_belongs_to_its_tier() {
    for isa in Isa::ALL {
        match kernels_for(isa) {
            Some(k) => assert_eq!(k.isa, isa),
            None => eprintln!("no {isa} kernels in this build"),
        }
    }
    assert_eq!(
        kernels_for(Isa::Portable).map(|k| k.isa),
        Some(Isa::Portable)
    );
    #[cfg(target_arch = "x86_64")]
    assert!(kernels_for(Isa::Avx2).is_some() && kernels_for(Isa::Avx512).is_some());
}

/// A one-unit RNN step whose result tells a fused multiply-add from a separate multiply and add:
/// `relu(fma(w2, h2, w0 h0))` with `w0 h0 = -(1 + 2^-11)` and `w2 h2 = 1 + 2^-11 + 2^-24`
/// is `2^-24` when fused; unfused, `w2 h2` rounds to `1 + 2^-11` (a tie, to even) and the
/// result is `0`. The middle term is `0 * 0`, so that a tier summing the even and the odd `k`
/// apart (the AVX-512 RNN) still adds `w2 h2` onto `w0 h0` in one accumulator.
fn fma_fingerprint(k: &Kernels) -> f32 {
    let a = 1.0 + 2f32.powi(-12);
    let w = PackedMatrix::pack(&[-(1.0 + 2f32.powi(-11)), 0.0, a], 1, 1, 3);
    let mut out = [f32::NAN];
    (k.rnn_step)(&w, Activation::Relu, &[0.0], &[1.0, 0.0, a], &mut out, 1);
    out[0]
}

#[test]
fn a_forced_tier_runs_its_own_instructions() {
    let fused = 2f32.powi(-24);
    for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
        let k = kernels_for(isa).unwrap();
        let got = fma_fingerprint(k);
        match isa {
            Isa::Avx2 | Isa::Avx512 => assert_eq!(got, fused, "{isa} must use FMA"),
            Isa::Portable => {
                if cfg!(all(target_arch = "x86_64", not(target_feature = "fma"))) {
                    assert_eq!(
                        got, 0.0,
                        "portable on a build without FMA multiplies and adds"
                    );
                } else {
                    assert!(got == 0.0 || got == fused);
                }
            }
        }
    }
    assert_eq!(fma_fingerprint(emulated_avx512_kernels()), fused);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn kernels_of_a_missing_tier_panic_instead_of_running() {
    for isa in [Isa::Avx2, Isa::Avx512] {
        if isa.cpu_supports() {
            eprintln!("this CPU has {isa}: nothing to refuse");
            continue;
        }
        let k = kernels_for(isa).unwrap();
        let caught = std::panic::catch_unwind(|| fma_fingerprint(k));
        assert!(
            caught.is_err(),
            "the {isa} kernels ran on a CPU without {isa}"
        );
        let caught = std::panic::catch_unwind(|| (k.tanh)(&[0.5], &mut [0.0]));
        assert!(caught.is_err(), "the {isa} tanh ran on a CPU without {isa}");
    }
}

/// In a child process started with `RECUR_ISA` set (see below): the selected table is the
/// forced tier, or the error names the bad value.
#[test]
fn child_reports_selected_tier() {
    let Ok(expect) = std::env::var("RECUR_ISA_TEST_EXPECT") else {
        return; // Only meaningful in the child.
    };
    match (kernels(), expect.as_str()) {
        (Err(e), "error") => eprintln!("error as expected: {e}"),
        (Ok(k), name) => {
            assert_eq!(k.isa.name(), name);
            assert_eq!(Isa::selected(), Ok(k.isa));
        }
        (Err(e), name) => panic!("expected {name}, got error {e}"),
    }
}

#[test]
fn recur_isa_forces_the_selected_tier() {
    let exe = std::env::current_exe().unwrap();
    let mut cases: Vec<(String, String)> = Isa::ALL
        .into_iter()
        .map(|isa| {
            let expect = if isa.is_available() {
                isa.name()
            } else {
                "error"
            };
            (isa.name().to_string(), expect.to_string())
        })
        .collect();
    cases.push(("bogus".into(), "error".into()));
    cases.push(("".into(), Isa::best().name().into()));
    for (value, expect) in cases {
        let out = Command::new(&exe)
            .args(["--exact", "child_reports_selected_tier", "--nocapture"])
            .env("RECUR_ISA", &value)
            .env("RECUR_ISA_TEST_EXPECT", &expect)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.contains("running 1 test") {
            // Under qemu-user without binfmt_misc the test binary cannot start itself again.
            eprintln!("cannot re-run the test binary here ({stdout:?}): skipping");
            return;
        }
        assert!(
            out.status.success(),
            "RECUR_ISA={value:?} (expecting {expect}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
