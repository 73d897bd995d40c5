//! REST hooks: the server calls the operator's web server at `<app URL>/<method>` with a JSON
//! POST. Authorisation hooks (connect, publishStream, playStream) gate session creation;
//! StreamStatusEvent, unPublishStream and stopStream notify; StreamKeepAliveEvent runs
//! periodically and a 403 reply terminates that stream.
//!
//! Everything runs on the control thread's tokio runtime with a hyper-util client (plain HTTP
//! or HTTPS through rustls: webpki roots plus `hooks.ca_file`). Each class of call
//! (authorization, notification, keep-alive) has its own concurrency pool, so a hanging
//! keep-alive endpoint never delays a publish; a call's timeout covers its wait for a slot
//! too. A slow or dead web server thus delays a hook by at most the timeout and never blocks
//! media (shards never wait on control) or the REST API (requests are independent tasks).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::{HooksConfig, RestClientConfig, RestOnError, RestPolicy};
use crate::core::{ApiError, Core, StatusChange};
use crate::registry::{Counters, RestClientConfigs, SessionRecord};
use engine::Status;

/// Info of a stream stopped because its keep-alive was refused or failed.
pub const KEEPALIVE_INFO: &str = "Terminated by keep-alive";

/// Result of one hook call.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx, with the reply body as JSON (Null when empty or not JSON).
    Ok(Value),
    /// The web server answered with a non-2xx status; `reason` from `{"reason": ...}` if given.
    Rejected { status: u16, reason: Option<String> },
    /// Transport error or timeout.
    Failed(String),
}

/// Fields a web server may overwrite with `restPolicy = OVERWRITE`.
pub const OVERWRITABLE: &[&str] = &["name", "hasAudio", "hasVideo", "audioCodec", "videoCodec"];

/// Which pool a call takes its slot from (keep-alive rounds take theirs up front, see
/// `call_on_slot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// connect, publishStream, playStream: a client waits on these.
    Authorize,
    /// StreamStatusEvent, unPublishStream, stopStream.
    Notify,
}

/// What SIGHUP may change.
struct Settings {
    timeout: Duration,
    secret: Option<ring::hmac::Key>,
    keep_alive: crate::config::KeepAliveConfig,
}

/// One keep-alive round's outcomes, logged as one line at the next round.
#[derive(Default)]
struct RoundTally {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

pub struct Hooks {
    core: Arc<Core>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    auth_pool: Arc<Semaphore>,
    notify_pool: Arc<Semaphore>,
    keepalive_pool: Arc<Semaphore>,
    pool_size: usize,
    settings: RwLock<Arc<Settings>>,
    keepalive_inflight: Mutex<HashSet<String>>,
    tally: RoundTally,
    /// Status changes received but not yet handled, plus notification calls in flight:
    /// zero means every hook for what happened so far has been sent (the drain waits on it).
    outstanding: Arc<AtomicUsize>,
}

fn settings(cfg: &HooksConfig) -> Settings {
    Settings {
        timeout: Duration::from_millis(cfg.timeout_ms),
        secret: cfg
            .hmac_secret
            .as_ref()
            .map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.as_bytes())),
        keep_alive: cfg.keep_alive.clone(),
    }
}

/// `sha256=<hex>` HMAC of `body`.
pub fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    let tag = ring::hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn exclude(mut body: Value, fields: &[String]) -> Value {
    if let Some(o) = body.as_object_mut() {
        for f in fields {
            o.remove(f);
        }
    }
    body
}

/// The TLS settings of hook calls: the webpki (Mozilla) roots, plus the operator's private CA
/// from `hooks.ca_file` (PEM, one or more certificates).
pub fn tls_client_config(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
            .and_then(|it| it.collect())
            .map_err(|e| format!("hooks.ca_file {}: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "hooks.ca_file {}: no certificate in it",
                p.display()
            ));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("hooks.ca_file {}: {e}", p.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Hooks {
    pub fn new(core: Arc<Core>, cfg: &HooksConfig) -> Result<Arc<Hooks>, String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_millis(cfg.timeout_ms)));
        http.set_nodelay(true);
        // Without this the connector refuses https:// URIs before TLS starts.
        http.enforce_http(false);
        let tls = tls_client_config(cfg.ca_file.as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let n = cfg.max_concurrency.max(1);
        Ok(Arc::new(Hooks {
            core,
            client: Client::builder(TokioExecutor::new()).build(https),
            auth_pool: Arc::new(Semaphore::new(n)),
            notify_pool: Arc::new(Semaphore::new(n)),
            keepalive_pool: Arc::new(Semaphore::new(n)),
            pool_size: n,
            settings: RwLock::new(Arc::new(settings(cfg))),
            keepalive_inflight: Mutex::new(HashSet::new()),
            tally: RoundTally::default(),
            outstanding: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// SIGHUP: new timeout, HMAC secret and keep-alive settings for calls from now on.
    /// The pools and the HTTP client stay (max_concurrency and ca_file need a restart).
    pub fn reload(&self, cfg: &HooksConfig) {
        *self.settings.write().unwrap() = Arc::new(settings(cfg));
    }

    /// Hooks not yet sent for status changes so far (0 = all sent or given up on).
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings.read().unwrap().clone()
    }

    /// The URL and settings of `method` for a session of app `app` (its own settings from
    /// a `connect` reply first), unless the method is off.
    fn hook(
        &self,
        app: &str,
        method: &str,
        session: Option<&RestClientConfigs>,
    ) -> Option<(String, RestClientConfig)> {
        self.core
            .apps
            .lock()
            .unwrap()
            .hook_for(app, method, session)
    }

    /// One POST from `class`'s pool; the timeout covers the wait for a slot and the call.
    pub async fn call(&self, class: Class, url: &str, body: &Value) -> Outcome {
        let set = self.settings();
        let pool = match class {
            Class::Authorize => &self.auth_pool,
            Class::Notify => &self.notify_pool,
        };
        let t0 = std::time::Instant::now();
        let o = match tokio::time::timeout(set.timeout, async {
            let Ok(_permit) = pool.acquire().await else {
                return Outcome::Failed("hook client shut down".into());
            };
            self.send(&set, url, body).await
        })
        .await
        {
            Ok(o) => o,
            Err(_) => Outcome::Failed(format!(
                "timeout after {} ms (hooks.timeout_ms, waiting for a slot included)",
                set.timeout.as_millis()
            )),
        };
        self.record(url, &o, t0);
        o
    }

    /// One POST on a slot the caller already holds (keep-alive rounds take theirs up front,
    /// so a stream never fails for want of a local slot).
    async fn call_on_slot(
        &self,
        _slot: tokio::sync::OwnedSemaphorePermit,
        url: &str,
        body: &Value,
    ) -> Outcome {
        let set = self.settings();
        let t0 = std::time::Instant::now();
        let o = match tokio::time::timeout(set.timeout, self.send(&set, url, body)).await {
            Ok(o) => o,
            Err(_) => Outcome::Failed(format!(
                "timeout after {} ms (hooks.timeout_ms)",
                set.timeout.as_millis()
            )),
        };
        self.record(url, &o, t0);
        o
    }

    fn record(&self, url: &str, o: &Outcome, t0: std::time::Instant) {
        // Hook URLs are `<app URL>/<method>`.
        let method = url.rsplit('/').next().unwrap_or("");
        let outcome = match o {
            Outcome::Ok(_) => "ok",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Failed(_) => "failed",
        };
        self.core
            .metrics
            .hook_call(method, outcome, t0.elapsed().as_secs_f64());
    }

    async fn send(&self, set: &Settings, url: &str, body: &Value) -> Outcome {
        let bytes = Bytes::from(body.to_string());
        let mut req = match hyper::Request::post(url).body(Full::new(bytes.clone())) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("bad hook URL {url}: {e}")),
        };
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(k) = &set.secret {
            if let Ok(v) = HeaderValue::from_str(&signature(k, &bytes)) {
                req.headers_mut().insert("X-Signature", v);
            }
        }
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((
                status,
                serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
            ))
        };
        match fut.await {
            Err(e) => Outcome::Failed(e),
            Ok((status, v)) if (200..300).contains(&status) => Outcome::Ok(v),
            Ok((status, v)) => Outcome::Rejected {
                status,
                reason: v["reason"].as_str().map(str::to_string),
            },
        }
    }

    /// Runs an authorisation hook; on OVERWRITE applies the allowed fields to `obj`.
    /// 4xx always denies (403 to the caller, with the web server's reason); errors, timeouts
    /// and 5xx deny only with `restOnError = FAIL`. Returns the web server's reply (Null
    /// when the hook is off or failed under LOG).
    pub async fn authorize(
        &self,
        method: &str,
        app: &str,
        obj: &mut Value,
        session: Option<&RestClientConfigs>,
    ) -> Result<Value, ApiError> {
        let Some((url, rc)) = self.hook(app, method, session) else {
            return Ok(Value::Null);
        };
        let outcome = self
            .call(
                Class::Authorize,
                &url,
                &exclude(obj.clone(), &rc.rest_exclude),
            )
            .await;
        match outcome {
            Outcome::Ok(reply) => {
                if rc.rest_policy == RestPolicy::Overwrite {
                    apply_overwrite(&rc, &reply, obj);
                }
                Ok(reply)
            }
            Outcome::Rejected { status, reason } if (400..500).contains(&status) => {
                let reason =
                    reason.unwrap_or_else(|| format!("{method} denied by web server ({status})"));
                tracing::info!(method, app, status, %reason, name = %obj["name"], "hook denied");
                Err(ApiError::new(403, reason))
            }
            other => {
                let what = match other {
                    Outcome::Rejected { status, .. } => format!("status {status}"),
                    Outcome::Failed(e) => e,
                    Outcome::Ok(_) => unreachable!(),
                };
                if rc.rest_on_error == RestOnError::Fail {
                    tracing::warn!(method, app, error = %what, "hook failed; denying (restOnError=FAIL)");
                    Err(ApiError::new(502, format!("{method} hook failed: {what}")))
                } else {
                    tracing::warn!(method, app, error = %what, "hook failed; going on (restOnError=LOG)");
                    Ok(Value::Null)
                }
            }
        }
    }

    /// Starts the status-event and keep-alive tasks on the current runtime.
    pub fn spawn_background(self: &Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let outstanding = self.outstanding.clone();
        // Counted inside Core::notify, before the event that releases the session is handled
        // (see docs/lifecycle.md): a drain that waits for both sees no gap.
        self.core.listen(Box::new(move |c| {
            outstanding.fetch_add(1, Ordering::AcqRel);
            let ok = tx.send(c.clone()).is_ok();
            if !ok {
                outstanding.fetch_sub(1, Ordering::AcqRel);
            }
            ok
        }));
        let me = self.clone();
        let mut stop1 = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop1.changed() => return,
                    c = rx.recv() => match c {
                        Some(c) => {
                            me.on_status(c);
                            me.outstanding.fetch_sub(1, Ordering::AcqRel);
                        }
                        None => return,
                    },
                }
            }
        });
        // The keep-alive task always runs and reads its settings each round, so SIGHUP can
        // turn keep-alives on or off and change their interval.
        let me = self.clone();
        let mut stop2 = stop;
        tokio::spawn(async move {
            let mut announced = None;
            loop {
                let ka = me.settings().keep_alive.clone();
                if announced.as_ref() != Some(&ka) {
                    if ka.enabled {
                        tracing::info!(interval_ms = ka.interval_ms, apps = ?ka.apps, "stream keep-alive enabled");
                        for w in me.keep_alive_warnings() {
                            tracing::warn!("{w}");
                        }
                    } else if announced.is_some() {
                        tracing::info!("stream keep-alive disabled");
                    }
                    announced = Some(ka.clone());
                }
                let period = Duration::from_millis(ka.interval_ms.max(10));
                tokio::select! {
                    _ = stop2.changed() => return,
                    _ = tokio::time::sleep(period) => {
                        if ka.enabled {
                            me.keep_alive_round(&ka).await;
                        }
                    }
                }
            }
        });
    }

    /// Why keep-alives, though enabled, would not be sent for some listed app.
    pub fn keep_alive_warnings(&self) -> Vec<String> {
        keep_alive_warnings(&self.core.apps.lock().unwrap(), &self.settings().keep_alive)
    }

    fn on_status(self: &Arc<Self>, c: StatusChange) {
        // Cluster relays are infrastructure: their node's web server hears of the real
        // sessions only (a keep-alive 403 must not cut a whole edge).
        if c.record.relay.is_some() {
            return;
        }
        if !(matches!(c.status, Status::Publishing | Status::Playing) || c.status.is_final()) {
            return;
        }
        let mut obj = c.record.to_json(Some(&c.counters), false);
        obj["status"] = json!(c.status.as_str());
        obj["info"] = json!(c.info);
        let app = c.record.app_key.clone();
        let mut methods = vec!["StreamStatusEvent"];
        if c.status.is_final() {
            methods.push(if c.record.published {
                "unPublishStream"
            } else {
                "stopStream"
            });
        }
        let session = c.record.rest_client_config.as_deref();
        for m in methods {
            let Some((url, rc)) = self.hook(&app, m, session) else {
                continue;
            };
            let me = self.clone();
            let body = exclude(obj.clone(), &rc.rest_exclude);
            self.outstanding.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(async move {
                if let o @ (Outcome::Failed(_) | Outcome::Rejected { .. }) =
                    me.call(Class::Notify, &url, &body).await
                {
                    tracing::warn!(method = m, %url, outcome = ?o, "notification hook failed");
                }
                me.outstanding.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    /// Sends StreamKeepAliveEvent for every live stream of the configured apps, with the
    /// stream's current counters. A stream whose previous keep-alive is still in flight is
    /// skipped, and so is the whole round while the keep-alive pool is full; what happened
    /// is one log line per round (the previous round's outcomes), not one per stream.
    async fn keep_alive_round(self: &Arc<Self>, ka: &crate::config::KeepAliveConfig) {
        let take = |a: &AtomicU64| a.swap(0, Ordering::AcqRel);
        let (ok, refused, failed) = (
            take(&self.tally.ok),
            take(&self.tally.refused),
            take(&self.tally.failed),
        );
        if refused + failed > 0 {
            tracing::warn!(
                ok,
                refused,
                failed,
                "keep-alive round: some calls were refused (stream terminated) or failed (restOnError decides)"
            );
        }
        if self.keepalive_pool.available_permits() == 0 {
            tracing::warn!(
                in_flight = self.pool_size,
                "keep-alive round skipped: every keep-alive slot is still waiting on the web server (hooks.max_concurrency)"
            );
            return;
        }
        let all: Vec<SessionRecord> = self
            .core
            .find(&Default::default())
            .into_iter()
            .filter(|r| r.relay.is_none() && ka.apps.contains(&r.app_key))
            .collect();
        if all.is_empty() {
            return;
        }
        // The stats snapshot waits on the shards briefly: off the runtime's threads.
        let core = self.core.clone();
        let live = tokio::task::spawn_blocking(move || core.live())
            .await
            .unwrap_or_default();
        let mut busy = 0usize;
        for r in all {
            let Some((url, rc)) = self.hook(
                &r.app_key,
                "StreamKeepAliveEvent",
                r.rest_client_config.as_deref(),
            ) else {
                continue;
            };
            // One keep-alive per stream in flight: a hanging web server does not pile them up.
            if self
                .keepalive_inflight
                .lock()
                .unwrap()
                .contains(&r.media_session_id)
            {
                busy += 1;
                continue;
            }
            // A slot now or the stream waits for the next round: only the web server's
            // answers (or its silence past the timeout) can fail a stream.
            let Ok(slot) = self.keepalive_pool.clone().try_acquire_owned() else {
                busy += 1;
                continue;
            };
            self.keepalive_inflight
                .lock()
                .unwrap()
                .insert(r.media_session_id.clone());
            let counters: Counters = live.counters.get(&r.id).copied().unwrap_or_default();
            let body = exclude(r.to_json(Some(&counters), false), &rc.rest_exclude);
            let me = self.clone();
            tokio::spawn(async move {
                let outcome = me.call_on_slot(slot, &url, &body).await;
                me.keepalive_inflight
                    .lock()
                    .unwrap()
                    .remove(&r.media_session_id);
                let stop = match &outcome {
                    Outcome::Ok(_) => false,
                    Outcome::Rejected { status: 403, .. } => true,
                    _ => rc.rest_on_error == RestOnError::Fail,
                };
                let tally = match &outcome {
                    Outcome::Ok(_) => &me.tally.ok,
                    Outcome::Rejected { status: 403, .. } => &me.tally.refused,
                    _ => &me.tally.failed,
                };
                tally.fetch_add(1, Ordering::AcqRel);
                if stop {
                    tracing::info!(id = %r.media_session_id, name = %r.name, published = r.published, outcome = ?outcome, "keep-alive refused; terminating");
                    me.core.terminate_one(&r.media_session_id, KEEPALIVE_INFO);
                } else if !matches!(outcome, Outcome::Ok(_)) {
                    tracing::debug!(id = %r.media_session_id, outcome = ?outcome, "keep-alive failed; keeping stream (restOnError=LOG)");
                }
            });
        }
        if busy > 0 {
            tracing::debug!(
                streams = busy,
                "keep-alive: streams skipped this round (previous call in flight, or no free slot)"
            );
        }
    }
}

/// Why keep-alives, though enabled, would not be sent for some app `ka.apps` lists.
pub fn keep_alive_warnings(
    apps: &crate::apps::Apps,
    ka: &crate::config::KeepAliveConfig,
) -> Vec<String> {
    ka.apps
        .iter()
        .filter_map(|k| match apps.get(k) {
            None => Some(format!(
                "hooks.keep_alive.apps names `{k}`, which is not an app: no keep-alives for it"
            )),
            Some(a) if !a.methods.contains("StreamKeepAliveEvent") => Some(format!(
                "keep-alives are enabled for app `{k}` but it does not enable the \
                 StreamKeepAliveEvent method: none will be sent until it does \
                 (`mediaserver cli add app-rest-method {k} StreamKeepAliveEvent`)"
            )),
            Some(a) if a.url.is_empty() => Some(format!(
                "keep-alives are enabled for app `{k}` but it has no URL: none will be sent \
                 until it has one"
            )),
            Some(_) => None,
        })
        .collect()
}

/// The per-session restClientConfig a web server returned in its `connect` reply, if any.
/// A malformed one is logged and ignored (the app's settings apply).
pub fn session_config(reply: &Value) -> Option<Arc<RestClientConfigs>> {
    let v = reply.get("restClientConfig")?;
    match serde_json::from_value::<RestClientConfigs>(v.clone()) {
        Ok(m) => {
            if let Some(bad) = m
                .keys()
                .find(|k| !crate::apps::REST_METHODS.contains(&k.as_str()))
            {
                tracing::warn!(method = %bad, "connect reply: restClientConfig names an unknown method; ignored");
                return None;
            }
            Some(Arc::new(m))
        }
        Err(e) => {
            tracing::warn!(error = %e, "connect reply: malformed restClientConfig; ignored");
            None
        }
    }
}

/// Strips `clientExclude` fields from a reply this server gives the client.
pub fn client_exclude(body: Value, rc: &RestClientConfig) -> Value {
    exclude(body, &rc.client_exclude)
}

fn apply_overwrite(rc: &RestClientConfig, reply: &Value, obj: &mut Value) {
    for f in &rc.rest_overwrite {
        if !OVERWRITABLE.contains(&f.as_str()) {
            tracing::warn!(field = %f, "restOverwrite field not supported; ignored");
            continue;
        }
        if let Some(v) = reply.get(f) {
            obj[f.as_str()] = v.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&k, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn overwrite_only_listed_and_allowed_fields() {
        let rc = RestClientConfig {
            rest_policy: RestPolicy::Overwrite,
            rest_overwrite: vec!["name".into(), "appKey".into()],
            ..Default::default()
        };
        let mut obj = json!({"name": "a", "appKey": "x", "hasAudio": false});
        apply_overwrite(
            &rc,
            &json!({"name": "b", "appKey": "evil", "hasAudio": true}),
            &mut obj,
        );
        assert_eq!(obj, json!({"name": "b", "appKey": "x", "hasAudio": false}));
    }

    #[test]
    fn keep_alive_warnings_name_the_app_and_the_fix() {
        let mut apps = crate::apps::Apps::default();
        apps.add("defaultApp", "http://127.0.0.1:9/MyAPI").unwrap();
        let ka = crate::config::KeepAliveConfig {
            enabled: true,
            interval_ms: 1000,
            apps: vec!["defaultApp".into(), "ghost".into()],
        };
        let w = keep_alive_warnings(&apps, &ka);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("`defaultApp`") && w[0].contains("StreamKeepAliveEvent"));
        assert!(w[1].contains("`ghost`") && w[1].contains("not an app"));
        apps.add_method("defaultApp", "StreamKeepAliveEvent")
            .unwrap();
        assert_eq!(keep_alive_warnings(&apps, &ka).len(), 1);
    }

    #[test]
    fn exclude_removes_fields() {
        let v = exclude(
            json!({"a": 1, "sdp": "x", "b": 2}),
            &["sdp".into(), "b".into()],
        );
        assert_eq!(v, json!({"a": 1}));
    }
}
