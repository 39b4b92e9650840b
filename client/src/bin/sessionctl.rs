//! `sessionctl`: the sessiond command-line client; everything lives in the library.

fn main() -> std::process::ExitCode {
    sessiond_client::cli::main()
}
