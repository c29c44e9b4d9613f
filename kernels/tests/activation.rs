//! The fast `sigmoid` and `tanh` of every tier against the exact values (f64 libm): the ULP
//! bounds stated in `src/vecmath/{sigmoid,tanh}.rs`, saturation, signed zeros, ±inf, NaN and
//! denormals.

mod common;

use common::{REFERENCE_MAX_ULP, SIGMOID_MAX_ULP, TANH_MAX_ULP};
use recur_kernels::reference::{reference_sigmoid, reference_tanh};

/// The spacing of f32 values at `exact` (the ULP of a correctly rounded result).
fn ulp_of(exact: f64) -> f64 {
    let a = exact.abs();
    if a < f64::from(f32::MIN_POSITIVE) {
        2f64.powi(-149)
    } else {
        let exponent = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        2f64.powi(exponent - 23)
    }
}

fn exact_sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(x)).exp())
}

fn exact_tanh(x: f32) -> f64 {
    f64::from(x).tanh()
}

struct Worst {
    ulp: f64,
    x: f32,
    got: f32,
}

/// Sweeps every `step`-th f32 bit pattern (finite, non-NaN) through every tier and returns the
/// worst error of each tier, by name.
fn sweep(
    name: &str,
    f: fn(&recur_kernels::Kernels) -> recur_kernels::step::MapFn,
    exact: fn(f32) -> f64,
    lo: f32,
    hi: f32,
) -> Vec<(&'static str, f64)> {
    // Every 37th pattern in release builds; RECUR_SWEEP_STEP overrides (e.g. a coarser sweep
    // under qemu).
    let step: usize = std::env::var("RECUR_SWEEP_STEP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 1009 } else { 37 });
    let tiers = common::tiers();
    let mut worst: Vec<Worst> = tiers
        .iter()
        .map(|_| Worst {
            ulp: 0.0,
            x: 0.0,
            got: 0.0,
        })
        .collect();
    let mut xs = Vec::with_capacity(4096);
    let mut ys = vec![0.0f32; 4096];
    let mut exacts = Vec::with_capacity(4096);
    let mut bits = (0..=u32::MAX)
        .step_by(step)
        .map(f32::from_bits)
        .filter(|x| x.is_finite())
        .peekable();
    while bits.peek().is_some() {
        xs.clear();
        xs.extend(bits.by_ref().take(4096));
        exacts.clear();
        exacts.extend(xs.iter().map(|&x| exact(x)));
        for ((_, k), w) in tiers.iter().zip(&mut worst) {
            let y = &mut ys[..xs.len()];
            f(k)(&xs, y);
            for ((&x, &got), &e) in xs.iter().zip(y.iter()).zip(&exacts) {
                assert!(
                    (lo..=hi).contains(&got),
                    "{name}({x:e}) = {got:e} outside [{lo}, {hi}]"
                );
                let ulp = (f64::from(got) - e).abs() / ulp_of(e);
                if ulp > w.ulp {
                    *w = Worst { ulp, x, got };
                }
            }
        }
    }
    let mut out = Vec::new();
    for ((tier, _), w) in tiers.iter().zip(&worst) {
        eprintln!(
            "{name} [{tier}]: max error {:.3} ULP at x = {:e} ({:#010x}): got {:e}, exact {:e}",
            w.ulp,
            w.x,
            w.x.to_bits(),
            w.got,
            exact(w.x)
        );
        out.push((*tier, w.ulp));
    }
    out
}

#[test]
fn sigmoid_within_stated_ulp_over_the_f32_range() {
    for (tier, max) in sweep("sigmoid", |k| k.sigmoid, exact_sigmoid, 0.0, 1.0) {
        assert!(
            max <= SIGMOID_MAX_ULP,
            "sigmoid [{tier}]: {max} ULP > {SIGMOID_MAX_ULP}"
        );
    }
}

#[test]
fn tanh_within_stated_ulp_over_the_f32_range() {
    for (tier, max) in sweep("tanh", |k| k.tanh, exact_tanh, -1.0, 1.0) {
        assert!(
            max <= TANH_MAX_ULP,
            "tanh [{tier}]: {max} ULP > {TANH_MAX_ULP}"
        );
    }
}

/// Runs `f` of every tier on `xs` (odd length, so the partial-vector path runs too).
fn on_every_tier(
    f: fn(&recur_kernels::Kernels) -> recur_kernels::step::MapFn,
    xs: &[f32],
) -> Vec<(&'static str, Vec<f32>)> {
    common::tiers()
        .into_iter()
        .map(|(name, k)| {
            let mut y = vec![0.0; xs.len()];
            f(k)(xs, &mut y);
            (name, y)
        })
        .collect()
}

#[test]
fn special_values() {
    let denormal_max = f32::from_bits(0x007f_ffff);
    let denormal_min = f32::from_bits(1);
    let nan_payload = f32::from_bits(0x7fc0_1234);
    #[rustfmt::skip]
    let cases: &[(f32, f32, f32)] = &[
        // x, sigmoid(x), tanh(x)
        (0.0, 0.5, 0.0),
        (-0.0, 0.5, -0.0),
        (f32::INFINITY, 1.0, 1.0),
        (f32::NEG_INFINITY, 0.0, -1.0),
        (f32::MAX, 1.0, 1.0),
        (f32::MIN, 0.0, -1.0),
        (denormal_min, 0.5, denormal_min),
        (-denormal_min, 0.5, -denormal_min),
        (denormal_max, 0.5, denormal_max),
        (-denormal_max, 0.5, -denormal_max),
        (f32::MIN_POSITIVE, 0.5, f32::MIN_POSITIVE),
        (1e-20, 0.5, 1e-20),
        (-1e-20, 0.5, -1e-20),
        // Saturation: exact 1 / 0 / ±1 once the true value rounds there.
        (17.5, 1.0, 1.0),
        (20.0, 1.0, 1.0),
        (100.0, 1.0, 1.0),
        (9.1, 0.999_888_7, 1.0),
        (-9.1, 1.112_315_6e-4, -1.0),
        (-104.0, 0.0, -1.0),
        (-1e30, 0.0, -1.0),
    ];
    let xs: Vec<f32> = cases
        .iter()
        .map(|c| c.0)
        .chain([nan_payload, -f32::NAN])
        .collect();
    for (name, y) in on_every_tier(|k| k.sigmoid, &xs) {
        for (c, &got) in cases.iter().zip(&y) {
            let exact = exact_sigmoid(c.0);
            let close = (f64::from(got) - exact).abs() <= SIGMOID_MAX_ULP * ulp_of(exact);
            if c.1 == 0.0 || c.1 == 1.0 || c.1 == 0.5 {
                assert_eq!(
                    got.to_bits(),
                    c.1.to_bits(),
                    "[{name}] sigmoid({:e}) = {got:e}",
                    c.0
                );
            } else {
                assert!(
                    close,
                    "[{name}] sigmoid({:e}) = {got:e}, exact {exact:e}",
                    c.0
                );
            }
        }
        assert!(
            y[cases.len()].is_nan() && y[cases.len() + 1].is_nan(),
            "[{name}] sigmoid(NaN)"
        );
    }
    for (name, y) in on_every_tier(|k| k.tanh, &xs) {
        for (c, &got) in cases.iter().zip(&y) {
            assert_eq!(
                got.to_bits(),
                c.2.to_bits(),
                "[{name}] tanh({:e}) = {got:e}",
                c.0
            );
        }
        assert!(
            y[cases.len()].is_nan() && y[cases.len() + 1].is_nan(),
            "[{name}] tanh(NaN)"
        );
    }
}

#[test]
fn tanh_is_odd_and_sigmoid_symmetric() {
    let xs: Vec<f32> = (0..2001).map(|i| (i as f32 - 1000.0) * 0.013).collect();
    let neg: Vec<f32> = xs.iter().map(|x| -x).collect();
    for ((name, t), (_, tn)) in on_every_tier(|k| k.tanh, &xs)
        .into_iter()
        .zip(on_every_tier(|k| k.tanh, &neg))
    {
        for ((x, a), b) in xs.iter().zip(&t).zip(&tn) {
            assert_eq!(
                a.to_bits(),
                (-b).to_bits(),
                "[{name}] tanh({x}) vs tanh(-{x})"
            );
        }
    }
    for ((name, s), (_, sn)) in on_every_tier(|k| k.sigmoid, &xs)
        .into_iter()
        .zip(on_every_tier(|k| k.sigmoid, &neg))
    {
        for ((x, a), b) in xs.iter().zip(&s).zip(&sn) {
            assert!(
                (a + b - 1.0).abs() <= 2.0 * f32::EPSILON,
                "[{name}] sigmoid({x}) + sigmoid(-{x}) = {}",
                a + b
            );
        }
    }
}

#[test]
fn scalar_references_stay_close_to_exact() {
    // The references the step tests compare against are themselves within a few ULP, except
    // that `reference_sigmoid` returns 0 below x = -88.72 (where `e^-x` overflows in f32) while
    // the exact value is a denormal: off by less than f32::MIN_POSITIVE, absolutely.
    for i in (0..=u32::MAX).step_by(100_003) {
        let x = f32::from_bits(i);
        if !x.is_finite() {
            continue;
        }
        let (sig, tanh) = (reference_sigmoid(x), reference_tanh(x));
        let s = (f64::from(sig) - exact_sigmoid(x)).abs() / ulp_of(exact_sigmoid(x));
        let t = (f64::from(tanh) - exact_tanh(x)).abs() / ulp_of(exact_tanh(x));
        let s_ok = s <= REFERENCE_MAX_ULP
            || (x < -88.0 && exact_sigmoid(x) < f64::from(f32::MIN_POSITIVE));
        assert!(
            s_ok && t <= 2.0,
            "reference at {x:e}: sigmoid {s} ULP, tanh {t} ULP"
        );
    }
}
