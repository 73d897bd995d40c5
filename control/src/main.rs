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
    /// Log line format (on standard error): `text` (colour only on a terminal) or `json`
    /// (one JSON object per line, for journald/Loki/ELK).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to standard error, `RUST_LOG` filtered (default `info`); escape sequences only
/// when standard error is a terminal, so files and journald get plain text.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
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
    /// Operator commands in the reference server's (WCS's) words, against a running server:
    /// `mediaserver cli show apps`, `mediaserver cli update app defaultApp http://host/MyAPI`,
    /// ... (`mediaserver cli help` lists them). Without words: interactive, one command per
    /// line. Options go before the words.
    Cli {
        /// The server's REST base URL (default: from the config's http.listen).
        #[arg(long, env = "MEDIASERVER_URL")]
        server: Option<String>,
        /// Bearer token (default: the config's http.token).
        #[arg(long, env = "MEDIASERVER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The server's config file, for the URL and token (default: the embedded one).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// One command line, e.g. `show apps`; none = interactive.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Manage applications of a running server.
    Apps {
        /// The server's REST base URL [default: http://127.0.0.1:8081].
        #[arg(long, env = "MEDIASERVER_URL", global = true)]
        server: Option<String>,
        /// Bearer token (or env MEDIASERVER_TOKEN).
        #[arg(long, env = "MEDIASERVER_TOKEN", hide_env_values = true, global = true)]
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
        /// Hook base URL (or --url).
        url: Option<String>,
        #[arg(
            long = "url",
            id = "url_flag",
            value_name = "URL",
            conflicts_with = "url"
        )]
        url_flag: Option<String>,
    },
    /// Change an application's hook base URL.
    Update {
        key: String,
        /// Hook base URL (or --url).
        #[arg(required_unless_present = "url_flag")]
        url: Option<String>,
        #[arg(
            long = "url",
            id = "url_flag",
            value_name = "URL",
            conflicts_with = "url"
        )]
        url_flag: Option<String>,
    },
    /// Remove an application.
    Remove { key: String },
    /// Enable a REST method (hook), e.g. StreamKeepAliveEvent.
    AddRestMethod { key: String, method: String },
    /// Disable a REST method (hook).
    RemoveRestMethod { key: String, method: String },
}

fn apps(server: Option<String>, token: Option<String>, cmd: AppsCmd) -> Result<String, String> {
    use control::cli::{call, show, Target};
    use serde_json::json;
    let server = server.unwrap_or_else(|| {
        control::cli::server_url_from_config(&Config::load(None).expect("embedded config"))
    });
    let t = Target { server, token };
    let app = match cmd {
        AppsCmd::Show => return show(&t),
        AppsCmd::Add { key, url, url_flag } => call(
            &t,
            "/rest-api/admin/apps/add",
            json!({"key": key, "url": url.or(url_flag).unwrap_or_default()}),
        )?,
        AppsCmd::Update { key, url, url_flag } => call(
            &t,
            "/rest-api/admin/apps/update",
            json!({"key": key, "url": url.or(url_flag)}),
        )?,
        AppsCmd::Remove { key } => call(&t, "/rest-api/admin/apps/remove", json!({"key": key}))?,
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

/// Reads `--config FILE` (or the embedded default); exits 2 when it cannot.
fn load_config(path: Option<&std::path::Path>) -> Config {
    let text = path.map(|p| {
        std::fs::read_to_string(p).unwrap_or_else(|e| {
            eprintln!("error: cannot read config {}: {e}", p.display());
            std::process::exit(2)
        })
    });
    Config::load(text.as_deref()).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2)
    })
}

fn run_cli(
    server: Option<String>,
    token: Option<String>,
    config: Option<std::path::PathBuf>,
    words: Vec<String>,
) {
    use control::cli::{interactive, run_words, server_url_from_config, Target};
    let cfg = load_config(config.as_deref());
    let t = Target {
        server: server.unwrap_or_else(|| server_url_from_config(&cfg)),
        token: token.or(cfg.http.token),
    };
    if words.is_empty() {
        let stdin = std::io::stdin();
        if let Err(e) = interactive(&t, stdin.lock(), std::io::stdout(), std::io::stderr()) {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
        return;
    }
    match run_words(&t, &words) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.cmd {
        Cmd::DefaultConfig => print!("{}", control::config::DEFAULT_TOML),
        Cmd::Apps { server, token, cmd } => match apps(server, token, cmd) {
            Ok(out) => print!("{out}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1)
            }
        },
        Cmd::Cli {
            server,
            token,
            config,
            words,
        } => run_cli(server, token, config, words),
        Cmd::Run { config } => {
            let cfg = load_config(config.as_deref());
            if let Some((lo, hi)) =
                control::config::ephemeral_overlap(cfg.media.port_min, cfg.media.port_max)
            {
                tracing::warn!(
                    "media ports {lo}-{hi} are also Linux ephemeral ports \
                     (net.ipv4.ip_local_port_range): outgoing connections can take them; \
                     move media.port_min/port_max below the ephemeral range or narrow it"
                );
            }
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
