//! Differential: an arbitrary small configuration, weights, input, lengths and initial state,
//! run by the engine on every kernel table (each tier this machine has, and the AVX-512 code
//! paths on a scalar emulation) and by the float64 reference (`recur::reference`).
//!
//! Checked, per SPEC §4:
//! - every output element within 1e-4 of float64, NaN exactly where the reference has NaN;
//! - bit-identical results on 1 and 3 threads (the batch split across threads), per table, and
//!   through `forward_into` with a workspace and output buffers that served every earlier input
//!   (stale scratch must never leak into a result);
//! - a NaN or ±inf in one batch element's input never changes another element's output, to
//!   the bit (the case is run again with the poisoned elements' input zeroed).
//!
//! Tiers are not expected to agree bit for bit with each other (FMA, lane order).
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;

use recur::{reference, Model, OutputBuffers, Outputs, Workspace};
use recur_fuzz::{bits, build_case, kernel_tables, pools, table_name, Case, CaseLimits};

/// SPEC §4: every output element within 1e-4 of float64.
const TOL: f64 = 1e-4;

const LIMITS: CaseLimits = CaseLimits {
    input: 12,
    hidden: 36,
    layers: 3,
    seq: 12,
    batch: 20,
    bidirectional: true,
};

/// Work of one engine run, in multiply-adds: keeps each input to a few milliseconds.
const MAX_WORK: usize = 400_000;

/// A workspace and output buffers reused across inputs, whatever their shapes.
static REUSED: Mutex<Option<(Workspace, OutputBuffers)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut case) = build_case(&mut u, LIMITS) else {
        return;
    };
    let c = &case.config;
    let width = c.input_size.max(c.directions() * c.output_hidden());
    let work = case.seq
        * case.batch
        * c.num_layers
        * c.directions()
        * c.gates()
        * c.hidden_size
        * (width + c.output_hidden());
    if work > MAX_WORK {
        return;
    }
    // Poison some batch elements' input with NaN or ±inf.
    let poisoned: Vec<usize> = if !case.unbatched && u.ratio(1, 4).unwrap_or(false) {
        poison(&mut case, &mut u)
    } else {
        Vec::new()
    };

    let fi = case.inputs.forward_input();
    let want = reference::forward(&case.config, &case.state_dict, &fi);
    let mut model = Model::from_state_dict(case.config.clone(), &case.state_dict).unwrap();
    let clean = if poisoned.is_empty() {
        None
    } else {
        let mut c = case.clone();
        for &b in &poisoned {
            for t in 0..c.seq {
                for i in 0..c.config.input_size {
                    let k = c.input_index(t, b, i);
                    c.inputs.input.data[k] = 0.0;
                }
            }
        }
        Some(c)
    };
    for &table in kernel_tables() {
        model.set_kernels(table);
        let name = table_name(table);
        let [one, three] = pools();
        let got = one.install(|| model.forward(&fi)).unwrap();
        let again = three.install(|| model.forward(&fi)).unwrap();
        assert!(
            bits(&got) == bits(&again),
            "{name}: 1 and 3 threads differ for {}",
            case.config
        );
        {
            let mut reused = REUSED.lock().unwrap();
            let (ws, out) = reused.get_or_insert_with(|| (Workspace::new(), OutputBuffers::new()));
            one.install(|| model.forward_into(&fi, ws, out)).unwrap();
            let same = |a: &[f32], b: &[f32]| {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            };
            let c_n: &[f32] = got.c_n.as_ref().map_or(&[], |t| &t.data);
            assert!(
                same(&out.output, &got.output.data)
                    && same(&out.h_n, &got.h_n.data)
                    && same(&out.c_n, c_n),
                "{name}: forward_into with a reused workspace differs for {}",
                case.config
            );
        }
        assert_eq!(got.output.shape, want.output_shape);
        assert_eq!(got.h_n.shape, want.h_n_shape);
        let rows = Rows::of(&case);
        let skip = |b: usize| poisoned.contains(&b);
        close(
            &name,
            "output",
            &got.output.data,
            &want.output,
            |k| rows.output(k),
            &skip,
            &case,
        );
        close(
            &name,
            "h_n",
            &got.h_n.data,
            &want.h_n,
            |k| rows.state(k, rows.h_out),
            &skip,
            &case,
        );
        match (&got.c_n, &want.c_n) {
            (Some(g), Some(w)) => close(
                &name,
                "c_n",
                &g.data,
                w,
                |k| rows.state(k, rows.hidden),
                &skip,
                &case,
            ),
            (None, None) => {}
            _ => panic!("{name}: c_n presence differs"),
        }
        if let Some(clean) = &clean {
            let base = one
                .install(|| model.forward(&clean.inputs.forward_input()))
                .unwrap();
            isolated(&name, &got, &base, &rows, &poisoned);
        }
    }
});

/// Puts NaN or ±inf into the input of up to half the batch (at least one element stays clean);
/// returns the poisoned elements.
fn poison(case: &mut Case, u: &mut Unstructured<'_>) -> Vec<usize> {
    if case.batch < 2 {
        return Vec::new();
    }
    let mut poisoned = Vec::new();
    let count = u.int_in_range(1..=case.batch / 2).unwrap_or(1);
    for _ in 0..count {
        let b = u.int_in_range(0..=case.batch - 1).unwrap_or(0);
        let t = u.int_in_range(0..=case.seq - 1).unwrap_or(0);
        let i = u.int_in_range(0..=case.config.input_size - 1).unwrap_or(0);
        let v = match u.int_in_range(0..=2u8).unwrap_or(0) {
            0 => f32::NAN,
            1 => f32::INFINITY,
            _ => f32::NEG_INFINITY,
        };
        let k = case.input_index(t, b, i);
        case.inputs.input.data[k] = v;
        if !poisoned.contains(&b) {
            poisoned.push(b);
        }
    }
    poisoned
}

/// Which batch element each output value belongs to.
struct Rows {
    batch: usize,
    seq: usize,
    batch_first: bool,
    unbatched: bool,
    width: usize,
    h_out: usize,
    hidden: usize,
}

impl Rows {
    fn of(case: &Case) -> Rows {
        let c = &case.config;
        Rows {
            batch: case.batch,
            seq: case.seq,
            batch_first: c.batch_first,
            unbatched: case.unbatched,
            width: c.directions() * c.output_hidden(),
            h_out: c.output_hidden(),
            hidden: c.hidden_size,
        }
    }

    /// The batch element of `output[k]`.
    fn output(&self, k: usize) -> usize {
        let row = k / self.width;
        if self.unbatched {
            0
        } else if self.batch_first {
            row / self.seq
        } else {
            row % self.batch
        }
    }

    /// The batch element of `h_n[k]` / `c_n[k]` with `w` columns.
    fn state(&self, k: usize, w: usize) -> usize {
        if self.unbatched {
            0
        } else {
            (k / w) % self.batch
        }
    }
}

/// Every value of a clean batch element within [`TOL`] of the reference (NaN where it is NaN).
fn close(
    table: &str,
    what: &str,
    got: &[f32],
    want: &[f64],
    row_of: impl Fn(usize) -> usize,
    skip: &dyn Fn(usize) -> bool,
    case: &Case,
) {
    assert_eq!(got.len(), want.len(), "{table} {what}: length");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        if skip(row_of(k)) {
            continue;
        }
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            (f64::from(g) - w).abs() <= TOL
        };
        assert!(
            ok,
            "{table} {what}[{k}]: engine {g}, reference {w} (diff {:e}) for {} L={} N={} \
             lengths={:?}",
            (f64::from(g) - w).abs(),
            case.config,
            case.seq,
            case.batch,
            case.inputs.lengths
        );
    }
}

/// The clean batch elements' outputs are bit-identical with and without the poison.
fn isolated(table: &str, got: &Outputs, base: &Outputs, rows: &Rows, poisoned: &[usize]) {
    let check = |what: &str, a: &[f32], b: &[f32], row_of: &dyn Fn(usize) -> usize| {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            if !poisoned.contains(&row_of(k)) {
                assert!(
                    x.to_bits() == y.to_bits(),
                    "{table} {what}[{k}]: poison in batch elements {poisoned:?} changed a clean \
                     element ({x} vs {y})"
                );
            }
        }
    };
    check("output", &got.output.data, &base.output.data, &|k| {
        rows.output(k)
    });
    check("h_n", &got.h_n.data, &base.h_n.data, &|k| {
        rows.state(k, rows.h_out)
    });
    if let (Some(a), Some(b)) = (&got.c_n, &base.c_n) {
        check("c_n", &a.data, &b.data, &|k| rows.state(k, rows.hidden));
    }
}
