//! Who may call what, over real sockets: with the embedded default config (no token) a client
//! from another network (a namespace behind a veth pair, so its address is not loopback) is
//! refused the control API with 403 naming `http.token`, but can still publish, play and use
//! WHEP; loopback clients keep the control API; a token opens it to the network.

use serde_json::{json, Value};
use tests::clients::{whep_offer_sdp, NetNs};
use tests::{post, start_with};

fn server(token: Option<&str>) -> control::Server {
    let mut cfg = control::Config::for_tests(1);
    // The embedded default listens on every address; the namespace reaches it via the veth.
    cfg.http.listen = "0.0.0.0:0".parse().unwrap();
    cfg.http.token = token.map(str::to_string);
    start_with(cfg)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[test]
fn without_a_token_the_network_gets_media_signalling_but_not_the_control_api() {
    let ns = NetNs::create("acc");
    let srv = server(None);
    let port = srv.http_addr.port();
    let far = format!("http://{}:{port}", ns.host_ip);
    let ct = "application/json";

    for (method, path, body) in [
        ("POST", "/rest-api/stream/find_all", "{}"),
        ("POST", "/rest-api/stream/find", r#"{"name":"x"}"#),
        ("POST", "/rest-api/stream/terminate", r#"{"name":"x"}"#),
        ("POST", "/rest-api/admin/apps/find_all", "{}"),
        (
            "POST",
            "/rest-api/admin/apps/update",
            r#"{"key":"defaultApp","url":"http://evil/"}"#,
        ),
        ("GET", "/metrics", ""),
    ] {
        let (st, b) = ns.curl(method, &format!("{far}{path}"), ct, body);
        assert_eq!(st, 403, "{method} {path} from {}: {b}", ns.ns_ip);
        assert!(
            json(&b)["error"].as_str().unwrap().contains("http.token"),
            "{b}"
        );
    }
    // The app's URL was not changed by the refused update.
    let (_, apps) = post(&srv.base_url(), "/rest-api/admin/apps/find_all", json!({}));
    assert_eq!(apps[0]["url"], "", "{apps}");

    // Media signalling is public.
    let sdp = include_str!("../../control/src/testdata/ffmpeg_h264_opus.sdp");
    let (st, b) = ns.curl(
        "POST",
        &format!("{far}/rest-api/publish"),
        ct,
        &json!({"name": "cam", "sdp": sdp}).to_string(),
    );
    assert_eq!(st, 200, "{b}");
    let (st, b) = ns.curl(
        "POST",
        &format!("{far}/rest-api/play"),
        ct,
        &json!({"name": "cam", "host": ns.ns_ip.to_string(), "port": 5004}).to_string(),
    );
    assert_eq!(st, 200, "{b}");
    let (st, answer) = ns.curl(
        "POST",
        &format!("{far}/whep/cam"),
        "application/sdp",
        &whep_offer_sdp(),
    );
    assert_eq!(st, 201, "WHEP from the network: {answer}");
    assert!(answer.starts_with("v=0"), "{answer}");
    let (st, _) = ns.curl("GET", &format!("{far}/health"), ct, "");
    assert_eq!(st, 200);
    // The name rule holds for everyone.
    for bad in [r#"{"name":"a/b"}"#, r#"{"name":"a\u0000b"}"#] {
        let (st, b) = ns.curl("POST", &format!("{far}/rest-api/publish"), ct, bad);
        assert_eq!(st, 400, "{bad}: {b}");
    }

    // Loopback keeps the control API, and sees what the network created.
    let (st, all) = post(&srv.base_url(), "/rest-api/stream/find_all", json!({}));
    assert_eq!(st, 200);
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
}

#[test]
fn with_a_token_the_network_gets_the_control_api_and_loopback_needs_it_too() {
    let ns = NetNs::create("tok");
    let srv = server(Some("op-secret"));
    let far = format!("http://{}:{}", ns.host_ip, srv.http_addr.port());
    let (st, b) = ns.curl(
        "POST",
        &format!("{far}/rest-api/stream/find_all"),
        "application/json",
        "{}",
    );
    assert_eq!(st, 401, "{b}");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "curl", "-s", "-XPOST"])
        .args(["-H", "Authorization: Bearer op-secret", "-d", "{}"])
        .arg(format!("{far}/rest-api/stream/find_all"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]");
    let (st, _) = post(&srv.base_url(), "/rest-api/stream/find_all", json!({}));
    assert_eq!(st, 401, "a token binds loopback too");
}
