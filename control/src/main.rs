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
    /// Manage applications of a running server.
    Apps {
        /// The server's REST base URL.
        #[arg(long, default_value = "http://127.0.0.1:8081", global = true)]
        server: String,
        /// Bearer token (or env MEDIASERVER_TOKEN).
        #[arg(long, env = "MEDIASERVER_TOKEN", global = true)]
        token: Option<String>,
        #[command(subcommand)]
        cmd: AppsCmd,
    },
}

#[derive(Subcommand)]
enum AppsCmd {
    /// List applications, their hook URLs and enabled REST methods.
    Show,
    /// Add an application.
    Add {
        key: String,
        #[arg(long, default_value = "")]
        url: String,
    },
    /// Change an application's hook base URL.
    Update {
        key: String,
        #[arg(long)]
        url: String,
    },
    /// Enable a REST method (hook), e.g. StreamKeepAliveEvent.
    AddRestMethod { key: String, method: String },
    /// Disable a REST method (hook).
    RemoveRestMethod { key: String, method: String },
}

fn apps(server: String, token: Option<String>, cmd: AppsCmd) -> Result<String, String> {
    use control::cli::{call, show, Target};
    use serde_json::json;
    let t = Target { server, token };
    let app = match cmd {
        AppsCmd::Show => return show(&t),
        AppsCmd::Add { key, url } => call(
            &t,
            "/rest-api/admin/apps/add",
            json!({"key": key, "url": url}),
        )?,
        AppsCmd::Update { key, url } => call(
            &t,
            "/rest-api/admin/apps/update",
            json!({"key": key, "url": url}),
        )?,
        AppsCmd::AddRestMethod { key, method } => call(
            &t,
            "/rest-api/admin/apps/add_rest_method",
            json!({"key": key, "method": method}),
        )?,
        AppsCmd::RemoveRestMethod { key, method } => call(
            &t,
            "/rest-api/admin/apps/remove_rest_method",
            json!({"key": key, "method": method}),
        )?,
    };
    Ok(format!("{app}\n"))
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
        Cmd::Apps { server, token, cmd } => match apps(server, token, cmd) {
            Ok(out) => print!("{out}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1)
            }
        },
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
