//! A real browser: headless Chromium (Debian's, driven by `tests/browser/e2e.js` through
//! playwright-core) publishes its fake camera and microphone with the WHIP demo page
//! (`/demo/publish.html`), plays the stream back with the WHEP demo page (`/demo/play.html`),
//! checks that video is decoded and advancing, terminates the player through the REST API and
//! sees the page notice, then stops the publisher with DELETE. Once per video codec choice.
//!
//! Needs Chromium, node and `tests/browser/node_modules`: `bash tests/browser/setup.sh`.
//! Screenshots and page logs go to `<target dir>/browser-artifacts/<case>/`. The node script
//! caps itself at 80 s; it is killed after 90 s.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Two Chromiums at once would share the 2 cores with the server: one case at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
const DEADLINE: Duration = Duration::from_secs(90);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// `<target dir>/browser-artifacts/<case>`, next to `debug/` (the test binary is in
/// `<target dir>/debug/deps/`), so it follows CARGO_TARGET_DIR.
fn artifact_dir(case: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("browser-artifacts").join(case)
}

/// What `tests/browser/setup.sh` installs; a clear message instead of a timeout when missing.
fn preflight() {
    let mut missing = Vec::new();
    if !Path::new("/usr/bin/chromium").exists() {
        missing.push("/usr/bin/chromium");
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("node");
    }
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push("tests/browser/node_modules/playwright-core");
    }
    assert!(
        missing.is_empty(),
        "browser test needs {}: run `bash tests/browser/setup.sh`",
        missing.join(", ")
    );
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits for `child` until `deadline`; then SIGTERM (e2e.js closes Chromium on it), and
/// SIGKILL 10 s later. Returns the exit code, or None when it had to be killed.
fn wait_bounded(child: &mut Child, deadline: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(st) = child.try_wait().expect("wait for node") {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_secs(10) {
        if child.try_wait().expect("wait for node").is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs `node tests/browser/e2e.js <base URL> <artifact dir> [extra]` against a fresh server.
fn run_e2e(case: &str, extra: &[&str]) -> Value {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    preflight();
    let srv = tests::start(2);
    let out = artifact_dir(case);
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new("node")
        .arg(browser_dir().join("e2e.js"))
        .arg(srv.base_url())
        .arg(&out)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let code = wait_bounded(&mut child, DEADLINE);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    println!("--- e2e.js {case} stdout\n{stdout}--- e2e.js {case} stderr\n{stderr}---");
    drop(srv);
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    match code {
        None => panic!("browser e2e ({case}) killed after {DEADLINE:?}; artifacts in {out:?}"),
        Some(0) => {}
        Some(c) => panic!(
            "browser e2e ({case}) failed (exit {c}): {}; artifacts in {out:?}",
            summary["error"].as_str().unwrap_or("see the output above")
        ),
    }
    assert_eq!(summary["ok"], true, "summary: {summary}");
    assert!(
        summary["framesDecoded"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    summary
}

#[test]
fn chromium_publishes_and_plays_with_its_default_offer() {
    run_e2e("default", &[]);
}

#[test]
fn chromium_publishes_and_plays_h264() {
    let s = run_e2e("h264", &["--codec=h264"]);
    assert_eq!(s["inbound"]["codec"], "video/H264", "{s}");
}

#[test]
fn chromium_publishes_and_plays_vp8() {
    let s = run_e2e("vp8", &["--codec=vp8"]);
    assert_eq!(s["inbound"]["codec"], "video/VP8", "{s}");
}
