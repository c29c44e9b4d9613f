//! Zero allocation per step in steady state, counted by this test binary's global allocator:
//! [`Session::step`], [`Session::feed`] and [`StreamRuntime::step`] (with streams joining and
//! leaving within the runtime's capacity, and the batch size changing from step to step).
//!
//! Each test runs inside a 1-thread rayon pool, so that the engine runs every batch on the
//! calling thread (a larger pool splits batches of 16 rows or more across threads; see
//! `docs/SERVING.md`). Allocations are counted per thread, so tests running in parallel do not
//! disturb each other.
//!
//! The input projection (one GEMM per layer per forward pass) is the engine's own packed
//! kernel, which allocates nothing (it once was `matrixmultiply`, which allocated its packing
//! buffer on every call). The tests still measure the GEMM's allocations directly, on the
//! kernel itself, and require every step to allocate exactly that many times per layer and not
//! once more: zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use recur::bench::{random_state_dict, SplitRng};
use recur::session::Session;
use recur::streams::StreamRuntime;
use recur::{Config, Mode, Model, TensorView};

/// Counts allocations (and reallocations) made by the current thread while armed.
struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    if ARMED.with(Cell::get) {
        COUNT.with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged,
// so `System`'s guarantees are this allocator's; the counting touches only const-initialised
// thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged (see the impl's comment).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made meanwhile.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    let r = f();
    ARMED.with(|a| a.set(false));
    (r, COUNT.with(Cell::get))
}

/// Allocations of one call of the engine's input projection kernel of the given shape,
/// measured on the kernel itself.
fn gemm_allocations(m: usize, n: usize, k: usize) -> u64 {
    let a = vec![0.5f32; m * k];
    let b = recur_kernels::PackedMatrix::pack(&vec![0.25f32; n * k], 1, n, k);
    let bias = vec![0.125f32; n];
    let mut c = vec![0.0f32; m * n];
    let project = recur_kernels::kernels().unwrap().input_projection;
    project(&b, &bias, &a, &mut c, m);
    let ((), count) = allocations(|| project(&b, &bias, &a, &mut c, m));
    count
}

/// The allocations a forward pass of `model` over `rows` rows of one step is allowed: those of
/// its GEMM calls (one per layer), and nothing else.
fn gemm_allowance(model: &Model, rows: usize) -> u64 {
    let cfg = model.config();
    (0..cfg.num_layers)
        .map(|l| gemm_allocations(rows, cfg.gates() * cfg.hidden_size, cfg.layer_input_size(l)))
        .sum()
}

fn on_one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(f)
}

fn configs() -> Vec<Config> {
    let base = |mode| Config {
        num_layers: 2,
        ..Config::new(mode, 16, 48)
    };
    vec![
        base(Mode::Lstm),
        Config {
            proj_size: 20,
            ..base(Mode::Lstm)
        },
        base(Mode::Gru),
        base(Mode::RnnTanh),
        Config {
            batch_first: true,
            ..base(Mode::RnnRelu)
        },
    ]
}

fn model(cfg: &Config) -> Model {
    Model::from_state_dict(cfg.clone(), &random_state_dict(cfg, 5)).unwrap()
}

#[test]
fn session_step_allocates_nothing() {
    on_one_thread(|| {
        for cfg in configs() {
            let m = model(&cfg);
            for batch in [1, 4, 40] {
                let mut s = Session::with_batch(&m, batch).unwrap();
                let xs = SplitRng::new(1).vec(batch * cfg.input_size * 8, 1.0);
                let steps: Vec<&[f32]> = xs.chunks(batch * cfg.input_size).collect();
                for x in &steps {
                    s.step(x).unwrap();
                }
                let allowance = gemm_allowance(&m, batch);
                let ((), count) = allocations(|| {
                    for _ in 0..25 {
                        for x in &steps {
                            std::hint::black_box(s.step(x).unwrap());
                        }
                    }
                });
                let per_step = count as f64 / (25 * steps.len()) as f64;
                eprintln!(
                    "{cfg}, batch {batch}: {per_step} allocations per step, all in the GEMM \
                     ({allowance} per step)"
                );
                assert_eq!(
                    count,
                    allowance * (25 * steps.len()) as u64,
                    "{cfg}, batch {batch}: Session::step allocates beyond the GEMM's \
                     {allowance} per step"
                );
            }
        }
    });
}

#[test]
fn session_chunks_allocate_nothing() {
    on_one_thread(|| {
        for cfg in configs() {
            let m = model(&cfg);
            let (k, n, i) = (7, 3, cfg.input_size);
            let shape = if cfg.batch_first {
                [n, k, i]
            } else {
                [k, n, i]
            };
            let x = SplitRng::new(2).vec(k * n * i, 1.0);
            let view = TensorView::new(&shape, &x).unwrap();
            let mut s = Session::with_batch(&m, n).unwrap();
            // Warm up with every kind of chunk the loop below feeds, twice: a multi-layer
            // model's two layer buffers swap roles on every call, so each must see the largest
            // chunk once.
            for _ in 0..2 {
                s.feed(view).unwrap();
                s.feed_with_lengths(view, &[7, 0, 3]).unwrap();
                s.feed_with_lengths(view, &[2, 5, 7]).unwrap();
            }
            let full = gemm_allowance(&m, k * n);
            let ((), count) = allocations(|| {
                for _ in 0..10 {
                    std::hint::black_box(s.feed(view).unwrap());
                    std::hint::black_box(s.feed_with_lengths(view, &[2, 5, 7]).unwrap());
                }
            });
            assert_eq!(
                count,
                20 * full,
                "{cfg}: Session::feed allocates beyond the GEMM"
            );
            let two = gemm_allowance(&m, k * 2);
            let ((), count) = allocations(|| {
                for _ in 0..10 {
                    std::hint::black_box(s.feed_with_lengths(view, &[7, 0, 3]).unwrap());
                }
            });
            assert_eq!(
                count,
                10 * two,
                "{cfg}: a chunk with an idle stream allocates beyond the GEMM"
            );
        }
    });
}

#[test]
fn runtime_step_allocates_nothing() {
    on_one_thread(|| {
        for cfg in configs() {
            let m = model(&cfg);
            let capacity = 120;
            let mut rt = StreamRuntime::with_capacity(&m, capacity).unwrap();
            let mut ids: Vec<_> = (0..100).map(|_| rt.join()).collect();
            let x = SplitRng::new(3).vec(cfg.input_size, 1.0);
            // Warm up at the largest batch: every buffer reaches its steady size.
            for _ in 0..2 {
                for &id in &ids {
                    rt.push(id, &x).unwrap();
                }
                rt.step().unwrap();
            }
            // The GEMM's allowance for every batch size, measured before counting starts.
            let allow: Vec<u64> = (0..=capacity)
                .map(|b| gemm_allowance(&m, b.max(1)))
                .collect();
            let mut allowance = 0;
            let ((), count) = allocations(|| {
                for round in 0..30usize {
                    // Streams leave and join (within capacity); a varying subset has input.
                    if round % 3 == 0 {
                        let gone = ids.swap_remove(round % ids.len());
                        rt.leave(gone).unwrap();
                        ids.push(rt.join());
                    }
                    let mut pushed = 0;
                    for (k, &id) in ids.iter().enumerate() {
                        if (k + round) % 4 != 0 {
                            rt.push(id, &x).unwrap();
                            pushed += 1;
                        }
                    }
                    assert_eq!(rt.step().unwrap(), pushed);
                    for &id in &ids {
                        std::hint::black_box(rt.output(id));
                    }
                    allowance += allow[pushed];
                }
            });
            assert_eq!(
                count, allowance,
                "{cfg}: StreamRuntime::step allocates beyond the GEMM"
            );
        }
    });
}

/// The allowance is what it claims: the input projection allocates nothing, whatever the
/// shape, so every test above demands zero allocations outright.
#[test]
fn the_input_projection_allocates_nothing() {
    for (m, n, k) in [(1, 192, 16), (40, 80, 48), (300, 64, 520)] {
        assert_eq!(
            gemm_allocations(m, n, k),
            0,
            "the input projection {m}x{n}x{k} allocates"
        );
    }
}
