//! `roomcast`: the command-line entry point.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use roomcast_server::{Server, ServerConfig};
use tracing::error;

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
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ROOMCAST_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve an echo socket at /echo (for conformance tests).
    #[arg(long, env = "ROOMCAST_ECHO")]
    echo: bool,
    /// Milliseconds a client may take to send its request head and finish the handshake.
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    handshake_timeout_ms: u64,
    /// Largest WebSocket message accepted, in bytes (larger ones close with 1009).
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_SIZE", default_value_t = 16 << 20)]
    max_message_size: usize,
    /// Largest WebSocket frame accepted, in bytes (larger ones close with 1009).
    #[arg(long, env = "ROOMCAST_MAX_FRAME_SIZE", default_value_t = 16 << 20)]
    max_frame_size: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roomcast: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("roomcast: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ServerConfig::default();
    config.listen = args.listen;
    config.echo = args.echo;
    config.handshake_timeout = Duration::from_millis(args.handshake_timeout_ms);
    config.max_message_size = args.max_message_size;
    config.max_frame_size = args.max_frame_size;
    let server = Server::bind(config).await?;
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.shutdown();
    });
    server.run().await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
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
