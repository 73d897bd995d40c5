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
            // Handlers first: a SIGHUP (systemctl reload) right after READY must not kill us.
            let signals = Signals::install();
            let server = Server::start(cfg).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1)
            });
            tracing::info!(url = %server.base_url(), "mediaserver ready");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            serve_until_stopped(signals, &server, config.as_deref());
            drop(server);
            tracing::info!("stopped");
        }
    }
}

/// The signal streams, registered before the server starts (a signal that arrives during
/// start-up waits in its stream instead of taking its default action).
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (term, int, hup) = rt.block_on(async {
            (
                signal(SignalKind::terminate()).expect("SIGTERM handler"),
                signal(SignalKind::interrupt()).expect("SIGINT handler"),
                signal(SignalKind::hangup()).expect("SIGHUP handler"),
            )
        });
        Signals { rt, term, int, hup }
    }
}

/// Waits for signals: SIGHUP reloads the config file, SIGTERM/SIGINT drain and return. A
/// second SIGTERM/SIGINT during the drain exits at once (status 1).
fn serve_until_stopped(sig: Signals, server: &Server, config: Option<&std::path::Path>) {
    let Signals {
        rt,
        mut term,
        mut int,
        mut hup,
    } = sig;
    let name = rt.block_on(async {
        loop {
            tokio::select! {
                _ = term.recv() => return "SIGTERM",
                _ = int.recv() => return "SIGINT",
                _ = hup.recv() => reload(server, config),
            }
        }
    });
    let timeout = std::time::Duration::from_millis(server.core.cfg.shutdown_timeout_ms);
    tracing::info!(
        signal = name,
        timeout_ms = timeout.as_millis() as u64,
        "shutting down: draining sessions (send the signal again to exit at once)"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let t0 = std::time::Instant::now();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let r = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.send(server.drain(timeout));
        });
        rt.block_on(async {
            tokio::select! {
                r = rx => r.ok(),
                _ = term.recv() => None,
                _ = int.recv() => None,
            }
        })
        .unwrap_or_else(|| {
            tracing::warn!("second signal during the drain: exiting now");
            std::process::exit(1)
        })
    });
    let ms = t0.elapsed().as_millis() as u64;
    if r.sessions_left + r.hooks_left == 0 {
        tracing::info!(
            players = r.players,
            publishers = r.publishers,
            ms,
            "drained: every session stopped and its hooks sent"
        );
    } else {
        tracing::warn!(
            players = r.players,
            publishers = r.publishers,
            sessions_left = r.sessions_left,
            hooks_left = r.hooks_left,
            ms,
            "drain deadline passed (shutdown_timeout_ms): exiting with work left"
        );
    }
}

/// SIGHUP: re-reads the config file and applies what can change at run time; a file that
/// does not load changes nothing.
fn reload(server: &Server, path: Option<&std::path::Path>) {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Reloading),
    ]);
    let text = match path.map(std::fs::read_to_string).transpose() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: cannot read the config file; nothing changed");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            return;
        }
    };
    match Config::load(text.as_deref()).and_then(|cfg| server.reload(&cfg)) {
        Ok(r) => {
            tracing::info!(changed = ?r.changed, "SIGHUP: configuration reloaded");
            if !r.needs_restart.is_empty() {
                tracing::warn!(settings = ?r.needs_restart, "SIGHUP: these settings changed in the file but need a restart; kept as they were");
            }
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: reload refused; nothing changed"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}
