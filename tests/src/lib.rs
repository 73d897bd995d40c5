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
