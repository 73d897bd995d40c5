//! The checked-in OpenAPI file describes exactly the routes the server answers, and the CLI
//! binary's `apps` commands work against a running server.

use std::collections::BTreeSet;
use std::process::Command;

use control::server::{OPENAPI, ROUTES};

#[test]
fn openapi_matches_routes() {
    let spec: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
    let mut documented = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path} has a summary");
            assert!(
                op["responses"]["200"].is_object() || op["responses"]["201"].is_object(),
                "{method} {path} documents its success reply"
            );
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
    // Every $ref points at a defined schema or response.
    let text = OPENAPI;
    for r in text.split("\"$ref\": \"#/components/").skip(1) {
        let path: Vec<&str> = r.split('"').next().unwrap().split('/').collect();
        assert!(
            spec["components"][path[0]][path[1]].is_object(),
            "dangling $ref {path:?}"
        );
    }
}

fn cli(base: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mediaserver"))
        .args(["apps", "--server", base])
        .args(args)
        .output()
        .expect("run mediaserver");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn apps_cli_commands() {
    let srv = control::Server::start(control::Config::for_tests(1)).unwrap();
    let base = srv.base_url();
    let (ok, out, _) = cli(&base, &["show"]);
    assert!(ok && out.contains("defaultApp"), "{out}");
    let (ok, _, err) = cli(
        &base,
        &["add-rest-method", "defaultApp", "StreamKeepAliveEvent"],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&base, &["update", "defaultApp", "--url", "http://host/Old"]);
    assert!(ok, "{err}");
    // The URL may also be given positionally, as the seed writes it.
    let (ok, _, err) = cli(&base, &["update", "defaultApp", "http://host/MyAPI"]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&base, &["show"]);
    assert!(
        ok && out.contains("http://host/MyAPI") && out.contains("StreamKeepAliveEvent"),
        "{out}"
    );
    let (ok, _, err) = cli(&base, &["add-rest-method", "defaultApp", "Nope"]);
    assert!(!ok && err.contains("Nope"), "{err}");
    let (ok, _, err) = cli(&base, &["update", "ghost", "--url", "http://h"]);
    assert_eq!(
        (ok, err.as_str()),
        (false, "error: app `ghost` not found\n")
    );
    let (ok, _, err) = cli(&base, &["update", "defaultApp"]);
    assert!(!ok && err.contains("URL"), "a URL is required: {err}");
}
