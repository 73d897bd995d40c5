//! Origin/edge cluster on NATS (design and message flows: `docs/cluster.md`). Runs on the
//! control thread's tokio runtime; media never waits on it, and every NATS call is bounded by
//! `cluster.rpc_timeout_ms` so REST does not stall either.
//!
//! This part: the stream directory (one publisher per name cluster-wide, `directory.rs`) and
//! node liveness (heartbeats; a dead node's directory entries are removed by its peers,
//! `liveness.rs`). Edge pull and cluster-wide find/terminate build on it.

pub mod directory;
pub mod liveness;
pub mod names;
pub mod reconcile;
pub mod relay;
pub mod rest;
pub mod rpc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::kv;

use crate::config::ClusterConfig;
use crate::core::{ApiError, Core, StatusChange};
use crate::registry::SessionRecord;
use directory::Claim;

pub struct Cluster {
    pub node: String,
    cfg: ClusterConfig,
    client: async_nats::Client,
    /// Created (or opened) on first use once connected; a NATS restart loses memory buckets,
    /// so a failed call drops it and the next one re-creates it.
    streams: Mutex<Option<kv::Store>>,
    /// Names this node holds: name → (publisher mediaSessionId, revision).
    claims: Mutex<HashMap<String, (String, u64)>>,
    liveness: Mutex<liveness::Peers>,
    core: Arc<Core>,
    /// Streams being pulled: concurrent cold plays of one stream wait on one pull.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Set by every NATS `Connected` event (reconnects included), taken by the liveness
    /// loop: a disconnection shorter than its tick must still trigger the re-claim.
    pub(crate) connected_event: Arc<std::sync::atomic::AtomicBool>,
}

/// 503 naming NATS, for calls that need it while it is away.
pub(crate) fn nats_down(url: &str, what: &str) -> ApiError {
    ApiError::new(503, format!("NATS unavailable ({url}): {what}"))
}

impl Cluster {
    /// Connects (in the background: the node starts and serves local media without NATS, and
    /// reconnects for ever) and starts the heartbeat and sweep tasks.
    pub async fn start(core: Arc<Core>) -> Result<Arc<Cluster>, String> {
        let node = core.cfg.node_id.as_str();
        let cfg = &core.cfg.cluster;
        let url = cfg.nats_url.clone();
        let connected_event = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = connected_event.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("mediaserver {node}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .ping_interval(Duration::from_secs(2))
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_millis(cfg.rpc_timeout_ms)))
            .event_callback(move |e| {
                let url = url.clone();
                let flag = flag.clone();
                async move {
                    match e {
                        async_nats::Event::Connected => {
                            flag.store(true, std::sync::atomic::Ordering::SeqCst);
                            tracing::info!(%url, "NATS connected")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(%url, "NATS disconnected; reconnecting (cluster calls answer 503 meanwhile)")
                        }
                        other => tracing::info!(%url, event = %other, "NATS event"),
                    }
                }
            })
            .connect(cfg.nats_url.as_str())
            .await
            .map_err(|e| format!("cluster.nats_url {}: {e}", cfg.nats_url))?;
        let me = Arc::new(Cluster {
            node: node.to_string(),
            cfg: cfg.clone(),
            client,
            streams: Mutex::new(None),
            claims: Mutex::new(HashMap::new()),
            liveness: Mutex::new(liveness::Peers::new(
                node,
                Duration::from_millis(cfg.dead_after_ms),
            )),
            pulls: Mutex::new(HashMap::new()),
            connected_event,
            core: core.clone(),
        });
        liveness::spawn(me.clone());
        relay::spawn(me.clone());
        reconcile::spawn(me.clone());
        tracing::info!(node, nats = %cfg.nats_url, "cluster enabled");
        Ok(me)
    }

    pub fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.rpc_timeout_ms)
    }

    /// The directory bucket, created if missing.
    async fn store(&self) -> Result<kv::Store, String> {
        if let Some(s) = self.streams.lock().unwrap().clone() {
            return Ok(s);
        }
        let js = async_nats::jetstream::new(self.client.clone());
        let s = match js.get_key_value(directory::STREAMS_BUCKET).await {
            Ok(s) => s,
            Err(_) => js
                .create_key_value(directory::bucket_config())
                .await
                .map_err(|e| format!("create bucket {}: {e}", directory::STREAMS_BUCKET))?,
        };
        *self.streams.lock().unwrap() = Some(s.clone());
        Ok(s)
    }

    /// Runs one NATS operation within the deadline; 503 naming NATS when it is away or slow.
    async fn bounded<T, F>(&self, what: &str, f: F) -> Result<T, ApiError>
    where
        F: std::future::Future<Output = Result<T, String>>,
    {
        if !self.connected() {
            return Err(nats_down(&self.cfg.nats_url, what));
        }
        match tokio::time::timeout(self.timeout(), f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "{what}");
                // The bucket may be gone (NATS restarted): open it afresh next time.
                *self.streams.lock().unwrap() = None;
                Err(nats_down(&self.cfg.nats_url, &format!("{what}: {e}")))
            }
            Err(_) => Err(nats_down(
                &self.cfg.nats_url,
                &format!("{what}: no answer within {} ms", self.cfg.rpc_timeout_ms),
            )),
        }
    }

    /// Claims `name` for the publisher `msid` about to be created here: 409 naming the node
    /// that publishes it, 503 when NATS is away (the name cannot be claimed).
    pub async fn claim(&self, name: &str, msid: &str) -> Result<(), ApiError> {
        let what = format!("cannot claim stream `{name}`");
        let r = self
            .bounded(&what, async {
                self.heartbeat().await;
                let store = self.store().await?;
                directory::claim(&store, name, &self.node, msid).await
            })
            .await?;
        match r {
            Claim::Won(rev) => {
                self.claims
                    .lock()
                    .unwrap()
                    .insert(name.to_string(), (msid.to_string(), rev));
                tracing::debug!(name, rev, "stream claimed");
                Ok(())
            }
            Claim::Taken { node } if node == self.node => {
                Err(ApiError::new(409, "Stream name is already in use"))
            }
            Claim::Taken { node } => Err(ApiError::new(
                409,
                format!("Stream name is already in use on node {node}"),
            )),
        }
    }

    /// Gives up this node's claim of `name` if publisher `msid` holds it.
    pub async fn release(&self, name: &str, msid: &str) {
        let rev = {
            let mut claims = self.claims.lock().unwrap();
            match claims.get(name) {
                Some((m, rev)) if m == msid => {
                    let rev = *rev;
                    claims.remove(name);
                    rev
                }
                _ => return,
            }
        };
        let r = self
            .bounded("release", async {
                let store = self.store().await?;
                directory::release(&store, name, rev).await
            })
            .await;
        match r {
            Ok(true) => tracing::debug!(name, "stream released"),
            Ok(false) => tracing::info!(name, "stream entry already replaced; left alone"),
            // Left for the peers' sweep if this node dies; a live node's stale entry is
            // cleaned when it leaves (see `leave`).
            Err(e) => tracing::warn!(name, error = %e.message, "could not release stream"),
        }
    }

    /// Writes the media description of the publisher just created into its claimed entry,
    /// so edges can relay it.
    pub async fn describe(&self, rec: &SessionRecord) {
        let rev = match self.claims.lock().unwrap().get(&rec.name) {
            Some((m, rev)) if *m == rec.media_session_id => *rev,
            _ => return,
        };
        let sdp = if rec.media.is_empty() {
            String::new()
        } else {
            crate::signal::describe_media(&rec.name, &rec.media).unwrap_or_default()
        };
        let entry = directory::DirEntry {
            v: 1,
            node: self.node.clone(),
            msid: rec.media_session_id.clone(),
            created: directory::now_ms(),
            media: Some(directory::MediaDescription {
                sdp,
                sprop: rec.sprop.clone(),
                srtp: rec.srtp,
                webrtc: rec.webrtc,
                app_key: rec.app_key.clone(),
            }),
        };
        let r = self
            .bounded("describe stream", async {
                let store = self.store().await?;
                directory::describe(&store, &rec.name, &entry, rev).await
            })
            .await;
        match r {
            Ok(Some(new)) => {
                if let Some(c) = self.claims.lock().unwrap().get_mut(&rec.name) {
                    if c.0 == rec.media_session_id {
                        c.1 = new;
                    }
                }
            }
            Ok(None) => {
                tracing::warn!(name = %rec.name, "directory entry replaced before its description was written")
            }
            Err(e) => {
                tracing::warn!(name = %rec.name, error = %e.message, "could not describe the stream in the directory; edges cannot pull it")
            }
        }
    }

    /// Releases a publisher's claim when it ends (any way); tells a relay's other half.
    pub fn on_status(self: &Arc<Self>, c: &StatusChange) {
        if c.status.is_final() && c.record.relay.is_some() {
            self.relay_session_ended(&c.record, c.status, &c.info);
            return;
        }
        if c.record.published && c.status.is_final() {
            let me = self.clone();
            let (name, msid) = (c.record.name.clone(), c.record.media_session_id.clone());
            tokio::spawn(async move { me.release(&name, &msid).await });
        }
    }

    /// After a (re)connect: NATS may have restarted and lost the memory buckets, or a peer
    /// may have swept this node during a partition, so every local publisher claims its name
    /// again (its own entry is kept as is). A name another node claimed meanwhile fails the
    /// local publisher: two live publishers would split the viewers silently.
    /// Returns false when some name could not be claimed for want of NATS (retry later).
    pub async fn reassert(&self) -> bool {
        let mut done = true;
        let pubs = self.core.find(&crate::registry::Filter {
            published: Some(true),
            relay: crate::registry::RelayMatch::Exclude,
            ..Default::default()
        });
        for rec in pubs {
            let r = self
                .bounded("re-claim after reconnect", async {
                    let store = self.store().await?;
                    directory::claim(&store, &rec.name, &self.node, &rec.media_session_id).await
                })
                .await;
            match r {
                Ok(Claim::Won(rev)) => {
                    self.claims
                        .lock()
                        .unwrap()
                        .insert(rec.name.clone(), (rec.media_session_id.clone(), rev));
                    self.describe(&rec).await;
                }
                Ok(Claim::Taken { node }) if node != self.node => {
                    tracing::warn!(name = %rec.name, %node, "name claimed by another node while NATS was away: failing the local publisher");
                    self.core.end_one(
                        &rec.media_session_id,
                        engine::Status::Failed,
                        &format!("Failed by name claimed on {node}"),
                    );
                }
                Ok(Claim::Taken { .. }) => {}
                Err(e) => {
                    tracing::debug!(name = %rec.name, error = %e.message, "could not re-claim yet");
                    done = false;
                }
            }
        }
        done
    }

    /// Runs `f` on every message of `subject` for ever, subscribing again (after `retry`)
    /// when the subscription fails or ends.
    pub(crate) fn on_each(
        self: &Arc<Self>,
        subject: String,
        what: &'static str,
        retry: Duration,
        mut f: impl FnMut(&Arc<Cluster>, async_nats::Message) + Send + 'static,
    ) {
        use futures_util::StreamExt;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match me.client.subscribe(subject.clone()).await {
                    Ok(mut sub) => {
                        while let Some(m) = sub.next().await {
                            f(&me, m);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "{what} subscription failed; retrying"),
                }
                tokio::time::sleep(retry).await;
            }
        });
    }

    /// Graceful stop: this node's entries go at once.
    pub async fn leave(&self) {
        self.relays_leave().await;
        let claims: Vec<(String, (String, u64))> = self.claims.lock().unwrap().drain().collect();
        for (name, (_, rev)) in claims {
            let _ = self
                .bounded("release on shutdown", async {
                    let store = self.store().await?;
                    directory::release(&store, &name, rev).await
                })
                .await;
        }
        // Bounded: with NATS away a flush would wait for a reconnect that may never come,
        // and a stop must not hang (peers then see this node die by its silence).
        if tokio::time::timeout(self.timeout(), self.client.flush())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            tracing::info!(node = %self.node, "left the cluster");
        } else {
            tracing::warn!(node = %self.node, "stopping without NATS: peers will drop this node's streams after dead_after_ms");
        }
    }
}
