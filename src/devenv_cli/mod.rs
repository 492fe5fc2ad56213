//! `devenv`: the developer's client of the pod API, for use inside a devenv
//! pod. There the webhook has mounted the token and the CA at
//! `/var/run/secrets/tokens` and set `DEVENV_MANAGER_URL`, so
//! `devenv pods list --remote` needs no other flag.
//!
//! Errors print one line on standard error and exit 1; usage errors exit 2.

pub(crate) mod client;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::view::DeleteStatus;

pub use client::{ClientError, ManagerClient};
pub use output::{age, pod_table};

/// Where the webhook mounts the projected token (and the CA beside it).
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/tokens/devenv-manager";
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/tokens/ca.crt";

#[derive(Debug, Parser)]
#[command(
    name = "devenv",
    version,
    about = "List, inspect and delete your devenv pods through devenv-manager"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Your pods.
    #[command(subcommand)]
    Pods(PodsCommand),
}

#[derive(Debug, Subcommand)]
enum PodsCommand {
    /// List your pods (in every devenv namespace unless -n is given).
    List {
        #[command(flatten)]
        remote: Remote,
        /// Only this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show one of your pods.
    Get {
        name: String,
        #[command(flatten)]
        remote: Remote,
        #[arg(short = 'n', long)]
        namespace: String,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Delete one of your pods.
    Delete {
        name: String,
        #[command(flatten)]
        remote: Remote,
        #[arg(short = 'n', long)]
        namespace: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// How to reach the manager.
#[derive(Debug, Args)]
struct Remote {
    /// Ask devenv-manager's pod API (the only mode there is; required so that
    /// scripts keep working if a local mode is added).
    #[arg(long)]
    remote: bool,
    /// Base URL of the pod API.
    #[arg(long, env = "DEVENV_MANAGER_URL", value_name = "URL")]
    manager_url: Option<String>,
    /// PEM file of the CA that signed the manager's certificate
    /// [default: $DEVENV_MANAGER_CA, else /var/run/secrets/tokens/ca.crt].
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The service-account token for audience devenv-manager.
    #[arg(long, env = "DEVENV_TOKEN_FILE", value_name = "FILE", default_value = DEFAULT_TOKEN_FILE)]
    token_file: PathBuf,
    /// Allow a plain http:// manager URL that is not loopback: the token then
    /// crosses the network in clear text.
    #[arg(long)]
    insecure_http: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("devenv: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(message)) => {
            eprintln!("devenv: {message}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("devenv: {}", message.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

enum CliError {
    Usage(String),
    Failed(String),
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Failed(e.to_string())
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let Command::Pods(command) = cli.command;
    match command {
        PodsCommand::List {
            remote,
            namespace,
            output,
        } => {
            let client = connect(&remote)?;
            let list = client.list(namespace.as_deref()).await?;
            match output {
                Format::Json => print_json(&list)?,
                Format::Table if list.items.is_empty() => match &namespace {
                    Some(ns) => eprintln!("No pods of yours found in namespace {ns}."),
                    None => eprintln!("No pods of yours found."),
                },
                Format::Table => print!("{}", pod_table(&list.items, namespace.is_none(), now())),
            }
        }
        PodsCommand::Get {
            name,
            remote,
            namespace,
            output,
        } => {
            let client = connect(&remote)?;
            let pod = client.get(&namespace, &name).await?;
            match output {
                Format::Json => print_json(&pod)?,
                Format::Table => print!("{}", pod_table(std::slice::from_ref(&pod), false, now())),
            }
        }
        PodsCommand::Delete {
            name,
            remote,
            namespace,
        } => {
            let client = connect(&remote)?;
            let deleted = client.delete(&namespace, &name).await?;
            match deleted.status {
                DeleteStatus::Terminating => println!(
                    "pod {}/{} is terminating (graceful deletion started)",
                    deleted.namespace, deleted.name
                ),
                DeleteStatus::Deleted => {
                    println!("pod {}/{} deleted", deleted.namespace, deleted.name)
                }
            }
        }
    }
    Ok(())
}

fn connect(remote: &Remote) -> Result<ManagerClient, CliError> {
    if !remote.remote {
        return Err(CliError::Usage(
            "devenv pods works through devenv-manager only: add --remote".to_string(),
        ));
    }
    let Some(url) = remote.manager_url.as_deref().filter(|u| !u.is_empty()) else {
        return Err(CliError::Usage(
            "no manager URL: pass --manager-url or set DEVENV_MANAGER_URL".to_string(),
        ));
    };
    let ca = ca_source(
        remote.ca_file.clone(),
        std::env::var("DEVENV_MANAGER_CA").ok(),
    );
    Ok(ManagerClient::new(
        url,
        &remote.token_file,
        ca,
        remote.insecure_http,
    )?)
}

/// Where the CA comes from: `--ca-file`, else `$DEVENV_MANAGER_CA` (a file,
/// or the PEM itself), else the file mounted beside the token when present.
fn ca_source(flag: Option<PathBuf>, env: Option<String>) -> Option<client::Ca> {
    if let Some(path) = flag {
        return Some(client::Ca::File(path));
    }
    if let Some(value) = env.filter(|v| !v.trim().is_empty()) {
        return Some(if value.contains("-----BEGIN CERTIFICATE-----") {
            client::Ca::Pem(value.into_bytes())
        } else {
            client::Ca::File(PathBuf::from(value))
        });
    }
    let mounted = PathBuf::from(DEFAULT_CA_FILE);
    mounted.exists().then_some(client::Ca::File(mounted))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Failed(format!("cannot print JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_comes_from_the_flag_then_the_environment() {
        let from_flag = ca_source(Some("a.crt".into()), Some("b.crt".into()));
        assert!(
            matches!(from_flag, Some(client::Ca::File(p)) if p == std::path::Path::new("a.crt"))
        );
        let from_env = ca_source(None, Some("b.crt".into()));
        assert!(
            matches!(from_env, Some(client::Ca::File(p)) if p == std::path::Path::new("b.crt"))
        );
        let pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            ca_source(None, Some(pem.into())),
            Some(client::Ca::Pem(_))
        ));
    }

    #[test]
    fn command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "devenv", "pods", "get", "ws-0", "--remote", "-n", "devenv", "-o", "json",
        ])
        .unwrap();
        let Command::Pods(PodsCommand::Get {
            name,
            namespace,
            output,
            remote,
        }) = cli.command
        else {
            panic!("not get");
        };
        assert_eq!((name.as_str(), namespace.as_str()), ("ws-0", "devenv"));
        assert_eq!(output, Format::Json);
        assert!(remote.remote);
        // get and delete need a namespace.
        assert!(Cli::try_parse_from(["devenv", "pods", "delete", "x", "--remote"]).is_err());
    }
}
