//! `roomcast`: the command-line entry point.

mod bench;
mod client;
mod net;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use roomcast_server::config::DEFAULT_TOML;
use roomcast_server::{Config, Server};

#[derive(Parser, Debug)]
#[command(
    name = "roomcast",
    version,
    about = "A real-time WebSocket server: rooms, presence, history and recovery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, e.g. `info` or `roomcast_server=debug`.
    #[arg(long, global = true, env = "ROOMCAST_LOG", default_value = "info")]
    log: String,
    /// Log format: readable text or one JSON object per line.
    #[arg(long, global = true, env = "ROOMCAST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print the default configuration, with a comment on every setting.
    Config,
    /// Talk to a WebSocket server from a terminal: lines in, messages out (websocat-like);
    /// with --room, speak the roomcast protocol.
    Connect(client::ConnectArgs),
    /// Publish one message to a room (for scripts).
    Publish(client::PublishArgs),
    /// Make a token (JWT) the server accepts: for trying auth out, and for scripts.
    Token(token::TokenArgs),
    /// Load a WebSocket server (roomcast or any other) and measure it.
    Bench {
        #[command(subcommand)]
        scenario: bench::Scenario,
        /// Threads of the load generator (default: one per CPU).
        #[arg(long, global = true)]
        threads: Option<usize>,
    },
}

/// Flags override environment variables, which override the file, which overrides the
/// defaults (see `roomcast config`).
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A configuration file (TOML, the layout `roomcast config` prints).
    #[arg(long, env = "ROOMCAST_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (server.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Worker threads, 0 for one per CPU (server.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// Share rooms with other nodes through this broker: redis://HOST:PORT[/DB]
    /// (broker.url; ROOMCAST_BROKER_URL also sets it). Without it rooms live in memory.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// This node's name, sent in `welcome` and listed by /api/nodes (server.node_id).
    #[arg(long, value_name = "NAME")]
    node_id: Option<String>,
    /// Serve an echo socket at /echo, for conformance tests (server.echo).
    #[arg(long)]
    echo: bool,
    /// wss:// and https:// with this PEM certificate chain (tls.cert_file); read again
    /// on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (tls.key_file).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// wss:// and https:// with a self-signed certificate made now, its fingerprint
    /// printed (tls.self_signed): for development only.
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// Any setting, e.g. `--set rooms.history_max_messages=5000` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    // The process's one TLS provider (ring), for reqwest's clients as for our own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Config => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Connect(args) => client_runtime(client::connect(args)),
        Command::Publish(args) => client_runtime(client::publish::publish(args)),
        Command::Token(args) => token::run(args),
        Command::Bench { scenario, threads } => {
            // One thread means one: a multi-thread runtime would still run the main
            // future on the main thread, and the two would wake each other on one core.
            let mut rt = match threads {
                Some(1) => tokio::runtime::Builder::new_current_thread(),
                Some(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n.max(1));
                    b
                }
                None => tokio::runtime::Builder::new_multi_thread(),
            };
            let result = rt
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(bench::run(scenario)).map_err(|e| e.to_string()));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("roomcast bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            init_logging(&cli.log, cli.log_format);
            match serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("roomcast: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs a client command on a single-threaded runtime.
fn client_runtime(f: impl std::future::Future<Output = client::Outcome>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f).into(),
        Err(e) => {
            eprintln!("roomcast: cannot start the runtime: {e}");
            client::Outcome::ConnectFailed.into()
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut overrides = Vec::new();
    if let Some(listen) = args.listen {
        overrides.push(format!("server.listen={listen}"));
    }
    if let Some(workers) = args.workers {
        overrides.push(format!("server.workers={workers}"));
    }
    if let Some(url) = args.broker {
        overrides.push(format!("broker.url={url}"));
    }
    if let Some(name) = args.node_id {
        overrides.push(format!("server.node_id={name}"));
    }
    if args.echo {
        overrides.push("server.echo=true".to_owned());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        overrides.push(format!("tls.cert_file={}", cert.display()));
        overrides.push(format!("tls.key_file={}", key.display()));
    }
    if args.tls_self_signed {
        overrides.push("tls.self_signed=true".to_owned());
    }
    overrides.extend(args.set);
    let config = Config::load(args.config.as_deref(), std::env::vars(), &overrides)?;
    let server = Server::bind(config)?;
    // SIGINT and SIGTERM are handled from here on: installed before the address is
    // printed, so a script that signals as soon as it reads the line gets a drain, not
    // the signal's default (the end of the process).
    let stop = server.shutdown_handle();
    let reloader = server.tls_reloader();
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("roomcast-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(ready.send(Err(e))),
            };
            rt.block_on(async {
                match install_signals() {
                    Ok((signal, mut hangup)) => {
                        let _ = ready.send(Ok(()));
                        // SIGHUP: the TLS certificate and key are read again. Without
                        // them it is still taken, and said to do nothing: a reload sent to
                        // every node (`systemctl reload`) must not end the plain ones.
                        let files = reloader.watches_files();
                        let reloads = async move {
                            while hangup.recv().await.is_some() {
                                if !files {
                                    tracing::info!(
                                        "SIGHUP: nothing to reload (no tls.cert_file and tls.key_file)"
                                    );
                                    continue;
                                }
                                match reloader.reload() {
                                    Ok(()) => tracing::info!("SIGHUP: TLS files reloaded"),
                                    Err(e) => tracing::error!(
                                        "SIGHUP: TLS files not reloaded, the old certificate stays: {e}"
                                    ),
                                }
                            }
                        };
                        tokio::select! {
                            () = signal => {}
                            () = reloads => {}
                        }
                        tracing::info!("signal received: draining");
                        stop.shutdown();
                    }
                    Err(e) => drop(ready.send(Err(e))),
                }
            });
        })?;
    installed
        .recv()
        .map_err(|_| "the signal thread ended before installing its handlers")?
        .map_err(|e| format!("cannot handle SIGINT and SIGTERM: {e}"))?;
    // The address bound, on a line of its own on stdout: with `--listen 127.0.0.1:0` the
    // kernel picks a free port, and scripts and tests read it here instead of guessing one.
    // The socket already listens, so connecting as soon as this line is read is safe.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.local_addr()?);
        let _ = out.flush();
    }
    server.run_blocking()?;
    Ok(())
}

/// Registers SIGINT, SIGTERM and SIGHUP handlers now (inside a runtime); the future
/// resolves on the first SIGINT or SIGTERM, and the stream yields each SIGHUP.
#[cfg(unix)]
fn install_signals() -> std::io::Result<(
    impl std::future::Future<Output = ()>,
    tokio::signal::unix::Signal,
)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let hangup = signal(SignalKind::hangup())?;
    Ok((
        async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        },
        hangup,
    ))
}

/// Ctrl-C where there are no Unix signals.
#[cfg(not(unix))]
fn install_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
