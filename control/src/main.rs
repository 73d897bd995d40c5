//! `mediaserver`: the server binary.

use clap::{Parser, Subcommand};
use control::{Config, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "mediaserver", version, about = "RTP/SRTP fan-out media server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (embedded default config unless --config is given).
    Run {
        /// TOML file overriding the embedded defaults.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Print the embedded default config.
    DefaultConfig,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::DefaultConfig => print!("{}", control::config::DEFAULT_TOML),
        Cmd::Run { config } => {
            let text = config.as_ref().map(|p| {
                std::fs::read_to_string(p).unwrap_or_else(|e| {
                    eprintln!("error: cannot read config {}: {e}", p.display());
                    std::process::exit(2)
                })
            });
            let cfg = Config::load(text.as_deref()).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(2)
            });
            let server = Server::start(cfg).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1)
            });
            tracing::info!(url = %server.base_url(), "mediaserver ready");
            wait_for_signal();
            tracing::info!("shutting down");
            drop(server);
        }
    }
}

fn wait_for_signal() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}
