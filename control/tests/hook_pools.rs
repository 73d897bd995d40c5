//! A hanging keep-alive endpoint must not delay authorization hooks: with 1,000 streams whose
//! keep-alives never get an answer, a new publish still gets its publishStream call through
//! (restOnError = FAIL: a call that waited out its 20 s timeout for a slot would refuse the
//! publish, and the publish would not be answered for 20 s), and
//! the log says so in a line per round, not a line per stream.

mod common;

use std::time::{Duration, Instant};

use common::{http, start, tmp, wait, write_config, Hooks};
use serde_json::json;

#[test]
fn a_hanging_keep_alive_endpoint_does_not_delay_a_publish() {
    let hooks = Hooks::start_hanging(Duration::ZERO, Some("StreamKeepAliveEvent"));
    let dir = tmp("pools");
    let conf = write_config(
        &dir,
        24000,
        1200,
        &format!(
            "[hooks]\ntimeout_ms = 20000\nmax_concurrency = 32\n\
             [hooks.keep_alive]\nenabled = true\ninterval_ms = 200\napps = [\"defaultApp\"]\n\
             [[apps]]\nkey = \"defaultApp\"\nurl = \"{}\"\n\
             methods = [\"publishStream\", \"StreamKeepAliveEvent\"]\n\
             [apps.rest_client_config.publishStream]\nrestOnError = \"FAIL\"\n",
            hooks.url
        ),
    );
    let node = start(&dir, &conf);
    for i in 0..1000 {
        let (st, v) = http(
            &node.addr,
            "POST",
            "/rest-api/publish",
            &json!({ "name": format!("s{i}") }).to_string(),
            None,
        );
        assert_eq!(st, 200, "publish {i}: {v}");
    }
    // The keep-alive pool fills with calls that never return, and stays full for a few rounds.
    assert!(
        wait(Duration::from_secs(10), || hooks.held() >= 32),
        "held {}",
        hooks.held()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        hooks.held(),
        32,
        "no more keep-alives than the pool's slots"
    );

    let t0 = Instant::now();
    let (st, v) = http(
        &node.addr,
        "POST",
        "/rest-api/publish",
        &json!({"name": "fresh"}).to_string(),
        None,
    );
    let took = t0.elapsed();
    eprintln!("publish with a saturated keep-alive pool: {took:?}");
    assert_eq!(st, 200, "{v}");
    assert!(
        hooks
            .of("publishStream")
            .iter()
            .any(|b| b["name"] == "fresh"),
        "the web server got the publishStream call"
    );
    assert!(
        took < Duration::from_secs(20),
        "the publish did not wait out hooks.timeout_ms: {took:?}"
    );

    // Rounds go on while the pool is full: each says so once; the timed-out calls are
    // summed up once per round, never logged per stream.
    std::thread::sleep(Duration::from_secs(3));
    let log = node.log();
    let ka: Vec<&str> = log.lines().filter(|l| l.contains("keep-alive")).collect();
    assert!(
        log.contains("keep-alive round skipped"),
        "{}",
        ka.join("\n")
    );
    assert!(ka.len() < 100, "{} keep-alive log lines", ka.len());
}
