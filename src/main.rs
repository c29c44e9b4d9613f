//! The `recur` command: `recur run`, `recur info`, and with no arguments the bundled demo.
//! The logic lives in [`recur::cli`].

fn main() -> std::process::ExitCode {
    recur::cli::main()
}
