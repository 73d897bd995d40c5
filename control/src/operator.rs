//! The operator's routes that are not stream control: the apps admin API, `/metrics` and
//! `/ready` (stream find/terminate stay with the other stream routes in `server`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use serde::Deserialize;
use serde_json::json;

use crate::core::{ApiError, AppsEditError};
use crate::server::{json_resp, parse_json, Api, Resp};

#[derive(Clone, Copy)]
pub(crate) enum AppEdit {
    Add,
    Update,
    AddMethod,
    RemoveMethod,
    Remove,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppBody {
    key: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    method: Option<String>,
}

impl Api {
    /// 200 when new sessions would be accepted; 503 with the reasons otherwise (draining,
    /// a shard that does not answer, no free media port).
    pub(crate) async fn ready(&self) -> Resp {
        let core = self.core.clone();
        let stuck = tokio::task::spawn_blocking(move || {
            core.unresponsive_shards(std::time::Duration::from_secs(1))
        })
        .await
        .unwrap_or_default();
        let mut reasons = Vec::new();
        let draining = self.core.is_draining();
        if draining {
            reasons.push("draining: the server is shutting down".to_string());
        }
        for s in stuck {
            reasons.push(format!("shard {s} does not answer"));
        }
        if self.core.ports_exhausted() {
            let m = &self.core.cfg.media;
            reasons.push(format!(
                "media port pool exhausted (media.port_min..port_max = {}..{})",
                m.port_min, m.port_max
            ));
        }
        if reasons.is_empty() {
            json_resp(200, &json!({"status": "ready"}))
        } else {
            let status = if draining { "draining" } else { "not ready" };
            json_resp(503, &json!({"status": status, "reasons": reasons}))
        }
    }

    pub(crate) async fn metrics(&self) -> Result<Resp, ApiError> {
        let core = self.core.clone();
        let text = tokio::task::spawn_blocking(move || {
            let (ports_used, ports_total) = core.port_usage();
            let snap = crate::metrics::Snapshot {
                live: core.live(),
                registry_per_shard: core.registry_per_shard(),
                stopping: core.stopping_count(),
                sessions: core.session_kinds(),
                ports_used,
                ports_total,
                draining: core.is_draining(),
            };
            crate::metrics::render(&core.metrics, snap)
        })
        .await
        .map_err(|e| ApiError::new(500, format!("metrics: {e}")))?;
        let mut r = Response::new(Full::new(Bytes::from(text)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        Ok(r)
    }

    pub(crate) fn apps_list(&self) -> Resp {
        json_resp(200, &json!(self.core.apps.lock().unwrap().list()))
    }

    pub(crate) fn apps_edit(&self, body: &[u8], op: AppEdit) -> Result<Resp, ApiError> {
        let b: AppBody = parse_json(body)?;
        let need = |f: Option<String>, name: &str| {
            f.ok_or_else(|| ApiError::new(400, format!("field `{name}`: required")))
        };
        let (url, method) = match op {
            AppEdit::Update => (need(b.url, "url")?, String::new()),
            AppEdit::AddMethod | AppEdit::RemoveMethod => {
                (String::new(), need(b.method, "method")?)
            }
            AppEdit::Add => (b.url.unwrap_or_default(), String::new()),
            AppEdit::Remove => (String::new(), String::new()),
        };
        let key = b.key;
        let r = self.core.edit_apps(|apps| match op {
            AppEdit::Add => apps.add(&key, &url),
            AppEdit::Update => apps.update_url(&key, &url),
            AppEdit::AddMethod => apps.add_method(&key, &method),
            AppEdit::RemoveMethod => apps.remove_method(&key, &method),
            AppEdit::Remove => apps.remove(&key),
        });
        match r {
            Ok(app) => {
                if matches!(op, AppEdit::Remove) {
                    tracing::info!(app = %app.key, "app removed");
                    if self.core.cfg.apps.iter().any(|a| a.key == app.key) {
                        tracing::warn!(
                            app = %app.key,
                            "removed app is also in the config's [[apps]]: it returns at the next start unless removed there too"
                        );
                    }
                } else {
                    tracing::info!(app = %app.key, url = %app.url, methods = ?app.methods, "app changed");
                }
                Ok(json_resp(200, &json!(app)))
            }
            Err(AppsEditError::Persist(e)) => {
                tracing::error!(app = %key, "{e}");
                Err(ApiError::new(500, e))
            }
            Err(AppsEditError::Invalid(e)) if e.contains("not found") => Err(ApiError::new(404, e)),
            Err(AppsEditError::Invalid(e)) if e.contains("already exists") => {
                Err(ApiError::new(409, e))
            }
            Err(AppsEditError::Invalid(e)) => Err(ApiError::new(400, e)),
        }
    }
}
