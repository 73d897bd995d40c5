//! Applications: a key, the operator's hook base URL and the REST methods (hooks) enabled.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

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

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct App {
    pub key: String,
    pub url: String,
    pub methods: BTreeSet<String>,
    #[serde(rename = "restClientConfig")]
    pub rest_client_config: BTreeMap<String, RestClientConfig>,
}

#[derive(Debug, Default)]
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

impl Apps {
    pub fn from_config(apps: &[AppConfig]) -> Result<Apps, String> {
        let mut me = Apps::default();
        for a in apps {
            me.add(&a.key, &a.url)?;
            for m in &a.methods {
                me.add_method(&a.key, m)?;
            }
            for (m, rc) in &a.rest_client_config {
                check_method(m)?;
                me.app_mut(&a.key)?
                    .rest_client_config
                    .insert(m.clone(), rc.clone());
            }
        }
        Ok(me)
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
}
