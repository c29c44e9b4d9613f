//! `recur run` / `recur info` under bad conditions (issue 5): missing and unreadable paths,
//! directories, devices and FIFOs where files should be, output directories that are missing or
//! not directories, a full device (`/dev/full`) and a full filesystem. Each failure is a one-line
//! `error: ...` naming the path and the problem, within seconds (nothing blocks or reads
//! forever), with an existing output file left byte-identical and no temporary file behind.
//!
//! The tests run as root in CI, where permission bits do not stop anything: unwritable outputs
//! are made with paths whose parent is a regular file, `/proc`, `/dev/full` and a tiny tmpfs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use recur::{Config, Mode};
use safetensors::tensor::Dtype;

/// Longest a failing run may take: these all fail before any real work.
const DEADLINE: Duration = Duration::from_secs(30);

/// A scratch directory with a valid model, input and an existing output file.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// An LSTM (input 3, hidden `hidden`) and an input of `seq` steps, batch 2.
    fn new(hidden: usize, seq: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(Mode::Lstm, 3, hidden);
        let sd = state_dict(&config, 3, Dtype::F32);
        std::fs::write(
            dir.path().join("model.safetensors"),
            model_bytes(&sd, "", Dtype::F32, &[]),
        )
        .unwrap();
        let input = random_tensor(vec![seq, 2, 3], 5, 1.0);
        std::fs::write(
            dir.path().join("input.safetensors"),
            input_bytes(&input, None, None, None),
        )
        .unwrap();
        std::fs::write(dir.path().join("output.safetensors"), OLD_OUTPUT).unwrap();
        Setup { dir }
    }

    fn small() -> Setup {
        Setup::new(4, 5)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// `recur run` with these paths (relative names are inside the scratch directory).
    fn run(&self, model: &str, input: &str, output: &str) -> Output {
        let p = |name: &str| {
            if name.starts_with('/') {
                name.to_string()
            } else {
                self.s(name)
            }
        };
        let (m, i, o) = (p(model), p(input), p(output));
        run_with_deadline(&["run", "--model", &m, "--input", &i, "--output", &o])
    }

    /// The existing output is byte-identical and no temporary file is left in the directory.
    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read(self.path("output.safetensors")).unwrap(),
            OLD_OUTPUT,
            "the existing output changed"
        );
        assert_no_temp_files(self.dir.path());
    }
}

/// Runs the `recur` binary, killing it (and failing) if it runs past [`DEADLINE`].
fn run_with_deadline(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(args)
        .env_remove("RECUR_ISA")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the recur binary starts");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("recur {args:?} still running after {DEADLINE:?}: it blocked or read forever");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- Inputs that cannot be read.

#[test]
fn missing_model_and_input() {
    let s = Setup::small();
    let out = s.run(
        "absent.safetensors",
        "input.safetensors",
        "output.safetensors",
    );
    assert_error(&out, &["absent.safetensors", "No such file"]);
    let out = s.run(
        "model.safetensors",
        "absent.safetensors",
        "output.safetensors",
    );
    assert_error(&out, &["absent.safetensors", "No such file"]);
    s.assert_untouched();
}

#[test]
fn a_path_through_a_regular_file() {
    let s = Setup::small();
    let out = s.run(
        "model.safetensors/inner",
        "input.safetensors",
        "output.safetensors",
    );
    assert_error(&out, &["model.safetensors/inner", "Not a directory"]);
    let out = s.run(
        "model.safetensors",
        "input.safetensors/inner",
        "output.safetensors",
    );
    assert_error(&out, &["input.safetensors/inner", "Not a directory"]);
    s.assert_untouched();
}

#[cfg(unix)]
#[test]
fn a_dangling_symlink() {
    let s = Setup::small();
    std::os::unix::fs::symlink(s.path("gone"), s.path("link.safetensors")).unwrap();
    let out = s.run(
        "link.safetensors",
        "input.safetensors",
        "output.safetensors",
    );
    assert_error(&out, &["link.safetensors", "No such file"]);
    s.assert_untouched();
}

#[test]
fn a_directory_as_model_or_input() {
    let s = Setup::small();
    std::fs::create_dir(s.path("d")).unwrap();
    let out = s.run("d", "input.safetensors", "output.safetensors");
    assert_error(&out, &[&s.s("d"), "is a directory", "regular file"]);
    let out = s.run("model.safetensors", "d", "output.safetensors");
    assert_error(&out, &[&s.s("d"), "is a directory"]);
    let d = s.s("d");
    let out = run_with_deadline(&["info", "--model", &d]);
    assert_error(&out, &[&d, "is a directory"]);
    s.assert_untouched();
}

#[cfg(unix)]
#[test]
fn dev_zero_as_model_or_input_is_not_read() {
    let s = Setup::small();
    let out = s.run("/dev/zero", "input.safetensors", "output.safetensors");
    assert_error(&out, &["/dev/zero", "character device", "regular file"]);
    let out = s.run("model.safetensors", "/dev/zero", "output.safetensors");
    assert_error(&out, &["/dev/zero", "character device"]);
    let out = run_with_deadline(&["info", "--model", "/dev/zero"]);
    assert_error(&out, &["/dev/zero", "character device"]);
    s.assert_untouched();
}

#[cfg(unix)]
#[test]
fn a_fifo_as_model_or_input_does_not_block() {
    let s = Setup::small();
    let fifo = s.path("pipe.safetensors");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !matches!(made, Ok(st) if st.success()) {
        eprintln!("note: mkfifo is not available here; the FIFO case is skipped");
        return;
    }
    // Nobody writes to it: opening it to read would wait forever.
    let out = s.run(
        "pipe.safetensors",
        "input.safetensors",
        "output.safetensors",
    );
    assert_error(&out, &["pipe.safetensors", "FIFO", "regular file"]);
    let out = s.run(
        "model.safetensors",
        "pipe.safetensors",
        "output.safetensors",
    );
    assert_error(&out, &["pipe.safetensors", "FIFO"]);
    std::fs::remove_file(&fifo).unwrap();
    s.assert_untouched();
}

#[test]
fn a_model_file_above_the_size_limit() {
    let s = Setup::small();
    let f = std::fs::File::create(s.path("huge.safetensors")).unwrap();
    if f.set_len(recur::load::MAX_MODEL_FILE_BYTES + 1).is_err() {
        eprintln!("note: no sparse 64 GiB file on this filesystem; the case is skipped");
        return;
    }
    let out = s.run(
        "huge.safetensors",
        "input.safetensors",
        "output.safetensors",
    );
    assert_error(&out, &["huge.safetensors", "limit", "64 GiB"]);
    std::fs::remove_file(s.path("huge.safetensors")).unwrap();
    s.assert_untouched();
}

// ---- Outputs that cannot be written.

#[test]
fn output_directory_missing() {
    let s = Setup::small();
    let out = s.run(
        "model.safetensors",
        "input.safetensors",
        "missing/out.safetensors",
    );
    assert_error(&out, &["missing/out.safetensors", "does not exist"]);
    assert!(!s.path("missing").exists());
    s.assert_untouched();
}

#[test]
fn output_parent_is_a_regular_file() {
    let s = Setup::small();
    let out = s.run(
        "model.safetensors",
        "input.safetensors",
        "output.safetensors/out.safetensors",
    );
    assert_error(
        &out,
        &["output.safetensors/out.safetensors", "is not a directory"],
    );
    s.assert_untouched();
}

#[test]
fn output_is_a_directory() {
    let s = Setup::small();
    std::fs::create_dir(s.path("outdir")).unwrap();
    let out = s.run("model.safetensors", "input.safetensors", "outdir");
    assert_error(&out, &["outdir", "is a directory"]);
    assert_eq!(std::fs::read_dir(s.path("outdir")).unwrap().count(), 0);
    s.assert_untouched();
}

#[cfg(target_os = "linux")]
#[test]
fn output_under_proc_is_refused() {
    let s = Setup::small();
    if !Path::new("/proc/version").exists() {
        eprintln!("note: no /proc here; the case is skipped");
        return;
    }
    let before = std::fs::read("/proc/version").unwrap();
    let out = s.run("model.safetensors", "input.safetensors", "/proc/version");
    assert_error(&out, &["/proc/version"]);
    assert_eq!(std::fs::read("/proc/version").unwrap(), before);
    let out = s.run(
        "model.safetensors",
        "input.safetensors",
        "/proc/recur-out.safetensors",
    );
    assert_error(&out, &["/proc/recur-out.safetensors"]);
    assert!(!Path::new("/proc/recur-out.safetensors").exists());
    s.assert_untouched();
}

#[cfg(unix)]
#[test]
fn dev_full_as_output() {
    use std::os::unix::fs::FileTypeExt;
    if !Path::new("/dev/full").exists() {
        eprintln!("note: no /dev/full here; the case is skipped");
        return;
    }
    let s = Setup::small();
    let out = s.run("model.safetensors", "input.safetensors", "/dev/full");
    assert_error(&out, &["/dev/full", "No space left on device"]);
    // Written in place: renaming a temporary file over it would have replaced the device.
    let meta = std::fs::metadata("/dev/full").unwrap();
    assert!(
        meta.file_type().is_char_device(),
        "/dev/full is no longer a device"
    );
    assert_no_temp_files(Path::new("/dev"));
    s.assert_untouched();
}

#[cfg(unix)]
#[test]
fn dev_stdout_as_output_streams_the_file() {
    let s = Setup::small();
    let out = s.run("model.safetensors", "input.safetensors", "/dev/stdout");
    assert_success(&out, "recur run");
    let st = safetensors::SafeTensors::deserialize(&out.stdout).expect("a safetensors file");
    assert_eq!(st.tensor("output").unwrap().shape(), &[5, 2, 4]);
    assert_eq!(st.tensor("c_n").unwrap().shape(), &[1, 2, 4]);
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_filesystem_leaves_the_old_output() {
    // A 64 KiB tmpfs holding the old output; the new one (300 x 2 x 64 floats = 150 KiB) does
    // not fit. Mounting needs root (CI runs as root); elsewhere the case is skipped.
    let s = Setup::new(64, 300);
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(mnt.path())
        .stderr(Stdio::null())
        .status();
    if !matches!(mounted, Ok(st) if st.success()) {
        eprintln!("note: cannot mount a tmpfs here (needs root); the full-disk case is skipped");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(mnt.path());
    let target = mnt.path().join("out.safetensors");
    std::fs::write(&target, OLD_OUTPUT).unwrap();
    let t = target.to_str().unwrap();
    let (m, i) = (s.s("model.safetensors"), s.s("input.safetensors"));
    let out = run_with_deadline(&["run", "--model", &m, "--input", &i, "--output", t]);
    assert_error(
        &out,
        &[
            "out.safetensors",
            "No space left on device",
            "nothing was written",
        ],
    );
    assert_eq!(std::fs::read(&target).unwrap(), OLD_OUTPUT);
    assert_no_temp_files(mnt.path());
    // With room again the same run succeeds.
    std::fs::remove_file(&target).unwrap();
    let small = Setup::small();
    let (m, i) = (small.s("model.safetensors"), small.s("input.safetensors"));
    let out = run_with_deadline(&["run", "--model", &m, "--input", &i, "--output", t]);
    assert_success(&out, "recur run");
}

#[test]
fn a_failed_run_after_a_good_one_keeps_the_good_output() {
    let s = Setup::small();
    let out = s.run("model.safetensors", "input.safetensors", "good.safetensors");
    assert_success(&out, "recur run");
    let good = std::fs::read(s.path("good.safetensors")).unwrap();
    std::fs::write(s.path("bad_input.safetensors"), b"not a safetensors file").unwrap();
    let out = s.run(
        "model.safetensors",
        "bad_input.safetensors",
        "good.safetensors",
    );
    assert_error(&out, &["bad_input.safetensors"]);
    assert_eq!(std::fs::read(s.path("good.safetensors")).unwrap(), good);
    s.assert_untouched();
}
