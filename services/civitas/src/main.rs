//! The `civitas` binary: runs the data space (`up`), one service (`connector`), and the tools that
//! talk to services (`load`, `token revoke`, `audit`). Every subcommand has `--help`.

mod audit;
mod demo;
mod load;
mod tokens;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use civitas_connector::{Application, Settings};
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: the services allocate and free many small JSON values
/// per request, from several threads (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Civitas: a governed, federated smart-city data space speaking NGSI-LD.
#[derive(Debug, Parser)]
#[command(name = "civitas", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole local data space: one connector per department, demo city loaded on first start.
    Up(up::UpArgs),
    /// Run one department's connector.
    Connector(ConnectorArgs),
    /// Run the broker: a connector whose settings have a [federation] section, forwarding
    /// queries and retrievals to the registered department connectors.
    Broker(ConnectorArgs),
    /// Bulk-load NGSI-LD entities (JSON or JSON-LD files or folders) into a connector.
    Load(load::LoadArgs),
    /// Create a new Ed25519 root key pair for a department; prints the public key.
    Keygen(tokens::KeygenArgs),
    /// Issue, attenuate and inspect capability tokens.
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Verify a service's audit log, and list its records.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Work with a policies folder (policies/<department>/).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policies folder; exit 1 with file:line messages on error.
    Check {
        /// The folder holding one sub-folder per department.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ConnectorArgs {
    /// The service's settings file (TOML); a broker's has a [federation] section.
    #[arg(long)]
    config: PathBuf,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`; overrides the file.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Address to listen on (e.g. 127.0.0.1:9092); overrides the file.
    #[arg(long)]
    listen: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = actix_web::rt::System::new().block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Connector(args) => run_connector(args, false).await,
            Command::Broker(args) => run_connector(args, true).await,
            Command::Load(args) => load::run(args).await,
            Command::Keygen(args) => tokens::keygen(args),
            Command::Token(command) => tokens::run(command).await,
            Command::Audit(command) => audit::run(command).await,
            Command::Policy(PolicyCommand::Check { dir }) => check_policies(&dir),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("error: {error:#}\n"),
            );
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CIVITAS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn check_policies(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match civitas_policy::check_tree(dir) {
        Ok(policies) => {
            let names: Vec<&str> = policies.iter().map(|p| p.department.as_str()).collect();
            writeln!(
                out,
                "{}: {} department(s) valid: {}",
                dir.display(),
                policies.len(),
                names.join(", ")
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(findings) => {
            for finding in &findings {
                writeln!(out, "{finding}")?;
            }
            writeln!(out, "{} problem(s)", findings.len())?;
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn run_connector(args: ConnectorArgs, broker: bool) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(&args.config)?;
    if broker && settings.federation.is_none() {
        anyhow::bail!(
            "{}: a broker's settings need a [federation] section (its departments: name, public_key, url)",
            args.config.display()
        );
    }
    let service = if settings.federation.is_some() {
        "broker"
    } else {
        "connector"
    };
    if let Some(url) = args.database_url {
        settings.database_url = Some(url);
    }
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    let department = settings.department.clone();
    let application = Application::build(settings)
        .await
        .with_context(|| format!("starting the {service}"))?;
    tracing::info!(%department, url = %application.public_url(), "{service} ready");
    application.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}
