//! The `voicekit-bridge` command line: run the daemon, check a config, simulate a call.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use voicekit_bridge::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "voicekit-bridge",
    version,
    about = "LiveKit webhooks in, VoiceKit call events out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct ConfigArg {
    /// The TOML configuration file.
    #[arg(
        long,
        env = "VOICEKIT_BRIDGE_CONFIG",
        default_value = "/etc/voicekit-bridge/config.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(ConfigArg),
    /// Validate a configuration file: exit 0, or non-zero naming the bad key.
    CheckConfig(ConfigArg),
    /// Play one complete call as LiveKit would against the running daemon.
    Simulate {
        #[command(flatten)]
        config: ConfigArg,
        /// The workflow to simulate (default: the first one).
        #[arg(long)]
        workflow: Option<String>,
        /// How long to wait for the three VoiceKit events.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
}

fn load(arg: &ConfigArg) -> Result<Config, ExitCode> {
    Config::load(&arg.config).map_err(|e| {
        eprintln!("error: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(arg) => match load(&arg) {
            Ok(c) => {
                println!(
                    "{}: OK ({} workflow(s), {} LiveKit key(s))",
                    arg.config.display(),
                    c.workflows.len(),
                    c.livekit.keys.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(arg) => {
            let config = match load(&arg) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config);
            let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
            match runtime.block_on(voicekit_bridge::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("fatal: {e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Simulate {
            config,
            workflow,
            timeout_secs,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
            let timeout = std::time::Duration::from_secs(timeout_secs);
            match runtime.block_on(voicekit_bridge::simulate::run(
                &config,
                workflow.as_deref(),
                timeout,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
