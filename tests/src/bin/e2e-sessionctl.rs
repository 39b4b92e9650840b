//! `sessionctl`, built inside this package so its tests can spawn it
//! (`CARGO_BIN_EXE_e2e-sessionctl`).

fn main() -> std::process::ExitCode {
    sessiond_client::cli::main()
}
