//! Input files from arbitrary bytes: `InputFile::from_bytes`, then a forward pass of each of
//! four fixed small models (one per mode). Errors are expected; a panic is a bug. A pass that
//! succeeds gives outputs of the shapes PyTorch would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recur::load::InputFile;
use recur_fuzz::fixed_models;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = InputFile::from_bytes(data) else {
        return;
    };
    let fi = file.forward_input();
    for model in fixed_models() {
        let Ok(out) = model.forward(&fi) else {
            continue;
        };
        let cfg = model.config();
        let states = cfg.directions() * cfg.num_layers;
        let batched = fi.input.shape.len() == 3;
        let (l, n) = match (batched, cfg.batch_first) {
            (false, _) => (fi.input.shape[0], 1),
            (true, true) => (fi.input.shape[1], fi.input.shape[0]),
            (true, false) => (fi.input.shape[0], fi.input.shape[1]),
        };
        let width = cfg.directions() * cfg.output_hidden();
        assert_eq!(out.output.data.len(), l * n * width);
        assert_eq!(out.h_n.data.len(), states * n * cfg.output_hidden());
        assert_eq!(out.c_n.is_some(), cfg.mode.has_cell_state());
        // Zero past each length.
        if let Some(lengths) = fi.lengths {
            for (b, &len) in lengths.iter().enumerate() {
                for t in len..l {
                    let row = if cfg.batch_first {
                        b * l + t
                    } else {
                        t * n + b
                    };
                    let v = &out.output.data[row * width..(row + 1) * width];
                    assert!(
                        v.iter().all(|&x| x == 0.0),
                        "output past lengths[{b}] not zero"
                    );
                }
            }
        }
    }
});
