//! `devenv`: the developer's client of the pod API. Everything lives in the
//! library (`devenv_manager::devenv_cli`).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    devenv_manager::devenv_cli::main()
}
