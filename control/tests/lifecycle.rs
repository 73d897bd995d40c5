//! The real binary's life under signals: SIGTERM drains every session through its hooks and
//! exits 0 (with `/ready` 503 meanwhile), SIGHUP reloads apps and tokens without a restart.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mediaserver");

/// A web server recording the hooks it gets (method = last path segment, JSON body), each
/// answered 200 after `delay` by one of 8 threads.
struct Hooks {
    url: String,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    server: Arc<tiny_http::Server>,
}

impl Hooks {
    fn start(delay: Duration) -> Hooks {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}/MyAPI", server.server_addr().to_ip().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..8 {
            let (s, c) = (server.clone(), calls.clone());
            std::thread::spawn(move || {
                for mut req in s.incoming_requests() {
                    let mut text = String::new();
                    let _ = req.as_reader().read_to_string(&mut text);
                    std::thread::sleep(delay);
                    let method = req.url().rsplit('/').next().unwrap_or("").to_string();
                    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                    c.lock().unwrap().push((method, body));
                    let _ = req.respond(tiny_http::Response::from_string("{}"));
                }
            });
        }
        Hooks { url, calls, server }
    }

    fn of(&self, method: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

struct Node {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, ports: u16, extra: &str) -> PathBuf {
    let conf = dir.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = \"{}\"\n{extra}\n[http]\nlisten = \"127.0.0.1:0\"\n[https]\nenabled = false\n\
             [media]\nbind = \"127.0.0.1\"\nshards = 1\npin_cores = false\n\
             port_min = {ports}\nport_max = {}\n",
            dir.display(),
            ports + 299
        ),
    )
    .unwrap();
    conf
}

/// Starts the binary on `conf` and waits for its REST address in the log.
fn start(dir: &Path, conf: &Path) -> Node {
    let log = dir.join("server.log");
    let child = Command::new(BIN)
        .args(["run", "--config", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut node = Node {
        child,
        dir: dir.to_path_buf(),
        addr: String::new(),
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) && !node.log().contains("mediaserver ready") {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = node.log();
    node.addr = text
        .lines()
        .find(|l| l.contains("REST API listening (http)"))
        .and_then(|l| l.split("127.0.0.1:").nth(1))
        .map(|rest| {
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            format!("127.0.0.1:{port}")
        })
        .unwrap_or_else(|| panic!("not ready: {text}"));
    node
}

/// One HTTP/1.1 request; (status, JSON body or Null). Connection errors are status 0.
fn http(addr: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, Value::Null);
    };
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

fn tmp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ms-life-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn sigterm_stops_players_then_publishers_through_their_hooks_and_exits_0() {
    // Each hook answer takes 40 ms on 8 threads: 200 final hooks keep the drain busy for
    // about a second, long enough to watch /ready and a publish during it.
    let hooks = Hooks::start(Duration::from_millis(40));
    let dir = tmp("term");
    let conf = write_config(
        &dir,
        23000,
        &format!(
            "shutdown_timeout_ms = 20000\n[[apps]]\nkey = \"defaultApp\"\nurl = \"{}\"\n\
             methods = [\"StreamStatusEvent\", \"unPublishStream\", \"stopStream\"]\n",
            hooks.url
        ),
    );
    let mut node = start(&dir, &conf);
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    for i in 0..50 {
        let (st, v) = http(
            &node.addr,
            "POST",
            "/rest-api/publish",
            &json!({"name": format!("s{i}")}).to_string(),
            None,
        );
        assert_eq!(st, 200, "{v}");
        let port = v["port"].as_u64().unwrap() as u16;
        // One RTP packet: the publisher is PUBLISHING.
        let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
        pkt.extend_from_slice(&[0u8; 20]);
        rtp.send_to(&pkt, ("127.0.0.1", port)).unwrap();
        let (st, v) = http(
            &node.addr,
            "POST",
            "/rest-api/play",
            &json!({"name": format!("s{i}"), "host": "127.0.0.1", "port": sink_port}).to_string(),
            None,
        );
        assert_eq!(st, 200, "{v}");
    }
    assert!(
        wait(Duration::from_secs(10), || hooks
            .of("StreamStatusEvent")
            .iter()
            .filter(|b| b["status"] == "PUBLISHING")
            .count()
            == 50),
        "50 publishers PUBLISHING"
    );
    let (st, _) = http(&node.addr, "GET", "/ready", "", None);
    assert_eq!(st, 200);

    let t0 = Instant::now();
    node.signal(libc::SIGTERM);
    let mut ready = (0, Value::Null);
    assert!(
        wait(Duration::from_secs(5), || {
            ready = http(&node.addr, "GET", "/ready", "", None);
            ready.0 == 503
        }),
        "/ready while draining: {ready:?}"
    );
    assert_eq!(ready.1["status"], "draining", "{}", ready.1);
    let (st, v) = http(
        &node.addr,
        "POST",
        "/rest-api/publish",
        &json!({"name": "late"}).to_string(),
        None,
    );
    assert_eq!(st, 503, "a new session while draining: {v}");

    let mut code = None;
    assert!(
        wait(Duration::from_secs(25), || {
            code = node.child.try_wait().unwrap();
            code.is_some()
        }),
        "no exit"
    );
    eprintln!("drain + exit took {:?}", t0.elapsed());
    assert_eq!(code.unwrap().code(), Some(0), "{}", node.log());

    let finals: Vec<Value> = hooks
        .of("StreamStatusEvent")
        .into_iter()
        .filter(|b| b["info"] == "Server shutdown")
        .collect();
    let of = |published: bool, status: &str| {
        finals
            .iter()
            .filter(|b| b["published"] == published && b["status"] == status)
            .count()
    };
    assert_eq!(finals.len(), 100, "{finals:?}");
    assert_eq!(of(true, "UNPUBLISHED"), 50);
    assert_eq!(
        of(false, "STOPPED"),
        50,
        "players stopped first, by the drain"
    );
    let shutdown = |m: &str| {
        hooks
            .of(m)
            .iter()
            .filter(|b| b["info"] == "Server shutdown")
            .count()
    };
    assert_eq!(shutdown("unPublishStream"), 50);
    assert_eq!(shutdown("stopStream"), 50);
    let log = node.log();
    assert!(
        log.contains("drained: every session stopped and its hooks sent"),
        "{log}"
    );
}

#[test]
fn sighup_reloads_apps_and_tokens_and_refuses_a_broken_file() {
    let a = Hooks::start(Duration::ZERO);
    let b = Hooks::start(Duration::ZERO);
    let dir = tmp("hup");
    let app = |url: &str| {
        format!("[[apps]]\nkey = \"defaultApp\"\nurl = \"{url}\"\nmethods = [\"publishStream\"]\n")
    };
    let conf = write_config(&dir, 23400, &app(&a.url));
    let mut node = start(&dir, &conf);
    let publish = |node: &Node, name: &str, token: Option<&str>| {
        http(
            &node.addr,
            "POST",
            "/rest-api/publish",
            &json!({ "name": name }).to_string(),
            token,
        )
        .0
    };
    assert_eq!(publish(&node, "one", None), 200);
    assert_eq!(a.of("publishStream").len(), 1);

    // The app's URL moves to b, and an operator token appears.
    let conf2 = write_config(&dir, 23400, &app(&b.url));
    let mut text = std::fs::read_to_string(&conf2).unwrap();
    text = text.replace("[http]\n", "[http]\ntoken = \"op\"\n");
    std::fs::write(&conf2, text).unwrap();
    node.signal(libc::SIGHUP);
    assert!(
        wait(Duration::from_secs(5), || node
            .log()
            .contains("SIGHUP: configuration reloaded")),
        "{}",
        node.log()
    );
    assert_eq!(publish(&node, "two", None), 200);
    assert_eq!(a.of("publishStream").len(), 1);
    assert_eq!(b.of("publishStream").len(), 1, "the new URL is used");
    let body = "{}";
    assert_eq!(
        http(&node.addr, "POST", "/rest-api/stream/find_all", body, None).0,
        401
    );
    assert_eq!(
        http(
            &node.addr,
            "POST",
            "/rest-api/stream/find_all",
            body,
            Some("op")
        )
        .0,
        200
    );

    // A file that does not parse changes nothing and kills nothing.
    std::fs::write(&conf2, "[http\n").unwrap();
    node.signal(libc::SIGHUP);
    assert!(
        wait(Duration::from_secs(5), || node
            .log()
            .contains("SIGHUP: reload refused")),
        "{}",
        node.log()
    );
    assert!(node.child.try_wait().unwrap().is_none(), "still running");
    assert_eq!(publish(&node, "three", None), 200);
    assert_eq!(b.of("publishStream").len(), 2);
    node.signal(libc::SIGTERM);
    assert!(wait(Duration::from_secs(10), || node
        .child
        .try_wait()
        .unwrap()
        .is_some()));
}
