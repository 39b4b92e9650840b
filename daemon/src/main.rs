//! The `sessiond` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    sessiond::cli::main()
}
