//! The `stovepipe` binary: parses the command line and dispatches.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error
//! (the message names the bad key).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stovepipe_ports::SystemClock;
use stovepipe_server::auth::{Scope, mint_token};
use stovepipe_server::client::{Client, render_commits, render_queues};
use stovepipe_server::config::Settings;
use stovepipe_server::{api, demo, serve};

#[derive(Debug, Parser)]
#[command(
    name = "stovepipe",
    version,
    about = "At which commit is a branch, or a project inside it, green?"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "STOVEPIPE_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// A bearer token (see `stovepipe token mint`).
    #[arg(long, env = "STOVEPIPE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, poller and pipeline workers.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The first-run experience on a throw-away repository.
    Demo {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Keep serving after the walk-through (Ctrl-C to stop).
        #[arg(long)]
        keep_running: bool,
    },
    /// Apply database migrations.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Ask the server to ingest a queue's head (or a revision).
    Ingest {
        queue: String,
        #[arg(long)]
        rev: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The queue table, or one queue's recent commits.
    Status {
        queue: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Follow the event stream.
    Watch {
        /// Resume after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Token tools.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Mint an HS256 token with the configured secret.
    Mint {
        #[arg(long)]
        sub: String,
        #[arg(long = "scope", required = true, num_args = 1..)]
        scopes: Vec<String>,
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// A failure with its exit code.
enum Failure {
    Usage(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

fn load(config: Option<&PathBuf>) -> Result<Settings, Failure> {
    Settings::load(config.map(PathBuf::as_path)).map_err(|e| Failure::Usage(e.to_string()))
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("STOVEPIPE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("STOVEPIPE_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Colours only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config } => {
            let settings = load(config.as_ref())?;
            init_tracing();
            serve::serve(
                settings,
                Arc::new(SystemClock::default()),
                serve::shutdown_signal(),
            )
            .await?;
        }
        Command::Demo {
            listen,
            keep_running,
        } => {
            let listen = listen.parse().map_err(|_| {
                Failure::Usage(format!(
                    "--listen {listen:?}: expected an address like 127.0.0.1:8080"
                ))
            })?;
            demo::run(listen, keep_running).await?;
        }
        Command::Migrate { config } => {
            let settings = load(config.as_ref())?;
            init_tracing();
            stovepipe_server::wiring::Backend::open(&settings, Arc::new(SystemClock::default()))
                .await?;
            println!("migrations applied to {}", settings.database_url);
        }
        Command::Ingest { queue, rev, server } => {
            let body = Client::new(&server.server, server.token)
                .ingest(&queue, rev.as_deref())
                .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        }
        Command::Status {
            queue,
            json,
            server,
        } => {
            let client = Client::new(&server.server, server.token);
            let body = match &queue {
                Some(q) => client.commits(q, 30).await?,
                None => client.queues().await?,
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
            } else if queue.is_some() {
                print!("{}", render_commits(&body));
            } else {
                print!("{}", render_queues(&body));
            }
        }
        Command::Watch { after, server } => {
            Client::new(&server.server, server.token)
                .watch(after)
                .await?;
        }
        Command::Token {
            command:
                TokenCommand::Mint {
                    sub,
                    scopes,
                    ttl,
                    config,
                },
        } => {
            let settings = load(config.as_ref())?;
            if settings.auth.hs256_secret.is_empty() {
                return Err(Failure::Usage(
                    "auth.hs256_secret: not configured, so there is nothing to sign tokens with"
                        .into(),
                ));
            }
            let scopes = scopes
                .iter()
                .map(|s| s.parse::<Scope>().map_err(|_| Failure::Usage(format!("--scope {s:?}: expected one of read, ingest, builds:report, hooks:write, queues:write, admin"))))
                .collect::<Result<Vec<_>, _>>()?;
            let ttl: Duration = humantime::parse_duration(&ttl)
                .map_err(|e| Failure::Usage(format!("--ttl {ttl:?}: {e}")))?;
            let now = SystemClock::default();
            let token = mint_token(
                &settings.auth.hs256_secret,
                &settings.auth.issuer,
                &sub,
                &scopes,
                ttl,
                stovepipe_ports::Clock::now(&now).as_secs(),
            )
            .map_err(|e| Failure::Runtime(anyhow::anyhow!(e)))?;
            println!("{token}");
        }
        Command::Openapi => println!("{}", api::spec_json()),
    }
    Ok(())
}

/// mimalloc instead of glibc's allocator: the request paths allocate many
/// small short-lived buffers (HTTP, JSON, SQL values), and glibc's malloc
/// and free were about a tenth of a greenness read's time. Built without
/// transparent huge pages, which doubled the idle resident set
/// (decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
