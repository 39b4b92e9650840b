//! The `sessiond-http` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    sessiond_http::main()
}
