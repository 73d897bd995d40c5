//! Operator hardening over real sockets: REST deadlines and caps, a server short of file
//! descriptors, stream-name rules.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use control::Config;
use serde_json::json;
use tests::clients::tmpdir;
use tests::*;

fn fast_deadlines() -> Config {
    let mut c = Config::for_tests(1);
    c.http.header_timeout_ms = 500;
    c.http.body_timeout_ms = 500;
    c.http.tls_handshake_timeout_ms = 500;
    c
}

/// Reads until the server closes; `Some(bytes read)` if it did within `within`.
fn closed_by_server(mut s: &TcpStream, within: Duration) -> Option<Vec<u8>> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(got),
            Err(_) => {}
        }
    }
    None
}

fn connect_all(addr: SocketAddr, n: usize, first_bytes: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            if !first_bytes.is_empty() {
                s.write_all(first_bytes).unwrap();
            }
            s
        })
        .collect()
}

#[test]
fn idle_half_sent_and_stalled_tls_connections_are_closed_by_their_deadlines() {
    let mut cfg = fast_deadlines();
    cfg.https.enabled = true;
    // All from 127.0.0.1: lift the per-IP cap so that deadlines, not the cap, close them.
    cfg.http.max_connections_per_ip = 10_000;
    cfg.http.max_connections = 10_000;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let http: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let https = srv.https.as_ref().unwrap().0;
    let t0 = Instant::now();
    let idle = connect_all(http, 500, b"");
    let half_head = connect_all(
        http,
        250,
        b"POST /rest-api/publish HTTP/1.1\r\nHost: x\r\nConte",
    );
    let half_body = connect_all(
        http,
        250,
        b"POST /rest-api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na",
    );
    // A TLS client that connects and never finishes its handshake.
    let tls_stalled = connect_all(https, 500, b"\x16\x03\x01\x00");
    // A keep-alive connection that made one request and then idles.
    let mut keep_alive = TcpStream::connect(http).unwrap();
    keep_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    keep_alive.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    eprintln!("1,501 connections opened in {:?}", t0.elapsed());
    // While they are held, REST answers.
    assert_eq!(find_status(&base), 404);
    let within = Duration::from_secs(3);
    for (what, conns) in [
        ("idle", &idle),
        ("half-sent head", &half_head),
        ("stalled TLS handshake", &tls_stalled),
    ] {
        let open = conns
            .iter()
            .filter(|s| closed_by_server(s, within).is_none())
            .count();
        assert_eq!(
            open,
            0,
            "{what}: {open} still open {:?} after opening",
            t0.elapsed()
        );
    }
    // A body that never completes gets 408 naming the setting, then the connection closes.
    for s in &half_body {
        let reply = closed_by_server(s, within).expect("half-sent body closed");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_timeout_ms"), "{text}");
    }
    assert!(
        closed_by_server(&keep_alive, within).is_some(),
        "idle keep-alive closed"
    );
    eprintln!("all closed {:?} after opening", t0.elapsed());
    assert_eq!(find_status(&base), 404);
}

fn find_status(base: &str) -> u16 {
    post(base, "/rest-api/stream/find", json!({"name": "none"})).0
}

#[test]
fn a_huge_header_gets_431_and_bad_names_get_400() {
    let srv = start_with(fast_deadlines());
    let base = srv.base_url();
    let http: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let mut s = TcpStream::connect(http).unwrap();
    let big = "a".repeat(100 * 1024);
    // The server may close before the whole header is written: ignore write errors.
    let _ =
        s.write_all(format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let reply = closed_by_server(&s, Duration::from_secs(3)).expect("closed");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 431"), "{text:.200}");
    for (name, why) in [
        ("a/b", "`/`"),
        ("../etc", "`/`"),
        ("nul\u{0}x", "control"),
        ("line\nfeed", "control"),
        ("", "1..=256"),
    ] {
        for (path, body) in [
            ("/rest-api/publish", json!({"name": name})),
            (
                "/rest-api/play",
                json!({"name": name, "host": "127.0.0.1", "port": 9}),
            ),
        ] {
            let (st, v) = post(&base, path, body);
            assert_eq!(st, 400, "{path} {name:?}: {v}");
            let e = v["error"].as_str().unwrap();
            assert!(e.contains("name") && e.contains(why), "{name:?}: {e}");
        }
    }
    let long = "x".repeat(257);
    assert_eq!(
        post(&base, "/rest-api/publish", json!({"name": long})).0,
        400
    );
    // Printable non-ASCII names stay valid.
    assert_eq!(
        post(&base, "/rest-api/publish", json!({"name": "caméra 1"})).0,
        200
    );
    // WHIP paths carry the name too.
    let (st, _) = http_request(http, "POST", "/whip/a%2Fb", "application/sdp", "v=0\r\n");
    assert_eq!(st, 400);
}

/// A minimal HTTP/1.1 request; returns the status.
fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: &str,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut out);
    let st = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (st, out)
}

#[test]
fn connections_past_the_per_ip_cap_are_closed_and_other_clients_still_served() {
    let mut cfg = fast_deadlines();
    cfg.http.header_timeout_ms = 5000;
    cfg.http.max_connections_per_ip = 10;
    let srv = start_with(cfg);
    let base = srv.base_url();
    let http: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let held = connect_all(http, 10, b"");
    std::thread::sleep(Duration::from_millis(200));
    let extra = TcpStream::connect(http).unwrap();
    assert!(
        closed_by_server(&extra, Duration::from_secs(2)).is_some(),
        "the 11th connection from one IP is closed"
    );
    // Another client address (any 127/8 source works on loopback) is served.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&"127.0.0.9:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    other.connect(&http.into()).unwrap();
    let mut other: TcpStream = other.into();
    other
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let reply = closed_by_server(&other, Duration::from_secs(3)).expect("answered and closed");
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    // Once the held connections go, the first IP gets slots again.
    drop(held);
    assert!(wait_until(Duration::from_secs(2), || {
        matches!(
            ureq::post(&format!("{base}/rest-api/stream/find")).send_string("{}"),
            Err(ureq::Error::Status(404, _))
        )
    }));
}

const CHILD_CONFIG: &str = "HARDENING_TEST_CHILD_CONFIG";

/// Not a test of its own: re-executed with [`CHILD_CONFIG`] set, this runs a server in a
/// separate process (so its fd limit can be lowered and its log read) until killed.
#[test]
fn child_server_process() {
    let Ok(path) = std::env::var(CHILD_CONFIG) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let text = std::fs::read_to_string(path).unwrap();
    let _srv = start_with(Config::load(Some(&text)).unwrap());
    eprintln!("CHILD READY");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn at_256_fds_300_idle_sockets_lock_rest_out_only_until_their_deadline() {
    let dir = tmpdir("fdlimit");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = dir.join("node.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\nheader_timeout_ms = 1000\n\
             [https]\nenabled = false\n[media]\nbind = \"127.0.0.1\"\nshards = 1\npin_cores = false\n\
             port_min = 29000\nport_max = 29999\n",
            dir.display()
        ),
    )
    .unwrap();
    let log = dir.join("server.log");
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child_server_process", "--nocapture"])
        .env(CHILD_CONFIG, &conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert!(wait_until(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // 300 idle sockets: more than the 256 descriptors the server has.
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    let t0 = Instant::now();
    // Once the idle ones pass their deadline and are closed, REST answers again.
    let mut answered = None;
    while t0.elapsed() < Duration::from_secs(15) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(1500))
            .build();
        let r = agent
            .post(&format!("{base}/rest-api/stream/find_all"))
            .send_string("{}");
        if r.is_ok() {
            answered = Some(t0.elapsed());
            break;
        }
    }
    eprintln!("REST answered {answered:?} after 300 idle sockets were opened");
    assert!(answered.is_some(), "REST stays locked out");
    let closed = idle
        .iter()
        .filter(|s| closed_by_server(s, Duration::from_secs(3)).is_some())
        .count();
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text
        .lines()
        .filter(|l| l.contains("REST accept failed") || l.contains("connection cap"))
        .count();
    eprintln!(
        "{closed} of {} idle sockets closed by the server; {lines} log lines about it",
        idle.len()
    );
    assert!(
        lines <= 20,
        "the log holds {lines} lines about it:\n{text:.3000}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no escape sequences in a log file"
    );
}
