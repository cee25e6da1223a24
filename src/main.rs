//! The `voicekit-bridge` command line: run the daemon, check a config, simulate a call,
//! and the operator's tools (calls, deliveries, send-test-event).

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use voicekit_bridge::{
    cli::{operator::OperatorClient, test_event},
    config::{Config, LogFormat},
    daemon::{self, RunOptions},
    reload::LogLevelSetter,
};

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
    /// Calls as the running daemon knows them (through its operator API).
    Calls {
        #[command(subcommand)]
        command: CallsCommand,
    },
    /// Deliveries of VoiceKit events: list, retry one, replay failed ones.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Workflows' events endpoints: list them (disabled after a 410 Gone), enable one.
    Endpoints {
        #[command(subcommand)]
        command: EndpointsCommand,
    },
    /// Post a signed sample event to a workflow's endpoint and print the response.
    SendTestEvent {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        workflow: String,
        /// call_started, call_ended or call_finalized.
        #[arg(long, default_value = "call_started")]
        event: String,
    },
}

#[derive(Subcommand)]
enum CallsCommand {
    /// The newest calls.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// waiting, in_progress, ended or finalized.
        #[arg(long)]
        phase: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One call with its LiveKit events, VoiceKit events and every delivery attempt.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// Deliveries, newest first.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        /// A workflow slug.
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send one delivery again now.
    Retry {
        #[command(flatten)]
        config: ConfigArg,
        id: i64,
    },
    /// Send again every failed delivery of a workflow created in [since, until).
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        workflow: String,
        /// RFC 3339, e.g. 2026-12-01T00:00:00Z.
        #[arg(long)]
        since: String,
        #[arg(long)]
        until: String,
    },
}

#[derive(Subcommand)]
enum EndpointsCommand {
    /// Each workflow's events endpoint, and whether it is disabled.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Enable an endpoint that answered 410 Gone: its held events are sent.
    Enable {
        #[command(flatten)]
        config: ConfigArg,
        /// The endpoint's URL, as `endpoints list` shows it.
        url: String,
    },
}

/// Threads for blocking work (file I/O, DNS lookups, the SQLite writer) at most; with
/// the workers, well under the unit's `TasksMax=`.
const MAX_BLOCKING_THREADS: usize = 128;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .expect("starting the tokio runtime")
}

/// Runs a command's future on a fresh runtime and turns its error into an exit code.
fn block_on(future: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = runtime();
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(arg: &ConfigArg) -> Result<Config, ExitCode> {
    Config::load(&arg.config).map_err(|e| {
        eprintln!("error: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

/// Logs to stderr: text (coloured on a terminal) or one JSON object per line. Returns
/// how a reload changes the level, or `None` when a valid `RUST_LOG` decides it (it wins
/// over `log.level`; an empty one counts as unset).
fn init_logging(config: &Config) -> Option<LogLevelSetter> {
    use tracing_subscriber::{Layer, fmt, layer::SubscriberExt, reload, util::SubscriberInitExt};

    let from_env = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok());
    let env_wins = from_env.is_some();
    let (filter, handle) =
        reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new(&config.log.level)));
    let output = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let output = match config.log.format {
        LogFormat::Json => output.json().boxed(),
        LogFormat::Text => output.boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    if env_wins {
        return None;
    }
    Some(Box::new(move |level: &str| {
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }))
}

/// Runs an operator command against the daemon named by the config's `[api]`.
fn operator<F, Fut>(arg: &ConfigArg, command: F) -> ExitCode
where
    F: FnOnce(OperatorClient) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    match load(arg) {
        Ok(config) => block_on(command(OperatorClient::new(&config))),
        Err(code) => code,
    }
}

fn main() -> ExitCode {
    // Only with the `failpoints` feature: arms the fail points `FAILPOINTS` names.
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
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
                for warning in &c.warnings {
                    eprintln!("warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run(arg) => {
            let config = match load(&arg) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let options = RunOptions {
                config_path: Some(std::path::absolute(&arg.config).unwrap_or(arg.config)),
                set_log_level: init_logging(&config),
            };
            let runtime = runtime();
            let result = runtime.block_on(daemon::run_with(config, options));
            // Whatever still runs after the stop grace must not hold the exit back.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
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
            let timeout = std::time::Duration::from_secs(timeout_secs);
            block_on(voicekit_bridge::cli::simulate::run(
                &config,
                workflow.as_deref(),
                timeout,
            ))
        }
        Command::SendTestEvent {
            config,
            workflow,
            event,
        } => match load(&config) {
            Ok(c) => block_on(async move { test_event::run(&c, &workflow, &event).await }),
            Err(code) => code,
        },
        Command::Calls { command } => match command {
            CallsCommand::List {
                config,
                phase,
                limit,
                json,
            } => operator(&config, |c| async move {
                c.list_calls(phase, limit, json).await
            }),
            CallsCommand::Show { config, id, json } => {
                operator(&config, |c| async move { c.show_call(id, json).await })
            }
        },
        Command::Deliveries { command } => match command {
            DeliveriesCommand::List {
                config,
                status,
                workflow,
                limit,
                json,
            } => operator(&config, |c| async move {
                c.list_deliveries(status, workflow, limit, json).await
            }),
            DeliveriesCommand::Retry { config, id } => {
                operator(&config, |c| async move { c.retry(id).await })
            }
            DeliveriesCommand::Replay {
                config,
                workflow,
                since,
                until,
            } => operator(&config, |c| async move {
                c.replay(&workflow, &since, &until).await
            }),
        },
        Command::Endpoints { command } => match command {
            EndpointsCommand::List { config, json } => {
                operator(&config, |c| async move { c.list_endpoints(json).await })
            }
            EndpointsCommand::Enable { config, url } => {
                operator(&config, |c| async move { c.enable_endpoint(&url).await })
            }
        },
    }
}
