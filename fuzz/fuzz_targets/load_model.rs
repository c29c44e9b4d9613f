//! Model loading from arbitrary bytes: `Model::from_safetensors_bytes` with options taken from
//! the input's first bytes. Errors are expected; a panic, a hang or a large allocation is a bug
//! (run with `-malloc_limit_mb`, see `fuzz/README.md`). A model that loads must run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recur::{ForwardInput, LoadOptions, Model, Tensor};
use recur_fuzz::{split_options, TINY_WORK};

fuzz_target!(|data: &[u8]| {
    let (options, file): (LoadOptions, &[u8]) = split_options(data);
    let Ok(model) = Model::from_safetensors_bytes(file, &options) else {
        return;
    };
    let cfg = model.config().clone();
    cfg.validate()
        .expect("a loaded model's configuration is valid");
    // A loaded model runs: two steps of one batch element, if the model is small enough to be
    // worth running on every input (files of a few KiB hold small models anyway).
    let width = cfg.input_size.max(cfg.directions() * cfg.output_hidden());
    if cfg.num_layers * cfg.gates() * cfg.hidden_size * width <= TINY_WORK {
        let shape = if cfg.batch_first {
            vec![1, 2, cfg.input_size]
        } else {
            vec![2, 1, cfg.input_size]
        };
        let x = Tensor::new(shape, vec![0.25; 2 * cfg.input_size]).unwrap();
        let out = model
            .forward(&ForwardInput::new(x.view()))
            .expect("a loaded model runs on a well-shaped input");
        assert_eq!(out.h_n.shape[0], cfg.directions() * cfg.num_layers);
    }
});
