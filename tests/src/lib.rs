//! Helpers shared by the end-to-end tests in `tests/tests/`: start a real server on loopback,
//! call its REST API over HTTP, and act as RTP publishers and players over UDP.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::{Config, Server};
use serde_json::Value;

/// Starts a server on 127.0.0.1 with `shards` shards and an ephemeral HTTP port.
pub fn start(shards: usize) -> Server {
    start_with(Config::for_tests(shards))
}

pub fn start_with(cfg: Config) -> Server {
    Server::start(cfg).expect("server starts")
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
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
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
