//! Edge pull (docs/cluster.md, 4.3–4.5): a play on a node that lacks the stream creates a
//! local relay publisher, an ordinary RTP/SRTP publisher whose source is a relay player on
//! the upstream node (the origin, or an edge configured in `cluster.upstream`), asked for
//! over NATS request/reply. One upstream per stream per node however many players; it ends
//! `linger_ms` after the node's last player of the stream. Whichever half of a relay ends
//! first tells the other (`relay.ended`), so a publisher's stop reaches every edge's players,
//! and a dead upstream fails them ("Failed by origin loss").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::srtp::{SrtpKeys, SrtpProfile};
use engine::Status;
use serde::{Deserialize, Serialize};

use super::{directory, names, nats_down, Cluster};
use crate::core::{ApiError, CreateRequest};
use crate::registry::{Filter, RelayInfo, RelayMatch, SessionRecord};
use crate::signal::LegSpec;

/// Info of an edge's relay publisher and its players when the upstream died.
pub const ORIGIN_LOSS_INFO: &str = "Failed by origin loss";
/// Info of a relay player whose edge died.
pub const EDGE_LOSS_INFO: &str = "Stopped by edge loss";
/// Info of a relay publisher stopped because the node has had no player of it for
/// `linger_ms`.
pub const LINGER_INFO: &str = "Stopped by linger";
/// A pull path longer than this is refused (a misconfigured `upstream` chain).
const MAX_PATH: usize = 4;

fn relay_subject(node: &str) -> String {
    format!("ms.node.{}.relay", names::encode(node))
}

fn ended_subject(node: &str) -> String {
    format!("ms.node.{}.relay.ended", names::encode(node))
}

/// Edge → upstream: "send stream `stream` to these addresses".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelayRequest {
    pub relay_id: String,
    pub stream: String,
    /// The asking node.
    pub from: String,
    /// Nodes already on this pull (the loop guard), the asking node last.
    pub path: Vec<String>,
    /// Where media section `j` goes (one address per leg of the edge's relay publisher).
    pub legs: Vec<SocketAddr>,
    /// SDES keys (`a=crypto` form) when the relay is SRTP: media toward the edge, and RTCP
    /// from the edge toward the upstream.
    pub to_edge: Option<String>,
    pub to_upstream: Option<String>,
}

/// Upstream → edge.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RelayReply {
    /// HTTP-like status: 200, or the error the edge's player gets.
    pub status: u16,
    pub error: Option<String>,
    /// The stream's latest H264 parameter sets.
    pub sprop: Option<String>,
}

/// Either half → the other: "the relay ended; end yours the same way".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelayEnded {
    pub relay_id: String,
    pub failed: bool,
    pub info: String,
}

/// Which relay publishers have had no player since when (sans-IO part of the linger rule).
#[derive(Debug, Default)]
pub struct Linger {
    idle_since: HashMap<String, Instant>,
}

impl Linger {
    /// `relays`: every relay publisher (mediaSessionId) with its player count. Returns those
    /// idle for at least `linger`; forgets relays no longer listed.
    pub fn observe(
        &mut self,
        relays: &[(String, usize)],
        now: Instant,
        linger: Duration,
    ) -> Vec<String> {
        self.idle_since
            .retain(|m, _| relays.iter().any(|(r, n)| r == m && *n == 0));
        let mut expired = Vec::new();
        for (m, players) in relays {
            if *players > 0 {
                continue;
            }
            let since = *self.idle_since.entry(m.clone()).or_insert(now);
            if now.saturating_duration_since(since) >= linger {
                expired.push(m.clone());
            }
        }
        expired
    }
}

/// The upstream to pull from: the first configured one that is alive and not already on
/// the path, else the origin.
pub fn choose_upstream(
    configured: &[String],
    alive: &[String],
    path: &[String],
    origin: &str,
) -> String {
    configured
        .iter()
        .find(|n| alive.contains(n) && !path.contains(n) && n.as_str() != origin)
        .cloned()
        .unwrap_or_else(|| origin.to_string())
}

fn relay_keys(on: bool) -> Result<Option<(SrtpKeys, SrtpKeys)>, ApiError> {
    if !on {
        return Ok(None);
    }
    let gen = || {
        SrtpKeys::generate(SrtpProfile::AesCm128HmacSha1_80)
            .map_err(|e| ApiError::new(500, format!("relay SRTP keys: {e}")))
    };
    Ok(Some((gen()?, gen()?)))
}

impl Cluster {
    /// Makes stream `name` local for a play: `Ok(true)` when this node now has its
    /// publisher (already, or pulled), `Ok(false)` when the directory does not know it.
    /// 503 naming NATS when a pull is needed and NATS is away.
    pub async fn ensure_local(&self, name: &str) -> Result<bool, ApiError> {
        self.ensure_local_via(name, &[]).await
    }

    async fn ensure_local_via(&self, name: &str, path: &[String]) -> Result<bool, ApiError> {
        if self.core.publisher_of(name).is_some() {
            return Ok(true);
        }
        // Concurrent cold plays of one stream share one pull.
        let lock = self
            .pulls
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone();
        let r = {
            let _g = lock.lock().await;
            if self.core.publisher_of(name).is_some() {
                Ok(true)
            } else {
                let t = Duration::from_millis(self.cfg.pull_timeout_ms);
                match tokio::time::timeout(t, self.pull(name, path)).await {
                    Ok(r) => r,
                    Err(_) => Err(ApiError::new(
                        504,
                        format!(
                            "pulling `{name}`: no answer within cluster.pull_timeout_ms ({} ms)",
                            self.cfg.pull_timeout_ms
                        ),
                    )),
                }
            }
        };
        let mut pulls = self.pulls.lock().unwrap();
        if Arc::strong_count(&lock) == 2 {
            pulls.remove(name);
        }
        r
    }

    async fn pull(&self, name: &str, path: &[String]) -> Result<bool, ApiError> {
        let what = format!("cannot pull `{name}` from its origin");
        if !self.connected() {
            return Err(nats_down(&self.cfg.nats_url, &what));
        }
        let mut found = None;
        // A claim is written before its publisher exists; the description follows at once.
        for _ in 0..20 {
            let e = self
                .bounded(&what, async {
                    let store = self.store().await?;
                    directory::lookup(&store, name).await
                })
                .await?;
            match e {
                None => return Ok(false),
                Some((e, _)) if e.node == self.node => return Ok(false),
                Some((e, _)) if e.media.is_some() => {
                    found = Some(e);
                    break;
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        let Some(entry) = found else {
            return Err(ApiError::new(
                503,
                format!("stream `{name}` is starting on its origin; retry"),
            ));
        };
        let media = entry.media.clone().unwrap_or_default();
        let mut path = path.to_vec();
        path.push(self.node.clone());
        let alive = self.liveness.lock().unwrap().alive(Instant::now());
        let upstream = choose_upstream(&self.cfg.upstream, &alive, &path, &entry.node);
        let keys = relay_keys(media.srtp || self.cfg.srtp)?;

        // The relay publisher: one leg per media section of the origin stream.
        let (mut legs, sections) = if media.sdp.is_empty() {
            (vec![LegSpec::default()], Vec::new())
        } else {
            let plan = crate::signal::PublishPlan::new(&media.sdp).map_err(|e| {
                ApiError::new(502, format!("stream `{name}`: bad description: {e}"))
            })?;
            let m = plan.media();
            (plan.legs, m)
        };
        for l in &mut legs {
            // The origin's c= is its publisher's address, not the upstream node's: relay
            // media comes from the upstream, latched like any publisher (SRTP relays only
            // once a packet authenticates with this relay's fresh keys).
            l.source_ip = None;
            l.srtp_in = keys.as_ref().map(|k| k.0.clone());
            l.srtp_out = keys.as_ref().map(|k| k.1.clone());
        }
        let (has_audio, has_video, audio_codec, video_codec) = crate::signal::codecs(&sections);
        let app_key = if self.core.apps.lock().unwrap().get(&media.app_key).is_some() {
            media.app_key.clone()
        } else {
            "defaultApp".to_string()
        };
        let relay_id = uuid::Uuid::new_v4().to_string();
        let (rec, _) = self.core.create(CreateRequest {
            name: name.to_string(),
            published: true,
            app_key,
            legs,
            media: sections,
            has_audio,
            has_video,
            audio_codec,
            video_codec,
            relay: Some(RelayInfo {
                relay_id: relay_id.clone(),
                peer: upstream.clone(),
                origin: entry.node.clone(),
            }),
            ..Default::default()
        })?;
        let req = RelayRequest {
            relay_id,
            stream: name.to_string(),
            from: self.node.clone(),
            path,
            legs: rec
                .ports
                .iter()
                .map(|&p| SocketAddr::new(self.cfg.advertise, p))
                .collect(),
            to_edge: keys.as_ref().map(|k| k.0.to_sdes(1)),
            to_upstream: keys.as_ref().map(|k| k.1.to_sdes(1)),
        };
        let reply = self.ask_relay(&upstream, &req).await;
        match reply {
            Ok(r) if r.status == 200 => {
                if let Some(sp) = r.sprop {
                    self.core.set_sprop(rec.id, sp);
                }
                tracing::info!(stream = name, %upstream, origin = %entry.node, id = %rec.media_session_id, "relay up: pulling from upstream");
                Ok(true)
            }
            other => {
                let e = match other {
                    Ok(r) => ApiError::new(
                        r.status,
                        format!(
                            "{} (from node {upstream})",
                            r.error.unwrap_or_else(|| "relay refused".into())
                        ),
                    ),
                    Err(e) => e,
                };
                self.core.end_one(
                    &rec.media_session_id,
                    Status::Failed,
                    "Failed: relay refused",
                );
                tracing::warn!(stream = name, %upstream, error = %e.message, "pull failed");
                Err(e)
            }
        }
    }

    async fn ask_relay(&self, upstream: &str, req: &RelayRequest) -> Result<RelayReply, ApiError> {
        let payload = serde_json::to_vec(req).map_err(|e| ApiError::new(500, e.to_string()))?;
        let t = Duration::from_millis(self.cfg.pull_timeout_ms);
        let r = self
            .client
            .send_request(
                relay_subject(upstream),
                async_nats::Request::new()
                    .payload(payload.into())
                    .timeout(Some(t)),
            )
            .await;
        match r {
            Ok(m) => serde_json::from_slice(&m.payload)
                .map_err(|e| ApiError::new(502, format!("node {upstream}: bad relay reply: {e}"))),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Err(ApiError::new(
                502,
                format!("node {upstream} is not serving relays (no responders)"),
            )),
            Err(e) => Err(ApiError::new(
                504,
                format!("node {upstream} did not answer the relay request: {e}"),
            )),
        }
    }

    /// Upstream side of a pull: creates a relay player toward the asking node, pulling the
    /// stream first when this node is an edge without it.
    async fn relay_player(&self, req: RelayRequest) -> RelayReply {
        let refuse = |status: u16, e: String| RelayReply {
            status,
            error: Some(e),
            sprop: None,
        };
        if req.path.iter().filter(|n| **n == self.node).count() > 0 || req.path.len() > MAX_PATH {
            return refuse(
                409,
                format!("relay loop: {} -> {}", req.path.join(" -> "), self.node),
            );
        }
        match self.ensure_local_via(&req.stream, &req.path).await {
            Ok(true) => {}
            Ok(false) => return refuse(404, "Stream not found".into()),
            Err(e) => return refuse(e.status, e.message),
        }
        let Some(p) = self.core.publisher_of(&req.stream) else {
            return refuse(404, "Stream not found".into());
        };
        let parse = |k: &Option<String>| {
            k.as_deref()
                .map(SrtpKeys::parse_sdes)
                .transpose()
                .map_err(|e| format!("relay keys: {e}"))
        };
        let (to_edge, to_upstream) = match (parse(&req.to_edge), parse(&req.to_upstream)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return refuse(400, e),
        };
        let sections = p.media.len().max(1);
        if req.legs.len() != sections {
            return refuse(
                409,
                format!(
                    "stream `{}` has {sections} media sections here, the relay request {}",
                    req.stream,
                    req.legs.len()
                ),
            );
        }
        let legs: Vec<LegSpec> = req
            .legs
            .iter()
            .enumerate()
            .map(|(j, addr)| {
                let m = p.media.get(j);
                LegSpec {
                    kind: m.map_or(engine::LegKind::default(), |m| {
                        crate::signal::leg_kind(m.kind)
                    }),
                    peer: Some(*addr),
                    payload_types: m.map_or(Vec::new(), |m| {
                        m.payload_types.iter().map(|p| p.pt).collect()
                    }),
                    srtp_out: to_edge.clone(),
                    srtp_in: to_upstream.clone(),
                    ..Default::default()
                }
            })
            .collect();
        let origin = p
            .relay
            .as_ref()
            .map_or(self.node.clone(), |r| r.origin.clone());
        let r = self.core.create(CreateRequest {
            name: req.stream.clone(),
            published: false,
            app_key: p.app_key.clone(),
            legs,
            has_audio: p.has_audio,
            has_video: p.has_video,
            audio_codec: p.audio_codec.clone(),
            video_codec: p.video_codec.clone(),
            relay: Some(RelayInfo {
                relay_id: req.relay_id.clone(),
                peer: req.from.clone(),
                origin,
            }),
            ..Default::default()
        });
        match r {
            Ok((rec, _)) => {
                tracing::info!(stream = %req.stream, edge = %req.from, id = %rec.media_session_id, "relay player created");
                RelayReply {
                    status: 200,
                    error: None,
                    sprop: self.core.publisher_of(&req.stream).and_then(|p| p.sprop),
                }
            }
            Err(e) => refuse(e.status, e.message),
        }
    }

    /// Local relay sessions (both halves).
    pub(super) fn relays(&self) -> Vec<SessionRecord> {
        self.core.find(&Filter {
            relay: RelayMatch::Only,
            ..Default::default()
        })
    }

    /// The other half of a relay ended: end ours the same way.
    fn on_relay_ended(&self, m: RelayEnded) {
        let Some(r) = self
            .relays()
            .into_iter()
            .find(|r| r.relay.as_ref().is_some_and(|x| x.relay_id == m.relay_id))
        else {
            return;
        };
        let status = if m.failed {
            Status::Failed
        } else {
            Status::Stopped
        };
        tracing::info!(stream = %r.name, id = %r.media_session_id, published = r.published, info = %m.info, "relay's other half ended");
        self.core.end_one(&r.media_session_id, status, &m.info);
    }

    /// A relay half ended here: tell the node holding the other half.
    pub(super) fn relay_session_ended(
        self: &Arc<Self>,
        rec: &SessionRecord,
        status: Status,
        info: &str,
    ) {
        let Some(r) = &rec.relay else { return };
        let msg = RelayEnded {
            relay_id: r.relay_id.clone(),
            failed: status == Status::Failed,
            info: info.to_string(),
        };
        let (me, peer) = (self.clone(), r.peer.clone());
        tokio::spawn(async move { me.tell_ended(&peer, &msg).await });
    }

    /// Sends `relay.ended` to `peer`, bounded; dropped when NATS is away (the relay's
    /// other half then ends by its RTP-activity timeout or the peer's liveness).
    async fn tell_ended(&self, peer: &str, msg: &RelayEnded) {
        let Ok(p) = serde_json::to_vec(msg) else {
            return;
        };
        if self.connected() {
            let _ = tokio::time::timeout(
                self.timeout(),
                self.client.publish(ended_subject(peer), p.into()),
            )
            .await;
        }
    }

    /// Peers declared dead: relays fed by them fail, relays toward them stop.
    pub(super) fn nodes_died(&self, dead: &[String]) {
        for r in self.relays() {
            let Some(x) = &r.relay else { continue };
            if r.published && (dead.contains(&x.peer) || dead.contains(&x.origin)) {
                tracing::warn!(stream = %r.name, upstream = %x.peer, origin = %x.origin, "upstream node lost: failing the relay and its players");
                self.core
                    .end_one(&r.media_session_id, Status::Failed, ORIGIN_LOSS_INFO);
            } else if !r.published && dead.contains(&x.peer) {
                self.core
                    .end_one(&r.media_session_id, Status::Stopped, EDGE_LOSS_INFO);
            }
        }
    }

    /// Graceful stop: every relay's other half hears of it now.
    pub(super) async fn relays_leave(&self) {
        for r in self.relays() {
            let Some(x) = &r.relay else { continue };
            let msg = RelayEnded {
                relay_id: x.relay_id.clone(),
                failed: false,
                info: "Stopped by node shutdown".into(),
            };
            self.tell_ended(&x.peer, &msg).await;
        }
    }
}

/// Serves relay requests and relay-ended notices addressed to this node, and runs the
/// linger rule.
pub fn spawn(c: Arc<Cluster>) {
    c.on_each(
        relay_subject(&c.node),
        "relay",
        Duration::from_millis(500),
        |me, m| {
            let (Some(reply), Ok(req)) = (
                m.reply.clone(),
                serde_json::from_slice::<RelayRequest>(&m.payload),
            ) else {
                return;
            };
            // A nested pull (this node is an edge too) must not hold up others.
            let me = me.clone();
            tokio::spawn(async move {
                let r = me.relay_player(req).await;
                if let Ok(p) = serde_json::to_vec(&r) {
                    let _ = me.client.publish(reply, p.into()).await;
                }
            });
        },
    );
    c.on_each(
        ended_subject(&c.node),
        "relay-ended",
        Duration::from_millis(500),
        |me, m| {
            if let Ok(e) = serde_json::from_slice::<RelayEnded>(&m.payload) {
                me.on_relay_ended(e);
            }
        },
    );
    tokio::spawn(async move {
        let linger = Duration::from_millis(c.cfg.linger_ms);
        let tick = (linger / 4).clamp(Duration::from_millis(50), Duration::from_millis(1000));
        let mut state = Linger::default();
        loop {
            tokio::time::sleep(tick).await;
            let relays: Vec<(String, usize)> = c
                .relays()
                .into_iter()
                .filter(|r| r.published)
                .map(|r| {
                    let n = c.core.player_count(&r.name);
                    (r.media_session_id, n)
                })
                .collect();
            for msid in state.observe(&relays, Instant::now(), linger) {
                tracing::info!(id = %msid, linger_ms = c.cfg.linger_ms, "relay has had no player for linger_ms: stopping it");
                c.core.end_one(&msid, Status::Stopped, LINGER_INFO);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linger_expires_only_after_continuous_idleness() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let l = Duration::from_millis(1000);
        let mut s = Linger::default();
        let idle = |m: &str| vec![(m.to_string(), 0usize)];
        assert!(s.observe(&idle("r1"), at(0), l).is_empty());
        assert!(s.observe(&idle("r1"), at(900), l).is_empty());
        // A player came back: the clock restarts when it leaves again.
        assert!(s.observe(&[("r1".into(), 1)], at(950), l).is_empty());
        assert!(s.observe(&idle("r1"), at(1000), l).is_empty());
        assert!(s.observe(&idle("r1"), at(1900), l).is_empty());
        assert_eq!(s.observe(&idle("r1"), at(2000), l), ["r1"]);
        // Gone relays are forgotten.
        assert!(s.observe(&[], at(2100), l).is_empty());
        assert!(s.idle_since.is_empty());
    }

    #[test]
    fn upstream_is_first_alive_configured_node_not_on_the_path() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            choose_upstream(&v(&["b"]), &v(&["b", "c"]), &v(&["d"]), "a"),
            "b"
        );
        assert_eq!(
            choose_upstream(&v(&["b"]), &v(&["c"]), &v(&["d"]), "a"),
            "a",
            "b dead"
        );
        assert_eq!(
            choose_upstream(&v(&["b"]), &v(&["b"]), &v(&["d", "b"]), "a"),
            "a",
            "loop"
        );
        assert_eq!(choose_upstream(&[], &v(&["b"]), &[], "a"), "a");
    }

    #[test]
    fn messages_round_trip() {
        let r = RelayRequest {
            relay_id: "r".into(),
            stream: "cam 1/é".into(),
            from: "b".into(),
            path: vec!["d".into(), "b".into()],
            legs: vec!["127.0.0.2:20000".parse().unwrap()],
            to_edge: Some("1 AES_CM_128_HMAC_SHA1_80 inline:x".into()),
            to_upstream: None,
        };
        let j = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<RelayRequest>(&j).unwrap(), r);
        let e = RelayEnded {
            relay_id: "r".into(),
            failed: true,
            info: ORIGIN_LOSS_INFO.into(),
        };
        let j = serde_json::to_vec(&e).unwrap();
        assert_eq!(serde_json::from_slice::<RelayEnded>(&j).unwrap(), e);
    }
}
