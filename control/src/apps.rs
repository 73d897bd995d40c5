//! Applications: a key, the operator's hook base URL and the REST methods (hooks) enabled.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{AppConfig, RestClientConfig};

/// Hook methods an application can enable, as the reference server names them.
pub const REST_METHODS: &[&str] = &[
    "connect",
    "publishStream",
    "unPublishStream",
    "playStream",
    "stopStream",
    "StreamStatusEvent",
    "ConnectionStatusEvent",
    "StreamKeepAliveEvent",
];

/// One application, as the admin API returns it and as the state file stores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub key: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub methods: BTreeSet<String>,
    #[serde(rename = "restClientConfig", default)]
    pub rest_client_config: BTreeMap<String, RestClientConfig>,
}

#[derive(Debug, Default, Clone)]
pub struct Apps {
    map: BTreeMap<String, App>,
}

fn check_method(m: &str) -> Result<(), String> {
    if REST_METHODS.contains(&m) {
        Ok(())
    } else {
        Err(format!(
            "field `method`: unknown REST method `{m}` (expected one of {})",
            REST_METHODS.join(", ")
        ))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "field `url`: `{url}` must start with http:// or https:// (or be empty)"
        ))
    }
}

/// The apps a server starts with: the config's `[[apps]]` overlaid with the state file at
/// `state_path` (`<data_dir>/apps.json`), if present.
///
/// The one precedence rule: the state file, when present, holds the apps as the operator last
/// changed them at runtime and wins over `[[apps]]` for every app it lists; apps only in the
/// config are added; delete the file to return to the config.
///
/// A state file that cannot be read or parsed, or that names an invalid app, is an error
/// naming the file (the operator's changes are never dropped silently).
pub fn effective(config_apps: &[AppConfig], state_path: &Path) -> Result<Apps, String> {
    let from_config = Apps::from_config(config_apps)?;
    let text = match std::fs::read(state_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(from_config),
        Err(e) => return Err(format!("apps state file {}: {e}", state_path.display())),
    };
    let bad = |e: String| {
        format!(
            "apps state file {}: {e} (fix it, or delete it to return to the config's [[apps]])",
            state_path.display()
        )
    };
    let saved: Vec<App> = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut me = Apps::default();
    for a in saved {
        me.load(&AppConfig {
            key: a.key,
            url: a.url,
            methods: a.methods.into_iter().collect(),
            rest_client_config: a.rest_client_config,
        })
        .map_err(bad)?;
    }
    for (key, app) in from_config.map {
        me.map.entry(key).or_insert(app);
    }
    Ok(me)
}

/// Writes `apps` to `path` atomically and durably: a temporary file in the same directory,
/// fsynced, renamed over `path`, then the directory fsynced. Creates the directory.
pub fn save(apps: &Apps, path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut body = serde_json::to_vec_pretty(&apps.list()).map_err(|e| e.to_string())?;
    body.push(b'\n');
    let step = |what: &'static str| move |e: std::io::Error| (what, e);
    let r = (|| {
        std::fs::create_dir_all(dir).map_err(step("create directory"))?;
        let mut f = std::fs::File::create(&tmp).map_err(step("create temporary file"))?;
        f.write_all(&body).map_err(step("write"))?;
        f.sync_all().map_err(step("fsync"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(step("rename"))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(step(
                "fsync directory (the file may already hold the change)",
            ))
    })();
    r.map_err(|(what, e)| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {what}: {e}", path.display())
    })
}

impl Apps {
    pub fn from_config(apps: &[AppConfig]) -> Result<Apps, String> {
        let mut me = Apps::default();
        for a in apps {
            me.load(a)?;
        }
        Ok(me)
    }

    /// Adds one app with its methods and settings, checking all of them.
    fn load(&mut self, a: &AppConfig) -> Result<(), String> {
        self.add(&a.key, &a.url)?;
        for m in &a.methods {
            self.add_method(&a.key, m)?;
        }
        for (m, rc) in &a.rest_client_config {
            check_method(m)?;
            self.app_mut(&a.key)?
                .rest_client_config
                .insert(m.clone(), rc.clone());
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<App> {
        self.map.values().cloned().collect()
    }

    pub fn get(&self, key: &str) -> Option<&App> {
        self.map.get(key)
    }

    pub fn add(&mut self, key: &str, url: &str) -> Result<App, String> {
        if key.is_empty() || key.len() > 128 {
            return Err("field `key`: must be 1..=128 characters".into());
        }
        check_url(url)?;
        if self.map.contains_key(key) {
            return Err(format!("app `{key}` already exists"));
        }
        let app = App {
            key: key.into(),
            url: url.into(),
            methods: BTreeSet::new(),
            rest_client_config: BTreeMap::new(),
        };
        self.map.insert(key.into(), app.clone());
        Ok(app)
    }

    /// Removes an app; returns it as it was.
    pub fn remove(&mut self, key: &str) -> Result<App, String> {
        self.map
            .remove(key)
            .ok_or_else(|| format!("app `{key}` not found"))
    }

    fn app_mut(&mut self, key: &str) -> Result<&mut App, String> {
        self.map
            .get_mut(key)
            .ok_or_else(|| format!("app `{key}` not found"))
    }

    pub fn update_url(&mut self, key: &str, url: &str) -> Result<App, String> {
        check_url(url)?;
        let a = self.app_mut(key)?;
        a.url = url.into();
        Ok(a.clone())
    }

    pub fn add_method(&mut self, key: &str, method: &str) -> Result<App, String> {
        check_method(method)?;
        let a = self.app_mut(key)?;
        a.methods.insert(method.into());
        Ok(a.clone())
    }

    pub fn remove_method(&mut self, key: &str, method: &str) -> Result<App, String> {
        check_method(method)?;
        let a = self.app_mut(key)?;
        a.methods.remove(method);
        Ok(a.clone())
    }

    /// The hook URL and settings for `method` of `key`, unless disabled.
    pub fn hook(&self, key: &str, method: &str) -> Option<(String, RestClientConfig)> {
        self.hook_for(key, method, None)
    }

    /// As [`Self::hook`], with a session's own settings (from its `connect` reply) taking
    /// the place of the app's for the methods they name.
    pub fn hook_for(
        &self,
        key: &str,
        method: &str,
        session: Option<&crate::registry::RestClientConfigs>,
    ) -> Option<(String, RestClientConfig)> {
        let url = self.hook_url(key, method)?;
        let rc = self.settings(key, method, session);
        (rc.rest_policy != crate::config::RestPolicy::Disabled).then_some((url, rc))
    }

    /// The settings of `method` for app `key` (session's first, then the app's, else the
    /// defaults), whether or not the method is enabled.
    pub fn settings(
        &self,
        key: &str,
        method: &str,
        session: Option<&crate::registry::RestClientConfigs>,
    ) -> RestClientConfig {
        session
            .and_then(|s| s.get(method))
            .or_else(|| {
                self.map
                    .get(key)
                    .and_then(|a| a.rest_client_config.get(method))
            })
            .cloned()
            .unwrap_or_default()
    }

    /// The hook URL for `method` of `key`, when the app exists, has a URL and enables it.
    pub fn hook_url(&self, key: &str, method: &str) -> Option<String> {
        let a = self.map.get(key)?;
        (!a.url.is_empty() && a.methods.contains(method))
            .then(|| format!("{}/{}", a.url.trim_end_matches('/'), method))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_update_and_methods() {
        let mut apps = Apps::default();
        apps.add("defaultApp", "").unwrap();
        assert!(apps.add("defaultApp", "").is_err());
        assert_eq!(apps.hook_url("defaultApp", "StreamKeepAliveEvent"), None);
        apps.add_method("defaultApp", "StreamKeepAliveEvent")
            .unwrap();
        assert_eq!(
            apps.hook_url("defaultApp", "StreamKeepAliveEvent"),
            None,
            "no URL yet"
        );
        apps.update_url("defaultApp", "http://host/MyAPI/").unwrap();
        assert_eq!(
            apps.hook_url("defaultApp", "StreamKeepAliveEvent")
                .as_deref(),
            Some("http://host/MyAPI/StreamKeepAliveEvent")
        );
        assert!(apps
            .add_method("defaultApp", "Bogus")
            .unwrap_err()
            .contains("Bogus"));
        assert!(apps
            .update_url("nope", "http://x")
            .unwrap_err()
            .contains("not found"));
        assert!(apps
            .update_url("defaultApp", "ftp://x")
            .unwrap_err()
            .contains("url"));
        apps.remove_method("defaultApp", "StreamKeepAliveEvent")
            .unwrap();
        assert_eq!(apps.hook_url("defaultApp", "StreamKeepAliveEvent"), None);
    }

    fn tmp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ms-apps-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn config_apps() -> Vec<AppConfig> {
        crate::Config::load(Some(
            "[[apps]]\nkey = \"defaultApp\"\nurl = \"\"\nmethods = [\"connect\"]\n\
             [[apps]]\nkey = \"other\"\nurl = \"http://o\"\n",
        ))
        .unwrap()
        .apps
    }

    #[test]
    fn state_file_round_trips_and_wins_over_config() {
        let dir = tmp_dir("rt");
        let path = dir.join("apps.json");
        // No file: the config as is.
        let apps = effective(&config_apps(), &path).unwrap();
        assert_eq!(apps.list().len(), 2);
        assert!(apps.get("defaultApp").unwrap().url.is_empty());

        let mut changed = apps.clone();
        changed
            .update_url("defaultApp", "http://host/MyAPI")
            .unwrap();
        changed
            .add_method("defaultApp", "StreamKeepAliveEvent")
            .unwrap();
        changed.remove("other").unwrap();
        changed.add("runtime", "http://r").unwrap();
        changed
            .app_mut("runtime")
            .unwrap()
            .rest_client_config
            .insert(
                "connect".into(),
                RestClientConfig {
                    rest_on_error: crate::config::RestOnError::Fail,
                    ..Default::default()
                },
            );
        save(&changed, &path).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["apps.json"], "no temporary file left behind");

        let back = effective(&config_apps(), &path).unwrap();
        assert_eq!(
            back.get("defaultApp"),
            changed.get("defaultApp"),
            "the file wins"
        );
        assert_eq!(back.get("runtime"), changed.get("runtime"));
        assert_eq!(
            back.get("other").unwrap().url,
            "http://o",
            "an app only in the config is added"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_or_invalid_state_file_is_an_error_naming_it() {
        let dir = tmp_dir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("apps.json");
        for text in [
            "{not json",
            r#"[{"key":"a","url":"ftp://x"}]"#,
            r#"[{"key":"a","methods":["Bogus"]}]"#,
            r#"[{"key":"a"},{"key":"a"}]"#,
            r#"[{"key":"a","extra":1}]"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let e = effective(&config_apps(), &path).unwrap_err();
            assert!(e.contains(&path.display().to_string()), "{text}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn save_failure_names_the_file() {
        let dir = tmp_dir("ro");
        std::fs::create_dir_all(&dir).unwrap();
        // The "directory" is a regular file: nothing can be created under it.
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("apps.json");
        let e = save(&Apps::default(), &path).unwrap_err();
        assert!(e.contains(&path.display().to_string()), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
