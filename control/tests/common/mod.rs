//! Helpers of the tests that run the real binary: a recording hook server, a child server
//! process with its log file, raw HTTP calls.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mediaserver");

/// A web server recording the hooks it gets (method = last path segment, JSON body): a
/// thread per connection, each call answered 200 after `delay` and the connection closed;
/// calls of method `hang` are never answered (their connections stay open).
pub struct Hooks {
    pub url: String,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
}

/// Reads one HTTP request: (path, body).
fn read_request(s: &mut std::net::TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split(' ').nth(1)?.to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((
        path,
        String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
    ))
}

impl Hooks {
    pub fn start(delay: Duration) -> Hooks {
        Hooks::start_hanging(delay, None)
    }

    pub fn start_hanging(delay: Duration, hang: Option<&'static str>) -> Hooks {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/MyAPI", listener.local_addr().unwrap());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, h) = (calls.clone(), held.clone());
        // Lives as long as the test process: it only ever holds loopback connections.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let (c, h) = (c.clone(), h.clone());
                std::thread::spawn(move || {
                    let Some((path, text)) = read_request(&mut s) else {
                        return;
                    };
                    let method = path.rsplit('/').next().unwrap_or("").to_string();
                    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                    c.lock().unwrap().push((method.clone(), body));
                    if Some(method.as_str()) == hang {
                        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Hold the connection until the peer gives up.
                        let _ = s.read(&mut [0u8; 1]);
                        return;
                    }
                    std::thread::sleep(delay);
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                          Content-Length: 2\r\nConnection: close\r\n\r\n{}",
                    );
                });
            }
        });
        Hooks { url, calls, held }
    }

    pub fn of(&self, method: &str) -> Vec<Value> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Calls of the `hang` method held unanswered so far.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub struct Node {
    pub child: Child,
    pub dir: PathBuf,
    pub addr: String,
}

impl Node {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
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

/// A config on loopback, media ports `ports..ports+span`, `extra` at the top level.
pub fn write_config(dir: &Path, ports: u16, span: u16, extra: &str) -> PathBuf {
    let conf = dir.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = \"{}\"\n{extra}\n[http]\nlisten = \"127.0.0.1:0\"\n[https]\nenabled = false\n\
             [media]\nbind = \"127.0.0.1\"\nshards = 1\npin_cores = false\n\
             port_min = {ports}\nport_max = {}\n",
            dir.display(),
            ports + span - 1
        ),
    )
    .unwrap();
    conf
}

/// Starts the binary on `conf` and waits for its REST address in the log.
pub fn start(dir: &Path, conf: &Path) -> Node {
    start_with_args(dir, conf, &[])
}

/// [`start`] with global options before `run` (e.g. `--log-format json`).
pub fn start_with_args(dir: &Path, conf: &Path, args: &[&str]) -> Node {
    let log = dir.join("server.log");
    let child = Command::new(BIN)
        .args(args)
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
        .find(|l| l.contains("mediaserver ready"))
        .and_then(|l| l.split("http://127.0.0.1:").nth(1))
        .map(|rest| {
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            format!("127.0.0.1:{port}")
        })
        .unwrap_or_else(|| panic!("not ready: {text}"));
    node
}

/// One HTTP/1.1 request; (status, JSON body or Null). Connection errors are status 0.
pub fn http(addr: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
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

pub fn tmp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ms-life-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
