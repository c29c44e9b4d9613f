//! Sessions: an arbitrary unidirectional model and input fed through a `Session` in arbitrary
//! chunks (single steps included, with per-chunk lengths when the case has lengths, a snapshot
//! taken and restored at an arbitrary boundary) must give results bit-identical to one
//! `Model::forward` over the whole sequence, and so must `run_chunked` with an arbitrary chunk
//! size. Every kernel table is eligible (each tier here, and the emulated AVX-512 paths).
#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use recur::session::{run_chunked, Session};
use recur::{Model, Tensor, TensorView};
use recur_fuzz::{bits, build_case, kernel_tables, table_name, CaseLimits};

const LIMITS: CaseLimits = CaseLimits {
    input: 8,
    hidden: 24,
    layers: 3,
    seq: 24,
    batch: 6,
    bidirectional: false,
};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(case) = build_case(&mut u, LIMITS) else {
        return;
    };
    let tables = kernel_tables();
    let table = tables[u.choose_index(tables.len()).unwrap_or(0)];
    let mut model = Model::from_state_dict(case.config.clone(), &case.state_dict).unwrap();
    model.set_kernels(table);
    let name = table_name(table);
    let cfg = model.config().clone();
    let fi = case.inputs.forward_input();
    let whole = model.forward(&fi).unwrap();

    // run_chunked with one chunk size.
    let k = u.int_in_range(1..=case.seq).unwrap_or(1);
    let chunked = run_chunked(&model, &fi, k).unwrap();
    assert!(
        bits(&chunked) == bits(&whole),
        "{name}: run_chunked({k}) differs from one forward pass for {cfg} L={} N={} lengths={:?}",
        case.seq,
        case.batch,
        case.inputs.lengths
    );

    // A session fed in arbitrary chunks.
    let (l, n, i_size) = (case.seq, case.batch, cfg.input_size);
    let h_out = cfg.output_hidden();
    let mut session = Session::with_batch(&model, n).unwrap();
    if let Some(h0) = &case.inputs.h0 {
        session
            .set_state(h0.view(), case.inputs.c0.as_ref().map(Tensor::view))
            .unwrap();
    }
    let mut output = vec![f32::NAN; whole.output.data.len()];
    let mut bounds = Vec::new();
    let mut t0 = 0;
    let mut saved = None;
    while t0 < l {
        let k = u.int_in_range(1..=l - t0).unwrap_or(l - t0);
        let use_step = k == 1 && case.inputs.lengths.is_none() && u.arbitrary().unwrap_or(false);
        if saved.is_none() && t0 > 0 && u.ratio(1, 4).unwrap_or(false) {
            saved = Some((t0, session.snapshot(), bounds.len()));
        }
        feed(
            &mut session,
            &case,
            t0,
            k,
            use_step,
            &mut output,
            (l, n, i_size, h_out),
        );
        bounds.push(k);
        t0 += k;
    }
    let check = |session: &Session<&Model>, output: &[f32], what: &str| {
        let same_output = output
            .iter()
            .zip(&whole.output.data)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same_output,
            "{name}: {what} output differs from one forward pass for {cfg} L={l} N={n} \
             lengths={:?} chunks={bounds:?}",
            case.inputs.lengths
        );
        assert!(
            session
                .h()
                .data
                .iter()
                .zip(&whole.h_n.data)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: {what} h differs from h_n for {cfg} chunks={bounds:?}"
        );
        if let (Some(c), Some(c_n)) = (session.c(), &whole.c_n) {
            assert!(
                c.data
                    .iter()
                    .zip(&c_n.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: {what} c differs from c_n for {cfg} chunks={bounds:?}"
            );
        }
    };
    check(&session, &output, "session");

    // Back to a snapshot, and the rest again in one chunk: the same results.
    if let Some((t0, state, _)) = saved {
        session.restore(&state).unwrap();
        feed(
            &mut session,
            &case,
            t0,
            l - t0,
            false,
            &mut output,
            (l, n, i_size, h_out),
        );
        check(&session, &output, "restored session");
    }
});

/// Feeds steps `t0..t0 + k` of the case to the session (one `step` call if `use_step`), and
/// writes the chunk's output into `output`, laid out as the whole pass's output.
fn feed(
    session: &mut Session<&Model>,
    case: &recur_fuzz::Case,
    t0: usize,
    k: usize,
    use_step: bool,
    output: &mut [f32],
    (l, n, i_size, h_out): (usize, usize, usize, usize),
) {
    let batch_first = case.config.batch_first && !case.unbatched;
    let mut x = Vec::with_capacity(k * n * i_size);
    if batch_first {
        for b in 0..n {
            let start = (b * l + t0) * i_size;
            x.extend_from_slice(&case.inputs.input.data[start..start + k * i_size]);
        }
    } else {
        x.extend_from_slice(&case.inputs.input.data[t0 * n * i_size..(t0 + k) * n * i_size]);
    }
    let chunk_out: Vec<f32> = if use_step {
        session.step(&x).unwrap().to_vec()
    } else {
        let shape = if case.unbatched {
            vec![k, i_size]
        } else if batch_first {
            vec![n, k, i_size]
        } else {
            vec![k, n, i_size]
        };
        let view = TensorView::new(&shape, &x).unwrap();
        match &case.inputs.lengths {
            None => session.feed(view).unwrap().data.to_vec(),
            Some(lengths) => {
                let chunk_lengths: Vec<usize> = lengths
                    .iter()
                    .map(|&len| len.saturating_sub(t0).min(k))
                    .collect();
                session
                    .feed_with_lengths(view, &chunk_lengths)
                    .unwrap()
                    .data
                    .to_vec()
            }
        }
    };
    assert_eq!(chunk_out.len(), k * n * h_out);
    if batch_first {
        for b in 0..n {
            let dst = (b * l + t0) * h_out;
            output[dst..dst + k * h_out].copy_from_slice(&chunk_out[b * k * h_out..][..k * h_out]);
        }
    } else {
        output[t0 * n * h_out..(t0 + k) * n * h_out].copy_from_slice(&chunk_out);
    }
}
