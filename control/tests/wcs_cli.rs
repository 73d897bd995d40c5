//! `mediaserver cli ...` with the reference server's command words against real servers over
//! real HTTP, and app changes surviving a `kill -9` of the real `mediaserver run` process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mediaserver");

fn mediaserver() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("MEDIASERVER_URL")
        .env_remove("MEDIASERVER_TOKEN")
        .env("RUST_LOG", "warn");
    c
}

fn out(o: &Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `mediaserver cli <opts> <line split on spaces>`.
fn cli(opts: &[&str], line: &str) -> (bool, String, String) {
    out(&mediaserver()
        .arg("cli")
        .args(opts)
        .args(line.split(' '))
        .output()
        .expect("run mediaserver cli"))
}

fn post(base: &str, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
    let mut req = ureq::post(&format!("{base}{path}")).set("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let r = match req.send_string(&body.to_string()) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path}: {e}"),
    };
    let status = r.status();
    (status, r.into_json().unwrap_or(Value::Null))
}

fn app(base: &str, key: &str, token: Option<&str>) -> Option<Value> {
    let (st, all) = post(base, "/rest-api/admin/apps/find_all", json!({}), token);
    assert_eq!(st, 200, "{all}");
    all.as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .cloned()
}

fn has_method(app: &Value, m: &str) -> bool {
    app["methods"].as_array().unwrap().iter().any(|x| x == m)
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ms-wcs-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn seed_lines_configure_a_running_server() {
    let cfg = control::Config::for_tests(1);
    let state = cfg.apps_state_path();
    let srv = control::Server::start(cfg).unwrap();
    let base = srv.base_url();
    let s = ["--server", base.as_str()];

    let (ok, o, e) = cli(&s, "show apps");
    assert!(ok && o.contains("defaultApp"), "{o}{e}");
    let (ok, o, e) = cli(&s, "add app-rest-method defaultApp StreamKeepAliveEvent");
    assert!(ok && o.contains("StreamKeepAliveEvent"), "{o}{e}");
    let (ok, o, e) = cli(&s, "update app defaultApp http://host/MyAPI");
    assert!(ok && o.contains("http://host/MyAPI"), "{o}{e}");
    let a = app(&base, "defaultApp", None).unwrap();
    assert_eq!(a["url"], "http://host/MyAPI");
    assert!(has_method(&a, "StreamKeepAliveEvent"), "{a}");
    assert!(state.exists(), "changes written to {}", state.display());

    // The other forms.
    let (ok, _, e) = cli(&s, "add app MyName myApp http://h/one");
    assert!(ok, "{e}");
    let (ok, _, e) = cli(&s, "update app -l http://h/two myApp");
    assert!(ok, "{e}");
    let (ok, _, e) = cli(&s, "add app-rest-method -a myApp");
    assert!(ok, "{e}");
    let a = app(&base, "myApp", None).unwrap();
    assert_eq!(a["url"], "http://h/two");
    assert_eq!(
        a["methods"].as_array().unwrap().len(),
        control::apps::REST_METHODS.len()
    );
    let (ok, _, e) = cli(&s, "remove app-rest-method myApp connect");
    assert!(ok, "{e}");
    let (ok, o, _) = cli(&s, "show app-rest-methods myApp");
    assert!(
        ok && !o.contains("connect\n") && o.contains("playStream\n"),
        "{o}"
    );
    let (ok, o, _) = cli(&s, "show apps -d");
    assert!(ok && o.contains("myApp"), "{o}");
    let (ok, o, e) = cli(&s, "remove app myApp");
    assert!(ok && o.contains("removed"), "{o}{e}");
    assert!(app(&base, "myApp", None).is_none());

    // Streams: a table, and a terminate filter split across words.
    let (ok, o, _) = cli(&s, "show streams");
    assert!(ok && o.contains("no streams"), "{o}");
    let (st, p) = post(&base, "/rest-api/publish", json!({"name": "s1"}), None);
    assert_eq!(st, 200, "{p}");
    let (ok, o, _) = cli(&s, "show streams");
    assert!(
        ok && o.contains("mediaSessionId") && o.contains("s1") && o.contains("true"),
        "{o}"
    );
    let (ok, o, e) = cli(&s, r#"terminate stream { "name": "s1" }"#);
    assert!(ok && o.contains("terminated 1"), "{o}{e}");

    // Errors say the problem once and exit 1.
    let (ok, o, e) = cli(&s, "update app ghost http://h");
    assert!(!ok && o.is_empty(), "{o}");
    assert_eq!(e, "error: app `ghost` not found\n");
    let (ok, _, e) = cli(&s, "add app-rest-method defaultApp Nope");
    assert!(
        !ok && e.contains("`Nope`") && e.matches("error").count() == 1,
        "{e}"
    );
    let (ok, _, e) = cli(&s, "update app defaultApp");
    assert!(!ok && e.starts_with("error: update app: "), "{e}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let (ok, _, e) = cli(&["--server", &dead], "show apps");
    assert!(!ok, "{e}");
    assert_eq!(
        e,
        format!("error: cannot reach {dead}: connection refused\n")
    );
}

#[test]
fn interactive_mode_runs_each_line() {
    let srv = control::Server::start(control::Config::for_tests(1)).unwrap();
    let base = srv.base_url();
    let mut child = mediaserver()
        .args(["cli", "--server", &base])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"update app defaultApp http://host/MyAPI\n\
              no such command\n\
              \n\
              show apps\n\
              exit\n\
              remove app defaultApp\n",
        )
        .unwrap();
    let (ok, o, e) = out(&child.wait_with_output().unwrap());
    assert!(ok, "{e}");
    assert!(o.starts_with("> "), "{o}");
    assert!(
        o.contains("updated app defaultApp: url=http://host/MyAPI"),
        "{o}"
    );
    assert!(o.contains("key ") && o.contains("defaultApp"), "{o}");
    assert_eq!(o.matches("> ").count(), 5, "one prompt per line read: {o}");
    assert_eq!(
        e, "error: unknown command `no such command`; type `help` for the list\n",
        "an error does not end the session"
    );
    assert!(
        app(&base, "defaultApp", None).is_some(),
        "nothing after `exit` runs"
    );
}

#[test]
fn persistence_failure_is_500_and_changes_nothing() {
    let cfg = control::Config::for_tests(1);
    let data_dir = cfg.data_dir.clone();
    let srv = control::Server::start(cfg).unwrap();
    // A regular file where the data directory should be: the state file cannot be written.
    std::fs::write(&data_dir, "").unwrap();
    let base = srv.base_url();
    let (st, body) = post(
        &base,
        "/rest-api/admin/apps/update",
        json!({"key": "defaultApp", "url": "http://h/x"}),
        None,
    );
    assert_eq!(st, 500, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("apps.json") && msg.contains("not applied"),
        "{msg}"
    );
    assert_eq!(app(&base, "defaultApp", None).unwrap()["url"], "");
    let _ = std::fs::remove_file(&data_dir);
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mediaserver run --config <config>` and waits for /health.
fn run(config: &Path, base: &str) -> Proc {
    let child = mediaserver()
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ureq::get(&format!("{base}/health")).call().is_ok() {
            return p;
        }
        if let Some(st) = p.0.try_wait().unwrap() {
            let mut e = String::new();
            std::io::Read::read_to_string(p.0.stderr.as_mut().unwrap(), &mut e).unwrap();
            panic!("mediaserver run exited early ({st}): {e}");
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(mut p: Proc) {
    p.0.kill().unwrap(); // SIGKILL: no shutdown code runs
    p.0.wait().unwrap();
}

#[test]
fn app_changes_survive_kill_9() {
    let dir = tmp_dir("kill9");
    let data = dir.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("mediaserver.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"t0k\"\n\
             [https]\nenabled = false\n\
             [media]\nshards = 1\npin_cores = false\nbind = \"127.0.0.1\"\n"
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let tok = Some("t0k");
    // The CLI finds the server's URL and token in the same config file.
    let c = ["--config", config.to_str().unwrap()];

    let srv = run(&config, &base);
    let (ok, o, e) = cli(&c, "show apps");
    assert!(ok && o.contains("defaultApp"), "{o}{e}");
    for line in [
        "add app-rest-method defaultApp StreamKeepAliveEvent",
        "update app defaultApp http://host/MyAPI",
        "add app extra http://h/extra",
    ] {
        let (ok, _, e) = cli(&c, line);
        assert!(ok, "{line}: {e}");
    }
    kill9(srv);

    let srv = run(&config, &base);
    let a = app(&base, "defaultApp", tok).expect("defaultApp");
    assert_eq!(a["url"], "http://host/MyAPI");
    assert!(has_method(&a, "StreamKeepAliveEvent"), "{a}");
    assert!(has_method(&a, "publishStream"), "config methods kept: {a}");
    assert_eq!(app(&base, "extra", tok).unwrap()["url"], "http://h/extra");
    let (ok, _, e) = cli(&c, "remove app extra");
    assert!(ok, "{e}");
    kill9(srv);

    let srv = run(&config, &base);
    assert!(app(&base, "extra", tok).is_none(), "removal persisted");
    assert_eq!(
        app(&base, "defaultApp", tok).unwrap()["url"],
        "http://host/MyAPI"
    );
    kill9(srv);

    // A corrupt state file stops the start, naming the file.
    let state = data.join("apps.json");
    std::fs::write(&state, "[{\"key\": \"defaultApp\", ").unwrap();
    let mut child = mediaserver()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "mediaserver run started despite a corrupt {}",
                state.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains(&state.display().to_string()), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
