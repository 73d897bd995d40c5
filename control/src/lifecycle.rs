//! A running server's life: start (engine, hooks, cluster, listeners), readiness, the
//! SIGTERM drain, the SIGHUP reload, and the final stop.
//!
//! Drain order (docs in README "Lifecycle"): new sessions get 503 and `/ready` 503; players
//! are stopped, then publishers, through the normal path (info "Server shutdown"), so each
//! gets its StreamStatusEvent and stopStream/unPublishStream; the drain waits until every
//! session is released and every hook sent, or `shutdown_timeout_ms`; then the listeners
//! close and the node leaves the cluster.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::access::{Listener, Tokens};
use crate::config::Config;
use crate::core::Core;
use crate::registry::{Filter, RelayMatch};
use crate::server::Api;

/// Info of every session the drain stops.
pub const SHUTDOWN_INFO: &str = "Server shutdown";

/// A running server (engine + REST). Dropping it shuts everything down.
pub struct Server {
    pub core: Arc<Core>,
    pub http_addr: SocketAddr,
    /// The HTTPS address and the certificate file it serves, when enabled.
    pub https: Option<(SocketAddr, std::path::PathBuf)>,
    /// The `http.control_listen` address, when configured.
    pub control_addr: Option<SocketAddr>,
    hooks: Arc<crate::hooks::Hooks>,
    api: Arc<std::sync::OnceLock<Arc<Api>>>,
    tls: Option<Arc<RwLock<tokio_rustls::TlsAcceptor>>>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub players: usize,
    pub publishers: usize,
    /// Sessions still not released by their shard at the deadline.
    pub sessions_left: usize,
    /// Hooks not sent by the deadline.
    pub hooks_left: usize,
}

/// What a reload changed, and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub changed: Vec<&'static str>,
    /// Settings that differ in the file but need a restart to take effect.
    pub needs_restart: Vec<&'static str>,
}

fn bind(addr: SocketAddr, what: &str) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| format!("{what} on {addr}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

fn tokens(cfg: &Config, control_addr: Option<SocketAddr>) -> Tokens {
    Tokens {
        control: cfg.http.token.clone(),
        public: cfg.http.public_token.clone(),
        control_listener: control_addr,
    }
}

impl Server {
    pub fn start(cfg: Config) -> Result<Server, String> {
        let core = Core::start(cfg.clone()).map_err(|e| format!("start: {e}"))?;
        let std_listener = bind(cfg.http.listen, "http listen")?;
        let http_addr = std_listener.local_addr().map_err(|e| e.to_string())?;
        let control_listener = cfg
            .http
            .control_listen
            .map(|a| bind(a, "http control_listen"))
            .transpose()?;
        let control_addr = control_listener
            .as_ref()
            .map(|l| l.local_addr().map_err(|e| e.to_string()))
            .transpose()?;
        let mut https = None;
        let mut tls_listener = None;
        let mut tls = None;
        if cfg.https.enabled {
            let (sc, cert) = crate::tls::server_config(&cfg.https, &cfg.auto_cert_dir())?;
            let l = bind(cfg.https.listen, "https listen")?;
            https = Some((l.local_addr().map_err(|e| e.to_string())?, cert));
            let acc = Arc::new(RwLock::new(tokio_rustls::TlsAcceptor::from(sc)));
            tls = Some(acc.clone());
            tls_listener = Some((l, acc));
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        let hooks = crate::hooks::Hooks::new(core.clone(), &cfg.hooks)?;
        if cfg.cluster.enabled {
            cfg.cluster
                .nats_url
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("config: cluster.nats_url `{}`: {e}", cfg.cluster.nats_url))?;
        }
        let api_cell = Arc::new(std::sync::OnceLock::new());
        let (core2, hooks2, cell2) = (core.clone(), hooks.clone(), api_cell.clone());
        let toks = tokens(&cfg, control_addr);
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(run(
                    core2,
                    hooks2,
                    toks,
                    cell2,
                    Listeners {
                        http: std_listener,
                        control: control_listener,
                        tls: tls_listener,
                    },
                    rx,
                ));
            })
            .map_err(|e| e.to_string())?;
        if cfg.http.token.is_none() && control_addr.is_none() {
            tracing::info!(
                "control API (find, terminate, admin, metrics) answers loopback clients only: \
                 set http.token, or http.control_listen, to open it to the network"
            );
        }
        if let (None, Some(a)) = (&cfg.http.token, control_addr) {
            if !a.ip().is_loopback() {
                tracing::warn!(addr = %a, "http.control_listen is not on loopback and http.token is unset: anyone who reaches it controls every stream");
            }
        }
        Ok(Server {
            core,
            http_addr,
            https,
            control_addr,
            hooks,
            api: api_cell,
            tls,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// SIGTERM: refuses new sessions, stops players then publishers with "Server shutdown"
    /// and waits until they are released and their hooks sent, at most `timeout`.
    pub fn drain(&self, timeout: Duration) -> DrainReport {
        let deadline = Instant::now() + timeout;
        self.core.start_draining();
        let of = |published| Filter {
            published: Some(published),
            relay: RelayMatch::Any,
            ..Default::default()
        };
        let mut players = self.core.terminate(&of(false), SHUTDOWN_INFO).len();
        let mut publishers = self.core.terminate(&of(true), SHUTDOWN_INFO).len();
        let all = Filter {
            all: true,
            relay: RelayMatch::Any,
            ..Default::default()
        };
        loop {
            // Whatever is still registered ends too: a create that passed its draining check
            // before the flag was set may register its session only now.
            if self.core.session_count() > 0 {
                for r in self.core.terminate(&all, SHUTDOWN_INFO) {
                    *if r.published {
                        &mut publishers
                    } else {
                        &mut players
                    } += 1;
                }
            }
            let sessions_left = self.core.session_count() + self.core.stopping_count();
            let hooks_left = self.hooks.outstanding();
            if (sessions_left == 0 && hooks_left == 0) || Instant::now() >= deadline {
                return DrainReport {
                    players,
                    publishers,
                    sessions_left,
                    hooks_left,
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGHUP: applies apps, hook settings, tokens and the TLS certificate from `cfg`. All
    /// or nothing: an app list or certificate that fails to load changes nothing.
    pub fn reload(&self, cfg: &Config) -> Result<ReloadReport, String> {
        let old = &self.core.cfg;
        let tls = match (&self.tls, cfg.https.enabled) {
            // The generated certificate stays where it is (data_dir needs a restart).
            (Some(_), true) => Some(
                crate::tls::server_config(&cfg.https, &old.auto_cert_dir())
                    .map_err(|e| format!("TLS: {e}"))?
                    .0,
            ),
            _ => None,
        };
        // Validates before anything changes; applied below.
        crate::apps::effective(&cfg.apps, &old.apps_state_path())?;
        let mut r = ReloadReport::default();
        self.core.reload_apps(&cfg.apps)?;
        r.changed.push("apps");
        self.hooks.reload(&cfg.hooks);
        r.changed.push("hooks");
        match self.api.get() {
            Some(api) => {
                *api.tokens.write().unwrap() = Arc::new(tokens(cfg, self.control_addr));
                r.changed.push("tokens");
            }
            // Only while the control thread is still starting (the cluster's first connect).
            None => r
                .needs_restart
                .push("http.token / public_token (server still starting: send SIGHUP again)"),
        }
        if let (Some(acc), Some(sc)) = (&self.tls, tls) {
            *acc.write().unwrap() = tokio_rustls::TlsAcceptor::from(sc);
            r.changed.push("tls");
        }
        let differs = |a: String, b: String| a != b;
        for (name, d) in [
            (
                "http.listen / https / control_listen",
                differs(
                    format!(
                        "{:?}{:?}{:?}",
                        old.http.listen, old.https.enabled, old.https.listen
                    ) + &format!("{:?}", old.http.control_listen),
                    format!(
                        "{:?}{:?}{:?}",
                        cfg.http.listen, cfg.https.enabled, cfg.https.listen
                    ) + &format!("{:?}", cfg.http.control_listen),
                ),
            ),
            (
                "media",
                differs(format!("{:?}", old.media), format!("{:?}", cfg.media)),
            ),
            (
                "cluster",
                differs(format!("{:?}", old.cluster), format!("{:?}", cfg.cluster)),
            ),
            (
                "hooks.max_concurrency / ca_file",
                differs(
                    format!("{}{:?}", old.hooks.max_concurrency, old.hooks.ca_file),
                    format!("{}{:?}", cfg.hooks.max_concurrency, cfg.hooks.ca_file),
                ),
            ),
            (
                "http limits (max_body, timeouts, connection caps, max_header_bytes)",
                differs(
                    format!(
                        "{} {} {} {} {} {} {}",
                        old.http.max_body,
                        old.http.header_timeout_ms,
                        old.http.body_timeout_ms,
                        old.http.tls_handshake_timeout_ms,
                        old.http.max_header_bytes,
                        old.http.max_connections,
                        old.http.max_connections_per_ip
                    ),
                    format!(
                        "{} {} {} {} {} {} {}",
                        cfg.http.max_body,
                        cfg.http.header_timeout_ms,
                        cfg.http.body_timeout_ms,
                        cfg.http.tls_handshake_timeout_ms,
                        cfg.http.max_header_bytes,
                        cfg.http.max_connections,
                        cfg.http.max_connections_per_ip
                    ),
                ),
            ),
            (
                "shutdown_timeout_ms / https.auto_cert_dir",
                differs(
                    format!("{} {:?}", old.shutdown_timeout_ms, old.https.auto_cert_dir),
                    format!("{} {:?}", cfg.shutdown_timeout_ms, cfg.https.auto_cert_dir),
                ),
            ),
            (
                "data_dir / node_id",
                differs(
                    format!("{:?}{}", old.data_dir, old.node_id),
                    format!("{:?}{}", cfg.data_dir, cfg.node_id),
                ),
            ),
        ] {
            if d {
                r.needs_restart.push(name);
            }
        }
        Ok(r)
    }
}

struct Listeners {
    http: std::net::TcpListener,
    control: Option<std::net::TcpListener>,
    tls: Option<(
        std::net::TcpListener,
        Arc<RwLock<tokio_rustls::TlsAcceptor>>,
    )>,
}

/// The control thread: hooks, cluster, REST listeners, until `stop`.
async fn run(
    core: Arc<Core>,
    hooks: Arc<crate::hooks::Hooks>,
    toks: Tokens,
    cell: Arc<std::sync::OnceLock<Arc<Api>>>,
    l: Listeners,
    rx: tokio::sync::watch::Receiver<bool>,
) {
    hooks.spawn_background(rx.clone());
    let cluster = if core.cfg.cluster.enabled {
        match crate::cluster::Cluster::start(core.clone()).await {
            Ok(c) => {
                // Publishers' ends release their directory entries.
                let mut crx = core.subscribe_async();
                let c2 = c.clone();
                tokio::spawn(async move {
                    while let Some(ch) = crx.recv().await {
                        c2.on_status(&ch);
                    }
                });
                Some(c)
            }
            Err(e) => {
                tracing::error!(error = %e, "cluster start failed; running without it");
                None
            }
        }
    } else {
        None
    };
    let api = Arc::new(Api {
        core,
        hooks,
        cluster: cluster.clone(),
        tokens: RwLock::new(Arc::new(toks)),
    });
    let _ = cell.set(api.clone());
    if let Some(c) = &cluster {
        tokio::spawn(api.clone().serve_cluster_rest(c.clone()));
    }
    let mut tasks = Vec::new();
    let http = TcpListener::from_std(l.http).expect("listener");
    tracing::info!(addr = %http.local_addr().unwrap(), "REST API listening (http)");
    if let Some((tl, acc)) = l.tls {
        let tl = TcpListener::from_std(tl).expect("listener");
        tracing::info!(addr = %tl.local_addr().unwrap(), "REST API listening (https)");
        tasks.push(tokio::spawn(crate::listen::serve(
            tl,
            Some(acc),
            Listener::Main,
            api.clone(),
            rx.clone(),
        )));
    }
    if let Some(cl) = l.control {
        let cl = TcpListener::from_std(cl).expect("listener");
        tracing::info!(addr = %cl.local_addr().unwrap(), "control API listening (http.control_listen)");
        tasks.push(tokio::spawn(crate::listen::serve(
            cl,
            None,
            Listener::Control,
            api.clone(),
            rx.clone(),
        )));
    }
    crate::listen::serve(http, None, Listener::Main, api, rx).await;
    for t in tasks {
        let _ = t.await;
    }
    if let Some(c) = cluster {
        c.leave().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
