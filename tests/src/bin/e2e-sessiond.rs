//! The daemon binary, built inside this package so its tests can spawn it
//! (`CARGO_BIN_EXE_e2e-sessiond`); it is exactly `sessiond`.

fn main() -> std::process::ExitCode {
    sessiond::cli::main()
}
