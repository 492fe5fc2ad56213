//! `devenv-manager`: the server and its tooling. Everything lives in the library.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    devenv_manager::cli::main()
}
