//! The real binary's logs: plain text in a file (no escape sequences), one JSON object per
//! line with `--log-format json`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mediaserver");

/// Runs the server with `args` until its log says it is ready, makes it log a session, stops
/// it with SIGTERM and returns the log file's text.
fn run_and_log(tag: &str, args: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("ms-logging-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[https]\nenabled = false\n\
             [media]\nbind = \"127.0.0.1\"\nshards = 1\npin_cores = false\n\
             port_min = 30000\nport_max = 30099\n",
            dir.display()
        ),
    )
    .unwrap();
    let log = dir.join("server.log");
    let mut child = Command::new(BIN)
        .args(args)
        .args(["run", "--config", conf.to_str().unwrap()])
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut text = String::new();
    while t0.elapsed() < Duration::from_secs(20) && !text.contains("mediaserver ready") {
        std::thread::sleep(Duration::from_millis(50));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    assert!(text.contains("mediaserver ready"), "not ready: {text}");
    // The REST address from the log line "mediaserver ready" (port 0 was asked).
    let addr = text
        .lines()
        .find(|l| l.contains("mediaserver ready"))
        .and_then(|l| l.split("http://127.0.0.1:").nth(1))
        .map(|rest| {
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            format!("127.0.0.1:{port}")
        })
        .expect("listen address in the log");
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let body = r#"{"name":"logged"}"#;
    write!(
        s,
        "POST /rest-api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn text_logs_in_a_file_have_no_escape_sequences() {
    let text = run_and_log("text", &[]);
    assert!(text.contains("logged"), "the session is logged: {text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape sequences in a log file:\n{text}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let text = run_and_log("json", &["--log-format", "json"]);
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        n += 1;
    }
    assert!(n >= 3, "{text}");
    assert!(text.contains("shutting down"));
}
