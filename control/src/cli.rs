//! `mediaserver apps ...`: operator commands against a running server's admin API.

use serde_json::{json, Value};

/// Where the running server is and how to authenticate.
pub struct Target {
    pub server: String,
    pub token: Option<String>,
}

/// POSTs to the admin API; returns the reply body or a readable error.
pub fn call(t: &Target, path: &str, body: Value) -> Result<Value, String> {
    let url = format!("{}{}", t.server.trim_end_matches('/'), path);
    let mut req = ureq::post(&url).set("Content-Type", "application/json");
    if let Some(tok) = &t.token {
        req = req.set("Authorization", &format!("Bearer {tok}"));
    }
    match req.send_string(&body.to_string()) {
        Ok(r) => r.into_json().map_err(|e| format!("{url}: bad reply: {e}")),
        Err(ureq::Error::Status(code, r)) => {
            let v: Value = r.into_json().unwrap_or(Value::Null);
            Err(format!(
                "{code}: {}",
                v["error"].as_str().unwrap_or("error")
            ))
        }
        Err(e) => Err(format!("{url}: {e}")),
    }
}

pub fn show(t: &Target) -> Result<String, String> {
    let apps = call(t, "/rest-api/admin/apps/find_all", json!({}))?;
    let mut out = format!("{:<20} {:<40} methods\n", "key", "url");
    for a in apps.as_array().into_iter().flatten() {
        let methods: Vec<&str> = a["methods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        out += &format!(
            "{:<20} {:<40} {}\n",
            a["key"].as_str().unwrap_or(""),
            a["url"].as_str().unwrap_or(""),
            methods.join(",")
        );
    }
    Ok(out)
}
