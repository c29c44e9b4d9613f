//! Property tests of the engine against the float64 reference (`recur::reference`), and the
//! invariants of SPEC §4: bit-identical results for any thread count and any batch split, and a
//! NaN in one batch element never touching another. Every available kernel tier is exercised.

mod common;

use common::{
    available_tiers, bits, config_strategy, random_inputs, run_strategy, InputFile, Rng, Run,
};
use proptest::prelude::*;
use recur::{
    reference, Config, ForwardInput, Mode, Model, Outputs, PlanSummary, StateDict, Tensor,
};

/// SPEC §4: every output element within 1e-4 of float64.
const TOL: f64 = 1e-4;

/// PyTorch's default init: U(-1/sqrt(H), 1/sqrt(H)), times `scale`.
fn state_dict(config: &Config, rng: &mut Rng, scale: f32) -> StateDict {
    let bound = scale / (config.hidden_size as f32).sqrt();
    let mut sd = StateDict::new();
    for layer in 0..config.num_layers {
        for dir in 0..config.directions() {
            for (name, shape) in config.param_shapes(layer, dir) {
                let n = shape.iter().product();
                sd.insert(name, Tensor::new(shape, rng.vec(n, bound)).unwrap());
            }
        }
    }
    sd
}

#[derive(Clone, Debug)]
struct Case {
    config: Config,
    run: Run,
    seed: u64,
    weight_scale: f32,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        config_strategy(1..12, 1..40, 1..4, true, 7),
        run_strategy(1..10, 1..12),
        any::<u64>(),
        prop_oneof![Just(1.0f32), Just(3.0f32)],
    )
        .prop_map(|(config, run, seed, scale)| Case {
            // Large weights saturate the bounded cells; an RNN_RELU is unbounded, and with them
            // its outputs grow past where f32 resolves 1e-4 at all.
            weight_scale: if config.mode == Mode::RnnRelu {
                1.0
            } else {
                scale
            },
            config,
            run,
            seed: seed | 1,
        })
}

/// The case's weights, then its inputs, from one deterministic generator (xorshift) so that
/// failing cases shrink and replay from the proptest seed.
fn build(case: &Case) -> (StateDict, InputFile) {
    let mut rng = Rng(case.seed);
    let sd = state_dict(&case.config, &mut rng, case.weight_scale);
    let inputs = random_inputs(&case.config, &case.run, 1.5, 0.8, |n, scale| {
        rng.vec(n, scale)
    });
    (sd, inputs)
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{} length", what);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            prop_assert!(g.is_nan(), "{}[{}]: got {}, expected NaN", what, i, g);
        } else {
            prop_assert!(
                (g as f64 - w).abs() <= TOL,
                "{}[{}]: got {}, expected {} (diff {:e})",
                what,
                i,
                g,
                w,
                (g as f64 - w).abs()
            );
        }
    }
    Ok(())
}

/// The bits of every result: output, h_n and c_n.
fn all_bits(o: &Outputs) -> Vec<u32> {
    let mut v = bits(&o.output.data);
    v.extend(bits(&o.h_n.data));
    if let Some(c) = &o.c_n {
        v.extend(bits(&c.data));
    }
    v
}

fn run_in_pool(model: &Model, fi: &ForwardInput<'_>, threads: usize) -> Outputs {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| model.forward(fi).unwrap())
}

/// The engine's result for `case` on every tier, within SPEC §4's bound of the reference.
fn check_against_reference(case: &Case) -> Result<(), TestCaseError> {
    let (sd, b) = build(case);
    let fi = b.forward_input();
    let want = reference::forward(&case.config, &sd, &fi);
    let mut model = Model::from_state_dict(case.config.clone(), &sd).unwrap();
    for isa in available_tiers() {
        model.set_isa(isa).unwrap();
        let got = model.forward(&fi).unwrap();
        prop_assert_eq!(&got.output.shape, &want.output_shape);
        prop_assert_eq!(&got.h_n.shape, &want.h_n_shape);
        assert_close(&format!("{isa} output"), &got.output.data, &want.output)?;
        assert_close(&format!("{isa} h_n"), &got.h_n.data, &want.h_n)?;
        match (&got.c_n, &want.c_n) {
            (Some(g), Some(w)) => assert_close(&format!("{isa} c_n"), &g.data, w)?,
            (None, None) => {}
            _ => prop_assert!(false, "c_n presence differs"),
        }
    }
    Ok(())
}

/// LSTMs with projection whose hidden units span one to four of the projection's groups of
/// 128 (the step runs each group's cells and partial projection, then sums the partials), the
/// last group short or full, with and without lengths and state.
fn projected_case_strategy() -> impl Strategy<Value = Case> {
    (
        config_strategy(1..12, 100..420, 1..3, true, 1),
        1usize..70,
        run_strategy(1..8, 1..6),
        any::<u64>(),
    )
        .prop_map(|(mut config, proj, run, seed)| {
            config.mode = Mode::Lstm;
            config.proj_size = proj;
            Case {
                config,
                run,
                seed: seed | 1,
                weight_scale: 1.0,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// The engine agrees with the float64 reference within SPEC §4's bound, on every tier.
    #[test]
    fn engine_matches_reference(case in case_strategy()) {
        check_against_reference(&case)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A projected LSTM over several groups of units agrees with the reference, on every tier.
    #[test]
    fn projected_lstm_over_groups_matches_reference(case in projected_case_strategy()) {
        check_against_reference(&case)?;
    }
}

/// A batch large enough to be split into several chunks across threads.
fn wide_case(mode: Mode, bidirectional: bool, ragged: bool) -> (Config, StateDict, InputFile) {
    let mut config = Config::new(mode, 7, 21);
    config.num_layers = 2;
    config.bidirectional = bidirectional;
    if mode == Mode::Lstm {
        config.proj_size = 9;
    }
    let n = 37;
    let case = Case {
        config: config.clone(),
        run: Run {
            lengths: ragged.then(|| (0..n).map(|b| 1 + (b * 7) % 11).collect()),
            ..Run::new(11, n, true)
        },
        seed: 0x5eed + mode as u64,
        weight_scale: 1.0,
    };
    let (sd, b) = build(&case);
    (config, sd, b)
}

/// SPEC §4: the same input gives bit-identical output for any thread count, on every tier.
#[test]
fn bit_identical_for_any_thread_count() {
    for mode in Mode::ALL {
        for (bidir, ragged) in [(false, false), (true, true), (false, true)] {
            let (config, sd, b) = wide_case(mode, bidir, ragged);
            let mut model = Model::from_state_dict(config, &sd).unwrap();
            for isa in available_tiers() {
                model.set_isa(isa).unwrap();
                let fi = b.forward_input();
                let one = all_bits(&run_in_pool(&model, &fi, 1));
                for threads in [2, 3, 8] {
                    assert!(
                        one == all_bits(&run_in_pool(&model, &fi, threads)),
                        "{mode} bidir={bidir} ragged={ragged} {isa}: {threads} threads differ from 1"
                    );
                }
            }
        }
    }
}

/// An LSTM without projection and a GRU, whose batch chunks of 16 rows or more project each
/// step's inputs inside the step kernel (`projects_in_step` in src/forward.rs): 37 rows on 1
/// thread and 19 on 2 take that path, 13 on 3 and 5 on 8 project ahead of the steps; and an
/// LSTM with projection (150 units: two groups of `W_hr`), whose chunks do so from 4 rows: 37,
/// 19, 13 and 5 rows all take that path. All the same bits, on every tier, in both directions,
/// with and without lengths, and each element alone (batch 1, projected at once) too.
#[test]
fn projecting_in_step_is_bit_identical_to_projecting_ahead() {
    for (mode, proj, ragged) in [
        (Mode::Lstm, 0, false),
        (Mode::Lstm, 0, true),
        (Mode::Gru, 0, false),
        (Mode::Gru, 0, true),
        (Mode::Lstm, 17, false),
        (Mode::Lstm, 17, true),
    ] {
        let hidden = if proj > 0 { 150 } else { 33 };
        let mut config = Config::new(mode, 19, hidden);
        config.proj_size = proj;
        config.num_layers = 2;
        config.bidirectional = true;
        let n = 37;
        let case = Case {
            config: config.clone(),
            run: Run {
                lengths: ragged.then(|| (0..n).map(|b| 1 + (b * 7) % 23).collect()),
                ..Run::new(23, n, true)
            },
            seed: 0x1a57e9 + mode as u64,
            weight_scale: 1.0,
        };
        let (sd, b) = build(&case);
        let mut model = Model::from_state_dict(config, &sd).unwrap();
        for isa in available_tiers() {
            model.set_isa(isa).unwrap();
            let fi = b.forward_input();
            let whole = run_in_pool(&model, &fi, 1);
            let one = all_bits(&whole);
            for threads in [2, 3, 8] {
                assert!(
                    one == all_bits(&run_in_pool(&model, &fi, threads)),
                    "{mode} P={proj} ragged={ragged} {isa}: {threads} threads differ from 1"
                );
            }
            for e in [0, 17, 36] {
                let what = format!("{mode} P={proj} ragged={ragged} {isa}");
                assert_alone_matches(&model, &b, &whole, e, &what);
            }
        }
    }
}

/// Picks batch element `b` out of a seq-major `(L, N, W)` or state `(S, N, W)` tensor.
fn select_batch(t: &Tensor, b: usize) -> Tensor {
    let (a, n, w) = (t.shape[0], t.shape[1], t.shape[2]);
    let data = (0..a)
        .flat_map(|i| t.data[(i * n + b) * w..(i * n + b + 1) * w].to_vec())
        .collect();
    Tensor::new(vec![a, 1, w], data).unwrap()
}

/// SPEC §4: a batch element's result does not depend on the batch it is in.
#[test]
fn bit_identical_for_any_batch_split() {
    for mode in Mode::ALL {
        let (config, sd, b) = wide_case(mode, true, true);
        let mut model = Model::from_state_dict(config, &sd).unwrap();
        for isa in available_tiers() {
            model.set_isa(isa).unwrap();
            let whole = run_in_pool(&model, &b.forward_input(), 2);
            for e in [0, 5, 36] {
                assert_alone_matches(&model, &b, &whole, e, &format!("{mode} {isa}"));
            }
        }
    }
}

/// Batch element `e` of `b` run alone (one thread) gives the bits of its rows in `whole`, the
/// result of the whole batch (`b` has `h0`, and `c0` for an LSTM).
fn assert_alone_matches(model: &Model, b: &InputFile, whole: &Outputs, e: usize, what: &str) {
    let x = select_batch(&b.input, e);
    let h0 = select_batch(b.h0.as_ref().unwrap(), e);
    let c0 = b.c0.as_ref().map(|c| select_batch(c, e));
    let len = b.lengths.as_ref().map(|l| [l[e]]);
    let fi = ForwardInput {
        input: x.view(),
        h0: Some(h0.view()),
        c0: c0.as_ref().map(Tensor::view),
        lengths: len.as_ref().map(|l| &l[..]),
    };
    let alone = run_in_pool(model, &fi, 1);
    let pick = |t: &Tensor| bits(&select_batch(t, e).data);
    assert_eq!(
        pick(&whole.output),
        bits(&alone.output.data),
        "{what} element {e} output"
    );
    assert_eq!(
        pick(&whole.h_n),
        bits(&alone.h_n.data),
        "{what} element {e} h_n"
    );
    if let (Some(w), Some(a)) = (&whole.c_n, &alone.c_n) {
        assert_eq!(pick(w), bits(&a.data), "{what} element {e} c_n");
    }
}

/// A large batch's input projections computed a few steps ahead inside the time loop (see
/// `steps_ahead` in src/forward.rs, whose unit test holds these shapes to that path; the LSTM's
/// inside each step, see `projects_in_step`) give the
/// same bits as each element alone, whose projections are computed all at once: every mode, on
/// every tier, in both directions, for full sequences (the input projected where it lies; the
/// reverse direction's steps read it back to front) and for ragged lengths (the gathered
/// inputs).
#[test]
fn projected_ahead_is_bit_identical_to_projected_at_once() {
    let (seq, n) = (300, 64);
    for mode in Mode::ALL {
        for ragged in [false, true] {
            let mut config = Config::new(mode, 8, 64);
            config.bidirectional = true;
            let case = Case {
                config: config.clone(),
                run: Run {
                    // At least 260 of the 300 steps.
                    lengths: ragged.then(|| {
                        (0..n)
                            .map(|b| if b == 0 { seq } else { 260 + (b * 37) % 41 })
                            .collect()
                    }),
                    ..Run::new(seq, n, true)
                },
                seed: 0xa4ead + mode as u64,
                weight_scale: 1.0,
            };
            let (sd, b) = build(&case);
            let mut model = Model::from_state_dict(config, &sd).unwrap();
            for isa in available_tiers() {
                model.set_isa(isa).unwrap();
                let whole = run_in_pool(&model, &b.forward_input(), 1);
                for e in [0, 1, 30, 63] {
                    let what = format!("{mode} ragged={ragged} {isa}");
                    assert_alone_matches(&model, &b, &whole, e, &what);
                }
            }
        }
    }
}

/// SPEC §4: a NaN or inf in one batch element's input never changes another element's output.
#[test]
fn nan_in_one_element_leaves_the_others_untouched() {
    for mode in Mode::ALL {
        let (config, sd, b) = wide_case(mode, true, false);
        let mut model = Model::from_state_dict(config.clone(), &sd).unwrap();
        for isa in available_tiers() {
            model.set_isa(isa).unwrap();
            let clean = model.forward(&b.forward_input()).unwrap();
            for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut x = b.input.clone();
                let (n, i) = (x.shape[1], x.shape[2]);
                let bad = 4;
                x.data[(3 * n + bad) * i] = poison; // element `bad`, step 3
                let fi = ForwardInput {
                    input: x.view(),
                    ..b.forward_input()
                };
                let dirty = model.forward(&fi).unwrap();
                for e in (0..n).filter(|&e| e != bad) {
                    assert_eq!(
                        bits(&select_batch(&clean.output, e).data),
                        bits(&select_batch(&dirty.output, e).data),
                        "{mode} {isa}: {poison} in element {bad} changed element {e}"
                    );
                }
                if poison.is_nan() {
                    let hit = select_batch(&dirty.output, bad);
                    assert!(
                        hit.data.iter().any(|v| v.is_nan()),
                        "{mode} {isa}: NaN did not propagate in its own element"
                    );
                }
            }
        }
    }
}

/// A denormal value for position `i`: magnitudes varying with `i`, signs alternating.
fn tiny(i: usize) -> f32 {
    let v = f32::MIN_POSITIVE / (2.0 + (i % 7) as f32);
    if i % 2 == 0 {
        v
    } else {
        -v
    }
}

/// `(dirty, clean)`: `t` with every third value denormal ([`tiny`]) in `dirty` and a zero of
/// the same sign in `clean`.
fn spoil(t: &Tensor) -> (Tensor, Tensor) {
    let (mut dirty, mut clean) = (t.clone(), t.clone());
    for (i, (d, c)) in dirty.data.iter_mut().zip(&mut clean.data).enumerate() {
        if i % 3 == 0 {
            *d = tiny(i);
            *c = 0.0f32.copysign(*d);
        }
    }
    (dirty, clean)
}

/// As [`denormal_inputs_act_as_signed_zeros`], for an input large enough that the engine
/// projects it a few steps ahead, scanning each group of steps for denormals just before its
/// projection (64 x 300 steps of a 64-unit LSTM or GRU: `xp` of 18.8 / 14.1 MiB, beyond twice
/// any L2 below 7 MiB, and a `W_ih` of 8 / 6 KiB): on one thread (the input projected where it
/// lies) and two (two batch chunks, gathered step by step). So that a denormal left in would
/// show, `W_ih` is scaled by 2^100 and the biases are zero: a step whose inputs are all
/// denormal then projects to ~1e-10 instead of `±0`, which a zero state keeps (the first step,
/// or every step when the whole input is denormal); a middle step's shows only in the time.
///
/// The same for 20 steps, which are projected at once (the input scanned whole first).
#[test]
fn denormal_inputs_projected_ahead_act_as_signed_zeros() {
    let (n, i) = (64, 8);
    for (mode, seq) in [(Mode::Lstm, 300), (Mode::Gru, 300), (Mode::Lstm, 20)] {
        let config = Config::new(mode, i, 64);
        let case = Case {
            config: config.clone(),
            run: Run::new(seq, n, false),
            seed: 0xde0 + mode as u64,
            weight_scale: 1.0,
        };
        let (mut sd, b) = build(&case);
        for t in sd.get_mut("weight_ih_l0").unwrap().data.iter_mut() {
            *t *= 2f32.powi(100);
        }
        for name in ["bias_ih_l0", "bias_hh_l0"] {
            sd.get_mut(name).unwrap().data.fill(0.0);
        }
        let mut model = Model::from_state_dict(config, &sd).unwrap();
        let step = n * i;
        for steps in [0..1, seq / 2..seq / 2 + 1, seq - 1..seq, 0..seq] {
            let (mut dirty, mut clean) = (b.input.clone(), b.input.clone());
            for at in steps.start * step..steps.end * step {
                dirty.data[at] = tiny(at);
                clean.data[at] = 0.0f32.copysign(dirty.data[at]);
            }
            for isa in available_tiers() {
                model.set_isa(isa).unwrap();
                for threads in [1, 2] {
                    let run = |x: &Tensor| {
                        let fi = ForwardInput {
                            input: x.view(),
                            ..b.forward_input()
                        };
                        run_in_pool(&model, &fi, threads)
                    };
                    let (d, c) = (run(&dirty), run(&clean));
                    assert_eq!(
                        all_bits(&d),
                        all_bits(&c),
                        "{mode} {seq} steps, {isa}, {threads} threads: denormal inputs in steps {steps:?}"
                    );
                }
            }
        }
    }
}

/// Denormal inputs are flushed to `±0` on the way in (on Intel cores every product with a
/// denormal operand takes a microcode assist: the input projection ran ~200x slower), so a call
/// whose input, `h0` and `c0` hold denormals gives the same bits as the call with those values
/// replaced by zeros of their sign; no output is ever denormal. With and without lengths.
#[test]
fn denormal_inputs_act_as_signed_zeros() {
    for mode in Mode::ALL {
        for ragged in [false, true] {
            let (config, sd, b) = wide_case(mode, false, ragged);
            let mut model = Model::from_state_dict(config.clone(), &sd).unwrap();
            let (x_dirty, x_clean) = spoil(&b.input);
            let (h_dirty, h_clean) = spoil(b.h0.as_ref().unwrap());
            let c = b.c0.as_ref().map(&spoil);
            fn input<'a>(
                b: &'a InputFile,
                x: &'a Tensor,
                h: &'a Tensor,
                c: Option<&'a Tensor>,
            ) -> ForwardInput<'a> {
                ForwardInput {
                    input: x.view(),
                    h0: Some(h.view()),
                    c0: c.map(Tensor::view),
                    ..b.forward_input()
                }
            }
            for isa in available_tiers() {
                model.set_isa(isa).unwrap();
                let dirty = model
                    .forward(&input(&b, &x_dirty, &h_dirty, c.as_ref().map(|c| &c.0)))
                    .unwrap();
                let clean = model
                    .forward(&input(&b, &x_clean, &h_clean, c.as_ref().map(|c| &c.1)))
                    .unwrap();
                assert_eq!(
                    all_bits(&dirty),
                    all_bits(&clean),
                    "{mode} ragged={ragged} {isa}: denormal inputs differ from signed zeros"
                );
                let mut outs = dirty.output.data.iter().chain(&dirty.h_n.data);
                assert!(
                    !outs.any(|v| v.is_subnormal()),
                    "{mode} ragged={ragged} {isa}: an output is denormal"
                );
            }
        }
    }
}

/// Runs `config` at batch 1 (full sequences) and batch 3 (ragged lengths) on pools of each of
/// `threads`, checks each call's plan with `planned`, and asserts every pool gives one
/// thread's bits on every tier.
fn assert_split_matches_one_thread(
    config: &Config,
    seed: u64,
    threads: &[usize],
    planned: impl Fn(usize, PlanSummary) -> bool,
) {
    let (mode, hidden, proj) = (config.mode, config.hidden_size, config.proj_size);
    for (batch, ragged) in [(1, false), (3, true)] {
        let case = Case {
            config: config.clone(),
            run: Run {
                lengths: ragged.then(|| (0..batch).map(|b| 70 - 23 * b).collect()),
                ..Run::new(70, batch, true)
            },
            seed,
            weight_scale: 1.0,
        };
        let (sd, b) = build(&case);
        let mut model = Model::from_state_dict(config.clone(), &sd).unwrap();
        let fi = b.forward_input();
        for &t in threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            let plan = pool.install(|| model.plan_summary(&fi)).unwrap();
            assert!(
                planned(t, plan),
                "{mode} H={hidden} P={proj} at {t} threads: not the split expected: {plan:?}"
            );
        }
        for isa in available_tiers() {
            model.set_isa(isa).unwrap();
            let one = all_bits(&run_in_pool(&model, &fi, 1));
            for &t in threads {
                assert!(
                    one == all_bits(&run_in_pool(&model, &fi, t)),
                    "{mode} H={hidden} P={proj} batch={batch} {isa}: split over {t} threads differs"
                );
            }
        }
    }
}

/// Layers large enough that the cost model splits each step's hidden units across threads
/// (batch 1-4): the split must be bit-identical to one thread, with and without lengths, for
/// every mode, on every tier.
#[test]
fn split_steps_are_bit_identical_to_one_thread() {
    let shapes = [
        (Mode::RnnTanh, 256, 0),
        (Mode::RnnRelu, 256, 0),
        (Mode::Gru, 161, 0),
        (Mode::Lstm, 250, 0),
        // Projected: three groups of hidden units (128, 128, 44), shared in whole groups.
        (Mode::Lstm, 300, 200),
    ];
    for (mode, hidden, proj) in shapes {
        let mut config = Config::new(mode, 13, hidden);
        config.num_layers = 2;
        config.proj_size = proj;
        assert_split_matches_one_thread(&config, 77 + hidden as u64, &[2, 3], |t, plan| {
            plan.split == t
        });
    }
}

/// Both directions of large layers, each direction's steps split across two of four threads:
/// bit-identical to one thread, for full sequences (the reverse direction reading its input
/// where it lies, back to front) and ragged lengths (its input gathered).
#[test]
fn split_steps_of_both_directions_are_bit_identical_to_one_thread() {
    for (mode, hidden) in [(Mode::Gru, 161), (Mode::Lstm, 250)] {
        let mut config = Config::new(mode, 13, hidden);
        config.num_layers = 2;
        config.bidirectional = true;
        assert_split_matches_one_thread(&config, 91 + hidden as u64, &[4], |_, plan| {
            plan.parallel_directions && plan.split == 2
        });
    }
}

/// Layer `l` of `config`'s stack (one direction) as a one-layer model of its own.
fn layer_model(config: &Config, sd: &StateDict, l: usize) -> Model {
    let mut one = config.clone();
    one.num_layers = 1;
    if l > 0 {
        one.input_size = config.output_hidden();
    }
    let mut layer = StateDict::new();
    for (name, t) in sd {
        if let Some(base) = name.strip_suffix(&format!("_l{l}")) {
            layer.insert(format!("{base}_l0"), t.clone());
        }
    }
    Model::from_state_dict(one, &layer).unwrap()
}

/// Rows `l` of a state tensor `(layers, N, W)`, as `(1, N, W)`.
fn state_of(t: &Tensor, l: usize) -> Tensor {
    let per: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = 1;
    Tensor::new(shape, t.data[l * per..(l + 1) * per].to_vec()).unwrap()
}

/// A stack of single-row LSTM or GRU layers relays its input projections: each layer's steps
/// carry the next layer's projection of the rows already produced (`Relay` in
/// src/forward.rs), on the tiers that have the riding steps (AVX-512). The results are the
/// bits of the same layers run one at a time as one-layer models (which relay nothing), for
/// 3 layers (the relay's buffer serves layers 2 and 3 in turn), sequences shorter than two
/// groups of 8 rows (no relay), at and around the groups' edges and long enough for many,
/// with lengths, and widths of 1, 17 (a block and a bit), 64 and 150 units; and with 2
/// threads (150 units: each step split across the threads, each carrying its share of the
/// next layer's blocks) the same bits again.
#[test]
fn relayed_projections_are_bit_identical_to_layer_by_layer() {
    use recur::Isa;
    let layers = 3;
    for mode in [Mode::Lstm, Mode::Gru] {
        for (hidden, seq, length) in [
            (17, 40, None),
            (17, 23, Some(20)),
            (64, 16, None),
            (64, 17, Some(17)),
            (33, 15, None),
            (1, 30, None),
            (150, 100, None),
            (150, 61, Some(57)),
        ] {
            let mut config = Config::new(mode, 19, hidden);
            config.num_layers = layers;
            let case = Case {
                config: config.clone(),
                run: Run {
                    lengths: length.map(|l| vec![l]),
                    ..Run::new(seq, 1, true)
                },
                seed: 0x7e1a4 + (mode as u64) * 1000 + hidden as u64 + seq as u64,
                weight_scale: 1.0,
            };
            let (sd, b) = build(&case);
            let mut model = Model::from_state_dict(config.clone(), &sd).unwrap();
            let mut singles: Vec<Model> =
                (0..layers).map(|l| layer_model(&config, &sd, l)).collect();
            let what = format!("{mode} H={hidden} L={seq} lengths={length:?}");
            for isa in available_tiers() {
                model.set_isa(isa).unwrap();
                for m in &mut singles {
                    m.set_isa(isa).unwrap();
                }
                let fi = b.forward_input();
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap();
                let summary = pool.install(|| model.plan_summary(&fi)).unwrap();
                let rows = length.unwrap_or(seq);
                assert_eq!(
                    summary.relay,
                    isa == Isa::Avx512 && rows >= 16,
                    "{what} {isa}: relay planned"
                );
                let got = run_in_pool(&model, &fi, 1);
                // The layers one at a time, each fed the previous one's output.
                let (h0, c0) = (b.h0.as_ref().unwrap(), b.c0.as_ref());
                let mut x = b.input.clone();
                let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
                for (l, single) in singles.iter().enumerate() {
                    let h0_l = state_of(h0, l);
                    let c0_l = c0.map(|c| state_of(c, l));
                    let mut fi_l = ForwardInput::new(x.view()).with_h0(h0_l.view());
                    if let Some(c0_l) = &c0_l {
                        fi_l = fi_l.with_c0(c0_l.view());
                    }
                    if let Some(lengths) = &b.lengths {
                        fi_l = fi_l.with_lengths(lengths);
                    }
                    let out = run_in_pool(single, &fi_l, 1);
                    h_n.extend(out.h_n.data);
                    c_n.extend(out.c_n.map(|c| c.data).unwrap_or_default());
                    x = out.output;
                }
                assert_eq!(
                    bits(&got.output.data),
                    bits(&x.data),
                    "{what} {isa}: output"
                );
                assert_eq!(bits(&got.h_n.data), bits(&h_n), "{what} {isa}: h_n");
                let got_c = got.c_n.map(|c| c.data).unwrap_or_default();
                assert_eq!(bits(&got_c), bits(&c_n), "{what} {isa}: c_n");
                if hidden == 150 && seq == 100 {
                    // Steps split across 2 threads, each carrying its share of the blocks.
                    let pool2 = rayon::ThreadPoolBuilder::new()
                        .num_threads(2)
                        .build()
                        .unwrap();
                    let two = pool2.install(|| model.plan_summary(&fi)).unwrap();
                    assert_eq!(two.split, 2, "{what} {isa}: split");
                    assert_eq!(two.relay, isa == Isa::Avx512, "{what} {isa}: relay at 2");
                }
                let two = run_in_pool(&model, &fi, 2);
                assert!(
                    all_bits(&run_in_pool(&model, &fi, 1)) == all_bits(&two),
                    "{what} {isa}: 2 threads differ from 1"
                );
            }
        }
    }
}
