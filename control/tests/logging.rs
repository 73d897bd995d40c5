//! The real binary's logs: plain text in a file (no escape sequences), one JSON object per
//! line with `--log-format json`.

mod common;

use std::time::Duration;

use common::{http, start_with_args, tmp, wait, write_config};

/// Runs the server with `args` until its log says it is ready, makes it log a session, stops
/// it with SIGTERM and returns the log file's text.
fn run_and_log(tag: &str, args: &[&str]) -> String {
    let dir = tmp(&format!("logging-{tag}"));
    let conf = write_config(&dir, 30000, 100, "");
    let mut node = start_with_args(&dir, &conf, args);
    let (st, v) = http(
        &node.addr,
        "POST",
        "/rest-api/publish",
        r#"{"name":"logged"}"#,
        None,
    );
    assert_eq!(st, 200, "{v}");
    node.signal(libc::SIGTERM);
    assert!(wait(Duration::from_secs(20), || node
        .child
        .try_wait()
        .unwrap()
        .is_some()));
    node.log()
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
