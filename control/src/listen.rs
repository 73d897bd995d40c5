//! Accepting REST connections: a cap on connections in total and per client IP, header,
//! keep-alive-idle and TLS-handshake deadlines, a header-size limit, and an accept loop that
//! backs off (and logs once per second) when the process is out of file descriptors instead
//! of spinning on EMFILE. The caps and the log rate are sans-IO and unit-tested; the loop is
//! the I/O around them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::HttpConfig;
use crate::server::{Api, Client};

/// Open connections, in total and per client IP.
#[derive(Debug)]
pub struct ConnTable {
    max_total: usize,
    max_per_ip: usize,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

impl ConnTable {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            total: 0,
            per_ip: HashMap::new(),
        }
    }

    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refused> {
        if self.total >= self.max_total {
            return Err(Refused::Total);
        }
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    pub fn open(&self) -> usize {
        self.total
    }
}

/// One admitted connection; leaves the table when dropped.
struct Admitted {
    table: Arc<Mutex<ConnTable>>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.lock().unwrap().release(self.ip);
    }
}

/// At most one line per `every` for a recurring event: `hit` says when to log and how many
/// occurrences the line stands for.
#[derive(Debug)]
pub struct RateLog {
    every: Duration,
    last: Option<Instant>,
    count: u64,
}

impl RateLog {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            count: 0,
        }
    }

    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}

/// Whether an accept error means the process (or system) is out of a resource: back off
/// rather than retry at once.
fn exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// `max_connections = 0`: half the process's soft fd limit (the rest is for media sockets,
/// hooks and NATS).
pub fn connection_cap(cfg: &HttpConfig) -> usize {
    if cfg.max_connections > 0 {
        return cfg.max_connections;
    }
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur as usize
    } else {
        1024
    };
    (soft / 2).clamp(16, 1 << 20)
}

/// Serves REST on `listener` (TLS when `tls` is set) until `stop` changes.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>>,
    kind: crate::access::Listener,
    api: Arc<Api>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = api.core.cfg.http.clone();
    let table = Arc::new(Mutex::new(ConnTable::new(
        connection_cap(&cfg),
        cfg.max_connections_per_ip,
    )));
    let mut accept_errors = RateLog::new(Duration::from_secs(1));
    let mut refusals = RateLog::new(Duration::from_secs(1));
    let mut backoff = Duration::ZERO;
    loop {
        let acc = tokio::select! {
            _ = stop.changed() => return,
            acc = listener.accept() => acc,
        };
        let (stream, addr) = match acc {
            Ok(x) => {
                backoff = Duration::ZERO;
                x
            }
            Err(e) => {
                let out_of_fds = exhausted(&e);
                if let Some(n) = accept_errors.hit(Instant::now()) {
                    let open = table.lock().unwrap().open();
                    tracing::warn!(error = %e, count = n, open_connections = open, "REST accept failed (logged at most once per second)");
                }
                if out_of_fds {
                    // The pending connection stays in the backlog; retrying at once would
                    // spin. Connections closing (timeouts) free descriptors meanwhile.
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
                continue;
            }
        };
        let admitted = match table.lock().unwrap().admit(addr.ip()) {
            Ok(()) => Admitted {
                table: table.clone(),
                ip: addr.ip(),
            },
            Err(why) => {
                if let Some(n) = refusals.hit(Instant::now()) {
                    tracing::warn!(peer = %addr.ip(), count = n, cap = ?why, "REST connection refused: connection cap reached (http.max_connections / max_connections_per_ip; logged at most once per second)");
                }
                drop(stream);
                continue;
            }
        };
        let api = api.clone();
        // The acceptor in force now (SIGHUP may have replaced the certificate).
        let tls = tls.as_ref().map(|t| t.read().unwrap().clone());
        let local = stream.local_addr().unwrap_or(addr);
        let peer = Client {
            addr,
            local,
            listener: kind,
        };
        let cfg = cfg.clone();
        tokio::task::spawn(async move {
            let _admitted = admitted;
            let svc = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req, peer).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            // The header deadline also bounds the idle time between keep-alive requests
            // (hyper starts it whenever it waits for a request head).
            http.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_millis(cfg.header_timeout_ms.max(1)))
                .max_header_size(cfg.max_header_bytes);
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acc) => {
                    let deadline = Duration::from_millis(cfg.tls_handshake_timeout_ms.max(1));
                    match tokio::time::timeout(deadline, acc.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer.addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer.addr, "TLS handshake timed out")
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_total_and_per_ip_and_free_on_release() {
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let mut t = ConnTable::new(3, 2);
        assert_eq!(t.admit(a), Ok(()));
        assert_eq!(t.admit(a), Ok(()));
        assert_eq!(t.admit(a), Err(Refused::PerIp));
        assert_eq!(t.admit(b), Ok(()));
        assert_eq!(t.admit(c), Err(Refused::Total));
        t.release(a);
        assert_eq!(t.admit(c), Ok(()));
        assert_eq!(t.open(), 3);
        t.release(a);
        t.release(b);
        t.release(c);
        assert_eq!(t.open(), 0);
        assert!(t.per_ip.is_empty());
        t.release(c); // unknown: no underflow
        assert_eq!(t.open(), 0);
    }

    #[test]
    fn rate_log_speaks_once_per_period_with_the_count() {
        let mut r = RateLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(r.hit(t0), Some(1));
        for i in 1..1000 {
            assert_eq!(r.hit(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(r.hit(t0 + Duration::from_secs(1)), Some(1000));
        assert_eq!(r.hit(t0 + Duration::from_millis(1500)), None);
    }

    #[test]
    fn out_of_descriptors_is_told_apart() {
        assert!(exhausted(&std::io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!exhausted(&std::io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
