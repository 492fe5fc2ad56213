//! The `devenv-manager` command line: `serve` and the tooling around it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::Config;
use crate::webhook::registration::{self, Endpoint};
use crate::webhook::{Webhook, offline};

#[derive(Debug, Parser)]
#[command(
    name = "devenv-manager",
    version,
    about = "Admission webhook, LearnerSpace operator and pod API for devenv clusters"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the webhook, operator, pod API, probes and metrics.
    Serve(ConfigArg),
    /// Print the LearnerSpace CRD (generated from the Rust types).
    Crd,
    /// Certificate tooling.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Print both webhook configurations, with the CA bundle filled in.
    WebhookConfig(WebhookConfigArgs),
    /// Run the webhook's mutation and validation offline on manifests.
    Admit(AdmitArgs),
    /// Print, as YAML, every object the operator would create for the
    /// LearnerSpace(s) in a file.
    Render(RenderArgs),
    /// Check a running installation from inside the cluster: the webhook,
    /// the pod API's health and the metrics endpoint (the chart's `helm test`).
    Check(CheckArgs),
    /// Delete both devenv-manager webhook configurations, as the in-cluster
    /// (or kubeconfig's) identity: the chart's pre-delete hook.
    Unregister,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The webhook's base URL.
    #[arg(long, default_value = "https://devenv-manager.devenv-system.svc:443")]
    webhook_url: String,
    /// The pod API's base URL.
    #[arg(long, default_value = "https://devenv-manager.devenv-system.svc:8080")]
    api_url: String,
    /// The metrics endpoint's base URL (plain HTTP).
    #[arg(long)]
    metrics_url: String,
    /// PEM file of the CA that signed the serving certificate.
    #[arg(long, value_name = "FILE")]
    ca: PathBuf,
    /// The namespace of the LearnerSpace sent to the webhook (`operator.namespace`).
    #[arg(long, default_value = "aivo-system")]
    learnerspace_namespace: String,
    /// How long each check is retried before it fails.
    #[arg(long, default_value_t = 60)]
    timeout_seconds: u64,
    /// The namespace this runs in: its Services' addresses are read from the
    /// environment Kubernetes sets (no cluster DNS needed).
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// File with one or more LearnerSpaces (multi-document YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// YAML configuration file; every key is optional.
    #[arg(long, env = "DEVENV_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Write ca.crt, tls.crt and tls.key: a new CA and a serving certificate it signed.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// DNS names (or IP addresses) of the serving certificate; repeatable.
        /// Default: the in-cluster service names, localhost and 127.0.0.1.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Also write ca.key (mode 0600), to sign later certificates with
        /// the same CA. Without it the CA's key is thrown away.
        #[arg(long)]
        keep_ca_key: bool,
    },
}

#[derive(Debug, Args)]
struct WebhookConfigArgs {
    /// PEM file of the CA that signed the webhook's serving certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Reach the webhook at this base URL (`https://host:port`) instead of
    /// through the Service: for out-of-cluster runs and tests.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, default_value = crate::certs::startup::SERVICE_NAME)]
    service_name: String,
    #[arg(long, default_value = crate::certs::startup::DEFAULT_NAMESPACE)]
    service_namespace: String,
    #[arg(long, default_value_t = 443)]
    service_port: i32,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
struct AdmitArgs {
    /// Manifest file (multi-document YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Namespace for objects that name none (as `kubectl apply -n`).
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    config: ConfigArg,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("devenv-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(args.config.as_deref())?;
            init_logging(&config.log_level);
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(crate::serve::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", crate::crd::crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(CertsCommand::Generate {
            out,
            dns,
            keep_ca_key,
        }) => {
            let names = if dns.is_empty() {
                crate::certs::startup::service_names(crate::certs::startup::DEFAULT_NAMESPACE)
            } else {
                dns
            };
            let generated = crate::tls::generate(&names)?;
            generated.write(&out)?;
            if keep_ca_key {
                generated.write_ca_key(&out)?;
            }
            eprintln!(
                "wrote {0}/ca.crt, {0}/tls.crt, {0}/tls.key{1} for {2}",
                out.display(),
                if keep_ca_key { ", ca.key" } else { "" },
                names.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::WebhookConfig(args) => {
            let config = load_config(args.config.config.as_deref())?;
            let ca = match &args.ca_file {
                Some(path) => {
                    crate::tls::load_certs(path)?;
                    Some(
                        std::fs::read(path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    )
                }
                None => None,
            };
            let endpoint = match args.url {
                Some(url) => Endpoint::Url(url),
                None => Endpoint::Service {
                    name: args.service_name,
                    namespace: args.service_namespace,
                    port: args.service_port,
                },
            };
            let (mutating, validating) =
                registration::configurations(&config, &endpoint, ca.as_deref());
            print!("{}", registration::to_yaml(&mutating, &validating)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Admit(args) => admit(args),
        Command::Render(args) => render(args),
        Command::Check(args) => check(args),
        Command::Unregister => unregister(),
    }
}

/// Every probe of `devenv-manager check`, a line each; fails on the first
/// that does not pass within the timeout.
fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    init_logging("info");
    let targets = crate::check::Targets {
        webhook: args.webhook_url,
        api: args.api_url,
        metrics: args.metrics_url,
        ca: args.ca,
        learnerspace_namespace: args.learnerspace_namespace,
        timeout: std::time::Duration::from_secs(args.timeout_seconds),
        pod_namespace: args.pod_namespace,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    for line in runtime.block_on(crate::check::run(&targets))? {
        eprintln!("ok: {line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn unregister() -> anyhow::Result<ExitCode> {
    init_logging("info");
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let lines = runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("cannot reach the Kubernetes API server")?;
        Ok::<_, anyhow::Error>(crate::webhook::unregister::delete_configurations(client).await?)
    })?;
    for line in lines {
        eprintln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// The documents of a manifest file, or of standard input for `-`.
fn read_documents(file: &Path) -> anyhow::Result<Vec<Value>> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    crate::yaml::from_yaml_stream(&text).with_context(|| file.display().to_string())
}

/// Every object the operator would create, for each LearnerSpace of the file.
fn render(args: RenderArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.config.as_deref())?;
    let mut objects = Vec::new();
    for (i, document) in read_documents(&args.file)?.into_iter().enumerate() {
        if document.get("kind").and_then(Value::as_str) != Some("LearnerSpace") {
            eprintln!("document {}: not a LearnerSpace; skipped", i + 1);
            continue;
        }
        let ls: crate::crd::LearnerSpace = serde_json::from_value(document)
            .with_context(|| format!("document {}: not a valid LearnerSpace", i + 1))?;
        let desired = crate::operator::objects::desired(&ls, &config.operator)
            .with_context(|| format!("document {}", i + 1))?;
        objects.extend(desired.to_values());
    }
    if objects.is_empty() {
        anyhow::bail!("{}: no LearnerSpace found", args.file.display());
    }
    print!("{}", crate::yaml::to_yaml_stream(&objects)?);
    Ok(ExitCode::SUCCESS)
}

fn admit(args: AdmitArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args.config.config.as_deref())?;
    let documents = read_documents(&args.file)?;
    let webhook = Webhook::new(&config);
    let results = offline::admit_all(&webhook, documents, &args.namespace);

    let mut denied = 0;
    let mut out = Vec::new();
    for result in &results {
        for warning in &result.warnings {
            eprintln!("warning: {}: {warning}", result.subject);
        }
        if result.denied() {
            denied += 1;
            eprintln!("DENIED {}:", result.subject);
            for error in &result.errors {
                eprintln!("  - {error}");
            }
        } else {
            if result.mutated {
                eprintln!("mutated {}", result.subject);
            }
            out.push(result.object.clone());
        }
    }
    print!("{}", crate::yaml::to_yaml_stream(&out)?);
    if denied > 0 {
        eprintln!("{denied} of {} object(s) denied", results.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// JSON log lines on standard output; `RUST_LOG` wins over `LOG_LEVEL`, which
/// `Config::load` already folded into `level`.
fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_env_filter(filter)
        .try_init();
}
