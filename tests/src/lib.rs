//! Helpers shared by the end-to-end tests in `tests/tests/`: start a real server on loopback,
//! call its REST API over HTTP, and act as RTP publishers and players over UDP.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub mod clients;

use control::{Config, Server};
use serde_json::Value;

/// Starts a server on 127.0.0.1 with `shards` shards and an ephemeral HTTP port.
pub fn start(shards: usize) -> Server {
    start_with(Config::for_tests(shards))
}

pub fn start_with(cfg: Config) -> Server {
    Server::start(cfg).expect("server starts")
}

/// The sum over shards of `mediaserver_<name>_total`.
pub fn metric_total(base: &str, name: &str) -> u64 {
    let text = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let prefix = format!("mediaserver_{name}_total{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// POSTs `body` (raw text) and returns (status, parsed JSON body or Null).
pub fn post_raw(base: &str, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = ureq::post(&format!("{base}{path}")).set("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.send_string(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    post_raw(base, path, &body.to_string(), None)
}

/// Creates a publisher for `name`; returns (mediaSessionId, server media address, shard).
pub fn publish(base: &str, name: &str) -> (String, SocketAddr, usize) {
    let (st, v) = post(
        base,
        "/rest-api/publish",
        serde_json::json!({ "name": name }),
    );
    assert_eq!(st, 200, "publish {name}: {v}");
    session_of(&v)
}

/// Creates a publisher for `name` from an SDP offer; returns what [`publish`] does.
pub fn publish_sdp(base: &str, name: &str, sdp: &str) -> (String, SocketAddr, usize) {
    let (st, v) = post(
        base,
        "/rest-api/publish",
        serde_json::json!({ "name": name, "sdp": sdp }),
    );
    assert_eq!(st, 200, "publish {name}: {v}");
    session_of(&v)
}

/// The engine's id of the session with this mediaSessionId (for fault injection).
pub fn internal_id(srv: &Server, msid: &str) -> u64 {
    srv.core.find(&control::registry::Filter {
        media_session_ids: Some([msid.to_string()].into_iter().collect()),
        ..Default::default()
    })[0]
        .id
}

fn session_of(v: &Value) -> (String, SocketAddr, usize) {
    let port = v["port"].as_u64().expect("port") as u16;
    (
        v["mediaSessionId"].as_str().expect("id").to_string(),
        SocketAddr::from(([127, 0, 0, 1], port)),
        v["shard"].as_u64().expect("shard") as usize,
    )
}

/// A UDP socket acting as an RTP player.
pub struct Player {
    pub sock: UdpSocket,
    pub id: String,
    pub server: SocketAddr,
    pub shard: usize,
}

impl Player {
    /// Binds a socket and asks the server to play `name` to it (optionally on `shard`).
    pub fn join(base: &str, name: &str, shard: Option<usize>) -> Player {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let mut body = serde_json::json!({ "name": name, "host": "127.0.0.1", "port": port });
        if let Some(s) = shard {
            body["shard"] = s.into();
        }
        let (st, v) = post(base, "/rest-api/play", body);
        assert_eq!(st, 200, "play {name}: {v}");
        let (id, server, shard) = session_of(&v);
        Player {
            sock,
            id,
            server,
            shard,
        }
    }

    /// Receives RTP until `n` packets arrived or `timeout` passed since the last one.
    pub fn recv(&self, n: usize, timeout: Duration) -> Vec<Rtp> {
        recv_rtp(&self.sock, n, timeout)
    }

    /// [`recv`](Self::recv) on a thread of its own with a 1 MiB receive buffer, as a real
    /// client reads while the server sends (the default buffer holds only ~90 full-size or
    /// ~250 small datagrams, and many reader threads on a busy machine fall that far behind).
    pub fn recv_in_background(
        &self,
        n: usize,
        timeout: Duration,
    ) -> std::thread::JoinHandle<Vec<Rtp>> {
        let sock = self.sock.try_clone().unwrap();
        socket2::SockRef::from(&sock)
            .set_recv_buffer_size(1 << 20)
            .unwrap();
        std::thread::spawn(move || recv_rtp(&sock, n, timeout))
    }
}

/// The fields of a received RTP packet the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtp {
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

pub fn parse_rtp(b: &[u8]) -> Option<Rtp> {
    let h = engine::rtp::parse_rtp(b).ok()?;
    if engine::rtp::is_rtcp(b) {
        return None;
    }
    Some(Rtp {
        pt: h.payload_type,
        seq: h.seq,
        ts: h.timestamp,
        ssrc: h.ssrc,
        payload: b[h.payload_offset..].to_vec(),
    })
}

pub fn recv_rtp(sock: &UdpSocket, n: usize, timeout: Duration) -> Vec<Rtp> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(timeout)).unwrap();
    while out.len() < n {
        match sock.recv(&mut buf) {
            Ok(len) => {
                if let Some(p) = parse_rtp(&buf[..len]) {
                    out.push(p);
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Builds an RTP packet (version 2, no CSRC/extension).
pub fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80, pt & 0x7f];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Polls `f` until it returns true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Finds streams through the REST API with `filter`.
pub fn find(base: &str, filter: Value) -> Vec<Value> {
    let (st, v) = post(base, "/rest-api/stream/find", filter);
    if st == 404 {
        return Vec::new();
    }
    assert_eq!(st, 200, "find: {v}");
    v.as_array().cloned().unwrap_or_default()
}

/// One request received by a [`HookServer`].
#[derive(Debug, Clone)]
pub struct HookCall {
    /// The last path segment: the REST method name.
    pub method: String,
    pub path: String,
    pub body: Value,
    pub signature: Option<String>,
}

type Responder = dyn Fn(&str, &Value) -> (u16, Value) + Send + Sync;

fn calls_of(calls: &std::sync::Mutex<Vec<HookCall>>, method: &str) -> Vec<HookCall> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == method)
        .cloned()
        .collect()
}

/// A real HTTP server standing in for the operator's web server.
pub struct HookServer {
    pub url: String,
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<HookCall>>>,
    server: std::sync::Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HookServer {
    /// `respond(method, body)` gives the status and JSON body to answer with.
    pub fn start(
        respond: impl Fn(&str, &Value) -> (u16, Value) + Send + Sync + 'static,
    ) -> HookServer {
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}/MyAPI", server.server_addr().to_ip().unwrap());
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s2, c2) = (server.clone(), calls.clone());
        let respond: Box<Responder> = Box::new(respond);
        let thread = std::thread::spawn(move || {
            for mut req in s2.incoming_requests() {
                let mut text = String::new();
                let _ = req.as_reader().read_to_string(&mut text);
                let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let path = req.url().to_string();
                let method = path.rsplit('/').next().unwrap_or("").to_string();
                let signature = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("X-Signature"))
                    .map(|h| h.value.to_string());
                let (status, reply) = respond(&method, &body);
                c2.lock().unwrap().push(HookCall {
                    method,
                    path,
                    body,
                    signature: signature.clone(),
                });
                let resp = tiny_http::Response::from_string(reply.to_string())
                    .with_status_code(status)
                    .with_header(
                        "Content-Type: application/json"
                            .parse::<tiny_http::Header>()
                            .unwrap(),
                    );
                let _ = req.respond(resp);
            }
        });
        HookServer {
            url,
            calls,
            server,
            thread: Some(thread),
        }
    }

    /// Calls of `method` so far.
    pub fn calls_of(&self, method: &str) -> Vec<HookCall> {
        calls_of(&self.calls, method)
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A web server over HTTPS whose certificate chains to a private CA made for the test (as an
/// operator's internal web server would): proves hooks reach HTTPS with `hooks.ca_file`.
pub struct HttpsHookServer {
    pub url: String,
    /// The private CA's certificate, PEM (what `hooks.ca_file` points at).
    pub ca_pem: String,
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<HookCall>>>,
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpsHookServer {
    pub fn start(
        respond: impl Fn(&str, &Value) -> (u16, Value) + Send + Sync + 'static,
    ) -> HttpsHookServer {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mediaserver test private CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let sc = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        let sc = std::sync::Arc::new(sc);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c2, s2) = (calls.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = conn else { continue };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let tls = rustls::ServerConnection::new(sc.clone()).unwrap();
                let mut s = rustls::StreamOwned::new(tls, tcp);
                if let Some((path, body)) = read_http_request(&mut s) {
                    let method = path.rsplit('/').next().unwrap_or("").to_string();
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let (status, reply) = respond(&method, &body);
                    c2.lock().unwrap().push(HookCall {
                        method,
                        path,
                        body,
                        signature: None,
                    });
                    let text = reply.to_string();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        text.len()
                    );
                    use std::io::Write;
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(text.as_bytes());
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
            }
        });
        HttpsHookServer {
            url: format!("https://{addr}/MyAPI"),
            ca_pem: ca.pem(),
            calls,
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn calls_of(&self, method: &str) -> Vec<HookCall> {
        calls_of(&self.calls, method)
    }
}

impl Drop for HttpsHookServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request: (path, body by Content-Length).
fn read_http_request(s: &mut impl std::io::Read) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split_whitespace().nth(1)?.to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((path, body))
}

/// A real `nats-server` with JetStream on a free loopback port, stopped on drop. Its port
/// stays the same across [`NatsServer::stop`] / [`NatsServer::restart`].
pub struct NatsServer {
    pub port: u16,
    pub url: String,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("nats-test-{}-{port}", std::process::id()));
        let mut n = NatsServer {
            port,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
            child: None,
        };
        n.restart();
        n
    }

    /// Starts (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        let _ = std::fs::create_dir_all(&self.dir);
        let child = std::process::Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server; tests/run.sh does)");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                self.port
            ))
            .is_ok()),
            "nats-server listening on {}",
            self.port
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
