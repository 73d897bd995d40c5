//! The operator CLI against a running server's admin API.
//!
//! `mediaserver cli <words...>` takes the reference server's (WCS's) command lines —
//! `show apps`, `add app-rest-method defaultApp StreamKeepAliveEvent`, `update app defaultApp
//! http://host/MyAPI`, ... — parsed by [`parse`] (no I/O) into a [`Command`] that [`run`]
//! carries out with one or a few HTTP calls. `mediaserver apps ...` is the older clap-style
//! spelling of the same operations.

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::{json, Value};

use crate::apps::REST_METHODS;
use crate::config::Config;

/// Where the running server is and how to authenticate.
pub struct Target {
    pub server: String,
    pub token: Option<String>,
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    ShowApps { details: bool },
    ShowRestMethods { key: String },
    AddApp { key: String, url: String },
    UpdateApp { key: String, url: String },
    RemoveApp { key: String },
    AddRestMethod { key: String, method: String },
    AddAllRestMethods { key: String },
    RemoveRestMethod { key: String, method: String },
    ShowStreams,
    TerminateStream { filter: Value },
}

/// The command lines understood, one per line (also what `help` prints).
pub const USAGE: &str = "\
show apps [-d]                          list applications (-d: with restClientConfig)
show app-rest-methods <key>             REST methods (hooks) enabled for an app
add app <key> [<url>]                   add an application
add app <name> <key> <url>              the same, WCS's form (the name is not kept)
update app <key> <url>                  change an app's hook base URL
update app -l <url> <key>               the same, WCS's form
remove app <key>                        remove an application
add app-rest-method <key> <method>      enable a REST method (hook)
add app-rest-method -a <key>            enable all REST methods
remove app-rest-method <key> <method>   disable a REST method
show streams                            list streams
terminate stream <filter JSON>          stop streams, e.g. terminate stream {\"name\": \"s1\"}
help                                    this list
exit | quit                             leave the interactive mode
";

/// The usage line of one command, for its error messages.
fn usage_of(cmd: &str) -> String {
    let lines: Vec<&str> = USAGE
        .lines()
        .filter(|l| l.starts_with(cmd) && l[cmd.len()..].starts_with([' ', '\t']))
        .map(|l| l.split("   ").next().unwrap_or(l).trim_end())
        .collect();
    lines.join(" | ")
}

fn usage_err(cmd: &str, problem: &str) -> String {
    format!("{cmd}: {problem}; usage: {}", usage_of(cmd))
}

/// Parses one command line, already split into words.
pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Command, String> {
    let w: Vec<&str> = words.iter().map(|s| s.as_ref()).collect();
    let (verb, noun, rest) = match w.as_slice() {
        [] => return Err("no command; type `help` for the list".into()),
        ["help", ..] | ["?"] => return Ok(Command::Help),
        [v] => (*v, "", &w[1..]),
        [v, n, ..] => (*v, *n, &w[2..]),
    };
    let cmd = format!("{verb} {noun}");
    let cmd = cmd.as_str();
    let no_flags = |args: &[&str]| match args.iter().find(|a| a.starts_with('-')) {
        Some(f) => Err(usage_err(cmd, &format!("unknown option `{f}`"))),
        None => Ok(()),
    };
    let n_args = |n: usize| {
        if rest.len() == n {
            no_flags(rest)
        } else {
            Err(usage_err(
                cmd,
                &format!("expected {n} argument(s), got {}", rest.len()),
            ))
        }
    };
    let s = |x: &str| x.to_string();
    Ok(match (verb, noun) {
        ("show", "apps") => match rest {
            [] => Command::ShowApps { details: false },
            ["-d"] => Command::ShowApps { details: true },
            _ => return Err(usage_err(cmd, "unexpected arguments")),
        },
        ("show", "app-rest-methods") => {
            n_args(1)?;
            Command::ShowRestMethods { key: s(rest[0]) }
        }
        ("show", "streams") => {
            n_args(0)?;
            Command::ShowStreams
        }
        ("add", "app") => {
            no_flags(rest)?;
            match rest {
                [key] => Command::AddApp {
                    key: s(key),
                    url: String::new(),
                },
                [key, url] | [_, key, url] => Command::AddApp {
                    key: s(key),
                    url: s(url),
                },
                _ => return Err(usage_err(cmd, "expected a key and a URL")),
            }
        }
        ("update", "app") => {
            let mut url = None;
            let mut pos = Vec::new();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match *a {
                    "-l" => match it.next() {
                        Some(u) => url = Some(s(u)),
                        None => return Err(usage_err(cmd, "`-l` needs a URL")),
                    },
                    "-k" => {
                        return Err(usage_err(
                            cmd,
                            "`-k` (changing an app's key) is not supported; \
                             remove the app and add it under the new key",
                        ))
                    }
                    f if f.starts_with('-') => {
                        return Err(usage_err(cmd, &format!("unknown option `{f}`")))
                    }
                    p => pos.push(p),
                }
            }
            match (url, pos.as_slice()) {
                (Some(url), [key]) => Command::UpdateApp { key: s(key), url },
                (None, [key, url]) => Command::UpdateApp {
                    key: s(key),
                    url: s(url),
                },
                _ => return Err(usage_err(cmd, "expected a key and a URL")),
            }
        }
        ("remove", "app") => {
            n_args(1)?;
            Command::RemoveApp { key: s(rest[0]) }
        }
        ("add", "app-rest-method") => match rest {
            ["-a", key] | [key, "-a"] if !key.starts_with('-') => {
                Command::AddAllRestMethods { key: s(key) }
            }
            _ => {
                n_args(2)?;
                Command::AddRestMethod {
                    key: s(rest[0]),
                    method: s(rest[1]),
                }
            }
        },
        ("remove", "app-rest-method") => {
            n_args(2)?;
            Command::RemoveRestMethod {
                key: s(rest[0]),
                method: s(rest[1]),
            }
        }
        ("terminate", "stream") => {
            if rest.is_empty() {
                return Err(usage_err(cmd, "a filter is required"));
            }
            let text = rest.join(" ");
            let filter: Value = serde_json::from_str(&text)
                .map_err(|e| usage_err(cmd, &format!("the filter is not JSON ({e})")))?;
            if !filter.is_object() {
                return Err(usage_err(cmd, "the filter must be a JSON object"));
            }
            Command::TerminateStream { filter }
        }
        _ => {
            return Err(format!(
                "unknown command `{}`; type `help` for the list",
                w.join(" ")
            ))
        }
    })
}

/// The REST base URL of the server a config describes: `http://<http.listen>`, with a
/// wildcard listen address (0.0.0.0, ::) replaced by 127.0.0.1.
pub fn server_url_from_config(cfg: &Config) -> String {
    // The control API lives on http.control_listen when one is configured.
    let mut a: SocketAddr = cfg.http.control_listen.unwrap_or(cfg.http.listen);
    if a.ip().is_unspecified() {
        a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    format!("http://{a}")
}

/// Why a request did not get an HTTP reply, in a few words (ureq's own message repeats the
/// URL).
fn transport_reason(e: &ureq::Transport) -> String {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        src = s.source();
    }
    match e.message() {
        Some(m) => format!("{}: {m}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// POSTs to the admin API; returns the reply body, or the problem said once.
pub fn call(t: &Target, path: &str, body: Value) -> Result<Value, String> {
    let base = t.server.trim_end_matches('/');
    let url = format!("{base}{path}");
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(30))
        .build();
    let mut req = agent.post(&url).set("Content-Type", "application/json");
    if let Some(tok) = &t.token {
        req = req.set("Authorization", &format!("Bearer {tok}"));
    }
    match req.send_string(&body.to_string()) {
        Ok(r) => r
            .into_json()
            .map_err(|e| format!("{url}: reply is not JSON: {e}")),
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from));
            Err(msg.unwrap_or_else(|| format!("{url}: HTTP {code}")))
        }
        Err(ureq::Error::Transport(e)) => {
            Err(format!("cannot reach {base}: {}", transport_reason(&e)))
        }
    }
}

fn methods_of(a: &Value) -> Vec<&str> {
    a["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect()
}

/// A table of apps (a find_all reply); `details` adds each app's restClientConfig.
pub fn format_apps(apps: &Value, details: bool) -> String {
    let mut out = format!("{:<20} {:<40} methods\n", "key", "url");
    for a in apps.as_array().into_iter().flatten() {
        out += &format!(
            "{:<20} {:<40} {}\n",
            a["key"].as_str().unwrap_or(""),
            a["url"].as_str().unwrap_or(""),
            methods_of(a).join(",")
        );
        if details {
            for (m, rc) in a["restClientConfig"].as_object().into_iter().flatten() {
                out += &format!("    restClientConfig {m}: {rc}\n");
            }
        }
    }
    out
}

/// One app after a change, in one line.
pub fn format_app(verb: &str, a: &Value) -> String {
    format!(
        "{verb} app {}: url={} methods={}\n",
        a["key"].as_str().unwrap_or(""),
        a["url"].as_str().unwrap_or(""),
        methods_of(a).join(",")
    )
}

/// A table of streams (a stream find_all reply).
pub fn format_streams(streams: &Value) -> String {
    let list = streams.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no streams\n".into();
    }
    let mut out = format!(
        "{:<38} {:<24} {:<9} status\n",
        "mediaSessionId", "name", "published"
    );
    for s in &list {
        out += &format!(
            "{:<38} {:<24} {:<9} {}\n",
            s["mediaSessionId"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            s["published"],
            s["status"].as_str().unwrap_or("")
        );
    }
    out
}

/// Carries out one command; returns what to print.
pub fn run(t: &Target, cmd: &Command) -> Result<String, String> {
    let apps = |op: &str, body: Value| call(t, &format!("/rest-api/admin/apps/{op}"), body);
    Ok(match cmd {
        Command::Help => USAGE.to_string(),
        Command::ShowApps { details } => format_apps(&apps("find_all", json!({}))?, *details),
        Command::ShowRestMethods { key } => {
            let all = apps("find_all", json!({}))?;
            let app = all
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == key.as_str())
                .ok_or_else(|| format!("app `{key}` not found"))?;
            methods_of(app).iter().map(|m| format!("{m}\n")).collect()
        }
        Command::AddApp { key, url } => {
            format_app("added", &apps("add", json!({"key": key, "url": url}))?)
        }
        Command::UpdateApp { key, url } => {
            format_app("updated", &apps("update", json!({"key": key, "url": url}))?)
        }
        Command::RemoveApp { key } => {
            apps("remove", json!({"key": key}))?;
            format!("removed app {key}\n")
        }
        Command::AddRestMethod { key, method } => format_app(
            "updated",
            &apps("add_rest_method", json!({"key": key, "method": method}))?,
        ),
        Command::AddAllRestMethods { key } => {
            let mut last = Value::Null;
            for m in REST_METHODS {
                last = apps("add_rest_method", json!({"key": key, "method": m}))?;
            }
            format_app("updated", &last)
        }
        Command::RemoveRestMethod { key, method } => format_app(
            "updated",
            &apps("remove_rest_method", json!({"key": key, "method": method}))?,
        ),
        Command::ShowStreams => format_streams(&call(t, "/rest-api/stream/find_all", json!({}))?),
        Command::TerminateStream { filter } => {
            let r = call(t, "/rest-api/stream/terminate", filter.clone())?;
            let ids: Vec<&str> = r["terminated"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_str())
                .collect();
            format!("terminated {} stream(s): {}\n", ids.len(), ids.join(" "))
        }
    })
}

/// Parses and runs one command line.
pub fn run_words<S: AsRef<str>>(t: &Target, words: &[S]) -> Result<String, String> {
    run(t, &parse(words)?)
}

/// The interactive mode: a `> ` prompt, one command per line until EOF, `exit` or `quit`.
/// A failing command prints `error: ...` to `err` and the session goes on.
pub fn interactive(
    t: &Target,
    input: impl BufRead,
    mut out: impl Write,
    mut err: impl Write,
) -> std::io::Result<()> {
    let mut lines = input.lines();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let Some(line) = lines.next() else {
            writeln!(out)?;
            return Ok(());
        };
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => continue,
            ["exit"] | ["quit"] => return Ok(()),
            _ => match run_words(t, &words) {
                Ok(s) => write!(out, "{s}")?,
                Err(e) => writeln!(err, "error: {e}")?,
            },
        }
    }
}

/// `mediaserver apps show`: the app table.
pub fn show(t: &Target) -> Result<String, String> {
    let apps = call(t, "/rest-api/admin/apps/find_all", json!({}))?;
    Ok(format_apps(&apps, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, String> {
        parse(&line.split_whitespace().collect::<Vec<_>>())
    }

    fn key_url(key: &str, url: &str) -> (String, String) {
        (key.into(), url.into())
    }

    #[test]
    fn the_seed_lines() {
        assert_eq!(p("show apps"), Ok(Command::ShowApps { details: false }));
        assert_eq!(
            p("add app-rest-method defaultApp StreamKeepAliveEvent"),
            Ok(Command::AddRestMethod {
                key: "defaultApp".into(),
                method: "StreamKeepAliveEvent".into()
            })
        );
        assert_eq!(
            p("update app defaultApp http://host/MyAPI"),
            Ok(Command::UpdateApp {
                key: "defaultApp".into(),
                url: "http://host/MyAPI".into()
            })
        );
    }

    #[test]
    fn every_form() {
        assert_eq!(p("show apps -d"), Ok(Command::ShowApps { details: true }));
        assert_eq!(
            p("show app-rest-methods a"),
            Ok(Command::ShowRestMethods { key: "a".into() })
        );
        let add = |l: &str| match p(l) {
            Ok(Command::AddApp { key, url }) => (key, url),
            other => panic!("{l}: {other:?}"),
        };
        assert_eq!(add("add app a http://h/x"), key_url("a", "http://h/x"));
        assert_eq!(add("add app Name a http://h/x"), key_url("a", "http://h/x"));
        assert_eq!(add("add app a"), key_url("a", ""));
        let upd = |l: &str| match p(l) {
            Ok(Command::UpdateApp { key, url }) => (key, url),
            other => panic!("{l}: {other:?}"),
        };
        assert_eq!(
            upd("update app -l http://h/x a"),
            key_url("a", "http://h/x")
        );
        assert_eq!(
            upd("update app a -l http://h/x"),
            key_url("a", "http://h/x")
        );
        assert_eq!(
            p("remove app a"),
            Ok(Command::RemoveApp { key: "a".into() })
        );
        assert_eq!(
            p("add app-rest-method -a a"),
            Ok(Command::AddAllRestMethods { key: "a".into() })
        );
        assert_eq!(
            p("add app-rest-method a -a"),
            Ok(Command::AddAllRestMethods { key: "a".into() })
        );
        assert_eq!(
            p("remove app-rest-method a connect"),
            Ok(Command::RemoveRestMethod {
                key: "a".into(),
                method: "connect".into()
            })
        );
        assert_eq!(p("show streams"), Ok(Command::ShowStreams));
        assert_eq!(
            p(r#"terminate stream { "name": "s 1",  "published": true }"#),
            Ok(Command::TerminateStream {
                filter: json!({"name": "s 1", "published": true})
            })
        );
        assert_eq!(p("help"), Ok(Command::Help));
    }

    #[test]
    fn bad_input_names_the_command() {
        for (line, cmd, what) in [
            ("show apps -x", "show apps", "unexpected"),
            (
                "show app-rest-methods",
                "show app-rest-methods",
                "expected 1",
            ),
            ("show streams now", "show streams", "expected 0"),
            ("add app", "add app", "key"),
            ("add app a b c d", "add app", "key"),
            ("add app -d a", "add app", "`-d`"),
            ("update app a", "update app", "key and a URL"),
            ("update app -l http://h", "update app", "key and a URL"),
            ("update app -l", "update app", "`-l` needs"),
            ("update app -k b a", "update app", "not supported"),
            ("update app -x a b", "update app", "`-x`"),
            ("remove app", "remove app", "expected 1"),
            ("add app-rest-method a", "add app-rest-method", "expected 2"),
            (
                "add app-rest-method -a",
                "add app-rest-method",
                "expected 2",
            ),
            (
                "remove app-rest-method a",
                "remove app-rest-method",
                "expected 2",
            ),
            ("terminate stream", "terminate stream", "required"),
            ("terminate stream {name", "terminate stream", "not JSON"),
            ("terminate stream [1]", "terminate stream", "object"),
        ] {
            let e = p(line).unwrap_err();
            assert!(
                e.starts_with(&format!("{cmd}: ")) && e.contains(what),
                "{line}: {e}"
            );
            assert!(e.contains(&format!("usage: {cmd}")), "{line}: {e}");
        }
        assert!(p("frobnicate apps")
            .unwrap_err()
            .contains("unknown command `frobnicate apps`"));
        assert!(p("").unwrap_err().contains("help"));
    }

    #[test]
    fn server_url_from_listen_address() {
        let mut c = Config::load(None).unwrap();
        assert_eq!(server_url_from_config(&c), "http://127.0.0.1:8081");
        c.http.listen = "[::]:9000".parse().unwrap();
        assert_eq!(server_url_from_config(&c), "http://127.0.0.1:9000");
        c.http.listen = "10.0.0.5:9000".parse().unwrap();
        assert_eq!(server_url_from_config(&c), "http://10.0.0.5:9000");
        c.http.listen = "[::1]:9000".parse().unwrap();
        assert_eq!(server_url_from_config(&c), "http://[::1]:9000");
    }

    #[test]
    fn unreachable_server_is_named_once() {
        // A port nothing listens on: bind, take the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Target {
            server: format!("http://127.0.0.1:{port}"),
            token: None,
        };
        let e = run_words(&t, &["show", "apps"]).unwrap_err();
        assert_eq!(
            e,
            format!("cannot reach http://127.0.0.1:{port}: connection refused")
        );
    }

    #[test]
    fn tables() {
        let s = format_streams(&json!([
            {"mediaSessionId": "m1", "name": "s1", "published": true, "status": "PUBLISHING"}
        ]));
        assert!(s.contains("mediaSessionId") && s.contains("m1") && s.contains("PUBLISHING"));
        assert!(s.contains("true"));
        assert_eq!(format_streams(&json!([])), "no streams\n");
        let a = json!([{"key": "k", "url": "http://u", "methods": ["connect"],
                        "restClientConfig": {"connect": {"restOnError": "FAIL"}}}]);
        assert!(!format_apps(&a, false).contains("FAIL"));
        assert!(format_apps(&a, true).contains("restClientConfig connect"));
    }
}
