//! The C functions called from Rust: every failure is -1 or NULL with a message naming what is
//! wrong, and results equal the Rust API's.

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use recur::bench::random_state_dict;
use recur::session::Session;
use recur::{Config, ForwardInput, LoadOptions, Mode, Model, Tensor};
use recur_capi::*;

fn last_error() -> String {
    // SAFETY: recur_last_error returns a valid NUL-terminated string owned by this thread.
    unsafe { CStr::from_ptr(recur_last_error()) }
        .to_str()
        .unwrap()
        .to_string()
}

fn demo() -> CString {
    CString::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../assets/demo/model.safetensors"
    ))
    .unwrap()
}

/// Writes a random model as a safetensors file: an 8-byte header length, a JSON header, raw
/// little-endian f32 data.
fn write_model(cfg: &Config, path: &std::path::Path) {
    let sd = random_state_dict(cfg, 3);
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, t) in &sd {
        let start = data.len();
        for v in &t.data {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [start, data.len()]}),
        );
    }
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"mode": cfg.mode.name()}),
    );
    let h = serde_json::Value::Object(header).to_string();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn errors_are_reported_not_crashes() {
    // SAFETY (all calls below): arguments are valid or deliberately NULL, as documented.
    unsafe {
        assert!(recur_model_load(null(), null()).is_null());
        assert_eq!(last_error(), "path is NULL");
        let bad = CString::new("/nonexistent/m.safetensors").unwrap();
        assert!(recur_model_load(bad.as_ptr(), null()).is_null());
        assert!(
            last_error().contains("/nonexistent/m.safetensors"),
            "{}",
            last_error()
        );
        let prefix = CString::new("nope.").unwrap();
        assert!(recur_model_load(demo().as_ptr(), prefix.as_ptr()).is_null());
        assert!(last_error().contains("nope."), "{}", last_error());

        let mut cfg = RecurConfig::default();
        assert_eq!(recur_model_config(null(), &mut cfg), -1);
        assert_eq!(last_error(), "model is NULL");
        assert!(recur_session_new(null(), 1).is_null());
        assert_eq!(recur_session_reset(null_mut()), -1);
        assert_eq!(recur_session_step(null_mut(), null(), 1, null_mut(), 0), -1);
        assert_eq!(last_error(), "session is NULL");
        recur_model_free(null_mut());
        recur_session_free(null_mut());

        let prefix = CString::new("lstm.").unwrap();
        let m = recur_model_load(demo().as_ptr(), prefix.as_ptr());
        assert!(!m.is_null(), "{}", last_error());
        assert_eq!(recur_model_config(m, null_mut()), -1);
        assert_eq!(last_error(), "out is NULL");
        let x = [0.5f32; 4];
        let mut y = [0.0f32; 4 * 32];
        // NULL input with a non-zero size.
        assert_eq!(
            recur_model_forward(
                m,
                null(),
                4,
                1,
                null(),
                null(),
                null(),
                y.as_mut_ptr(),
                128,
                null_mut(),
                0,
                null_mut(),
                0
            ),
            -1
        );
        assert_eq!(last_error(), "input is NULL");
        // Misaligned output.
        let misaligned = (y.as_mut_ptr() as *mut u8).add(1) as *mut f32;
        assert_eq!(
            recur_model_forward(
                m,
                x.as_ptr(),
                4,
                1,
                null(),
                null(),
                null(),
                misaligned,
                128,
                null_mut(),
                0,
                null_mut(),
                0
            ),
            -1
        );
        assert!(last_error().contains("not aligned"), "{}", last_error());
        // Bad lengths: negative, too long.
        for (len, msg) in [(-1i64, "lengths[0] = -1"), (5, "lengths[0] = 5")] {
            let lens = [len];
            assert_eq!(
                recur_model_forward(
                    m,
                    x.as_ptr(),
                    4,
                    1,
                    null(),
                    null(),
                    lens.as_ptr(),
                    y.as_mut_ptr(),
                    128,
                    null_mut(),
                    0,
                    null_mut(),
                    0
                ),
                -1
            );
            assert!(last_error().contains(msg), "{}", last_error());
        }
        // h_n of the wrong size: nothing written.
        y.fill(7.0);
        let mut h = [0.0f32; 10];
        assert_eq!(
            recur_model_forward(
                m,
                x.as_ptr(),
                4,
                1,
                null(),
                null(),
                null(),
                y.as_mut_ptr(),
                128,
                h.as_mut_ptr(),
                10,
                null_mut(),
                0
            ),
            -1
        );
        assert!(
            last_error().contains("h_n holds 10 floats, expected 64"),
            "{}",
            last_error()
        );
        assert!(
            y.iter().all(|&v| v == 7.0),
            "output written despite the error"
        );
        let s = recur_session_new(m, 1);
        let mut st = [0.0f32; 64];
        assert_eq!(
            recur_session_get_state(s, st.as_mut_ptr(), 64, null_mut(), 0),
            0
        );
        assert_eq!(recur_session_set_state(s, st.as_ptr(), 63, null(), 0), -1);
        assert!(
            last_error().contains("h holds 63 floats, expected 64"),
            "{}",
            last_error()
        );
        assert_eq!(recur_session_set_state(s, st.as_ptr(), 64, null(), 0), -1);
        assert!(last_error().contains("needs c"), "{}", last_error());
        assert_eq!(recur_session_step(s, x.as_ptr(), 0, y.as_mut_ptr(), 0), -1);
        assert!(last_error().contains("at least 1"), "{}", last_error());
        recur_session_free(s);
        recur_model_free(m);
    }
}

#[test]
fn results_match_the_rust_api() {
    let dir = std::env::temp_dir().join(format!("recur-capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (k, cfg) in [
        Config {
            num_layers: 2,
            proj_size: 3,
            ..Config::new(Mode::Lstm, 4, 6)
        },
        Config::new(Mode::Gru, 3, 5),
        Config {
            bidirectional: true,
            ..Config::new(Mode::RnnTanh, 3, 5)
        },
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.join(format!("m{k}.safetensors"));
        write_model(&cfg, &path);
        let rust = Model::load(&path, &LoadOptions::default()).unwrap();
        let (l, n, i) = (6, 2, cfg.input_size);
        let x: Vec<f32> = (0..l * n * i).map(|v| (v as f32 * 0.31).sin()).collect();
        let xt = Tensor::new(vec![l, n, i], x.clone()).unwrap();
        let want = rust.forward(&ForwardInput::new(xt.view())).unwrap();
        let cpath = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid paths, handles and buffers of the documented sizes.
        unsafe {
            let m = recur_model_load(cpath.as_ptr(), null());
            assert!(!m.is_null(), "{}", last_error());
            let mut c = RecurConfig::default();
            assert_eq!(recur_model_config(m, &mut c), 0);
            assert_eq!(c.input_size, cfg.input_size);
            assert_eq!(c.bidirectional, cfg.bidirectional);
            assert_eq!(c.output_hidden, cfg.output_hidden());
            let mut y = vec![0.0f32; want.output.data.len()];
            let mut h = vec![0.0f32; want.h_n.data.len()];
            let mut cn = vec![0.0f32; want.c_n.as_ref().map_or(0, |c| c.data.len())];
            let cn_ptr = if cn.is_empty() {
                null_mut()
            } else {
                cn.as_mut_ptr()
            };
            assert_eq!(
                recur_model_forward(
                    m,
                    x.as_ptr(),
                    l,
                    n,
                    null(),
                    null(),
                    null(),
                    y.as_mut_ptr(),
                    y.len(),
                    h.as_mut_ptr(),
                    h.len(),
                    cn_ptr,
                    cn.len()
                ),
                0,
                "{}",
                last_error()
            );
            assert_eq!(y, want.output.data);
            assert_eq!(h, want.h_n.data);
            if let Some(c) = &want.c_n {
                assert_eq!(&cn, &c.data);
            }
            let s = recur_session_new(m, n);
            if cfg.bidirectional {
                assert!(s.is_null());
                assert!(last_error().contains("bidirectional"), "{}", last_error());
            } else {
                assert!(!s.is_null());
                let w = cfg.output_hidden();
                let mut ys = vec![0.0f32; l * n * w];
                for t in 0..l {
                    let r = recur_session_step(
                        s,
                        x[t * n * i..].as_ptr(),
                        1,
                        ys[t * n * w..].as_mut_ptr(),
                        n * w,
                    );
                    assert_eq!(r, 0, "{}", last_error());
                }
                assert_eq!(ys, want.output.data);
                let mut rs = Session::with_batch(&rust, n).unwrap();
                rs.feed(xt.view()).unwrap();
                let mut hs = vec![0.0f32; rs.h().data.len()];
                assert_eq!(
                    recur_session_get_state(s, hs.as_mut_ptr(), hs.len(), null_mut(), 0),
                    0
                );
                assert_eq!(hs, rs.h().data);
                assert_eq!(recur_session_reset(s), 0);
                assert_eq!(
                    recur_session_get_state(s, hs.as_mut_ptr(), hs.len(), null_mut(), 0),
                    0
                );
                assert!(hs.iter().all(|&v| v == 0.0));
                recur_session_free(s);
            }
            recur_model_free(m);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
