//! `/ready` over HTTP: 200 while new sessions would be accepted; 503 with the reason when the
//! media port pool is exhausted or a shard does not answer, and 200 again once that passes.
//! (503 while draining is tested on the real binary in control/tests/lifecycle.rs.)

use std::time::Duration;

use serde_json::{json, Value};
use tests::{post, start_with, wait_until};

fn ready(base: &str) -> (u16, Value) {
    match ureq::get(&format!("{base}/ready")).call() {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("GET /ready: {e}"),
    }
}

#[test]
fn an_exhausted_port_pool_makes_the_server_not_ready_until_a_port_frees() {
    let mut cfg = control::Config::for_tests(1);
    cfg.media.port_max = cfg.media.port_min + 1; // two ports
    let srv = start_with(cfg);
    let base = srv.base_url();
    assert_eq!(ready(&base), (200, json!({"status": "ready"})));
    let (_, a) = post(&base, "/rest-api/publish", json!({"name": "a"}));
    post(&base, "/rest-api/publish", json!({"name": "b"}));
    let (st, v) = post(&base, "/rest-api/publish", json!({"name": "c"}));
    assert_eq!(st, 503, "{v}");
    let (st, v) = ready(&base);
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["status"], "not ready");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("port pool exhausted"),
        "{v}"
    );
    // A session ends: its port is free, the next publish takes it and the server is ready.
    let id = a["mediaSessionId"].as_str().unwrap();
    let (st, _) = post(
        &base,
        "/rest-api/stream/terminate",
        json!({ "mediaSessionId": id }),
    );
    assert_eq!(st, 200);
    assert!(wait_until(Duration::from_secs(3), || post(
        &base,
        "/rest-api/publish",
        json!({"name": "c"})
    )
    .0 == 200));
    assert_eq!(ready(&base).0, 200);
}

#[test]
fn a_shard_that_does_not_answer_makes_the_server_not_ready() {
    let srv = start_with(control::Config::for_tests(2));
    let base = srv.base_url();
    assert_eq!(ready(&base).0, 200);
    srv.core
        .inject_fault(1, engine::Fault::Stall(Duration::from_secs(3)));
    let (st, v) = ready(&base);
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["reasons"], json!(["shard 1 does not answer"]));
    // The stall passes: ready again.
    assert!(wait_until(Duration::from_secs(6), || ready(&base).0 == 200));
}
